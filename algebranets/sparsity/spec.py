"""The pruning spec: what a `config.sparsity` block asks for, checked and resolved.

`spec_from_config(cfg, num_steps, algebra)` checks every field (a ValueError naming the bad
value and the valid ones) and resolves the begin/end steps and the block shape into a `Spec`;
the kinds, block shapes, schedules, scopes and norms it accepts are the tuples below (their
meaning: the package docstring). `DEFAULT_INCLUDE` / `DEFAULT_EXCLUDE` say which parameters
are pruned when the config names none, and why.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable, Optional

import jax
import jax.numpy as jnp

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
