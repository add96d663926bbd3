"""Matched-size models: choose a width so that a model's size equals a reference's.

The paper compares algebras at equal *parameter count* or equal *compute*
(multiply-adds) with a real baseline. Three sizes can be matched
(`MATCH_KINDS`, counted by `costs.model_costs`): "params" (real parameters),
"macs" (multiply-adds of the weight layers, the paper's MACs) and "flops"
(every multiply-add of the forward pass, `ModelCost.all_macs`: also the
attention scores, attention-weighted values and logits of a Transformer;
flops = 2 × MACs, a factor that cancels in a match). For the image models of
this package the two compute counts are equal (their only multiply-adds are
weight layers; whitening batch norm adds its D×D products). An algebra element holds D real
parameters and one element product costs m real multiplies (the table in
PAPER.md), so at the same channel count an algebra model is D× larger and
m× more expensive than the real one; its width must shrink to compare fairly.

Widths and channels. A model of width w has `scaled_channels(base, w)` =
round(base·w) algebra elements in a layer whose reference model (width 1) has
`base` channels (rounded to a multiple of `divisor`, at least `divisor`), so
channel counts are always valid positive integers.

The search (`match_width`). The size of a conv net or transformer as a
function of its width is close to a power law (a·w² from the weight layers
plus lower-order terms from norms, the stem and the head), but a step
function once channels are rounded. `match_width` assumes only that the size
does not decrease with the width and runs a safeguarded secant search in
log-log space: it brackets the target (extrapolating the local power law),
then interpolates the power law through the bracket ends (regula falsi),
falling back to bisection in log width when one end of the bracket stalls,
as it does on flat rounding steps; before a bracket, a flat stretch (a tiny
model at its minimum channels) is left by strides that double. A near power
law converges in 3-5 evaluations. It stops once the size is within `stop_tolerance` (default a
quarter of `tolerance`) of the target, when the bracket shrinks to one rounding
step, or after `max_evaluations`; it returns the best width seen and raises
if even that misses `tolerance` (small models where one channel is more than
the tolerance), naming the best ratio.

`match_image_model` wraps it for the image classifiers of this package using
`costs.model_costs` (abstract evaluation, no compute): ~1 s per evaluation for
a ResNet-50 on a CPU. Other models wrap `match_width` the same way, e.g. a
Transformer whose d_model and d_inner scale with one width:

    def size(w):
      d_model = scaled_channels(512, w, divisor=n_heads)
      d_inner = scaled_channels(2048, w)
      return model_size(make_forward(d_model, d_inner), tokens, match="params")
    result = match_width(size, target=reference_params)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

from algebranets import algebras
from algebranets import common
from algebranets import costs

__all__ = ["MATCH_KINDS", "MatchResult", "scaled_channels", "check_width", "match_width",
           "model_size", "match_image_model"]

MATCH_KINDS = ("params", "macs", "flops")


def scaled_channels(base: int, width: float, divisor: int = 1) -> int:
  """round(base · width) to the nearest multiple of `divisor`, at least `divisor`.

  Rounds halves up (not to even), so the rule is monotone in `width`.
  """
  if isinstance(base, bool) or not isinstance(base, numbers.Integral) or base < 1:
    raise ValueError(f"base channels must be a positive int, got {base!r}.")
  if isinstance(divisor, bool) or not isinstance(divisor, numbers.Integral) or divisor < 1:
    raise ValueError(f"channel divisor must be a positive int, got {divisor!r}.")
  check_width(width)
  return int(max(divisor, divisor * math.floor(base * width / divisor + 0.5)))


def check_width(width) -> float:
  """The width as a float; ValueError unless it is a finite positive number."""
  if (isinstance(width, bool) or not isinstance(width, numbers.Real)
      or not math.isfinite(width) or width <= 0):
    raise ValueError(f"width must be a positive finite number, got {width!r}.")
  return float(width)


@dataclasses.dataclass(frozen=True)
class MatchResult:
  """The outcome of a width search.

  Attributes:
    width: the chosen width multiplier.
    size: the model's size at that width (parameters or MACs).
    target: the size aimed at.
    ratio: size / target.
    evaluations: how many widths were evaluated.
    history: every (width, size) evaluated, in order.
  """

  width: float
  size: int
  target: int
  ratio: float
  evaluations: int
  history: tuple[tuple[float, int], ...]


def match_width(size_of_width: Callable[[float], float], target: float, *,
                tolerance: float = 0.02, stop_tolerance: Optional[float] = None,
                initial_width: float = 1.0, min_width: float = 1e-4,
                max_width: float = 1e4, width_rtol: float = 1e-4,
                max_evaluations: int = 40) -> MatchResult:
  """The width whose size is closest to `target` (see the module docstring).

  Args:
    size_of_width: width -> size (parameters, MACs, ...); must not decrease
      with the width.
    target: the size to match, > 0.
    tolerance: the largest accepted |size / target - 1|.
    stop_tolerance: stop searching once |size / target - 1| is this small;
      default tolerance / 4.
    initial_width: the first width tried.
    min_width, max_width: the search range.
    width_rtol: stop once the bracket [w_lo, w_hi] around the target is
      narrower than this (relative): finer than any rounding step of a model
      with fewer than 1/width_rtol channels in a layer.
    max_evaluations: most calls of `size_of_width`.

  Returns:
    A MatchResult for the best width found.

  Raises:
    ValueError: if no width within the range gets within `tolerance` (the
      message names the best ratio and width found).
  """
  if not target > 0:
    raise ValueError(f"target size must be positive, got {target!r}.")
  if not 0 < tolerance < 1:
    raise ValueError(f"tolerance must be in (0, 1), got {tolerance!r}.")
  stop = tolerance / 4 if stop_tolerance is None else stop_tolerance
  if not 0 <= stop <= tolerance:
    raise ValueError(f"stop_tolerance must be in [0, tolerance={tolerance}], got {stop!r}.")
  if not 0 < width_rtol < 1:
    raise ValueError(f"width_rtol must be in (0, 1), got {width_rtol!r}.")
  if not 0 < min_width <= initial_width <= max_width:
    raise ValueError(f"need 0 < min_width <= initial_width <= max_width, got {min_width}, "
                     f"{initial_width}, {max_width}.")
  history: list[tuple[float, int]] = []

  def evaluate(w):
    size = size_of_width(w)
    history.append((w, size))
    return size

  def error(w_size):
    return abs(math.log(w_size[1] / target)) if w_size[1] > 0 else math.inf

  lo = hi = None                   # (width, size) with size < target / >= target
  last_side, same_side = None, 0   # how often in a row the same end moved
  flat = 0                         # how many evaluations in a row gave the previous size
  w = initial_width
  while len(history) < max_evaluations:
    size = evaluate(w)
    flat = flat + 1 if len(history) >= 2 and history[-2][1] == size else 0
    if abs(size / target - 1) <= stop:
      break
    side = "lo" if size < target else "hi"
    if side == "lo":
      lo = (w, size)
    else:
      hi = (w, size)
    same_side = same_side + 1 if side == last_side else 1
    last_side = side
    if lo is not None and hi is not None:
      if hi[0] / lo[0] - 1 < width_rtol:
        break                                          # one rounding step apart
      log_span = math.log(hi[0] / lo[0])
      if lo[1] > 0 and same_side < 3:
        # The local power law through the bracket ends, solved for the target.
        p = math.log(hi[1] / lo[1]) / log_span
        t = math.log(target / lo[1]) / p / log_span
        t = min(max(t, 0.02), 0.98)
      else:
        t = 0.5                                        # stalled: bisect (in log width)
      w = lo[0] * math.exp(t * log_span)
    else:
      # Extrapolate with the exponent of the last two points (2 if unknown).
      p = 2.0
      if len(history) >= 2:
        (w0, s0), (w1, s1) = history[-2], history[-1]
        if w0 != w1 and s0 > 0 and s1 > 0 and s0 != s1:
          p = min(max(math.log(s1 / s0) / math.log(w1 / w0), 0.25), 4.0)
      step = (target / size) ** (1 / p) if size > 0 else 4.0
      if flat:
        # On a flat stretch (every layer at its minimum channels, a wide rounding step) the
        # power law's step would creep along it: double the stride each flat evaluation.
        step = math.exp(math.copysign(max(abs(math.log(step)), math.log(2)) * 2 ** (flat - 1),
                                      math.log(step)))
      w_next = min(max(w * min(max(step, 1 / 8), 8.0), min_width), max_width)
      if w_next == w:
        break                                          # pinned at the range limit
      w = w_next
  best = min(history, key=error)
  ratio = best[1] / target
  if abs(ratio - 1) > tolerance:
    raise ValueError(
        f"could not match the target size {target:,} within {tolerance:.1%}: the best width "
        f"{best[0]:.6g} gives size {best[1]:,} (ratio {ratio:.4f}) after {len(history)} "
        f"evaluations in [{min_width}, {max_width}]. The sizes reachable by rounding channels "
        "are too coarse here (a tiny model?); use a larger model, a smaller channel divisor "
        "or a looser tolerance.")
  return MatchResult(width=float(best[0]), size=int(best[1]), target=int(target),
                     ratio=float(ratio), evaluations=len(history), history=tuple(history))


def model_size(fn: Callable[..., Any], *args, match: str = "params", **kwargs) -> int:
  """Real parameters, weight-layer MACs or all MACs ("flops") of the Haiku model
  `fn(*args, **kwargs)` (abstract)."""
  common.check_choice(match, MATCH_KINDS, "match")
  report = costs.model_costs(fn, *args, **kwargs)
  if match == "params":
    return int(report.total_params)
  return int(report.macs if match == "macs" else report.all_macs)


def _image_model_size(constructor, width, algebra, match, image_size, num_classes,
                      model_kwargs):
  # The folded layout changes no size; size the unfolded twin, whose layers
  # costs.model_costs reads in the layout it expects.
  model_kwargs = {k: v for k, v in model_kwargs.items() if k != "folded"}

  def forward(images):
    model = constructor(num_classes=num_classes, algebra=algebra, width=width, **model_kwargs)
    return model(images, is_training=False)

  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  return model_size(forward, images, match=match)


def match_image_model(constructor: Callable[..., Any], algebra, *, match: str = "params",
                      reference_algebra="r", reference_width: float = 1.0,
                      target: Optional[int] = None, image_size: int = 224,
                      num_classes: int = 1000, tolerance: float = 0.02,
                      **model_kwargs) -> MatchResult:
  """The width at which `constructor`'s model in `algebra` matches a reference.

  Args:
    constructor: builds an image classifier, called as
      `constructor(num_classes=, algebra=, width=, **model_kwargs)` inside
      `hk.transform`; the model maps images [B, S, S, 3] to logits with
      `model(images, is_training=False)`. E.g. `models.MODELS["resnet50"]`.
    algebra: the algebra of the model to size.
    match: "params" (real parameters), "macs" (weight-layer multiply-adds
      per image of size `image_size`, naive algebra products, see `costs`)
      or "flops" (all multiply-adds per image).
    reference_algebra, reference_width: the reference model (default the real
      model at width 1), built with the same constructor and kwargs.
    target: a size to match instead of the reference model's.
    image_size: S; sets the MACs (parameters do not depend on it).
    num_classes: classes of both models.
    tolerance: accepted |size / target - 1|.
    **model_kwargs: further constructor arguments, shared by both models.

  Returns:
    A MatchResult; build the model with `width=result.width`.
  """
  common.check_choice(match, MATCH_KINDS, "match")
  args = (match, image_size, num_classes, model_kwargs)
  if target is None:
    target = _image_model_size(constructor, check_width(reference_width), reference_algebra,
                               *args)
  # Width 1 costs D (params) or m (MACs) times the real model; start near the answer.
  alg = algebras.get(algebra)
  start = (alg.dim if match == "params" else alg.mults_per_product) ** -0.5
  return match_width(lambda w: _image_model_size(constructor, w, alg, *args), target,
                     tolerance=tolerance, initial_width=start * reference_width)
