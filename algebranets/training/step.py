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

from typing import Any, Callable, Optional, Tuple

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

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
              pruner: Optional[sparsity.Pruner] = None
              ) -> Tuple[Callable, TrainState, TrainState]:
  """(init_state jitted, abstract state with shardings, state shardings).

  init_state(key) initialises the parameters from split(key)[0] and keeps split(key)[1] as the
  run's PRNG key (`TrainState.rng`). The initialisation is a replicated computation, so it uses
  the classic (non-partitionable) threefry: same values on any mesh, and XLA:CPU compiles it
  several times faster for the [..., D]-shaped algebra weights (seconds per weight otherwise).
  With a `pruner`, the state holds its masks (pruned already when pruning begins at step 0).
  """
  def init_state(key):
    init_key, run_key = jax.random.split(key)
    spec = task.batch_spec(batch_size, train=True)
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


def make_train_step(task, tx: optax.GradientTransformation, schedule: optax.Schedule,
                    shardings: TrainState, mesh: Mesh, compute_dtype=jnp.float32,
                    partitionable_rng: bool = True,
                    pruner: Optional[sparsity.Pruner] = None) -> Callable:
  """train_step(state, batch) -> (state, metrics), jitted with the state donated.

  metrics: the task's training metrics plus "loss", "grad_norm" (before clipping) and "lr"
  (the learning rate this step used), all float32 scalars; with a `pruner` also its
  "sparsity/..." metrics of the new parameters.

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
  def train_step(state: TrainState, batch):
    rng = distributed.step_rng(state.rng, state.step)

    def loss_fn(params):
      return task.loss(cast_floating(params, compute_dtype), state.model_state, state.carry,
                       batch, rng)

    with jax.threefry_partitionable(partitionable_rng):
      (loss, (metrics, model_state, carry)), grads = jax.value_and_grad(
          loss_fn, has_aux=True)(state.params)
    masks = state.masks
    if pruner is None:
      updates, opt_state = tx.update(grads, state.opt_state, state.params)
      params = optax.apply_updates(state.params, updates)
    else:
      updates, opt_state = tx.update(grads, state.opt_state, state.params, masks=masks)
      params = sparsity.apply_masks(optax.apply_updates(state.params, updates), masks)
      params, masks, opt_state = pruner.update(state.step + 1, params, masks, opt_state, tx)
    metrics = dict(metrics, loss=loss, grad_norm=optax.tree.norm(grads),
                   lr=jnp.asarray(schedule(state.step), jnp.float32))
    if pruner is not None:
      metrics.update(pruner.metrics(params, state.step + 1))
    new_state = TrainState(step=state.step + 1, params=params,
                           model_state=cast_floating(model_state, jnp.float32),
                           opt_state=opt_state, carry=carry, rng=state.rng, masks=masks)
    return new_state, jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), metrics)

  repl = distributed.replicated(mesh)
  return jax.jit(train_step, in_shardings=(shardings, distributed.batch_sharded(mesh)),
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
