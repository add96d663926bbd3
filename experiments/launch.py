r"""Runs a sweep's training runs here one after another, on a Ray cluster, or writes their commands.

  python -m experiments.launch --sweep=cifar10_small --root=runs/cifar10_small \
      --data=cifar10=$DATA/cifar10
  python -m experiments.launch --sweep=imagenet_resnet50 --root=gs://.../rn50 \
      --data=imagenet=$TFDS_DIR --write_commands=rn50.sh      (one command per line)
  python -m experiments.launch --sweep=char_lm_small --root=runs/char --data=text=input.txt \
      --only='^(r|m2r)_' --config.train.batch_size=32
  python -m experiments.launch --sweep=imagenet_resnet50 --root=/shared/rn50 \
      --data=imagenet=$TFDS_DIR --backend=ray --address=auto --resources_per_run=GPU=8,CPU=32

Each run is `python -m algebranets.train --config=... --workdir=ROOT/<run name> ...` in a
subprocess of its own (so its memory is freed and a crash stops only that run), with its output
in ROOT/<run name>/train.log. `--data=NAME=PATH` fills the sweep's data placeholders (the sweep
says which it needs); any `--config.a.b=value` flag is passed on to every run.

Rerunning skips finished runs: a run is finished when its workdir's launch record (RUN_FILE,
written by this launcher when the subprocess exits) says "done", or -- for workdirs written by
commands run elsewhere -- when its metrics.jsonl holds an eval record at the config's last step.
A run that failed or was interrupted is started again (and resumes from its checkpoint).

--backend=ray (experiments/ray_backend.py; needs `pip install -e .[cluster]`) runs each run as
Ray tasks on the nodes of a Ray cluster, as many at once as the cluster holds, N processes on N
nodes for a run that needs N hosts (--hosts_per_run), retrying runs whose node or process died
(--max_retries) and resubmitting preempted ones; --root must be on storage every node sees.

The launch record, ROOT/<run name>/launch.json: sweep, run name, algebra, settings, metric,
command, status ("running", "done", "failed"; "preempted" when the trainer stopped on SIGTERM
before its last step), return code, start and end time, wall seconds of the subprocess (start-up,
compilation and evaluation included), git commit and host. The Ray backend adds its attempts.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import platform
import shlex
import subprocess
import sys
import time
from typing import Sequence

from algebranets import errors
from experiments import sweeps as sweeps_lib
# What a launched run leaves in its workdir, shared with the Ray backend (experiments.workdirs);
# `select` picks a sweep's runs (experiments.sweeps). Both kept importable from here.
from experiments.sweeps import select
from experiments.workdirs import (LOG_FILE, RUN_FILE, git_commit, is_finished, machine,
                                  reached_last_step, write_record)
# Not used here; re-exported for callers (tests/experiments/test_ray_launch.py) that read them
# from launch.
from experiments.workdirs import latest_checkpoint_step, read_jsonl  # noqa: F401 (re-export)


def parse_data(items: Sequence[str]) -> dict[str, str]:
  """["name=PATH", ...] -> {name: absolute PATH}."""
  out = {}
  for item in items:
    name, sep, path = item.partition("=")
    if not sep or not name or not path:
      raise ValueError(f"--data expects NAME=PATH, got {item!r}")
    out[name] = str(pathlib.Path(path).expanduser().absolute())
  return out


def check_data(sweep: sweeps_lib.Sweep, data: dict[str, str]) -> None:
  needed = dict(sweep.data)
  missing = sorted(set(needed) - set(data))
  if missing:
    lines = "\n".join(f"  --data={n}=PATH   {needed[n]}" for n in missing)
    raise ValueError(f"sweep {sweep.name!r} needs data paths:\n{lines}")
  unknown = sorted(set(data) - set(needed))
  if unknown:
    raise ValueError(f"sweep {sweep.name!r} takes no data {unknown}; it takes {sorted(needed)}")


def commands(sweep, runs, root, data, extra, python) -> list[list[str]]:
  return [run.command(pathlib.Path(root) / run.name, data, python) + list(extra) for run in runs]


def launch_run(sweep, run, root: pathlib.Path, data, extra, python, log=print) -> dict:
  """Runs one run in a subprocess; returns (and writes) its launch record."""
  workdir = root / run.name
  workdir.mkdir(parents=True, exist_ok=True)
  argv = run.command(workdir, data, python) + list(extra)
  record = dict(sweep=sweep.name, run=run.name, algebra=run.algebra, settings=run.arg_keys,
                sparsity=run.sparsity, variant=run.variant, metric=sweep.metric,
                command=shlex.join(argv), status="running", returncode=None,
                started=datetime.datetime.now().isoformat(timespec="seconds"), finished=None,
                wall_s=None, git_commit=git_commit(), host=platform.node(), machine=machine())
  write_record(workdir / RUN_FILE, record)
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [str(sweeps_lib.ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  log(f"[{record['started']}] {run.name}: {record['command']}")
  start = time.monotonic()
  with open(workdir / LOG_FILE, "a") as out:
    returncode = subprocess.run(argv, cwd=sweeps_lib.ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, check=False).returncode
  if returncode != 0:
    status = "failed"
  else:  # exit 0 is also a preemption (SIGTERM): the trainer saved and stopped early
    status = "done" if reached_last_step(workdir) else "preempted"
  record.update(status=status, returncode=returncode,
                finished=datetime.datetime.now().isoformat(timespec="seconds"),
                wall_s=round(time.monotonic() - start, 1))
  write_record(workdir / RUN_FILE, record)
  log(f"[{record['finished']}] {run.name}: {record['status']} in {record['wall_s']:.0f} s"
      + ("" if status == "done" else f" (exit {returncode}; see {workdir / LOG_FILE})"))
  return record


def launch(sweep_name: str, root, *, data=None, only=None, extra=(), python=sys.executable,
           log=print) -> list[dict]:
  """Runs the sweep's (selected, unfinished) runs one after another; their launch records."""
  sweep = sweeps_lib.get(sweep_name)
  data = dict(data or {})
  check_data(sweep, data)
  root = pathlib.Path(root).absolute()
  records = []
  for run in select(sweep, only):
    if is_finished(root / run.name):
      log(f"{run.name}: finished, skipped")
      continue
    records.append(launch_run(sweep, run, root, data, extra, python, log))
  return records


def launch_ray(sweep_name: str, root, *, data=None, only=None, extra=(), address=None,
               log=print, **kwargs) -> list[dict]:
  """`launch` on a Ray cluster (experiments/ray_backend.py): the launch records of the runs it
  launched. kwargs: resources, hosts_per_run, tpu_slice, max_retries, python, repo,
  report_every_s (see RaySweep)."""
  from experiments import ray_backend  # pylint: disable=g-import-not-at-top
  sweep = sweeps_lib.get(sweep_name)
  data = dict(data or {})
  check_data(sweep, data)
  runs = select(sweep, only)
  ray_backend.connect(address, kwargs.get("repo"))
  return ray_backend.RaySweep(sweep, runs, root, data, extra, log=log, **kwargs).run()


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m experiments.launch", description=__doc__.split("\n\n")[0],
      epilog="Any --config.a.b=value flag is passed on to every run.")
  parser.add_argument("--sweep", required=True, help=f"one of {sorted(sweeps_lib.SWEEPS)}")
  parser.add_argument("--root", help="folder of the runs' workdirs (default runs/<sweep>)")
  parser.add_argument("--data", action="append", default=[], metavar="NAME=PATH",
                      help="a data path the sweep needs (repeat for several)")
  parser.add_argument("--only", help="regex: launch only the runs whose name it matches")
  parser.add_argument("--print_commands", action="store_true",
                      help="print one command per run instead of running them")
  parser.add_argument("--write_commands", metavar="FILE",
                      help="write one command per run to FILE instead of running them")
  parser.add_argument("--python", default=None,
                      help="interpreter of the runs (default: this one, or each Ray node's; "
                      "'python' in commands)")
  parser.add_argument("--status", action="store_true",
                      help="print where each run stands (from the workdirs) and exit")
  ray_flags = parser.add_argument_group(
      "Ray backend", "--backend=ray runs the sweep on a Ray cluster (pip install -e .[cluster]); "
      "--root must be on storage every node sees")
  ray_flags.add_argument("--backend", choices=("local", "ray"), default="local",
                         help="local: one run after another here (default); ray: Ray tasks")
  ray_flags.add_argument("--address", default=None,
                         help="the cluster: auto (the one this machine is a node of) or "
                         "HOST:PORT of its head; default $RAY_ADDRESS, else a cluster running "
                         "here, else a new one-machine cluster")
  ray_flags.add_argument("--resources_per_run", default=None, metavar="NAME=N,...",
                         help="what one process of a run needs, e.g. GPU=8,CPU=32 or TPU=4 "
                         "(default CPU=1)")
  ray_flags.add_argument("--hosts_per_run", type=int, default=1,
                         help="processes (on distinct nodes) per run, each with "
                         "--resources_per_run: a multi-host run (default 1)")
  ray_flags.add_argument("--tpu_slice", default=None, metavar="VERSION:TOPOLOGY",
                         help="each run takes one whole TPU pod slice, e.g. v4:2x2x2 (one "
                         "process per host of the slice)")
  ray_flags.add_argument("--max_retries", type=int, default=3,
                         help="times a run is started again after its node or process died "
                         "(default 3); a run that exits with an error is not retried")
  ray_flags.add_argument("--repo", default=None,
                         help="the repository's path on the nodes (default: this one's)")
  ray_flags.add_argument("--report_every", type=float, default=60.0, metavar="SECONDS",
                         help="print a progress summary this often (default 60)")
  ray_flags.add_argument("--detach", action="store_true",
                         help="run the sweep in a detached Ray actor and return")
  ray_flags.add_argument("--attach", action="store_true",
                         help="follow the detached sweep of --root until it ends")
  parser.add_argument("--verbose", action="store_true",
                      help="print the traceback of an error too")
  args, rest = parser.parse_known_args(argv)
  unknown = [a for a in rest if not a.startswith("--config.")]
  if unknown:
    parser.error(f"unrecognized arguments: {' '.join(unknown)} (only --config.* flags are "
                 "passed on to the runs)")
  ray_only = [f for f, v in (("--detach", args.detach), ("--attach", args.attach),
                             ("--address", args.address), ("--tpu_slice", args.tpu_slice),
                             ("--resources_per_run", args.resources_per_run),
                             ("--hosts_per_run", args.hosts_per_run != 1)) if v]
  if ray_only and args.backend != "ray":
    parser.error(f"{', '.join(ray_only)} go with --backend=ray")
  log = lambda m: print(m, flush=True)
  try:
    sweep = sweeps_lib.get(args.sweep)
    root = pathlib.Path(args.root or pathlib.Path("runs") / sweep.name)
    if args.status or args.attach:
      from experiments import ray_backend  # pylint: disable=g-import-not-at-top
      runs = select(sweep, args.only)
      if args.attach:
        state = ray_backend.attach(root, args.address, follow=True, log=log)
        if state is None:
          print(f"no detached sweep for {root.absolute()} is running; from its workdirs:")
      status = ray_backend.status_from_records(sweep, runs, root)
      print(ray_backend.format_status(status), flush=True)
      return 1 if status["failed"] else 0
    data = parse_data(args.data)
    check_data(sweep, data)
    if args.print_commands or args.write_commands:
      runs = select(sweep, args.only)
      lines = [shlex.join(c) for c in
               commands(sweep, runs, root.absolute(), data, rest, args.python or "python")]
      text = "".join(line + "\n" for line in lines)
      if args.write_commands:
        pathlib.Path(args.write_commands).write_text(text)
        print(f"wrote {len(lines)} commands to {args.write_commands} (run them from "
              f"{sweeps_lib.ROOT})")
      if args.print_commands:
        sys.stdout.write(text)
      return 0
    if args.backend == "ray":
      from experiments import ray_backend  # pylint: disable=g-import-not-at-top
      kwargs = dict(root=str(root.absolute()), data=data, extra=rest,
                    resources=ray_backend.parse_resources(args.resources_per_run),
                    hosts_per_run=args.hosts_per_run, tpu_slice=args.tpu_slice,
                    max_retries=args.max_retries, python=args.python, repo=args.repo,
                    report_every_s=args.report_every)
      if args.tpu_slice:
        ray_backend.parse_tpu_slice(args.tpu_slice)
      if args.detach:
        select(sweep, args.only)
        ray_backend.detach(dict(kwargs, sweep_name=args.sweep, only=args.only), args.address,
                           log=log)
        return 0
      root_arg = kwargs.pop("root")
      records = launch_ray(args.sweep, root_arg, only=args.only, address=args.address, log=log,
                           **kwargs)
    else:
      records = launch(args.sweep, root, data=data, only=args.only, extra=rest,
                       python=args.python or sys.executable, log=log)
  except ImportError as e:
    print(f"error: {e}", file=sys.stderr, flush=True)
    return 2
  except KeyboardInterrupt:
    print("interrupted: the runs in flight were stopped; launch again to resume them from their "
          "checkpoints", file=sys.stderr, flush=True)
    return 130
  except ValueError as e:
    if not errors.is_user_error(e):  # raised inside a library: a bug, with its traceback
      raise
    parser.exit(2, f"error: {errors.message(e)}\n")
  failed = [r["run"] for r in records if r["status"] != "done"]
  print(f"{len(records)} run(s) launched, {len(failed)} failed" +
        (f": {failed}" if failed else ""), flush=True)
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(errors.run_cli(main))
