"""The `Pruner` of a model: which weights are pruned, in what units, and the jittable mask
updates the train step calls (scopes: the package docstring)."""

from __future__ import annotations

import math
import re

import jax
import jax.numpy as jnp
import optax

from algebranets import common
from algebranets.sparsity import masks as masks_lib
from algebranets.sparsity.masks import apply_masks, erk_sparsities, flat_masks, select
from algebranets.sparsity.schedule import is_update_step, sparsity_at
from algebranets.sparsity.spec import BLOCKS, REAL_WEIGHTS, Spec
from algebranets.sparsity.transforms import zero_pruned_state


class Pruner:
  """The pruning of one model: which weights, their units, and the jittable mask updates."""

  def __init__(self, spec: Spec, params, algebra_dim: int, real_weights: str = REAL_WEIGHTS):
    """Checks the selected weights (arrays or ShapeDtypeStructs of `params`).

    Raises:
      ValueError: no weight selected, a weight whose trailing axis is not the algebra's
        (name it in `real_weights`), or a block kind whose blocks do not tile a weight.
    """
    self.spec = spec
    names = select(params, spec.include, spec.exclude)
    if not names:
      raise ValueError(f"sparsity include={spec.include!r} exclude={spec.exclude!r} selects no "
                       f"parameter; names: {list(common.named_leaves(params))[:12]} ...")
    leaves = common.named_leaves(params)
    real = re.compile(real_weights) if real_weights else None
    self.weights: dict[str, masks_lib.Weight] = {}
    for name in names:
      keys, leaf = leaves[name]
      shape = tuple(leaf.shape)
      has_axis = not (real and real.search(name))
      if has_axis and (len(shape) < 2 or shape[-1] != algebra_dim):
        raise ValueError(f"parameter {name} {shape} has no trailing algebra axis of size "
                         f"{algebra_dim}; exclude it, or match it with real_weights")
      w = masks_lib.Weight(keys=keys, shape=shape, has_axis=has_axis)
      if spec.nm != (0, 0):
        view = shape if has_axis else shape + (1,)
        if len(view) < 3 or view[-3] % spec.nm[1]:
          raise ValueError(f"N:M sparsity {spec.nm[0]}:{spec.nm[1]} needs the Cin (A) axis of "
                           f"{name} {shape} to be a multiple of {spec.nm[1]}; exclude it "
                           "(sparsity.exclude) or pick another M")
      if spec.kind == "block":
        view = shape if has_axis else shape + (1,)
        bh, bw = spec.block
        if len(view) < 3 or view[-3] % bh or view[-2] % bw:
          raise ValueError(f"block {bh}x{bw} does not tile the [A, B] = {view[-3:-1]} axes of "
                           f"{name} {shape}; exclude it (sparsity.exclude) or pick another "
                           f"sparsity.block of {list(BLOCKS)}")
      self.weights[name] = w
    # ERK: each weight's final sparsity, from its unit grid (never the algebra axis).
    self.final_sparsity: dict[str, float] = {n: spec.target for n in self.weights}
    if spec.scope == "erk":
      grids = {n: (w.shape[:-1] if w.has_axis else w.shape) for n, w in self.weights.items()}
      if spec.kind == "block":
        bh, bw = spec.block
        grids = {n: g[:-2] + (g[-2] // bh, g[-1] // bw) for n, g in grids.items()}
      units = None
      if spec.kind == "unstructured":  # units are components; the score still ignores D
        units = {n: math.prod(w.shape) for n, w in self.weights.items()}
      self.final_sparsity = erk_sparsities(grids, spec.target, units)

  # -- masks
  def mask_shape(self, name: str) -> tuple:
    w = self.weights[name]
    if not w.has_axis:
      return w.shape
    return w.shape if self.spec.kind == "unstructured" else w.shape[:-1] + (1,)

  def unit_size(self, name: str) -> int:
    """Real components per unit."""
    w = self.weights[name]
    if self.spec.kind == "unstructured":
      return 1
    t = w.shape[-1] if w.has_axis else 1
    return t * (self.spec.block[0] * self.spec.block[1] if self.spec.kind == "block" else 1)

  def full_masks(self):
    """Masks keeping everything."""
    return masks_lib.nest({w.keys: jnp.ones(self.mask_shape(n), jnp.bool_)
                           for n, w in self.weights.items()})

  def compute_masks(self, params, masks, sparsity):
    """New masks pruning `sparsity` (a scalar, may be traced) of the units (see the module).

    `masks` (the current ones, or None) only breaks ties: what is pruned goes first.
    """
    spec, old = self.spec, flat_masks(masks) if masks else {}
    leaves = common.named_leaves(params)
    scores = {}
    for name, w in self.weights.items():
      v = w.view(leaves[name][1])
      s = masks_lib.unit_scores(v, spec.kind, spec.block, spec.norm).astype(jnp.float32)
      if name in old:
        s = jnp.where(masks_lib.unit_mask(w.view(old[name]), spec.kind, spec.block), s, -1.0)
      scores[name] = s
    if spec.scope == "global":
      flat = jnp.concatenate([s.reshape(-1) for s in scores.values()])
      keep_all = masks_lib.keep_largest(flat, jnp.round(sparsity * flat.size).astype(jnp.int32))
      kept, start = {}, 0
      for name, s in scores.items():
        kept[name] = keep_all[start:start + s.size].reshape(s.shape)
        start += s.size
    elif spec.nm != (0, 0):
      n, m = spec.nm
      per_group = jnp.round((m - n) * sparsity / spec.target).astype(jnp.int32)
      kept = {name: masks_lib.keep_largest_in_groups(s, m, per_group)
              for name, s in scores.items()}
    elif spec.scope == "erk":  # each weight at its ERK sparsity, scaled along the schedule
      kept = {name: masks_lib.keep_largest(s, jnp.round(
                  sparsity / spec.target * self.final_sparsity[name] * s.size).astype(jnp.int32))
              for name, s in scores.items()}
    else:  # "layer": uniform, every weight at s
      kept = {name: masks_lib.keep_largest(s, jnp.round(sparsity * s.size).astype(jnp.int32))
              for name, s in scores.items()}
    return masks_lib.nest({
        w.keys: w.unview(masks_lib.expand_units(kept[name], spec.kind, spec.block))
        for name, w in self.weights.items()})

  # -- training
  def init(self, params):
    """(params, masks) at step 0: pruned already if step 0 is a mask update step."""
    masks = self.full_masks()
    if self.spec.begin_step == 0:  # both schedules update the masks at their begin step
      masks = self.compute_masks(params, masks, sparsity_at(self.spec, 0))
    return apply_masks(params, masks), masks

  def update(self, step, params, masks, opt_state, tx: optax.GradientTransformation):
    """(params, masks, opt_state) after `step` steps: on a mask update step new masks, the
    params and the optimiser's per-parameter state zeroed where pruned; else unchanged."""
    def prune(operand):
      params, masks, opt_state = operand
      masks = self.compute_masks(params, masks, sparsity_at(self.spec, step))
      return (apply_masks(params, masks), masks, zero_pruned_state(tx, opt_state, params, masks))

    return jax.lax.cond(is_update_step(self.spec, step), prune, lambda o: o,
                        (params, masks, opt_state))

  def metrics(self, params, step) -> dict[str, jax.Array]:
    """sparsity/overall (zero reals over the pruned weights' reals), sparsity/target (the
    schedule's value) and sparsity/<weight name> (fraction of its units that are all zero)."""
    spec, leaves = self.spec, common.named_leaves(params)
    out, zeros, total = {}, 0.0, 0
    for name, w in self.weights.items():
      v = w.view(leaves[name][1])
      zero = masks_lib.unit_scores(jnp.abs(v), spec.kind, spec.block, "linf") == 0
      frac = jnp.mean(zero.astype(jnp.float32))
      out[f"sparsity/{name}"] = frac
      zeros = zeros + frac * math.prod(w.shape)
      total += math.prod(w.shape)
    out["sparsity/overall"] = zeros / total
    out["sparsity/target"] = sparsity_at(spec, step)
    return out
