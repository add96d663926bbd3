"""The jitted train and eval steps: pure functions over the data-parallel mesh.

  init_state(rng)                 -> TrainState                 (jitted, out_shardings)
  train_step(state, batch)        -> (state, metrics)           (state donated)
  eval_step(params, model_state, carry, batch) -> (sums, carry) (carry donated)

Shardings (see `distributed`): the state is replicated except its `carry` (Transformer-XL
memories), which is split over the batch like the batch itself; metrics and eval sums come back
replicated. Nothing here reads a flag or a global: the task, the optimiser and the compute dtype
are arguments, closed over before jitting.

Mixed precision (`compute_dtype` bfloat16): parameters stay float32 in the state and the
optimiser; the loss casts them (and the task casts its float inputs) to the compute dtype, so
the forward and backward passes run in bfloat16 and the gradients arrive in float32. Losses and
metrics are reduced in float32; batch-norm statistics are kept in float32 by `nn.BatchNorm`.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from algebranets import sparsity
from algebranets.training import distributed
from algebranets.training.state import TrainState


def cast_floating(tree, dtype) -> Any:
  """Floating-point leaves of `tree` cast to `dtype`; others unchanged."""
  dtype = jnp.dtype(dtype)

  def cast(x):
    return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype else x

  return jax.tree.map(cast, tree)


def state_shardings(abstract_state: TrainState, mesh: Mesh) -> TrainState:
  """NamedShardings of every state leaf: carry batch-sharded, the rest replicated."""
  repl = distributed.replicated(mesh)
  rows = distributed.batch_sharded(mesh)
  shardings = jax.tree.map(lambda _: repl, abstract_state)
  return shardings._replace(carry=jax.tree.map(lambda _: rows, abstract_state.carry))


def make_init(task, tx: optax.GradientTransformation, mesh: Mesh, batch_size: int,
              pruner: Optional[sparsity.Pruner] = None, init_rows: Optional[int] = None
              ) -> tuple[Callable, TrainState, TrainState]:
  """(init_state jitted, abstract state with shardings, state shardings).

  batch_size: the rows of the global arrays the train step sees (B', padding included), which
  the carry (Transformer-XL memories) has. init_rows: the rows of the zero batch the model is
  initialised on (default batch_size); parameters do not depend on it, and as the
  initialisation runs replicated on every device, a small batch (one micro-batch's rows of a
  device) keeps its memory small.

  init_state(key) initialises the parameters from split(key)[0] and keeps split(key)[1] as the
  run's PRNG key (`TrainState.rng`). The initialisation is a replicated computation, so it uses
  the classic (non-partitionable) threefry: same values on any mesh, and XLA:CPU compiles it
  several times faster for the [..., D]-shaped algebra weights (seconds per weight otherwise).
  With a `pruner`, the state holds its masks (pruned already when pruning begins at step 0).
  """
  def init_state(key):
    init_key, run_key = jax.random.split(key)
    spec = task.batch_spec(init_rows or batch_size, train=True)
    batch = {k: jnp.zeros(s.shape, s.dtype) for k, s in spec.items()}
    with jax.threefry_partitionable(False):
      params, model_state = task.init(init_key, batch)
    masks = ()
    if pruner is not None:
      params, masks = pruner.init(params)
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, model_state=model_state,
                      opt_state=tx.init(params), carry=task.init_carry(batch_size, train=True),
                      rng=run_key, masks=masks)

  key = jax.random.PRNGKey(0)
  shapes = jax.eval_shape(init_state, key)
  shardings = state_shardings(shapes, mesh)
  abstract = jax.tree.map(lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
                          shapes, shardings)
  return jax.jit(init_state, out_shardings=shardings), abstract, shardings


def to_microbatches(x: jax.Array, k: int) -> jax.Array:
  """[B, ...] -> [k, B/k, ...]: micro-batch j is rows j, j + k, j + 2k, ... of the batch.

  Strided rows keep every micro-batch on every device without moving data: a device holding
  a contiguous block of B/N rows (a multiple of k) holds m = B/(N·k) rows of each micro-batch.
  And the grouping depends on k only, not on the device count.
  """
  return jnp.swapaxes(x.reshape((x.shape[0] // k, k) + x.shape[1:]), 0, 1)  # [k, B/k, ...]


def from_microbatches(x: jax.Array) -> jax.Array:
  """[k, B/k, ...] -> [B, ...], the inverse of `to_microbatches`."""
  return jnp.swapaxes(x, 0, 1).reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


def make_train_step(task, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    shardings: TrainState, mesh: Mesh, compute_dtype=jnp.float32,
                    partitionable_rng: bool = True,
                    pruner: Optional[sparsity.Pruner] = None,
                    microbatches: int = 1) -> Callable:
  """train_step(state, batch) -> (state, metrics), jitted with the state donated.

  metrics: the task's training metrics plus "loss", "grad_norm" (before clipping) and "lr"
  (the learning rate this step used), all float32 scalars; with a `pruner` also its
  "sparsity/..." metrics of the new parameters.

  Micro-batches (`microbatches` k > 1; `train.microbatches`): the batch [B, ...] is split into
  k micro-batches of B/k rows (`to_microbatches`: rows j, j+k, ...; every device keeps its own
  rows), a `lax.scan` computes each one's loss and gradients and sums them, and one optimiser
  update follows, so the memory is one micro-batch's activations. Every sum is weighted by the
  micro-batch's share of the batch's units (examples or tokens; its real ones when the batch
  is padded), so the loss, the gradients and every metric are those of the whole batch: the
  mean over all its examples or tokens, as with k = 1 (to float32 rounding).
    - Transformer-XL memories: micro-batch j reads and writes the memory rows of its own data
      rows, so the carry after the step is the full batch's.
    - Batch norm: the batch statistics are those of each micro-batch (as ghost batch norm, or
      per-device statistics elsewhere), so a ResNet's gradients differ from the k = 1 step's
      by exactly that; the running averages are updated once per step, from the mean over the
      micro-batches of what each would have set (every micro-batch starts from the same
      running averages): the EMA time constant in steps does not change with k.
    - Dropout: micro-batch j draws from fold_in(step key, j), so a micro-batched run draws
      other dropout masks than the k = 1 run (same distribution); with k = 1 nothing changes.
      Runs with the same k draw the same masks on any device count.
  A batch with a "mask" (padding rows, see `distributed.BatchLayout`) is passed to the task,
  which averages over the unmasked units only. Cost: XLA all-reduces the gradients once per
  micro-batch (inside the scan), not once per step; the batch and memory rows never move.

  Pruning (`pruner`, with `tx` wrapped in `sparsity.keep_pruned_zero`): the optimiser gets the
  masks (gradients and updates masked), the new parameters are masked again, and when the
  step count reaches a mask update step the masks are recomputed from the new parameters
  (`Pruner.update`, a lax.cond: one program for every step), which also zeroes the pruned
  entries of the optimiser state. So the state after step t always has the sparsity s_t.

  partitionable_rng: trace the step with the partitionable threefry (each device draws only
  its own rows' random bits: per-device streams, see `distributed`). False draws every bit
  on every device (the same values on any mesh either way); it is for CPU-sized runs, where
  XLA:CPU compiles partitionable dropout masks of [..., C, D] activations very slowly.
  """
  k = int(microbatches)
  if k < 1:
    raise ValueError(f"microbatches must be >= 1, got {microbatches}")
  rows = distributed.batch_sharded(mesh)
  stacked = NamedSharding(mesh, P(None, distributed.DATA_AXIS))  # [k, B/k, ...]

  def loss_and_grads(params, model_state, carry, batch, rng):
    """(grads, metrics with "loss", new model_state, new carry) of one (micro-)batch."""
    def loss_fn(p):
      return task.loss(cast_floating(p, compute_dtype), model_state, carry, batch, rng)

    with jax.threefry_partitionable(partitionable_rng):
      (loss, (metrics, model_state, carry)), grads = jax.value_and_grad(
          loss_fn, has_aux=True)(params)
    metrics = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), dict(metrics, loss=loss))
    return grads, metrics, cast_floating(model_state, jnp.float32), carry

  def accumulate(state: TrainState, batch, rng):
    """loss_and_grads of the whole batch, through k micro-batches (see the docstring)."""
    if k == 1:
      return loss_and_grads(state.params, state.model_state, state.carry, batch, rng)
    split = lambda x: jax.lax.with_sharding_constraint(to_microbatches(x, k), stacked)
    batches, carries = jax.tree.map(split, batch), jax.tree.map(split, state.carry)
    if "mask" in batches:  # each micro-batch's share of the real units
      units = jnp.sum(batches["mask"].reshape(k, -1).astype(jnp.float32), axis=1)   # [k]
      weights = units / jnp.maximum(jnp.sum(units), 1.0)
    else:
      weights = jnp.full((k,), 1.0 / k, jnp.float32)
    local = lambda tree: jax.tree.map(
        lambda x: jax.lax.with_sharding_constraint(x, rows), tree)
    mb_shape, carry_shape = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype),
                                         (batches, carries))
    _, metric_shapes, _, _ = jax.eval_shape(loss_and_grads, state.params, state.model_state,
                                            carry_shape, mb_shape, rng)
    floating = lambda x: jnp.issubdtype(x.dtype, jnp.floating)
    zeros = lambda tree: jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), tree)
    init = (zeros(state.params), zeros(metric_shapes),
            jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32) if floating(x) else x,
                         state.model_state))

    def body(sums, xs):
      j, w, mb, carry = xs
      grads, metrics, model_state, carry = loss_and_grads(
          state.params, state.model_state, local(carry), local(mb), jax.random.fold_in(rng, j))
      add = lambda s, x: s + w * x.astype(jnp.float32)
      # Running statistics: the weighted mean over micro-batches; integer state (none in
      # this library's modules) is the same from every micro-batch and is kept as it is.
      mean_state = lambda s, x: add(s, x) if floating(x) else x
      sums = (jax.tree.map(add, sums[0], grads), jax.tree.map(add, sums[1], metrics),
              jax.tree.map(mean_state, sums[2], model_state))
      return sums, local(carry)

    (grads, metrics, model_state), carries = jax.lax.scan(
        body, init, (jnp.arange(k), weights, batches, carries))
    carry = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(from_microbatches(x), rows),
                         carries)
    return grads, metrics, model_state, carry

  def train_step(state: TrainState, batch):
    rng = distributed.step_rng(state.rng, state.step)
    grads, metrics, model_state, carry = accumulate(state, batch, rng)
    masks = state.masks
    if pruner is None:
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
    else:
      updates, opt_state = tx.update(grads, state.opt_state, state.params, masks=masks)
      params = sparsity.apply_masks(optax.apply_updates(state.params, updates), masks)
      params, masks, opt_state = pruner.update(state.step + 1, params, masks, opt_state, tx)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads),
                   lr=jnp.asarray(schedule(state.step), jnp.float32))
    if pruner is not None:
      metrics.update(pruner.metrics(params, state.step + 1))
    new_state = TrainState(step=state.step + 1, params=params, model_state=model_state,
                           opt_state=opt_state, carry=carry, rng=state.rng, masks=masks)
    return new_state, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)

  repl = distributed.replicated(mesh)
  return jax.jit(train_step, in_shardings=(shardings, rows),
                 out_shardings=(shardings, repl), donate_argnums=0)


def make_eval_step(task, mesh: Mesh, compute_dtype=jnp.float32) -> Callable:
  """eval_step(params, model_state, carry, batch) -> (sums, carry), carry donated.

  sums: the task's per-batch sums over unmasked examples/tokens (replicated float32).
  """
  def eval_step(params, model_state, carry, batch):
    sums, carry = task.eval_sums(cast_floating(params, compute_dtype), model_state, carry, batch)
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), sums), carry

  repl = distributed.replicated(mesh)
  rows = distributed.batch_sharded(mesh)
  return jax.jit(eval_step, in_shardings=(repl, repl, rows, rows), out_shardings=(repl, rows),
                 donate_argnums=2)
