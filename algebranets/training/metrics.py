"""Metrics out of a run: TensorBoard event files, JSON lines, and a progress display.

  workdir/metrics.jsonl    one JSON object per record: {"step", "split", "time", metric: value}
                           (split "train" for training metrics, else the eval split)
  workdir/tensorboard/     TensorBoard events, scalars named "<split>/<metric>" (tensorboardX:
                           a small pure-Python writer, so no TensorFlow is needed to log)

Only process 0 writes. On resume, records past the restored step are dropped from the JSONL
(they belong to the abandoned continuation), so the file always describes one run.

`Progress` shows a tqdm bar with steps/s and examples/s (or tokens/s) when stderr is a
terminal, and writes one plain log line per `log_every` steps otherwise (CI logs, batch jobs).
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
import sys
import time
from typing import Mapping, Optional

log = logging.getLogger("algebranets")

JSONL = "metrics.jsonl"
TENSORBOARD = "tensorboard"


def _finite_or_str(v: float):
  return v if math.isfinite(v) else str(v)


class MetricWriter:
  """JSONL + TensorBoard writer (a no-op on processes other than 0)."""

  def __init__(self, workdir, *, enabled: bool = True, resume_step: Optional[int] = None):
    """`resume_step`: drop the records of later steps (a training run resuming from it)."""
    self.enabled = enabled
    self.path = pathlib.Path(workdir) / JSONL
    self._tb = None
    if not enabled:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    if self.path.exists() and resume_step is not None:
      keep = []
      for line in self.path.read_text().splitlines():
        try:
          if json.loads(line).get("step", 0) <= resume_step:
            keep.append(line)
        except json.JSONDecodeError:  # a line cut by a crash
          pass
      self.path.write_text("".join(l + "\n" for l in keep))
    from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
    self._tb = SummaryWriter(str(pathlib.Path(workdir) / TENSORBOARD))

  def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), "split": split, "time": time.time()}
    record.update({k: _finite_or_str(float(v)) for k, v in metrics.items()})
    with open(self.path, "a") as f:
      f.write(json.dumps(record) + "\n")
    for k, v in metrics.items():
      self._tb.add_scalar(f"{split}/{k}", float(v), int(step))

  def flush(self) -> None:
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()
      self._tb = None


def read_jsonl(workdir, split: Optional[str] = None) -> list:
  """The records of workdir/metrics.jsonl (of one split, if given)."""
  path = pathlib.Path(workdir) / JSONL
  if not path.exists():
    return []
  records = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
  return [r for r in records if split is None or r["split"] == split]


def format_metrics(metrics: Mapping[str, float]) -> str:
  return " ".join(f"{k} {v:.4g}" for k, v in metrics.items())


class Progress:
  """Training progress: a tqdm bar on a terminal, plain log lines otherwise."""

  def __init__(self, total_steps: int, start_step: int, unit: str, *, enabled: bool = True,
               interactive: Optional[bool] = None):
    self.total, self.unit = total_steps, unit
    self.enabled = enabled
    self.interactive = sys.stderr.isatty() if interactive is None else interactive
    self._last_step, self._last_time = start_step, time.perf_counter()
    self._bar = None
    if enabled and self.interactive:
      from tqdm import tqdm  # pylint: disable=g-import-not-at-top
      self._bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

  def update(self, step: int, units_per_step: int, metrics: Mapping[str, float]
             ) -> tuple[dict[str, float], float]:
    """Reports training up to `step`.

    Returns ({"steps_per_s", "<unit>_per_s"}, seconds since the last update or reset).
    """
    now = time.perf_counter()
    steps = step - self._last_step
    dt = max(now - self._last_time, 1e-9)
    rates = {"steps_per_s": steps / dt, f"{self.unit}_per_s": steps * units_per_step / dt}
    self._last_step, self._last_time = step, now
    if not self.enabled:
      return rates, dt
    shown = {k: v for k, v in metrics.items() if k in ("loss", "bpc", "top1", "lr")}
    if "sparsity/overall" in metrics:  # a pruned run: the sparsity its weights have now
      shown["sparsity"] = metrics["sparsity/overall"]
    text = (f"{format_metrics(shown)} | {rates['steps_per_s']:.2f} steps/s "
            f"{rates[f'{self.unit}_per_s']:,.0f} {self.unit}/s")
    if self._bar is not None:
      self._bar.update(steps)
      self._bar.set_postfix_str(text, refresh=True)
    else:
      log.info("step %d/%d: %s", step, self.total, text)
    return rates, dt

  def message(self, text: str) -> None:
    """A line that does not break the bar."""
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.write(text, file=sys.stderr)
    else:
      log.info("%s", text)

  def reset_clock(self, step: int) -> None:
    """Restarts the rate measurement (after an eval or a checkpoint, which are not training)."""
    self._last_step, self._last_time = step, time.perf_counter()

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
