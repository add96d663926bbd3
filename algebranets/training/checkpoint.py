"""Checkpoints of the TrainState with orbax: periodic, on preemption, last K + best by metric.

A checkpoint `workdir/checkpoints/<step>/` holds two items:
  state   the whole TrainState (step, params, model_state, opt_state, carry, rng, and the
          pruning masks of a sparse run), saved and
          restored with its shardings (StandardSave/StandardRestore), so a restored run has
          exactly the arrays it had, on whatever mesh it now runs
  meta    JSON: the step, the eval metrics it was saved with (if any), the experiment name

Policy (orbax preservation policies): the latest `keep` checkpoints are kept, and besides them the
`keep_best` best by `best_metric` ("valid/bpc", "validation/top1", ...; `best_mode` "min" or
"max") among checkpoints saved with eval metrics.

Atomicity: orbax writes a step into a temporary directory (`<step>.orbax-checkpoint-tmp-*`)
and renames it to `<step>` only once every item (and every host's shards) is complete; steps are
listed from finished directories only, and leftover temporary directories are deleted when a
manager opens the directory. A crash while writing therefore leaves the previous checkpoint as
the latest. Saving is asynchronous (the device-to-host copy happens before `save` returns,
so the next step may donate the buffers); `wait()` blocks until the files are written.
"""

from __future__ import annotations

import pathlib
from typing import Any, Mapping, Optional

import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

BEST_MODES = ("min", "max")


class Checkpointer:
  """Saves and restores TrainStates under `directory` (see the module docstring)."""

  def __init__(self, directory, *, keep: int = 3, keep_best: int = 1,
               best_metric: Optional[str] = None, best_mode: str = "min",
               async_save: bool = True):
    if best_mode not in BEST_MODES:
      raise ValueError(f"unknown best_mode {best_mode!r}; choices: {list(BEST_MODES)}")
    if keep < 1:
      raise ValueError(f"checkpoint keep must be >= 1 (the latest is needed to resume), got "
                       f"{keep}")
    self.directory = pathlib.Path(directory).absolute()
    self.best_metric, self.best_mode = best_metric, best_mode
    keepers = [policies.LatestN(n=keep)]
    if best_metric and keep_best > 0:
      keepers.append(policies.BestN(
          get_metric_fn=lambda m: float(m[best_metric]), reverse=best_mode == "min",
          n=keep_best, keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy(keepers),
        enable_async_checkpointing=async_save, cleanup_tmp_directories=True, create=True)
    self.manager = ocp.CheckpointManager(self.directory, options=options,
                                         item_names=("state", "meta"))

  def latest_step(self) -> Optional[int]:
    return self.manager.latest_step()

  def all_steps(self):
    return tuple(self.manager.all_steps())

  def best_step(self) -> Optional[int]:
    """The kept step with the best `best_metric`, None if no checkpoint has it."""
    best = None
    for step in self.all_steps():
      meta = self.read_meta(step)
      value = (meta.get("metrics") or {}).get(self.best_metric)
      if value is None:
        continue
      if best is None or (value < best[1] if self.best_mode == "min" else value > best[1]):
        best = (step, value)
    return None if best is None else best[0]

  def save(self, step: int, state, *, metrics: Optional[Mapping[str, float]] = None,
           meta: Optional[Mapping[str, Any]] = None) -> bool:
    """Saves `state` as `step` (once per step: a second save of a step is skipped)."""
    if step in self.all_steps():
      return False
    metrics = {k: float(v) for k, v in (metrics or {}).items()}
    info = dict(meta or {}, step=int(step), metrics=metrics)
    return self.manager.save(
        int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                           meta=ocp.args.JsonSave(info)),
        metrics=metrics or None, force=True)

  def restore(self, abstract_state, step: Optional[int] = None):
    """The TrainState of `step` (default the latest), laid out as `abstract_state` says."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    restored = self.manager.restore(
        int(step), args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    return restored["state"]

  def read_meta(self, step: int) -> dict:
    restored = self.manager.restore(int(step),
                                    args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"] or {})

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()
