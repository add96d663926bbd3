r"""Element-level magnitude pruning: masks, schedules, optimiser pieces, reports and export.

The paper's sparse AlgebraNets prune whole algebra ELEMENTS: an element of a weight
[..., D] is its D real components, and it is kept or zeroed as one (score = the element's norm
over the components). Sparse kernels then load one index per d parameters and do the algebra's
multiplies per parameter on it (PAPER.md: 2 for M2(R), 4 for H and M4(R)). Real networks get the
matching baselines: unstructured sparsity and block sparsity whose blocks hold as many real
weights as one algebra element.

Everything here is pure functions of arrays (no Haiku state); `training` calls them inside the
jitted train step. Shapes: a pruned weight is viewed as [..., A, B, T] -- A, B its last two
non-algebra axes (dense [Cin, Cout, D]; conv [KH, KW, Cin, Cout, D]: per kernel tap; an
embedding [V, E, D]) and T its trailing algebra axis (T = D; T = 1, added, for a real array
without one, e.g. the hk.Linear of a Lift/Project, named by `REAL_WEIGHTS`).

Kinds (KINDS) and their pruning units:
  element       one algebra element (its D components); for the real algebra r this is plain
                unstructured sparsity
  unstructured  every real component on its own, also in an algebra model
  block         real networks only: a bh x bw block of the [A, B] = [Cin, Cout] matrix (per tap
                of a conv), bh·bw = d of `block_algebra`: "1xd" (1 input row, d output columns),
                "dx1" (d rows, 1 column) or "nxn" (n = sqrt(d) square; m2r -> 2x2, m4r -> 4x4)

Masks are bool arrays, True = kept. A weight [..., D] has the mask [..., 1] (one entry per
element or block unit, broadcast over the D components) for "element" and "block" and
[..., D] for "unstructured"; a real weight without an algebra axis has a mask of its own shape.
The masks of a model are a nested dict like the Haiku params holding only the pruned weights
({module: {name: mask}}); `apply_masks(params, masks)` zeroes the pruned components.

Scores: the unit's norm (NORMS: l2 default, l1, linf). Pruning k units keeps the others: per
weight ("layer" scope: uniform allocation, k = round(s·n) of its n units), over all pruned
weights together ("global" scope, one threshold, k = round(s·N) of all N units), or per weight
at the sparsity that Erdős-Rényi-Kernel allocation gives it ("erk" scope, `erk_sparsities`).
Ties are broken deterministically: units already pruned go first, then the lower score, then
the lower flat index (a stable sort), so the masks of a rising schedule only grow and repeat
exactly.

ERK allocation (Evci et al. 2020, RigL; Mocanu et al. 2018 for dense layers): a weight with
non-algebra axes (n_1, ..., n_k) -- kernel taps, Cin, Cout; never the trailing algebra axis,
which is the unit itself -- keeps the density ε·(Σ n_i)/(Π n_i) of its Π n_i units, with ε
set so that the kept units are (1 - s) of all units; a weight whose density would exceed 1
stays dense and ε is solved again for the others. Small layers (few units, wide in one
direction) stay denser, large ones get sparser. (A pruner that counted the algebra axis as a
dimension would add D to the sum and a factor D to the product: a different allocation.)
Along a rising schedule every weight's sparsity is its final ERK value times s_t / s_f.

N:M over elements (`nm`, kind "element", scope "layer"): in every group of M consecutive
units along the A axis (Cin: the axis a matmul reduces over, per output and kernel tap) keep
the N of largest score -- 2:4 elements along Cin is the pattern of sparse tensor cores, here
with algebra elements as the unit. The sparsity is 1 - N/M; along a rising schedule each group
prunes round((M - N)·s_t / s_f) units. A must be a multiple of M.

Schedules (SCHEDULES), with t the number of optimiser steps taken:
  gradual   Zhu & Gupta (2017): s_t = s_f + (s_i - s_f)·(1 - (t - t0)/(t1 - t0))³ for
            t0 <= t <= t1, s_f after; the masks are recomputed at t0, t0 + f, t0 + 2f, ... and
            at t1 (f = frequency); no pruning before t0
  one_shot  all of s_f at t0, masks fixed after

Keeping pruned weights at zero through training (`keep_pruned_zero`, an optax wrapper): the
gradients are masked before the optimiser and its updates after it, so a pruned component gets
the update +0 whatever the optimiser's state. When the masks change, `Pruner.update` also
zeroes the optimiser's per-parameter state (momentum, Adam's moments) of the newly pruned
components, so nothing of their history survives.

Export: `compress(params, masks)` writes each pruned weight as block-compressed rows (rows: the
weight's leading axes with A flattened; columns: B; block: the pruning unit): indptr
[rows/bh + 1], indices [nnz] and values [nnz, bh, bw, T]; `decompress` rebuilds the dense masked
params exactly. Command line (`algebranets.sparse_export`, which sits above the trainer whose
checkpoints it restores; this module imports neither the models nor the trainer):

  python -m algebranets.sparsity export --workdir=RUN --out=model.npz [--step=N]

loads RUN's checkpoint (latest or --step), writes the compact model and prints its non-zero
parameters and multiply-adds per layer.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from algebranets import algebras
from algebranets import common

KINDS = ("element", "unstructured", "block")
BLOCKS = ("1xd", "dx1", "nxn")
SCHEDULES = ("gradual", "one_shot")
SCOPES = ("layer", "global", "erk")

# Unit scores: name -> reduction over the given axes of a unit's components. Only the order
# matters, so l2 is the sum of squares (no square root).
NORMS: dict[str, Callable[..., jax.Array]] = {
    "l2": lambda x, axis: jnp.sum(jnp.square(x), axis=axis),
    "l1": lambda x, axis: jnp.sum(jnp.abs(x), axis=axis),
    "linf": lambda x, axis: jnp.max(jnp.abs(x), axis=axis),
}

# Which parameters are pruned by default (re.search on the path "module/.../name"): the
# weights of conv and linear layers ("w"), except
#   stem_conv      the first layer of ResNet / MobileNet (3 input channels, few weights, and
#                  every later layer depends on it)
#   logits         the classifier (a real hk.Linear after the projection to the reals)
#   embed/softmax  Transformer-XL's input embedding (tables and projections) and its output
#                  softmax (tied or own tables, projections, cluster weights)
#   depthwise      MobileNet's depthwise convs: about 1% of its weights, and kept dense in the
#                  sparse-MobileNet literature (Elsen et al. 2020), as there is little to gain
DEFAULT_INCLUDE = r"/w$"
DEFAULT_EXCLUDE = r"(^|/)(stem_conv|logits|embed|softmax)(/|$)|depthwise"
# Parameters without a trailing algebra axis: the hk.Linear inside nn.Lift / nn.Project.
REAL_WEIGHTS = r"(^|/)linear/w$"


# ----------------------------------------------------------------------------- the spec
@dataclasses.dataclass(frozen=True)
class Spec:
  """A resolved `config.sparsity` block (see `spec_from_config`)."""
  target: float
  kind: str = "element"
  block: tuple[int, int] = (1, 1)     # (bh, bw) of kind "block"; (1, 1) otherwise
  schedule: str = "gradual"
  initial: float = 0.0
  begin_step: int = 0
  end_step: int = 0
  frequency: int = 100
  scope: str = "layer"
  norm: str = "l2"
  include: str = DEFAULT_INCLUDE
  exclude: str = DEFAULT_EXCLUDE
  nm: tuple[int, int] = (0, 0)        # (N, M) of N:M element sparsity; (0, 0): off


def parse_nm(text: str) -> tuple[int, int]:
  """(N, M) of "N:M" (0 < N < M); (0, 0) for ""."""
  text = (text or "").strip()
  if not text:
    return 0, 0
  n, sep, m = text.partition(":")
  if not (sep and n.isdigit() and m.isdigit() and 0 < int(n) < int(m)):
    raise ValueError(f"sparsity.nm must be 'N:M' with 0 < N < M (e.g. '2:4'), or '' for "
                     f"none; got {text!r}")
  return int(n), int(m)


def block_shape(block: str, block_algebra: str) -> tuple[int, int]:
  """(bh, bw) of a block kind: 1xd, dx1 or nxn with d = dim of `block_algebra`."""
  common.check_choice(block, BLOCKS, "sparsity.block")
  d = algebras.get(block_algebra).dim  # ValueError naming the algebras
  if block == "1xd":
    return 1, d
  if block == "dx1":
    return d, 1
  n = math.isqrt(d)
  if n * n != d:
    raise ValueError(f"sparsity.block 'nxn' needs a square element size, but "
                     f"{block_algebra!r} has d = {d}; use '1xd' or 'dx1', or a block_algebra "
                     "with d = n² (h, m2r, m3r, m4r)")
  return n, n


def resolve_steps(cfg, num_steps: int) -> tuple[int, int]:
  """(begin, end) steps: begin_step / end_step when > 0, else the fractions of num_steps."""
  begin = int(cfg.get("begin_step", 0)) or int(round(float(cfg.begin_fraction) * num_steps))
  end = int(cfg.get("end_step", 0)) or int(round(float(cfg.end_fraction) * num_steps))
  return begin, end


def spec_from_config(cfg, num_steps: int, algebra: str = "r") -> Optional[Spec]:
  """The Spec of a `config.sparsity` block; None when target is 0 (no pruning).

  Args:
    cfg: the block (see training.config_lib).
    num_steps: the run's training steps (for the fractions and the bounds).
    algebra: the model's algebra ("block" is for real networks only).

  Raises:
    ValueError naming the valid choices of a bad value.
  """
  target = float(cfg.target)
  if not 0.0 <= target < 1.0:
    raise ValueError(f"sparsity.target must be in [0, 1), got {target}")
  kind = common.check_choice(cfg.kind, KINDS, "sparsity.kind")
  schedule = common.check_choice(cfg.schedule, SCHEDULES, "sparsity.schedule")
  scope = common.check_choice(cfg.scope, SCOPES, "sparsity.scope")
  nm = parse_nm(cfg.get("nm", ""))
  if nm != (0, 0):
    implied = 1.0 - nm[0] / nm[1]
    if target and abs(target - implied) > 1e-9:
      raise ValueError(f"sparsity.nm={cfg.nm!r} prunes {implied:g} of the elements, but "
                       f"sparsity.target is {target}; set target to {implied:g} or 0 (then "
                       "nm sets it)")
    if kind != "element" or scope != "layer":
      raise ValueError(f"sparsity.nm needs sparsity.kind 'element' and scope 'layer' (groups "
                       f"of M elements along Cin); got kind {kind!r}, scope {scope!r}")
    target = implied
  norm = common.check_choice(cfg.norm, tuple(NORMS), "sparsity.norm")
  block = (1, 1)
  if kind == "block":
    block = block_shape(cfg.block, cfg.block_algebra)
  else:
    common.check_choice(cfg.block, BLOCKS, "sparsity.block")
  if target == 0.0:
    return None
  if kind == "block" and algebras.get(algebra).dim != 1:
    raise ValueError(f"sparsity.kind 'block' is the real-network baseline (algebra r); an "
                     f"{algebra!r} model prunes kind 'element' (or 'unstructured')")
  initial = float(cfg.initial)
  if not 0.0 <= initial <= target:
    raise ValueError(f"sparsity.initial must be in [0, target={target}], got {initial}")
  frequency = int(cfg.frequency)
  if frequency < 1:
    raise ValueError(f"sparsity.frequency must be >= 1 step, got {frequency}")
  begin, end = resolve_steps(cfg, num_steps)
  if schedule == "one_shot":
    end = begin
  if not 0 <= begin <= end <= num_steps:
    raise ValueError(f"sparsity steps must satisfy 0 <= begin ({begin}) <= end ({end}) <= "
                     f"train.num_steps ({num_steps}); set begin/end_fraction or _step")
  for key in ("include", "exclude"):
    try:
      re.compile(cfg.get(key, ""))
    except re.error as e:
      raise ValueError(f"sparsity.{key} is not a regular expression: {e}") from e
  return Spec(target=target, kind=kind, block=block, schedule=schedule, initial=initial,
              begin_step=begin, end_step=end, frequency=frequency, scope=scope, norm=norm,
              include=cfg.get("include", "") or DEFAULT_INCLUDE,
              exclude=cfg.get("exclude", "") or DEFAULT_EXCLUDE, nm=nm)


# ----------------------------------------------------------------------------- schedule
def sparsity_at(spec: Spec, step) -> jax.Array:
  """The scheduled sparsity after `step` optimiser steps (float32; 0 before begin_step)."""
  t = jnp.asarray(step, jnp.float32)
  t0, t1 = float(spec.begin_step), float(spec.end_step)
  s_f, s_i = spec.target, spec.initial
  if spec.schedule == "one_shot" or t1 <= t0:
    s = jnp.float32(s_f)
  else:
    frac = jnp.clip((t - t0) / (t1 - t0), 0.0, 1.0)
    s = s_f + (s_i - s_f) * (1.0 - frac) ** 3
  return jnp.where(t >= t0, s, 0.0).astype(jnp.float32)


def is_update_step(spec: Spec, step) -> jax.Array:
  """Whether the masks are recomputed after `step` steps (see the module docstring)."""
  t = jnp.asarray(step, jnp.int32)
  t0, t1 = spec.begin_step, spec.end_step
  if spec.schedule == "one_shot":
    return t == t0
  return (t >= t0) & (t <= t1) & (((t - t0) % spec.frequency == 0) | (t == t1))


# ----------------------------------------------------------------------------- names
def _nest(items: Mapping[tuple, Any]) -> dict:
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
class _Weight:
  """How one pruned weight splits into units (see the module docstring)."""
  keys: tuple
  shape: tuple
  has_axis: bool          # the array carries a trailing algebra axis

  def view(self, w):
    return w if self.has_axis else w[..., None]                      # [..., A, B, T]

  def unview(self, m):
    return m if self.has_axis else m[..., 0]


def _unit_scores(v, kind: str, block, norm: str):
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


def _unit_mask(mask_view, kind: str, block):
  """The unit mask of a mask view [..., A, B, 1 or T]."""
  if kind == "unstructured":
    return mask_view
  if kind == "element":
    return mask_view[..., 0]
  bh, bw = block
  return mask_view[..., ::bh, ::bw, 0]


def _expand(unit, kind: str, block):
  """The mask view [..., A, B, 1 or T] of unit masks."""
  if kind == "unstructured":
    return unit
  if kind == "element":
    return unit[..., None]
  bh, bw = block
  return jnp.repeat(jnp.repeat(unit, bh, axis=-2), bw, axis=-1)[..., None]


def _keep_largest(scores, k):
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


def _keep_largest_in_groups(scores, m: int, k):
  """Unit scores [..., A, B] -> mask keeping all but the k lowest of every M consecutive units
  along A (ties: lower index pruned first)."""
  *lead, a, b = scores.shape
  groups = jnp.moveaxis(scores.reshape(*lead, a // m, m, b), -2, -1)    # [..., A/M, B, M]
  order = jnp.argsort(groups, axis=-1, stable=True)
  ranks = jnp.argsort(order, axis=-1, stable=True)                       # rank within its group
  keep = ranks >= k
  return jnp.moveaxis(keep, -1, -2).reshape(scores.shape)               # [..., A, B]


# ----------------------------------------------------------------------------- masks
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
    self.weights: dict[str, _Weight] = {}
    for name in names:
      keys, leaf = leaves[name]
      shape = tuple(leaf.shape)
      has_axis = not (real and real.search(name))
      if has_axis and (len(shape) < 2 or shape[-1] != algebra_dim):
        raise ValueError(f"parameter {name} {shape} has no trailing algebra axis of size "
                         f"{algebra_dim}; exclude it, or match it with real_weights")
      w = _Weight(keys=keys, shape=shape, has_axis=has_axis)
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
    return _nest({w.keys: jnp.ones(self.mask_shape(n), jnp.bool_)
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
      s = _unit_scores(v, spec.kind, spec.block, spec.norm).astype(jnp.float32)
      if name in old:
        s = jnp.where(_unit_mask(w.view(old[name]), spec.kind, spec.block), s, -1.0)
      scores[name] = s
    if spec.scope == "global":
      flat = jnp.concatenate([s.reshape(-1) for s in scores.values()])
      keep_all = _keep_largest(flat, jnp.round(sparsity * flat.size).astype(jnp.int32))
      kept, start = {}, 0
      for name, s in scores.items():
        kept[name] = keep_all[start:start + s.size].reshape(s.shape)
        start += s.size
    elif spec.nm != (0, 0):
      n, m = spec.nm
      per_group = jnp.round((m - n) * sparsity / spec.target).astype(jnp.int32)
      kept = {name: _keep_largest_in_groups(s, m, per_group) for name, s in scores.items()}
    elif spec.scope == "erk":  # each weight at its ERK sparsity, scaled along the schedule
      kept = {name: _keep_largest(s, jnp.round(
                  sparsity / spec.target * self.final_sparsity[name] * s.size).astype(jnp.int32))
              for name, s in scores.items()}
    else:  # "layer": uniform, every weight at s
      kept = {name: _keep_largest(s, jnp.round(sparsity * s.size).astype(jnp.int32))
              for name, s in scores.items()}
    return _nest({w.keys: w.unview(_expand(kept[name], spec.kind, spec.block))
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
      zero = _unit_scores(jnp.abs(v), spec.kind, spec.block, "linf") == 0
      frac = jnp.mean(zero.astype(jnp.float32))
      out[f"sparsity/{name}"] = frac
      zeros = zeros + frac * math.prod(w.shape)
      total += math.prod(w.shape)
    out["sparsity/overall"] = zeros / total
    out["sparsity/target"] = sparsity_at(spec, step)
    return out


# ----------------------------------------------------------------------------- optax pieces
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


# ----------------------------------------------------------------------------- reports
def _units_kept(pruner: Pruner, name: str, mask) -> tuple[int, int]:
  """(kept units, all units) of a weight's mask."""
  w = pruner.weights[name]
  unit = np.asarray(_unit_mask(np.asarray(w.view(mask)), pruner.spec.kind, pruner.spec.block))
  return int(unit.sum()), int(unit.size)


def nonzero_counts(pruner: Pruner, params, masks) -> dict[str, dict[str, int]]:
  """{weight name: {"params", "nonzero", "units", "kept_units"}} of the pruned weights: real
  components, those of kept units that are not all zero, all units, kept units (host numpy)."""
  leaves = common.named_leaves(params)
  flat = flat_masks(masks)
  out = {}
  for name, w in pruner.weights.items():
    v = np.asarray(w.view(np.asarray(leaves[name][1])))
    m = np.asarray(w.view(np.asarray(flat[name])))
    nonzero_unit = np.asarray(_unit_scores(jnp.asarray(np.abs(v)), pruner.spec.kind,
                                           pruner.spec.block, "linf")) > 0
    kept, units = _units_kept(pruner, name, flat[name])
    nonzero_unit &= np.asarray(_unit_mask(m, pruner.spec.kind, pruner.spec.block))
    out[name] = {"params": int(v.size), "nonzero": int(nonzero_unit.sum()) * pruner.unit_size(name),
                 "units": units, "kept_units": kept}
  return out


def sparse_costs(report, pruner: Pruner, params, masks) -> dict[str, Any]:
  """Params and MACs counting only non-zeros, per layer and in total.

  Args:
    report: the dense model's `costs.ModelCost` (layers named by their Haiku module).
    pruner, params, masks: the pruning and the (masked) parameters.

  Returns:
    {"params", "nonzero_params" (the whole model), "macs", "nonzero_macs" (weight layers),
     "pruned_params", "pruned_nonzero_params" (the pruned weights alone), "sparsity" (pruned
     reals over the pruned weights' reals: 1 - pruned_nonzero_params / pruned_params),
     "layers": [{"name", "params", "nonzero_params", "macs", "nonzero_macs", "kept"}]}: a
    layer whose weight is pruned keeps the fraction `kept` of its weight's non-zero reals, and
    its MACs scale with it (each MAC multiplies one weight component); biases and unpruned
    arrays count in full.
  """
  counts = nonzero_counts(pruner, params, masks)
  by_module = {}
  for name, c in counts.items():
    module = "/".join(pruner.weights[name].keys[:-1])
    by_module[module] = c
  layers, macs = [], 0
  for l in report.layers:
    c = by_module.get(l.name)
    kept = c["nonzero"] / c["params"] if c else 1.0
    removed = (c["params"] - c["nonzero"]) if (c and l.call == 0) else 0
    nz_macs = int(round(l.macs * kept))
    macs += nz_macs
    layers.append({"name": l.name if l.call == 0 else f"{l.name} (call {l.call + 1})",
                   "params": int(l.params), "nonzero_params": int(l.params - removed),
                   "macs": int(l.macs), "nonzero_macs": nz_macs, "kept": kept})
  pruned_total = sum(c["params"] for c in counts.values())
  removed_total = sum(c["params"] - c["nonzero"] for c in counts.values())
  return {"params": int(report.total_params),
          "nonzero_params": int(report.total_params - removed_total),
          "macs": int(report.macs), "nonzero_macs": int(macs),
          "pruned_params": int(pruned_total),
          "pruned_nonzero_params": int(pruned_total - removed_total),
          "sparsity": removed_total / max(pruned_total, 1), "layers": layers}


def format_costs(costs: Mapping[str, Any]) -> str:
  """A markdown table of `sparse_costs`: the pruned layers, the pruned weights, the model.

  Every row's sparsity is 1 - (its nonzero params) / (its params), the two columns beside
  it: a layer's over its weight and bias, "pruned weights" over the pruned arrays alone (the
  sparsity the schedule targets), "total (model)" over every parameter of the model.
  """
  def sparsity_of(params, nonzero):
    return f"{1 - nonzero / params:.3f}" if params else ""

  rows = [[l["name"], f"{l['params']:,}", f"{l['nonzero_params']:,}", f"{l['macs']:,}",
           f"{l['nonzero_macs']:,}", sparsity_of(l["params"], l["nonzero_params"])]
          for l in costs["layers"] if l["kept"] < 1.0]
  rows.append(["pruned weights", f"{costs['pruned_params']:,}",
               f"{costs['pruned_nonzero_params']:,}", "", "",
               sparsity_of(costs["pruned_params"], costs["pruned_nonzero_params"])])
  rows.append(["total (model)", f"{costs['params']:,}", f"{costs['nonzero_params']:,}",
               f"{costs['macs']:,}", f"{costs['nonzero_macs']:,}",
               sparsity_of(costs["params"], costs["nonzero_params"])])
  header = ["layer", "params", "nonzero params", "MACs", "nonzero MACs", "sparsity"]
  return common.markdown(header, rows, align="lrrrrr")


# ----------------------------------------------------------------------------- export
_SEP = "::"
_META = "__meta__"


def compress(pruner: Pruner, params, masks) -> dict[str, np.ndarray]:
  """The compact model: pruned weights as block-compressed rows, the rest dense.

  Each pruned weight W (view [..., A, B, T]) becomes the matrix M [R, C, T] with R the
  product of its leading axes and A (rows: input channels, per tap of a conv) and C = B
  (output channels), in blocks (bh, bw) = the pruning unit ((1, 1) for "element", with
  T = D; (1, 1) with T = 1 over the columns B·D for "unstructured"; (bh, bw) for "block"):

    "<name>::indptr"  int64 [R/bh + 1]   the kept blocks of block-row r are
    "<name>::indices" int64 [nnz]        indices[indptr[r]:indptr[r+1]] (block columns)
    "<name>::values"  [nnz, bh, bw, T]   their components
    "<name>::shape"   int64              the weight's shape
    "<name>::matrix"  int64 [3]          (R, C, T)

  Every other parameter is "<name>::dense". Keys hold the parameter path "module/name";
  "__meta__" (JSON) maps each path to its keys, with the kind and block.
  """
  spec = pruner.spec
  flat = flat_masks(masks)
  out: dict[str, np.ndarray] = {}
  for name, (_, leaf) in common.named_leaves(params).items():
    leaf = np.asarray(leaf)
    if name not in pruner.weights:
      out[name + _SEP + "dense"] = leaf
      continue
    w = pruner.weights[name]
    v = np.asarray(w.view(leaf))
    m = np.broadcast_to(np.asarray(w.view(np.asarray(flat[name]))), v.shape)
    _, b, t = v.shape[-3:]
    if spec.kind == "unstructured":  # every real its own unit: columns B·T of one real
      v, m = v.reshape(v.shape[:-2] + (b * t, 1)), m.reshape(m.shape[:-2] + (b * t, 1))
      b, t = b * t, 1
    bh, bw = spec.block
    rows = int(np.prod(v.shape[:-2]))
    blocks = v.reshape(rows // bh, bh, b // bw, bw, t).transpose(0, 2, 1, 3, 4)
    keep = m.reshape(rows // bh, bh, b // bw, bw, t)[:, 0, :, 0, 0]            # [R/bh, C/bw]
    r_idx, c_idx = np.nonzero(keep)
    out[name + _SEP + "indptr"] = np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int64)
    out[name + _SEP + "indices"] = c_idx.astype(np.int64)
    out[name + _SEP + "values"] = blocks[r_idx, c_idx]                        # [nnz, bh, bw, T]
    out[name + _SEP + "shape"] = np.asarray(leaf.shape, np.int64)
    out[name + _SEP + "matrix"] = np.asarray([rows, b, t], np.int64)
  out[_META] = np.asarray(json.dumps({
      "keys": {n: list(k) for n, (k, _) in common.named_leaves(params).items()},
      "kind": spec.kind, "block": list(spec.block)}))
  return out


def decompress(compact: Mapping[str, np.ndarray]) -> dict:
  """The dense params (nested dict of numpy arrays) of a `compress`ed model, pruned entries 0."""
  meta = json.loads(str(compact[_META]))
  items = {}
  for name, keys in meta["keys"].items():
    if name + _SEP + "dense" in compact:
      items[tuple(keys)] = np.asarray(compact[name + _SEP + "dense"])
      continue
    shape = tuple(int(s) for s in compact[name + _SEP + "shape"])
    rows, cols, t = (int(s) for s in compact[name + _SEP + "matrix"])
    indptr, indices = compact[name + _SEP + "indptr"], compact[name + _SEP + "indices"]
    values = np.asarray(compact[name + _SEP + "values"])                  # [nnz, bh, bw, T]
    bh, bw = values.shape[1:3]
    m = np.zeros((rows // bh, cols // bw, bh, bw, t), values.dtype)
    m[np.repeat(np.arange(rows // bh), np.diff(indptr)), indices] = values
    items[tuple(keys)] = m.transpose(0, 2, 1, 3, 4).reshape(shape)     # [R, C, T] -> W
  return _nest(items)


def save(path, compact: Mapping[str, np.ndarray]) -> None:
  """Writes a `compress`ed model to an .npz file."""
  np.savez(path, **compact)


def load(path) -> dict:
  """The dense masked params (nested dict of numpy arrays) of an exported .npz file."""
  with np.load(path) as f:
    return decompress({k: f[k] for k in f.files})
