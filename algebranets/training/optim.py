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

`DEFAULTS` is the `config.optimizer` block with every default, declared here once
(`config_lib.base_config` starts from it; `build` fills a block's missing keys from it).
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import jax
import optax

from algebranets import common

SCHEDULES = ("constant", "cosine", "linear", "piecewise")

# The optimizer block of every config, with its defaults (the one place they are written).
DEFAULTS: Mapping[str, Any] = dict(
    name="sgd",                     # a key of OPTIMIZERS
    lr=0.1,                         # the peak learning rate (per lr_batch_scale examples)
    lr_batch_scale=0,               # > 0: lr scales linearly with batch_size / lr_batch_scale
    schedule="cosine",              # one of SCHEDULES, after the warm-up
    warmup_steps=0,
    warmup_epochs=0.0,              # > 0: the trainer sets warmup_steps from it
    end_lr_ratio=0.0,               # cosine / linear end at end_lr_ratio · peak
    decay_boundaries=(0.5, 0.75),   # piecewise: fractions of all steps ...
    decay_factor=0.1,               # ... after each of which the rate is multiplied by this
    momentum=0.9,                   # sgd, rmsprop (0: none)
    nesterov=False,                 # sgd
    b1=0.9, b2=0.999, eps=1e-8,     # adam, adamw (rmsprop: eps)
    decay=0.9,                      # rmsprop
    weight_decay=0.0,
    weight_decay_include=r"/w$",    # regexes on the parameter name (module docstring)
    weight_decay_exclude="",
    grad_clip_norm=0.0,             # > 0: clip the gradients' global norm
)


def _options(cfg) -> dict[str, Any]:
  """The block `cfg` (a ConfigDict or a mapping) with its missing keys from DEFAULTS."""
  given = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
  return {**DEFAULTS, **given}


def peak_learning_rate(cfg, batch_size: int) -> float:
  """cfg.lr scaled linearly with the batch (when cfg.lr_batch_scale > 0)."""
  o = _options(cfg)
  if o["lr_batch_scale"]:
    return float(o["lr"]) * batch_size / float(o["lr_batch_scale"])
  return float(o["lr"])


def make_schedule(cfg, num_steps: int, batch_size: int) -> optax.Schedule:
  """The learning rate at each step (see the module docstring)."""
  o = _options(cfg)
  name = common.check_choice(o["schedule"], SCHEDULES, "learning-rate schedule")
  peak = peak_learning_rate(o, batch_size)
  warmup = int(o["warmup_steps"])
  if not 0 <= warmup < max(num_steps, 1):
    raise ValueError(f"warmup_steps={warmup} must be in [0, num_steps={num_steps})")
  rest = max(num_steps - warmup, 1)
  end = peak * float(o["end_lr_ratio"])
  if name == "constant":
    main = optax.constant_schedule(peak)
  elif name == "cosine":
    main = optax.cosine_decay_schedule(peak, rest, alpha=float(o["end_lr_ratio"]))
  elif name == "linear":
    main = optax.linear_schedule(peak, end, rest)
  else:
    factor = float(o["decay_factor"])
    bounds = {}
    for fraction in o["decay_boundaries"]:
      step = int(round(float(fraction) * num_steps)) - warmup
      if step > 0:
        bounds[step] = bounds.get(step, 1.0) * factor
    main = optax.piecewise_constant_schedule(peak, bounds)
  if not warmup:
    return main
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), main], [warmup])


# ----------------------------------------------------------------------------- names
def param_names(params) -> Any:
  """A pytree like `params` holding each leaf's path "module/.../name"."""
  return jax.tree_util.tree_map_with_path(lambda path, _: common.path_name(path), params)


def name_mask(params, include: str, exclude: str = "") -> Any:
  """True where a parameter's name matches `include` and not `exclude` (re.search)."""
  return jax.tree.map(common.name_filter(include, exclude), param_names(params))


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
# Each takes (lr schedule, the options: DEFAULTS filled in, weight-decay mask fn).
def _sgd(lr, o, _):
  return optax.sgd(lr, momentum=o["momentum"] or None, nesterov=bool(o["nesterov"]))


def _adam(lr, o, _):
  return optax.adam(lr, b1=o["b1"], b2=o["b2"], eps=o["eps"])


def _adamw(lr, o, mask):
  return optax.adamw(lr, b1=o["b1"], b2=o["b2"], eps=o["eps"],
                     weight_decay=float(o["weight_decay"]), mask=mask)


def _rmsprop(lr, o, _):
  # TensorFlow's RMSProp, as in the TF-slim MobileNet recipes: mean square initialised to 1,
  # eps inside the square root (decay 0.9, momentum 0.9 and eps 1.0 there: set eps=1.0).
  return optax.rmsprop(lr, decay=o["decay"], eps=o["eps"], initial_scale=1.0, eps_in_sqrt=True,
                       momentum=o["momentum"] or None)


# name -> (lr schedule, options, weight-decay mask fn) -> GradientTransformation
OPTIMIZERS: dict[str, Callable[..., optax.GradientTransformation]] = {
    "sgd": _sgd,
    "adam": _adam,
    "adamw": _adamw,
    "rmsprop": _rmsprop,
}
_DECOUPLED = frozenset({"adamw"})  # optimisers that apply weight decay themselves


def build(cfg, num_steps: int, batch_size: int
          ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """(optimizer, schedule) from the config's `optimizer` block (missing keys: DEFAULTS)."""
  o = _options(cfg)
  name = common.check_choice(o["name"], sorted(OPTIMIZERS), "optimizer")
  schedule = make_schedule(o, num_steps, batch_size)
  wd = float(o["weight_decay"])
  mask = functools.partial(name_mask, include=o["weight_decay_include"],
                           exclude=o["weight_decay_exclude"])
  parts = []
  clip = float(o["grad_clip_norm"])
  if clip > 0:
    parts.append(optax.clip_by_global_norm(clip))
  if wd and name not in _DECOUPLED:
    parts.append(optax.add_decayed_weights(wd, mask=mask))
  parts.append(OPTIMIZERS[name](schedule, o, mask))
  return optax.chain(*parts), schedule
