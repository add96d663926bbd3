"""Optimiser pieces that keep pruned weights at zero through training (optax transforms).

`keep_pruned_zero` masks the gradients before the optimiser and its updates after it, so a
pruned component gets the update +0 whatever the optimiser's state. When the masks change,
`Pruner.update` also zeroes the optimiser's per-parameter state (momentum, Adam's moments) of
the newly pruned components (`zero_pruned_state`), so nothing of their history survives.
"""

from __future__ import annotations

import jax.numpy as jnp
import optax

from algebranets.sparsity.masks import apply_masks, mask_params_tree

def keep_pruned_zero(inner: optax.GradientTransformation
                     ) -> optax.GradientTransformationExtraArgs:
  """`inner` with its input gradients and output updates masked (extra argument `masks`).

  update(grads, state, params, masks=...) zeroes the pruned gradient components before
  `inner` (so weight decay, clipping and the moments see no gradient there) and the pruned
  update components after it (so a pruned parameter at 0 stays exactly 0 whatever `inner`'s
  state holds). The state is `inner`'s own (same structure), so `optax.tree_map_params`
  and checkpoints see no difference; masks None or {} is `inner` unchanged.
  """
  inner = optax.with_extra_args_support(inner)

  def update(updates, state, params=None, *, masks=None, **extra):
    updates = apply_masks(updates, masks)
    updates, state = inner.update(updates, state, params, **extra)
    return apply_masks(updates, masks), state

  return optax.GradientTransformationExtraArgs(inner.init, update)


def zero_pruned_state(tx: optax.GradientTransformation, opt_state, params, masks):
  """`opt_state` with every per-parameter entry (momentum, Adam mu/nu, ...) of a pruned
  component set to 0: `optax.tree_map_params` finds the copies of the params tree in it."""
  if not masks:
    return opt_state

  def zero(x, m):
    if m is True:  # not a pruned weight
      return x
    return jnp.where(m, x, jnp.zeros((), x.dtype))

  return optax.tree_map_params(tx, zero, opt_state, mask_params_tree(params, masks))
