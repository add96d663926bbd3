"""The train state: everything a checkpoint must hold to continue a run exactly.

One NamedTuple pytree, declared here and nowhere else (a checkpoint is this tuple). Shapes:
B global batch rows, M memory length, C model width (elements), D algebra components.

  step         int32 []        optimiser steps taken; the next batch is batch `step`
  params       hk.Params       float32 parameters (master copy, also under mixed precision)
  model_state  hk.State        non-trained state: batch-norm running statistics; {} if none
  opt_state    optax.OptState  the optimiser's state (momentum, Adam moments, schedule count)
  carry        pytree          state carried from one training batch to the next: the
                               Transformer-XL memories, one [B', M, C, D] per layer, sharded
                               over the batch like the data; () for tasks without one. B' is
                               the batch with its padding rows (distributed.BatchLayout; B
                               itself when the batch splits over devices x micro-batches)
  rng          uint32 [2]      the run's base PRNG key; step s uses fold_in(rng, s)
  masks        dict or ()      the pruning masks (`sparsity`): bool, True = kept, a nested dict
                               like `params` holding only the pruned weights ({module: {name:
                               [..., 1] or [..., D]}}); () when config.sparsity.target is 0

Everything but `carry` is replicated over the devices; `carry` rows live with their data rows.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax


class TrainState(NamedTuple):
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  carry: Any
  rng: jax.Array
  masks: Any = ()
