"""The training loop: `train_and_evaluate(config, workdir)` and `evaluate(config, workdir)`.

The config (configs/*.py, see `config_lib`) enters here and nowhere else. A run:

  1. builds the dataset (`data.build(config.data.name, **config.data)`) and resolves what
     depends on it -- classes or vocabulary, matched widths, steps from epochs, the best-metric
     name -- into a copy of the config, saved as workdir/config.json;
  2. takes the workdir's lock (a second run on it is refused, naming the holder) and refuses a
     config of another model than the workdir holds (algebra, model, task, shapes), before
     anything is written; other changes (steps, learning rate, eval batch, cadences) are
     applied and logged (`workdir`);
  3. builds the task, the optimiser and the jitted steps on a mesh of every device, and checks
     the train and eval batch sizes on it (before any step);
  4. restores the newest readable checkpoint in workdir/checkpoints (a damaged one is moved
     aside to checkpoints.damaged/ with a warning), or initialises from config.seed;
  5. trains from that step on: batch s is a function of s (and the seed), so a resumed run
     continues exactly where the uninterrupted one would be; a run that has reached
     train.num_steps says it is finished;
  6. logs metrics every `log_every` steps (first checking that every loss and gradient norm
     since the last check is finite: a non-finite one stops the run with its step number and
     the last good checkpoint); evaluates every `eval_every` steps and at the end; saves every
     `checkpoint_every` steps, after every eval (with its metrics, for keep-best), at the end
     (before the final eval), and on SIGTERM/SIGINT, after which it returns normally
     (preemption is not an error). Only good states are saved: finite, and -- for periodic
     checkpoints, which are held until the next step -- with a finite loss at the next step.

Workdir: config.json, model.json (sizes), metrics.jsonl, tensorboard/, checkpoints/,
eval_<step>.json (from `evaluate`), lock.json (while a run holds it), train.log (the CLI).
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
import signal
import sys
import threading
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from algebranets import algebras
from algebranets import data as data_lib
from algebranets import sparsity
from algebranets.training import checkpoint as checkpoint_lib
from algebranets.training import config_lib
from algebranets.training import distributed
from algebranets.training import metrics as metrics_lib
from algebranets.training import optim
from algebranets.training import step as step_lib
from algebranets.training import tasks as tasks_lib
from algebranets.training import workdir as workdir_lib

log = logging.getLogger("algebranets")

CHECKPOINT_DIR = "checkpoints"


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or infinite; the message names the step."""


# ----------------------------------------------------------------------------- set-up
def build_dataset(config):
  """data.build(config.data.name, **the other fields), "" fields left to the builder's default.

  The config is validated first (config_lib.validate): a bad value fails before any data is
  read."""
  config_lib.validate(config)
  kwargs = {k: v for k, v in config.data.to_dict().items() if v != ""}
  name = kwargs.pop("name")
  return data_lib.build(name, **kwargs)


def _steps_per_epoch(dataset, batch_size: int) -> float:
  """Training steps per epoch (batches of `batch_size` examples or token rows)."""
  if hasattr(dataset, "steps_per_epoch"):
    return float(dataset.steps_per_epoch(batch_size))
  return dataset.num_examples(dataset.train_split) / batch_size


def resolve_config(config, dataset) -> ml_collections.ConfigDict:
  """A copy of `config` with everything that depends on the dataset filled in (see module)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config_lib.validate(config)
  task_cls = tasks_lib.get(config.task.name)
  if not config.eval.splits:
    config.eval.splits = tuple(dataset.eval_splits)
  for split in config.eval.splits:
    if split not in dataset.eval_splits:
      raise ValueError(f"eval split {split!r} is not in {dataset.name}; splits: "
                       f"{list(dataset.eval_splits)}")
  task_cls.resolve(config, dataset)
  train = config.train
  if train.num_steps <= 0:
    if train.num_epochs <= 0:
      raise ValueError("set train.num_steps or train.num_epochs (> 0)")
    per_epoch = _steps_per_epoch(dataset, train.batch_size)
    train.num_steps = max(1, int(math.ceil(train.num_epochs * per_epoch)))
  opt = config.optimizer
  if opt.warmup_epochs > 0:
    per_epoch = _steps_per_epoch(dataset, train.batch_size)
    opt.warmup_steps = int(round(opt.warmup_epochs * per_epoch))
    opt.warmup_steps = min(opt.warmup_steps, train.num_steps - 1)
  spec = sparsity.spec_from_config(config.sparsity, train.num_steps, config.algebra)
  if spec is not None:  # the steps the fractions resolve to, so the saved config says them
    config.sparsity.begin_step, config.sparsity.end_step = spec.begin_step, spec.end_step
  if not config.checkpoint.best_metric and config.eval.splits:
    metric, mode = task_cls.best_metric(dataset)
    config.checkpoint.best_metric = f"{config.eval.splits[0]}/{metric}"
    config.checkpoint.best_mode = config.checkpoint.best_mode or mode
  config.checkpoint.best_mode = config.checkpoint.best_mode or "min"
  return config


class _Run:
  """Everything a run builds from its resolved config, shared by training and evaluation."""

  def __init__(self, config, workdir, mesh, dataset):
    self.config, self.workdir, self.mesh = config, pathlib.Path(workdir), mesh
    self.dataset = dataset
    self.is_main = jax.process_index() == 0
    self.task = tasks_lib.build(config, dataset)
    tc = config.train
    self.layout = distributed.batch_layout(
        int(tc.batch_size), mesh, microbatches=int(tc.get("microbatches", 1)),
        device_batch_size=int(tc.get("device_batch_size", 0)), can_pad=self.task.can_pad_train,
        what="train.batch_size",
        no_pad_reason=f"{self.task.name} pads no rows: they would enter the batch-norm "
                      "statistics")
    self.batch_size = self.layout.batch_size
    self.num_steps = int(config.train.num_steps)
    self.tx, self.schedule = optim.build(config.optimizer, self.num_steps, self.batch_size)
    self.pruner = _pruner(config, self.task, self.batch_size, self.num_steps)
    if self.pruner is not None:
      self.tx = sparsity.keep_pruned_zero(self.tx)
    self.compute_dtype = jnp.dtype(config.mixed_precision.compute_dtype)
    self.init_state, self.abstract_state, self.shardings = step_lib.make_init(
        self.task, self.tx, mesh, self.layout.padded_size, self.pruner,
        init_rows=self.layout.microbatch_rows)
    ck = config.checkpoint
    self.checkpointer = checkpoint_lib.Checkpointer(
        self.workdir / CHECKPOINT_DIR, keep=ck.keep, keep_best=ck.keep_best,
        best_metric=ck.best_metric or None, best_mode=ck.best_mode, async_save=ck.async_save)
    self.eval_step = step_lib.make_eval_step(self.task, mesh, self.compute_dtype)

  def restore_or_init(self, step: Optional[int] = None):
    """(state, restored): checkpoint `step`, else the newest readable one (a damaged one is
    moved aside: Checkpointer.restore_latest), else a new state from config.seed."""
    if step is not None:
      self._check_carry_rows(step)
      return self.checkpointer.restore(self.abstract_state, step), True
    latest = self.checkpointer.latest_step()
    if latest is not None:
      self._check_carry_rows(latest)
    found, state = self.checkpointer.restore_latest(self.abstract_state)
    if found is None:
      return self.init_state(jax.random.PRNGKey(self.config.seed)), False
    return state, True

  def check_eval_batches(self) -> None:
    """Raises now what evaluate_split would raise for eval.batch_size on any eval split (its
    layout on this mesh, the eval step's shapes), so that no training is spent before it."""
    layout = distributed.batch_layout(self.config.eval.batch_size, self.mesh,
                                      what="eval.batch_size")
    carry = jax.eval_shape(lambda: self.task.init_carry(layout.padded_size, False))
    batch = self.task.batch_spec(layout.padded_size, train=False)
    jax.eval_shape(self.eval_step, self.abstract_state.params, self.abstract_state.model_state,
                   carry, batch)

  def checkpoint_meta(self) -> dict[str, Any]:
    """What a checkpoint records besides the state: the experiment and the batch layout."""
    layout = self.layout
    return {"experiment": self.config.experiment,
            "batch_layout": {"batch_size": layout.batch_size, "devices": layout.devices,
                             "hosts": layout.hosts, "microbatches": layout.microbatches,
                             "padded_size": layout.padded_size}}

  def _check_carry_rows(self, step: int) -> None:
    """ValueError if the checkpoint's carry has other rows than this run's layout gives.

    A padded batch (distributed.BatchLayout) has as many carry rows as the padded batch,
    which depends on the devices and micro-batches: such a checkpoint resumes on the layout
    it was saved with.
    """
    if not jax.tree.leaves(self.abstract_state.carry):
      return
    try:
      saved = self.checkpointer.read_meta(step).get("batch_layout")
    except Exception:  # pylint: disable=broad-except
      return  # unreadable: restoring it will say so (or fall back from a damaged one)
    if not saved or saved["padded_size"] == self.layout.padded_size:
      return
    raise ValueError(
        f"checkpoint {step} in {self.checkpointer.directory} holds Transformer-XL memories of "
        f"{saved['padded_size']} rows (train.batch_size={saved['batch_size']} padded for "
        f"{saved['devices']} device(s) x {saved['microbatches']} micro-batch(es)); this run "
        f"computes {self.layout.describe()}. Resume on {saved['devices']} device(s) with "
        f"train.microbatches={saved['microbatches']} (the memories of a padded batch are laid "
        "out for them), or start a new workdir")

  def make_train_step(self):
    """The jitted train step of this run (step_lib.make_train_step)."""
    return step_lib.make_train_step(
        self.task, self.tx, self.schedule, self.shardings, self.mesh, self.compute_dtype,
        bool(self.config.train.partitionable_rng), self.pruner,
        microbatches=self.layout.microbatches)

  def train_batch(self, local) -> dict:
    """This host's training batch (real rows, from the dataset) as the global step input."""
    return distributed.global_batch(self.layout.pad(local, mask_like=self.task.target_key),
                                    self.mesh)

  def evaluate_split(self, state, split: str) -> dict[str, float]:
    """The task's metrics over every example (token) of `split`.

    eval.batch_size need not divide by the devices: each host pads its rows with masked ones.
    """
    layout = distributed.batch_layout(self.config.eval.batch_size, self.mesh,
                                      what="eval.batch_size")
    rows = distributed.batch_sharded(self.mesh)
    carry = jax.jit(lambda: self.task.init_carry(layout.padded_size, False),
                    out_shardings=rows)()
    totals: dict[str, float] = {}
    pending = None

    def add(sums):
      for k, v in distributed.tree_to_host(sums).items():
        totals[k] = totals.get(k, 0.0) + float(v)

    for local in self.dataset.eval_batches(split, layout.batch_size,
                                           process_index=jax.process_index(),
                                           process_count=jax.process_count()):
      batch = distributed.global_batch(layout.pad(local), self.mesh)
      sums, carry = self.eval_step(state.params, state.model_state, carry, batch)
      if pending is not None:  # fetch one batch behind, so the device keeps working
        add(pending)
      pending = sums
    if pending is not None:
      add(pending)
    return self.task.summarize(totals)

  def save_config(self) -> None:
    if not self.is_main:
      return
    self.workdir.mkdir(parents=True, exist_ok=True)
    path = self.workdir / "config.json"
    text = self.config.to_json_best_effort(indent=2, sort_keys=True)
    if path.exists() and path.read_text() != text:
      old = path.with_name("config.previous.json")
      path.replace(old)
      log.warning("the config differs from the one this workdir was started with; the old one "
                  "is kept as %s", old)
    path.write_text(text)


def _pruner(config, task, batch_size: int, num_steps: int) -> Optional[sparsity.Pruner]:
  """The run's sparsity.Pruner (None when config.sparsity.target is 0)."""
  spec = sparsity.spec_from_config(config.sparsity, num_steps, config.algebra)
  if spec is None:
    return None
  batch = {k: jnp.zeros(s.shape, s.dtype)
           for k, s in task.batch_spec(batch_size, train=True).items()}
  params, _ = jax.eval_shape(task.init, jax.random.PRNGKey(0), batch)
  return sparsity.Pruner(spec, params, algebras.get(config.algebra).dim)


def _sparse_summary(run: _Run, state, model: dict[str, Any]) -> dict[str, Any]:
  """`model` plus the non-zero params and MACs of the pruned parameters of `state`."""
  params = distributed.tree_to_host(state.params)
  masks = distributed.tree_to_host(state.masks)
  costs = sparsity.sparse_costs(run.task.cost_report(), run.pruner, params, masks)
  out = dict(model, nonzero_params=costs["nonzero_params"])
  ratio = costs["nonzero_macs"] / max(costs["macs"], 1)
  for key in [k for k in model if k.startswith("macs_per_")]:
    out[f"nonzero_{key}"] = model[key] * ratio
  out["sparsity"] = {"overall": costs["sparsity"], "step": int(distributed.to_host(state.step)),
                     "layers": {l["name"]: 1.0 - l["kept"] for l in costs["layers"]
                                if l["kept"] < 1.0}}
  return out


def _model_summary(run: _Run, state) -> dict[str, Any]:
  costs = run.task.costs()
  mask = optim.name_mask(state.params, run.config.optimizer.weight_decay_include,
                         run.config.optimizer.weight_decay_exclude)
  summary = dict(costs, algebra=run.config.algebra, model_name=run.config.model_name,
                 model=run.config.model.to_dict(),
                 weight_decay=(optim.describe_mask(state.params, mask)
                               if run.config.optimizer.weight_decay else "none"),
                 devices=int(run.mesh.devices.size), processes=jax.process_count(),
                 batch_layout=run.layout.describe())
  if run.pruner is not None:
    reals = sum(math.prod(w.shape) for w in run.pruner.weights.values())
    summary["pruned"] = f"{len(run.pruner.weights)} arrays ({reals:,} reals)"
  return summary


def _flat(split_metrics: dict[str, dict[str, float]]) -> dict[str, float]:
  return {f"{split}/{k}": v for split, m in split_metrics.items() for k, v in m.items()}


# ----------------------------------------------------------------------------- stop signals
class StopSignal:
  """SIGTERM / SIGINT set a flag (a second SIGINT interrupts at once).

  `requested()` is collective in multi-process runs (every host must call it at the same
  step): the run stops if any host got a signal, so all hosts save the same step together.
  """

  SIGNALS = (signal.SIGTERM, signal.SIGINT)

  def __init__(self):
    self.flag = False
    self._previous = {}

  def _handler(self, signum, frame):
    del frame
    if signum == signal.SIGINT and self.flag:
      raise KeyboardInterrupt
    self.flag = True
    log.warning("received %s: saving a checkpoint and stopping after this step",
                signal.Signals(signum).name)

  def __enter__(self):
    if threading.current_thread() is threading.main_thread():
      for s in self.SIGNALS:
        self._previous[s] = signal.signal(s, self._handler)
    return self

  def __exit__(self, *exc):
    for s, h in self._previous.items():
      signal.signal(s, h)
    self._previous.clear()
    return False

  def requested(self) -> bool:
    if jax.process_count() == 1:
      return self.flag
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.asarray([int(self.flag)], np.int32))
    return bool(np.asarray(flags).any())


# ----------------------------------------------------------------------------- training
def is_due(step: int, every: int) -> bool:
  """Whether an action repeated every `every` steps (0: never) falls on `step`."""
  return every > 0 and step % every == 0


class _Throughput:
  """Training time and steps between logs, without the first interval (it compiles) and
  without evals and saves (the clock restarts after them)."""

  def __init__(self):
    self.steps, self.seconds, self.intervals = 0, 0.0, 0

  def add(self, steps: int, seconds: float) -> None:
    self.intervals += 1
    if self.intervals > 1:
      self.steps += steps
      self.seconds += seconds

  def rates(self, units_per_step: int, unit: str, fallback: dict[str, float]
            ) -> dict[str, float]:
    keys = ("steps_per_s", f"{unit}_per_s")
    if self.seconds <= 0:
      return {k: fallback.get(k, float("nan")) for k in keys}
    return dict(zip(keys, (self.steps / self.seconds,
                           self.steps * units_per_step / self.seconds)))


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [jnp.isfinite(x).all() for x in jax.tree.leaves(tree)
            if jnp.issubdtype(x.dtype, jnp.inexact)]
  return jnp.stack(leaves).all() if leaves else jnp.asarray(True)


def _prepare(config, workdir, mesh, *, evaluating: bool):
  """(run, lock, applied): the run of `config` in `workdir`, after taking the workdir's lock
  and refusing a config of another model (workdir.check_compatible; nothing is written then).
  `applied`: the config changes from the workdir's config.json that this run applies."""
  dataset = build_dataset(config)
  config = resolve_config(config, dataset)
  lock = workdir_lib.lock_all_processes(workdir, " ".join(sys.argv))
  try:
    applied = workdir_lib.check_compatible(workdir, config)
    if evaluating:  # evaluation changes nothing of the training run: its config stays
      applied = []
    run = _Run(config, workdir, mesh, dataset)
    return run, lock, applied
  except BaseException:
    lock.release()
    raise


def train_and_evaluate(config, workdir, *, mesh=None, evaluate_during_training: bool = True
                       ) -> dict[str, Any]:
  """Trains (resuming from workdir's latest checkpoint if any) and evaluates.

  Args:
    config: an experiment config (configs/*.py get_config).
    workdir: where checkpoints, metrics and the resolved config go.
    mesh: the device mesh; default every device of every host (tests pass a smaller one).
    evaluate_during_training: False for --mode=train (no evals, so no best checkpoint).

  Returns:
    {"step", "train": last logged training metrics, "eval": {split: metrics} of the last eval,
     "throughput": {"steps_per_s", "<unit>_per_s"} without compilation, evals and saves,
     "preempted": stopped by a signal, "model": sizes, "config": the resolved config}.

  Raises:
    WorkdirError: another run holds the workdir, or it holds another model (nothing written).
    NonFiniteLossError: the loss, gradients or state became non-finite (the message names the
      step and the last good checkpoint).
  """
  mesh = mesh or distributed.make_mesh()
  run, lock, applied = _prepare(config, workdir, mesh, evaluating=False)
  config, dataset, ckpt = run.config, run.dataset, run.checkpointer
  try:
    if evaluate_during_training:
      run.check_eval_batches()  # a bad eval batch size fails now, not after the training
    state, resumed = run.restore_or_init()
    start = int(distributed.to_host(state.step))
    run.save_config()
    model = _model_summary(run, state)
    if run.is_main:
      _log_start(run, dataset, model, start, resumed, applied)
    if start >= run.num_steps:
      if run.is_main:
        log.info("finished: step %d of %d (a longer run: --config.train.num_steps=N)", start,
                 run.num_steps)
      return {"step": start, "train": {}, "eval": {}, "throughput": {}, "preempted": False,
              "model": model, "config": config}
    return _train_loop(run, state, start, model, evaluate_during_training)
  finally:
    try:
      ckpt.close()
    finally:
      lock.release()


def _log_start(run: "_Run", dataset, model, start: int, resumed: bool, applied) -> None:
  config = run.config
  log.info("dataset: %s", dataset.description)
  log.info("config: %s (resolved, in full) -- %s, %s, batch %d, %d steps, %s lr %g",
           run.workdir / "config.json", config.experiment, config.algebra,
           run.batch_size, run.num_steps, config.optimizer.name, config.optimizer.lr)
  if applied:
    log.info("config changes applied to this workdir's run: %s", "; ".join(applied))
  log.info("model: %s", json.dumps(model))
  (run.workdir / "model.json").write_text(json.dumps(model, indent=2))
  if start >= run.num_steps:
    return  # finished: train_and_evaluate says so
  log.info("%s at step %d of %d on %d device(s), %d process(es); batch: %s",
           "resuming" if resumed else "starting", start, run.num_steps,
           run.mesh.devices.size, jax.process_count(), run.layout.describe())
  layout = run.layout
  if layout.pad_rows:
    unit = layout.devices * layout.microbatches
    log.warning("train.batch_size=%d is padded with %d zero-weight rows per step (the "
                "loss is the real rows'); train.batch_size=%s would need no padding",
                layout.batch_size, layout.pad_rows,
                distributed.multiples_around(layout.batch_size, unit))


class _Held(NamedTuple):
  """A state due for a checkpoint, kept (a copy) until the next step's loss shows it good."""
  step: int
  state: Any
  metrics: Optional[dict[str, float]]


def _train_loop(run: _Run, state, start: int, model, evaluate_during_training: bool):
  """Steps `start`..num_steps; per step, in order: train, log, evaluate, save, stop.

  A checkpoint is written only of a state known to be good: finite, and with a finite loss and
  gradient norm at the step after it (which computes them from that state's parameters). So a
  periodic checkpoint of step s is a copy held on the device until step s + 1 is checked, then
  saved; the final and the preemption checkpoints, which have no next step, are saved at once
  if every parameter and optimiser entry is finite.
  """
  config, task, ckpt = run.config, run.task, run.checkpointer
  tc = config.train
  writer = metrics_lib.MetricWriter(run.workdir, enabled=run.is_main, resume_step=start)
  progress = metrics_lib.Progress(run.num_steps, start, task.unit, enabled=run.is_main)
  train_step = run.make_train_step()
  batches = run.dataset.train_batches(
      run.batch_size, process_index=jax.process_index(), process_count=jax.process_count(),
      start_step=start, seed=config.seed)
  units_per_step = task.units(task.batch_spec(run.batch_size, train=True))
  evals = evaluate_during_training and bool(config.eval.splits)
  pending = []  # (step, device metrics) not yet checked and logged
  last_train: dict[str, float] = {}
  last_eval: dict[str, dict[str, float]] = {}
  throughput = _Throughput()
  held: Optional[_Held] = None
  preempted = False
  try:
    with StopSignal() as stop:
      for step in range(start, run.num_steps):
        state, m = train_step(state, run.train_batch(next(batches)))
        s = step + 1
        pending.append((s, m))
        last = s == run.num_steps
        # Hosts agree on stopping at log steps (which wait for the device anyway); a single
        # process checks its flag every step.
        check = jax.process_count() == 1 or is_due(s, tc.log_every)
        preempted = (check and stop.requested()) or s == tc.preempt_at_step
        eval_now = evals and (last or is_due(s, tc.eval_every))
        save_now = eval_now or last or preempted or is_due(s, tc.checkpoint_every)

        # Log: every log_every steps, and before a save (which needs the losses checked).
        if is_due(s, tc.log_every) or last or preempted or save_now:
          last_train = _check_and_log(run, pending, s, progress, throughput, writer,
                                      units_per_step, start)
          pending = []
        elif held is not None:  # checked, not logged: the log cadence stays the same
          pending = _check_finite(run, pending, start)
        if held is not None:  # step s computed its loss from the held state: it is good
          _save(run, held.step, held.state, held.metrics)
          held = None

        # Evaluate (the final state is saved first: a failing eval loses no training).
        if eval_now:
          if last:
            _save(run, s, state, None)
          last_eval = {split: run.evaluate_split(state, split) for split in config.eval.splits}
          for split, values in last_eval.items():
            writer.write(s, split, values)
            progress.message(f"step {s} {split}: {metrics_lib.format_metrics(values)}")
          if last and run.is_main and s in ckpt.all_steps():
            ckpt.add_metrics(s, _flat(last_eval))

        # Save.
        if last or preempted:
          _save(run, s, state, _flat(last_eval) if eval_now else None)
        elif save_now:
          held = _Held(s, jax.tree.map(lambda x: x.copy(), state),
                       _flat(last_eval) if eval_now else None)
        if eval_now or is_due(s, tc.checkpoint_every):
          writer.flush()
          progress.reset_clock(s)  # evals and saves are not training time

        # Stop.
        if preempted and not last:
          progress.message(f"stopped at step {s} by a signal; checkpoint saved in "
                           f"{ckpt.directory}")
          break
  finally:
    ckpt.wait()
    writer.close()
    progress.close()
  final = int(distributed.to_host(state.step))
  if run.pruner is not None:
    model = _sparse_summary(run, state, model)
    if run.is_main:
      (run.workdir / "model.json").write_text(json.dumps(model, indent=2))
  return {"step": final, "train": last_train, "eval": last_eval,
          "throughput": throughput.rates(units_per_step, task.unit, last_train),
          "preempted": bool(preempted and final < run.num_steps), "model": model,
          "config": config}


def _check_and_log(run: _Run, pending, step: int, progress, throughput: _Throughput, writer,
                   units_per_step: int, start: int) -> dict[str, float]:
  """Fetches the pending metrics, stops on a non-finite one, logs and returns their mean."""
  host = _check_finite(run, pending, start)
  mean = {k: float(np.mean([m[k] for _, m in host])) for k in host[-1][1]}
  mean["lr"] = float(host[-1][1]["lr"])
  rates, seconds = progress.update(step, units_per_step, mean)
  throughput.add(len(host), seconds)
  out = dict(mean, **rates)
  writer.write(step, "train", out)
  return out


def _check_finite(run: _Run, pending, start: int) -> list:
  """The pending (step, metrics) on the host; NonFiniteLossError at the first non-finite loss
  or gradient norm."""
  host = [(s, distributed.tree_to_host(m)) for s, m in pending]
  for s, m in host:
    if not (np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])):
      what = "loss" if not np.isfinite(m["loss"]) else "gradient norm"
      raise _non_finite(run, s, start,
                        f"non-finite training {what} (loss {float(m['loss'])}, gradient norm "
                        f"{float(m['grad_norm'])}) at step {s} (computed from the state after "
                        f"step {s - 1})")
  return host


def _non_finite(run: _Run, bad: int, start: int, what: str) -> "NonFiniteLossError":
  """The error for a non-finite loss at step `bad`: it names the newest good checkpoint.

  The state after step bad - 1 gave it, so a checkpoint of that step is not good: this run
  never writes one (see _train_loop), but it may be the one the run resumed from (saved at a
  preemption or at the end of a shorter run); it is moved aside, so a rerun starts from a good
  one.
  """
  ckpt = run.checkpointer
  ckpt.wait()  # let the saves in flight land, so the message names the true latest
  if bad - 1 == start and start in ckpt.all_steps() and run.is_main:
    aside = ckpt.move_aside(start)
    what += (f"; checkpoint {start}, which this run resumed from, gives it, so it was moved to "
             f"{aside}")
  good = [s for s in ckpt.all_steps() if s <= bad - 2]
  latest = max(good) if good else None
  return NonFiniteLossError(
      f"{what}; stopping. The last good checkpoint is "
      f"{'step ' + str(latest) if latest is not None else 'none'} in {ckpt.directory}"
      + ("; a rerun resumes from it (lower optimizer.lr or add optimizer.grad_clip_norm)"
         if latest is not None else "; a rerun starts afresh (lower optimizer.lr or add "
         "optimizer.grad_clip_norm)"))


def _save(run: _Run, step: int, state, metrics: Optional[dict[str, float]]) -> None:
  """Saves `state` as checkpoint `step` if every parameter and optimiser entry is finite."""
  if not bool(distributed.to_host(_all_finite((state.params, state.opt_state,
                                               state.model_state)))):
    raise _non_finite(run, step + 1, -1,
                      f"non-finite parameters or optimiser state after step {step} (not saved)")
  run.checkpointer.save(step, state, metrics=metrics, meta=run.checkpoint_meta())


def restore_state(config, workdir, *, step: Optional[int] = None, mesh=None):
  """The TrainState saved in workdir (its latest checkpoint, or `step`), on `mesh`.

  E.g. to sample from a trained language model, or to compare runs. The config is the one the
  run was started with (or its resolved copy from workdir/config.json).
  """
  return restore_run(config, workdir, step=step, mesh=mesh)[0]


def restore_run(config, workdir, *, step: Optional[int] = None, mesh=None):
  """(state, run): `restore_state` and what the run builds from its config (its `task`,
  `pruner`, resolved `config`), e.g. to export a pruned model (sparse_export.export_run).

  Read-only: takes no lock and writes nothing (a checkpoint of other shapes is refused)."""
  mesh = mesh or distributed.make_mesh()
  dataset = build_dataset(config)
  run = _Run(resolve_config(config, dataset), workdir, mesh, dataset)
  try:
    step = run.checkpointer.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {run.checkpointer.directory}; train first, "
                              "with this --workdir")
    run._check_carry_rows(step)  # pylint: disable=protected-access
    return run.checkpointer.restore(run.abstract_state, step), run
  finally:
    run.checkpointer.close()


# ----------------------------------------------------------------------------- evaluation
def evaluate(config, workdir, *, mesh=None, splits: Optional[Sequence[str]] = None,
             step: Optional[int] = None) -> dict[str, dict[str, float]]:
  """Evaluates a checkpoint of workdir on `splits` (default every eval split of the dataset).

  The checkpoint is `step`, else config.eval.checkpoint: "latest" or "best" (by the
  checkpoint's best metric). Results go to the log, metrics.jsonl and workdir/eval_<step>.json.
  """
  mesh = mesh or distributed.make_mesh()
  run, lock, _ = _prepare(config, workdir, mesh, evaluating=True)
  config, dataset = run.config, run.dataset
  try:
    ckpt = run.checkpointer
    if step is None and config.eval.checkpoint == "best":
      step = ckpt.best_step()
    if step is None and config.eval.checkpoint == "latest":
      step, state = ckpt.restore_latest(run.abstract_state)
    elif step is not None:
      state, _ = run.restore_or_init(step)
    if step is None:
      raise FileNotFoundError(
          f"no {config.eval.checkpoint} checkpoint in {ckpt.directory} to evaluate; train first "
          "(--mode=train or train_and_eval with this --workdir)")
    splits = tuple(splits or dataset.eval_splits)
    if run.is_main:
      log.info("evaluating step %d of %s on %s (%s, %s)", step, ckpt.directory, list(splits),
               config.experiment, config.algebra)
    results = {}
    for split in splits:
      results[split] = run.evaluate_split(state, split)
      if run.is_main:
        log.info("step %d %s: %s", step, split, metrics_lib.format_metrics(results[split]))
    if run.is_main:
      writer = metrics_lib.MetricWriter(run.workdir, enabled=True)
      for split, values in results.items():
        writer.write(step, f"eval_{split}", values)
      writer.close()
      (run.workdir / f"eval_{step}.json").write_text(
          json.dumps({"step": step, "checkpoint": config.eval.checkpoint, "metrics": results},
                     indent=2))
    return results
  finally:
    try:
      run.checkpointer.close()
    finally:
      lock.release()
