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

Faults. A failed save (a full disk, a quota, a lost mount) ends the run with one
`CheckpointError` line naming the step, the directory and the cause; the checkpoints before it
are untouched (orbax renames a step only once it is complete). A checkpoint that cannot be read
(truncated files, a disk error) is moved aside to `<checkpoints>.damaged/<step>` -- never
deleted -- with a warning naming it, and `restore_latest` falls back to the newest readable one.
A checkpoint whose shapes differ from the state a config builds is not damaged: it belongs to
another model, and restoring it is refused (`workdir.check_shapes`), not moved.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import re
import shutil
import time
from typing import Any, Mapping, Optional, Tuple

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers as policies

from algebranets import common
from algebranets import errors
from algebranets.training import workdir as workdir_lib

log = logging.getLogger("algebranets")

BEST_MODES = ("min", "max")


class Checkpointer:
  """Saves and restores TrainStates under `directory` (see the module docstring)."""

  def __init__(self, directory, *, keep: int = 3, keep_best: int = 1,
               best_metric: Optional[str] = None, best_mode: str = "min",
               async_save: bool = True):
    common.check_choice(best_mode, BEST_MODES, "best_mode")
    if keep < 1:
      raise ValueError(f"checkpoint keep must be >= 1 (the latest is needed to resume), got "
                       f"{keep}")
    self.directory = pathlib.Path(directory).absolute()
    self.best_metric, self.best_mode = best_metric, best_mode
    self._last_saved = None  # the step of the last save started (it may still be in flight)
    keepers = [policies.LatestN(n=keep)]
    if best_metric and keep_best > 0:
      keepers.append(policies.BestN(
          get_metric_fn=lambda m: float(m[best_metric]), reverse=best_mode == "min",
          n=keep_best, keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=policies.AnyPreservationPolicy(keepers),
        enable_async_checkpointing=async_save, cleanup_tmp_directories=True, create=True)
    self.manager = ocp.CheckpointManager(
        self.directory, options=options, item_names=("state", "meta"),
        item_handlers={"state": ocp.StandardCheckpointHandler(),
                       "meta": ocp.JsonCheckpointHandler()})

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
    """Saves `state` as `step` (once per step: a second save of a step is skipped).

    Raises CheckpointError (naming the cause) if this save, or the one before it still being
    written, fails.
    """
    if step in self.all_steps():
      return False
    self._check_space(step, state)
    self._last_saved = int(step)
    metrics = {k: float(v) for k, v in (metrics or {}).items()}
    info = dict(meta or {}, step=int(step), metrics=metrics)
    try:
      return self.manager.save(
          int(step), args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                             meta=ocp.args.JsonSave(info)),
          metrics=metrics or None, force=True)
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(step, e) from e

  def _check_space(self, step: int, state) -> None:
    """CheckpointError before a save that cannot fit on the disk (this host's shards of the
    state, with a margin), rather than a half-written checkpoint and orbax's traceback."""
    needed = 0
    for x in jax.tree.leaves(state):
      shards = getattr(x, "addressable_shards", None)
      if shards is None:
        needed += getattr(x, "nbytes", 0)
      else:
        needed += sum(s.data.nbytes for s in shards if s.replica_id == 0)
    try:
      free = shutil.disk_usage(self.directory).free
    except OSError:
      return
    if free < needed * 1.1 + (1 << 20):
      raise errors.CheckpointError(
          f"no space left on device for checkpoint {step} in {self.directory}: it needs about "
          f"{needed / 2**20:,.1f} MiB, {free / 2**20:,.1f} MiB are free; the checkpoints before "
          f"it are intact (latest: {_step_name(self.latest_step())}). Free space, then run "
          "again to resume")

  def _save_error(self, step, cause: BaseException) -> errors.CheckpointError:
    """The error for a failed save of `step`, after removing its partial files (orbax's
    temporary directory: on a full disk, the space it took is given back)."""
    for partial in self.directory.glob(f"{step}.orbax-checkpoint-tmp*"):
      shutil.rmtree(partial, ignore_errors=True)
    try:
      self.manager.reload()
      latest = self.manager.latest_step()
    except Exception:  # pylint: disable=broad-except
      latest = None
    return errors.CheckpointError(
        f"could not save checkpoint {step} in {self.directory}: {_cause(cause)}; the "
        f"checkpoints before it are intact (latest: {_step_name(latest)}). Free space or fix the "
        "directory, then run again to resume")

  def add_metrics(self, step: int, metrics: Mapping[str, float]) -> None:
    """Records eval `metrics` in the meta of checkpoint `step`, saved before they were known
    (the final state is saved before the final eval); `best_step` reads them."""
    self.wait()
    path = self.directory / str(step) / "meta" / "metadata"
    info = json.loads(path.read_text())
    info["metrics"] = {k: float(v) for k, v in metrics.items()}
    tmp = path.with_name("metadata.tmp")
    tmp.write_text(json.dumps(info))
    os.replace(tmp, path)

  def check_shapes(self, abstract_state, step: int) -> None:
    """WorkdirError if checkpoint `step` holds other shapes than `abstract_state` (the state of
    another model); other failures to read its metadata are left to `restore`."""
    try:
      saved = self.manager.item_metadata(int(step))["state"]
    except Exception:  # pylint: disable=broad-except
      return
    if saved is not None:
      workdir_lib.check_shapes(abstract_state, saved, f"checkpoint {step} in {self.directory}")

  def restore(self, abstract_state, step: Optional[int] = None):
    """The TrainState of `step` (default the latest), laid out as `abstract_state` says."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    self.check_shapes(abstract_state, step)
    return self._read_state(abstract_state, step)

  def _read_state(self, abstract_state, step: int):
    restored = self.manager.restore(
        int(step), args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    return restored["state"]

  def restore_latest(self, abstract_state) -> Tuple[Optional[int], Any]:
    """(step, state) of the newest readable checkpoint, (None, None) if there is none.

    A checkpoint that cannot be read is moved aside (see the module) with a warning, and the
    one before it is tried.
    """
    while True:
      step = self.latest_step()
      if step is None:
        return None, None
      self.check_shapes(abstract_state, step)
      try:
        return step, self._read_state(abstract_state, step)  # shapes checked just above
      except Exception as e:  # pylint: disable=broad-except
        aside = self.move_aside(step)
        log.warning("checkpoint %d in %s is damaged (%s); moved it to %s and falling back to "
                    "the one before it", step, self.directory, _cause(e), aside)

  def move_aside(self, step: int) -> pathlib.Path:
    """Moves checkpoint `step` to <directory>.damaged/<step>[-<time>]; returns where."""
    self.wait()
    target = self.directory.with_name(self.directory.name + ".damaged") / str(step)
    if target.exists():
      target = target.with_name(f"{step}-{time.strftime('%Y%m%d-%H%M%S')}")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(self.directory / str(step)), str(target))
    self.manager.reload()
    return target

  def read_meta(self, step: int) -> dict:
    restored = self.manager.restore(int(step),
                                    args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored["meta"] or {})

  def wait(self) -> None:
    """Blocks until the saves in flight are written; CheckpointError if one failed."""
    try:
      self.manager.wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(self._last_saved, e) from e

  def close(self) -> None:
    try:
      self.wait()
    finally:
      self.manager.close()


def _step_name(step: Optional[int]) -> str:
  return "none" if step is None else f"step {step}"


def _cause(e: BaseException) -> str:
  """What went wrong under `e`, in a few words: the operating system's error where one is named
  anywhere in its chain (e.g. 'No space left on device (errno 28)'; tensorstore reports it as
  os_error_code='28' at the end of a long message), else the innermost error, shortened."""
  chain = [e]
  while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
    chain.append(chain[-1].__cause__ or chain[-1].__context__)
  for err in reversed(chain):
    code = getattr(err, "errno", None) if isinstance(err, OSError) else None
    if code is None:
      found = re.search(r"os_error_code='?(\d+)|\[Errno (\d+)\]", str(err))
      code = found and int(found.group(1) or found.group(2))
    if code:
      return f"{os.strerror(code)} (errno {code})"
  inner = chain[-1]
  text = " ".join(str(inner).split())
  if len(text) > 160:  # the cause is at the end of a long chain of "while doing X: ..."
    text = "..." + text[-160:]
  return f"{type(inner).__name__}: {text}" if text else type(inner).__name__
