"""Masks: pruning units, their scores, which units to keep, and applying masks to a tree.

A pruned weight is viewed as [..., A, B, T] (`Weight.view`; the package docstring); its units
are scored by a norm (`unit_scores`), the lowest are pruned (`keep_largest`, or per group of M
for N:M: `keep_largest_in_groups`) and the unit mask is broadcast back to the weight
(`expand_units`). Masks are nested dicts like the Haiku params holding only the pruned weights;
`flat_masks` names them by their path "module/.../name" (`common.named_leaves`).

ERK allocation (Evci et al. 2020, RigL; Mocanu et al. 2018 for dense layers; `erk_sparsities`):
a weight with non-algebra axes (n_1, ..., n_k) -- kernel taps, Cin, Cout; never the trailing
algebra axis, which is the unit itself -- keeps the density ε·(Σ n_i)/(Π n_i) of its Π n_i
units, with ε set so that the kept units are (1 - s) of all units; a weight whose density would
exceed 1 stays dense and ε is solved again for the others. Small layers (few units, wide in one
direction) stay denser, large ones get sparser. (A pruner that counted the algebra axis as a
dimension would add D to the sum and a factor D to the product: a different allocation.)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp

from algebranets import common
from algebranets.sparsity.spec import DEFAULT_EXCLUDE, DEFAULT_INCLUDE, NORMS


# ----------------------------------------------------------------------------- names
def nest(items: Mapping[tuple, Any]) -> dict:
  """A nested dict from {keys tuple: value}."""
  out: dict = {}
  for keys, value in items.items():
    node = out
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = value
  return out


def flat_masks(masks) -> dict[str, jax.Array]:
  """{"module/name": mask} of a nested mask dict."""
  return {name: leaf for name, (_, leaf) in common.named_leaves(masks).items()}


def select(params, include: str = DEFAULT_INCLUDE, exclude: str = DEFAULT_EXCLUDE
           ) -> tuple[str, ...]:
  """Names of the parameters matching `include` and not `exclude` (re.search), in order."""
  return tuple(filter(common.name_filter(include, exclude), common.named_leaves(params)))


# ----------------------------------------------------------------------------- units
@dataclasses.dataclass(frozen=True)
class Weight:
  """How one pruned weight splits into units (see the module docstring)."""
  keys: tuple
  shape: tuple
  has_axis: bool          # the array carries a trailing algebra axis

  def view(self, w):
    return w if self.has_axis else w[..., None]                      # [..., A, B, T]

  def unview(self, m):
    return m if self.has_axis else m[..., 0]


def unit_scores(v, kind: str, block, norm: str):
  """Scores of the units of a view v [..., A, B, T] (see KINDS)."""
  reduce = NORMS[norm]
  if kind == "unstructured":
    return jnp.abs(v)                                                # [..., A, B, T]
  if kind == "element":
    return reduce(v, -1)                                             # [..., A, B]
  bh, bw = block
  a, b, t = v.shape[-3:]
  blocks = v.reshape(v.shape[:-3] + (a // bh, bh, b // bw, bw, t))  # [..., A/bh, bh, B/bw, bw, T]
  return reduce(blocks, (-4, -2, -1))                                # [..., A/bh, B/bw]


def unit_mask(mask_view, kind: str, block):
  """The unit mask of a mask view [..., A, B, 1 or T]."""
  if kind == "unstructured":
    return mask_view
  if kind == "element":
    return mask_view[..., 0]
  bh, bw = block
  return mask_view[..., ::bh, ::bw, 0]


def expand_units(unit, kind: str, block):
  """The mask view [..., A, B, 1 or T] of unit masks."""
  if kind == "unstructured":
    return unit
  if kind == "element":
    return unit[..., None]
  bh, bw = block
  return jnp.repeat(jnp.repeat(unit, bh, axis=-2), bw, axis=-1)[..., None]


def keep_largest(scores, k):
  """Bool mask keeping all but the k lowest scores (stable: ties prune lower indices first)."""
  flat = scores.reshape(-1)
  order = jnp.argsort(flat, stable=True)
  ranks = jnp.zeros(flat.shape, jnp.int32).at[order].set(
      jnp.arange(flat.size, dtype=jnp.int32))
  return (ranks >= k).reshape(scores.shape)


# ----------------------------------------------------------------------------- allocation
def erk_sparsities(dims: Mapping[str, Sequence[int]], target: float,
                   units: Optional[Mapping[str, int]] = None) -> dict[str, float]:
  """Per-weight sparsities of Erdős-Rényi-Kernel allocation (see the module docstring).

  Args:
    dims: weight name -> the sizes of its unit grid: its shape WITHOUT the trailing algebra
      axis (a dense [Cin, Cout, D]: (Cin, Cout); a conv [KH, KW, Cin, Cout, D]: all four).
    target: the fraction of all units to prune.
    units: name -> its number of units, if not prod(dims) (kind "unstructured": prod(dims)·D).

  Returns:
    name -> sparsity, with Σ sparsity·units = target·Σ units (up to float rounding) and
    layers that would need a density above 1 dense (sparsity 0).
  """
  if not 0.0 <= target < 1.0:
    raise ValueError(f"ERK target sparsity must be in [0, 1), got {target}")
  units = {n: float(units[n] if units else math.prod(d)) for n, d in dims.items()}
  raw = {n: sum(d) / math.prod(d) for n, d in dims.items()}
  dense: set = set()
  while True:
    free = [n for n in dims if n not in dense]
    budget = (1.0 - target) * sum(units.values()) - sum(units[n] for n in dense)
    eps = budget / sum(raw[n] * units[n] for n in free) if free else 0.0
    over = [n for n in free if eps * raw[n] > 1.0]
    if not over:
      break
    dense.update(over)
  return {n: 0.0 if n in dense else 1.0 - eps * raw[n] for n in dims}


def keep_largest_in_groups(scores, m: int, k):
  """Unit scores [..., A, B] -> mask keeping all but the k lowest of every M consecutive units
  along A (ties: lower index pruned first)."""
  *lead, a, b = scores.shape
  groups = jnp.moveaxis(scores.reshape(*lead, a // m, m, b), -2, -1)    # [..., A/M, B, M]
  order = jnp.argsort(groups, axis=-1, stable=True)
  ranks = jnp.argsort(order, axis=-1, stable=True)                       # rank within its group
  keep = ranks >= k
  return jnp.moveaxis(keep, -1, -2).reshape(scores.shape)               # [..., A, B]


# ----------------------------------------------------------------------------- applying
def apply_masks(tree, masks):
  """`tree` (params, gradients, updates) with the pruned components set to 0."""
  if not masks:
    return tree
  flat = flat_masks(masks)
  return jax.tree_util.tree_map_with_path(
      lambda path, x: (jnp.where(flat[n], x, jnp.zeros((), x.dtype))
                       if (n := common.path_name(path)) in flat else x),
      tree)


def mask_params_tree(params, masks):
  """A tree like `params`: the mask of each pruned weight, Python True for the others."""
  flat = flat_masks(masks) if masks else {}
  return jax.tree_util.tree_map_with_path(
      lambda path, _: flat.get(common.path_name(path), True), params)
