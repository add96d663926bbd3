"""Optimisers, learning-rate schedules, weight-decay masks and gradient clipping, from a config.

Everything is an optax GradientTransformation built by `build(config.optimizer, ...)`:

    clip_by_global_norm(grad_clip_norm)          if grad_clip_norm > 0
    add_decayed_weights(weight_decay, mask)      coupled L2 (sgd, adam, rmsprop): g += wd·w
    OPTIMIZERS[name](schedule, ...)              adamw decays decoupled, inside, with the mask

Weight decay is selected by parameter NAME, never by rank: an algebra-valued bias [C, D] has
two axes, so "ndim > 1" would decay it. A parameter's name is its Haiku path
"module/.../param", e.g. "resnet50/~/stage_0_block_0/~/conv_0/w"; it is decayed when it matches
the `weight_decay_include` regex and not `weight_decay_exclude` (re.search).

Learning rate: peak = lr · batch_size / lr_batch_scale (the linear scaling rule, e.g. 0.1 per
256 images), or lr itself when lr_batch_scale is 0. Schedules (SCHEDULES): a linear warm-up from
0 over warmup_steps, then over the remaining steps
  constant   the peak
  cosine     half a cosine from the peak to end_lr_ratio·peak
  linear     a line from the peak to end_lr_ratio·peak
  piecewise  the peak times decay_factor^k after the k-th of decay_boundaries (fractions of
             all steps), e.g. (0.5, 0.75) and 0.1: He et al.'s CIFAR schedule
"""

from __future__ import annotations

import functools
import re
from typing import Any, Callable, Dict, Tuple

import jax
import optax

SCHEDULES = ("constant", "cosine", "linear", "piecewise")


def peak_learning_rate(cfg, batch_size: int) -> float:
  """cfg.lr scaled linearly with the batch (when cfg.lr_batch_scale > 0)."""
  if cfg.get("lr_batch_scale", 0):
    return float(cfg.lr) * batch_size / float(cfg.lr_batch_scale)
  return float(cfg.lr)


def make_schedule(cfg, num_steps: int, batch_size: int) -> optax.Schedule:
  """The learning rate at each step (see the module docstring)."""
  name = cfg.get("schedule", "cosine")
  if name not in SCHEDULES:
    raise ValueError(f"unknown learning-rate schedule {name!r}; schedules: {list(SCHEDULES)}")
  peak = peak_learning_rate(cfg, batch_size)
  warmup = int(cfg.get("warmup_steps", 0))
  if not 0 <= warmup < max(num_steps, 1):
    raise ValueError(f"warmup_steps={warmup} must be in [0, num_steps={num_steps})")
  rest = max(num_steps - warmup, 1)
  end = peak * float(cfg.get("end_lr_ratio", 0.0))
  if name == "constant":
    main = optax.constant_schedule(peak)
  elif name == "cosine":
    main = optax.cosine_decay_schedule(peak, rest, alpha=float(cfg.get("end_lr_ratio", 0.0)))
  elif name == "linear":
    main = optax.linear_schedule(peak, end, rest)
  else:
    factor = float(cfg.get("decay_factor", 0.1))
    bounds = {}
    for fraction in cfg.get("decay_boundaries", (0.5, 0.75)):
      step = int(round(float(fraction) * num_steps)) - warmup
      if step > 0:
        bounds[step] = bounds.get(step, 1.0) * factor
    main = optax.piecewise_constant_schedule(peak, bounds)
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


# ----------------------------------------------------------------------------- names
def _key_name(key) -> str:
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def param_names(params) -> Any:
  """A pytree like `params` holding each leaf's path "module/.../name"."""
  return jax.tree_util.tree_map_with_path(
      lambda path, _: "/".join(_key_name(k) for k in path), params)


def name_mask(params, include: str, exclude: str = "") -> Any:
  """True where a parameter's name matches `include` and not `exclude` (re.search)."""
  inc = re.compile(include)
  exc = re.compile(exclude) if exclude else None
  return jax.tree.map(lambda n: bool(inc.search(n)) and not (exc and exc.search(n)),
                      param_names(params))


def describe_mask(params, mask) -> str:
  """'k of n arrays (x of y reals): names...' for logging which parameters a mask selects."""
  names = jax.tree.leaves(param_names(params))
  leaves = jax.tree.leaves(params)
  flags = jax.tree.leaves(mask)
  chosen = [(n, x.size) for n, x, f in zip(names, leaves, flags) if f]
  total = sum(x.size for x in leaves)
  return (f"{len(chosen)} of {len(leaves)} arrays ({sum(s for _, s in chosen):,} of "
          f"{total:,} reals)")


# ----------------------------------------------------------------------------- optimisers
def _sgd(lr, cfg, _):
  return optax.sgd(lr, momentum=cfg.get("momentum", 0.9) or None,
                   nesterov=bool(cfg.get("nesterov", False)))


def _adam(lr, cfg, _):
  return optax.adam(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999), eps=cfg.get("eps", 1e-8))


def _adamw(lr, cfg, mask):
  return optax.adamw(lr, b1=cfg.get("b1", 0.9), b2=cfg.get("b2", 0.999),
                     eps=cfg.get("eps", 1e-8), weight_decay=float(cfg.get("weight_decay", 0.0)),
                     mask=mask)


def _rmsprop(lr, cfg, _):
  # TensorFlow's RMSProp, as in the TF-slim MobileNet recipes: mean square initialised to 1,
  # eps inside the square root (decay 0.9, momentum 0.9 and eps 1.0 there: set eps=1.0).
  return optax.rmsprop(lr, decay=cfg.get("decay", 0.9), eps=cfg.get("eps", 1e-8),
                       initial_scale=1.0, eps_in_sqrt=True,
                       momentum=cfg.get("momentum", 0.9) or None)


# name -> (lr schedule, config, weight-decay mask fn) -> GradientTransformation
OPTIMIZERS: Dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": _sgd,
    "adam": _adam,
    "adamw": _adamw,
    "rmsprop": _rmsprop,
}
_DECOUPLED = frozenset({"adamw"})  # optimisers that apply weight decay themselves


def build(cfg, num_steps: int, batch_size: int
          ) -> Tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, schedule) from the config's `optimizer` block."""
  name = cfg.get("name", "sgd")
  if name not in OPTIMIZERS:
    raise ValueError(f"unknown optimizer {name!r}; optimizers: {sorted(OPTIMIZERS)}")
  schedule = make_schedule(cfg, num_steps, batch_size)
  wd = float(cfg.get("weight_decay", 0.0))
  mask = functools.partial(name_mask, include=cfg.get("weight_decay_include", ".*"),
                           exclude=cfg.get("weight_decay_exclude", ""))
  parts = []
  clip = float(cfg.get("grad_clip_norm", 0.0))
  if clip > 0:
    parts.append(optax.clip_by_global_norm(clip))
  if wd and name not in _DECOUPLED:
    parts.append(optax.add_decayed_weights(wd, mask=mask))
  parts.append(OPTIMIZERS[name](schedule, cfg, mask))
  return optax.chain(*parts), schedule
