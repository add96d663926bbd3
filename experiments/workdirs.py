"""What a launched run leaves in its workdir: the launch record, the log, checkpoints, metrics.

Shared by the local launcher (`experiments.launch`) and the Ray backend
(`experiments.ray_backend`), which both write and read them; this module imports neither.

  RUN_FILE  workdir/launch.json, the launch record (see experiments.launch)
  LOG_FILE  workdir/train.log, the run's output
"""

from __future__ import annotations

import json
import os
import pathlib
import platform
import subprocess

ROOT = pathlib.Path(__file__).resolve().parent.parent

RUN_FILE = "launch.json"
LOG_FILE = "train.log"


def git_commit(repo=ROOT) -> str:
  """HEAD of the repository ("+dirty" if tracked files changed), or "unknown"."""
  try:
    head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=repo, text=True,
                          capture_output=True, check=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                           text=True, capture_output=True, check=True).stdout.strip()
    return head + ("+dirty" if dirty else "")
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


def machine() -> str:
  """One line: CPU model (or machine type), cores, OS."""
  cpu = platform.processor() or platform.machine()
  try:
    for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def read_jsonl(path: pathlib.Path) -> list[dict]:
  records = []
  if path.exists():
    for line in path.read_text().splitlines():
      try:
        records.append(json.loads(line))
      except json.JSONDecodeError:  # a line cut by a crash
        pass
  return records


def is_finished(workdir) -> bool:
  """Whether the run in `workdir` completed (see the module docstring)."""
  workdir = pathlib.Path(workdir)
  record = workdir / RUN_FILE
  if record.exists():
    try:
      if json.loads(record.read_text()).get("status") == "done":
        return True
    except json.JSONDecodeError:
      pass
  config = workdir / "config.json"
  if not config.exists():
    return False
  steps = json.loads(config.read_text()).get("train", {}).get("num_steps", 0)
  return any(r.get("split") != "train" and r.get("step", -1) >= steps > 0
             for r in read_jsonl(workdir / "metrics.jsonl"))


def latest_checkpoint_step(workdir) -> int:
  """The highest step saved in workdir/checkpoints (orbax's step folders), or 0 if none."""
  folder = pathlib.Path(workdir) / "checkpoints"
  steps = [int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()] \
      if folder.is_dir() else []
  return max(steps, default=0)


def reached_last_step(workdir) -> bool:
  """Whether the run's process got to its config's last step: `is_finished`, or a checkpoint at
  the last step (a --mode=train run has no eval records). False after a preemption (SIGTERM:
  the trainer saves, exits 0 and resumes when started again)."""
  if is_finished(workdir):
    return True
  config = pathlib.Path(workdir) / "config.json"
  if not config.exists():
    return False
  steps = json.loads(config.read_text()).get("train", {}).get("num_steps", 0)
  return steps > 0 and latest_checkpoint_step(workdir) >= steps


def write_record(path: pathlib.Path, record: dict) -> None:
  tmp = path.with_suffix(".tmp")
  tmp.write_text(json.dumps(record, indent=2))
  tmp.replace(path)
