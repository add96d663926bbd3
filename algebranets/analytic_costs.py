"""Exact closed-form parameter and multiply-add counts of the registered models.

Why: matching an algebra model's width to a real model evaluates its size many times, and a
traced count (`costs.model_costs`: the model traced abstractly) takes 0.3-1 s per evaluation;
the paper sweeps' estimate matches 64 models and `python -m algebranets.costs --model=resnet50
--match=params` nine. These formulas take microseconds. They count exactly what
`costs.model_costs` counts (its conventions: real parameters, weight-layer MACs from the layer
formulas, other MACs of the contractions outside weight layers), and the tests hold them equal
to the traced counts for every registered model and each option they cover.

Covered (anything else returns None, and the callers trace):
  image models   `models.MODELS` (ResNet, CIFAR ResNet, MobileNet-v1) on one image [1, S, S, 3]
                 in inference, with per-component batch norm (any create_scale/offset), any
                 parameter-free activation, lift "identity" / "linear" / "split", head
                 "linear" / "component" / "norm", shortcut "projection" / "pad", any width,
                 channel divisor, padding ("same" and "symmetric" give the same output sizes),
                 initialiser, conv path, folded layout (the same sizes). Not: whitening batch
                 norm (its D×D products are other MACs), ModReLU / NormGate (a bias per call).
  Transformer-XL `TransformerXL(**config)` on one training segment of T tokens per sequence
                 with a full memory of mem_len positions (`transformer_xl.model_costs`), plain
                 or adaptive softmax (cutoffs, tied or untied tables, tail_capacity) with
                 d_embed = d_model and div_val 1. Not: adaptive projections (div_val > 1 or
                 d_embed != d_model: their tied transposes cost what the op path computes).

Sizes (T tokens, K = M + T keys, per sequence; m real multiplies per algebra product, D
components):
  Transformer-XL weight layers per layer: (T·C·H·Ch [q] + K·C·2H·Ch [kv] + K·C·H·Ch [r, on the
  K encodings, not per sequence] + T·H·Ch·C [o] + 2·T·C·F [ff]) · m; other MACs per layer
  3·T·K·H·Ch·D (scores, relative term, weighted values); logits N·(V_0 + n)·C·D for the head
  cluster and, with targets, ceil(tail_capacity·N)·V_i·C·D per tail cluster (the gathered
  branch of its lax.cond, the cheaper one), N = B·T.

`match_image_model` and `matched_config` are `models.match_image_model` and
`transformer_xl.matched_config` on these counts: the same search (`matching.match_width`, the
same targets, starting widths and tolerances) on the same sizes, so the same widths; they trace
where the formulas do not cover a model.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Optional

from algebranets import algebras
from algebranets import common
from algebranets import models
from algebranets.models import adaptive, matching, mobilenet, resnet
from algebranets.models import transformer_xl

__all__ = ["Sizes", "image_model", "transformer_xl_model", "size_of", "match_image_model",
           "matched_config"]


class Sizes(NamedTuple):
  """A model's counts, as `costs.ModelCost` has them.

  params: real parameters (all leaves); macs, fast_macs: weight-layer MACs with the naive and
  the fast algebra product; other_macs: contractions outside the weight layers.
  """
  params: int
  macs: int
  fast_macs: int
  other_macs: int = 0

  @property
  def all_macs(self) -> int:
    return self.macs + self.other_macs

  @classmethod
  def of(cls, report) -> "Sizes":
    """The Sizes of a traced `costs.ModelCost`."""
    return cls(int(report.total_params), int(report.macs), int(report.fast_macs),
               int(report.other_macs))


def size_of(sizes: Sizes, match: str) -> int:
  """The size a match compares: params, weight-layer MACs ("macs") or all MACs ("flops")."""
  common.check_choice(match, matching.MATCH_KINDS, "match")
  if match == "params":
    return sizes.params
  return sizes.macs if match == "macs" else sizes.all_macs


# ------------------------------------------------------------------ image models
_NORM_ACTIVATIONS = ("modrelu", "norm_gate")  # each call creates a bias: not covered
_RESNET_KEYS = {"blocks_per_stage", "width", "bottleneck", "stage_channels", "stem", "shortcut",
                "channel_divisor", "bn_config", "zero_init_last_bn", "activation", "lift", "head",
                "head_component", "w_init", "conv_path", "folded", "padding", "name"}
_MOBILENET_KEYS = {"width", "stem_channels", "blocks", "channel_divisor", "bn_config",
                   "activation", "lift", "head", "head_component", "dropout_rate", "w_init",
                   "conv_path", "folded", "padding", "name"}


def _image_architectures() -> dict:
  """Registered image model name -> (architecture, its default constructor arguments)."""
  out = {}
  for depth, (blocks, bottleneck) in resnet.IMAGENET_DEPTHS.items():
    out[f"resnet{depth}"] = ("resnet", dict(blocks_per_stage=blocks, bottleneck=bottleneck,
                                            stage_channels=(64, 128, 256, 512), stem="imagenet"))
  for depth in resnet.CIFAR_DEPTHS:
    n = (depth - 2) // 6
    out[f"cifar_resnet{depth}"] = ("resnet", dict(blocks_per_stage=(n, n, n), bottleneck=False,
                                                  stage_channels=(16, 32, 64), stem="cifar"))
  out["mobilenet_v1"] = ("mobilenet", dict(stem_channels=32, blocks=mobilenet.MOBILENET_V1_BLOCKS))
  return out


_IMAGE_ARCHITECTURES = _image_architectures()


class _Counter:
  """Accumulates the counts of an image model's layers (B = 1, see `costs`)."""

  def __init__(self, alg):
    self.alg, self.d = alg, alg.dim
    self.params = self.macs = self.fast = 0

  def conv(self, out_size: int, kernel: int, c_in: int, c_out: int, groups: int = 1):
    taps = kernel * kernel
    per_position = taps * (c_in // groups) * c_out
    self.params += per_position * self.d                          # no bias: BN follows
    self.macs += out_size * out_size * per_position * self.alg.mults_per_product
    self.fast += out_size * out_size * per_position * self.alg.fast_mults_per_product

  def real_dense(self, c_in: int, c_out: int, bias: bool = True):
    self.params += c_in * c_out + (c_out if bias else 0)
    self.macs += c_in * c_out
    self.fast += c_in * c_out


def _conv_out(size: int, stride: int) -> int:
  # "SAME" and symmetric k//2 padding of an odd kernel both give ceil(S / stride).
  return -(-size // stride)


def _common(arch_kwargs: Mapping[str, Any], alg):
  """(lift mode, BN params per channel, head) or None if the formulas do not cover them."""
  bn = dict(arch_kwargs.get("bn_config") or {})
  activation = arch_kwargs.get("activation", "relu")
  if bn.get("whitening") or not isinstance(activation, str) or (
      activation.lower() in _NORM_ACTIVATIONS):
    return None
  lift = arch_kwargs.get("lift") or resnet.default_lift(alg)
  head = arch_kwargs.get("head", "linear")
  if lift not in ("identity", "linear", "split") or head not in resnet.HEADS:
    return None
  if lift == "identity" and alg.identity is None:
    return None
  bn_params = (int(bn.get("create_scale", True)) + int(bn.get("create_offset", True))) * alg.dim
  return lift, bn_params, head


def _lift(count: _Counter, lift: str, image_size: int, channels: int = 3) -> Optional[int]:
  """Counts the lift of [1, S, S, F] images; returns F', the stem conv's input elements."""
  if lift == "linear":
    d = count.d
    count.params += channels * channels * d + channels * d
    count.macs += image_size * image_size * channels * channels * d
    count.fast += image_size * image_size * channels * channels * d
    return channels
  if lift == "split":
    return channels // count.d if channels % count.d == 0 else None   # else the model refuses
  return channels


def _head(count: _Counter, head: str, c: int, num_classes: int):
  alg = count.alg
  if head == "linear":
    count.real_dense(c * alg.dim, num_classes)                    # Project: fc on C·D reals
  else:
    count.params += (c * num_classes + num_classes) * alg.dim     # algebra fc with bias
    count.macs += c * num_classes * alg.mults_per_product
    count.fast += c * num_classes * alg.fast_mults_per_product


def _resnet(kw: Mapping[str, Any], alg, num_classes: int, image_size: int) -> Optional[Sizes]:
  choices = _common(kw, alg)
  if choices is None:
    return None
  lift, bn_params, head = choices
  width = matching.check_width(kw.get("width", 1.0))
  divisor = kw.get("channel_divisor", 1)
  channels = [matching.scaled_channels(int(c), width, divisor) for c in kw["stage_channels"]]
  count = _Counter(alg)
  c_in = _lift(count, lift, image_size)
  if c_in is None:
    return None
  size = image_size
  if kw["stem"] == "imagenet":
    size = _conv_out(size, 2)
    count.conv(size, 7, c_in, channels[0])
  else:
    count.conv(size, 3, c_in, channels[0])
  count.params += bn_params * channels[0]
  if kw["stem"] == "imagenet":
    size = _conv_out(size, 2)                                     # 3×3/2 max pool
  c_in = channels[0]
  for i, (num_blocks, ch) in enumerate(zip(kw["blocks_per_stage"], channels)):
    for j in range(num_blocks):
      stride = 2 if i > 0 and j == 0 else 1
      c_out = ch * resnet.EXPANSION if kw["bottleneck"] else ch
      out = _conv_out(size, stride)
      if stride != 1 or c_in != c_out:
        if kw.get("shortcut", "projection") == "projection":
          count.conv(out, 1, c_in, c_out)
          count.params += bn_params * c_out
        elif c_out < c_in:
          return None                                              # the model refuses it
      specs = (((ch, 1, 1), (ch, 3, stride), (c_out, 1, 1)) if kw["bottleneck"] else
               ((c_out, 3, stride), (c_out, 3, 1)))
      c, s = c_in, size
      for channels_k, kernel, st in specs:
        s = _conv_out(s, st)
        count.conv(s, kernel, c, channels_k)
        count.params += bn_params * channels_k
        c = channels_k
      c_in, size = c_out, out
  _head(count, head, c_in, num_classes)
  return Sizes(count.params, count.macs, count.fast, 0)


def _mobilenet(kw: Mapping[str, Any], alg, num_classes: int, image_size: int
               ) -> Optional[Sizes]:
  choices = _common(kw, alg)
  if choices is None:
    return None
  lift, bn_params, head = choices
  width = matching.check_width(kw.get("width", 1.0))
  scale = lambda c: matching.scaled_channels(int(c), width, kw.get("channel_divisor", 1))
  count = _Counter(alg)
  c_in = _lift(count, lift, image_size)
  if c_in is None:
    return None
  size = _conv_out(image_size, 2)
  stem = scale(kw["stem_channels"])
  count.conv(size, 3, c_in, stem)
  count.params += bn_params * stem
  c_in = stem
  for channels, stride in kw["blocks"]:
    channels = scale(channels)
    size = _conv_out(size, int(stride))
    count.conv(size, 3, c_in, c_in, groups=c_in)                  # depthwise
    count.params += bn_params * c_in
    count.conv(size, 1, c_in, channels)                           # pointwise
    count.params += bn_params * channels
    c_in = channels
  _head(count, head, c_in, num_classes)
  return Sizes(count.params, count.macs, count.fast, 0)


def image_model(name: str, *, algebra, num_classes: int, image_size: int,
                **kwargs) -> Optional[Sizes]:
  """The counts of `models.MODELS[name](num_classes=, algebra=, **kwargs)` on one image.

  As `costs.model_costs(lambda x: model(x, is_training=False), [1, S, S, 3])`; None when the
  model or one of its options is not covered (see the module docstring).
  """
  if name not in _IMAGE_ARCHITECTURES:
    return None
  arch, defaults = _IMAGE_ARCHITECTURES[name]
  if set(kwargs) - (_RESNET_KEYS if arch == "resnet" else _MOBILENET_KEYS):
    return None
  alg = algebras.get(algebra)
  kw = dict(defaults, **kwargs)
  build = _resnet if arch == "resnet" else _mobilenet
  return build(kw, alg, int(num_classes), int(image_size))


# ---------------------------------------------------------------- Transformer-XL
_TXL_KEYS = {"vocab_size", "d_model", "n_layers", "n_heads", "d_head", "d_inner", "mem_len",
             "clamp_len", "dropout", "dropatt", "pre_lnorm", "same_length", "cutoffs",
             "div_val", "d_embed", "tie_weights", "tie_projs", "untie_r", "final_lnorm",
             "activation", "init", "init_std", "proj_init_std", "tail_capacity", "name"}


def transformer_xl_model(config: Mapping[str, Any], algebra, *, seq_len: int,
                         batch_size: int = 1, with_mems: bool = True,
                         with_targets: bool = True) -> Optional[Sizes]:
  """The counts of `transformer_xl.model_costs(config, algebra, seq_len, ...)`.

  One segment of `seq_len` tokens per sequence of `batch_size`, a full memory of mem_len
  positions (`with_mems`), the training loss (`with_targets`) or the log-probabilities of every
  token. None when the config is not covered (see the module docstring).
  """
  if set(config) - _TXL_KEYS:
    return None
  alg = algebras.get(algebra)
  d, mults, fast_mults = alg.dim, alg.mults_per_product, alg.fast_mults_per_product
  vocab, c, n_layers = int(config["vocab_size"]), int(config["d_model"]), int(config["n_layers"])
  heads, d_head, d_inner = int(config["n_heads"]), int(config["d_head"]), int(config["d_inner"])
  mem_len = int(config.get("mem_len", 0))
  d_embed = config.get("d_embed")
  d_embed = c if d_embed is None else int(d_embed)
  activation = config.get("activation", "relu")
  if (int(config.get("div_val", 1)) != 1 or d_embed != c or not isinstance(activation, str)
      or activation.lower() in _NORM_ACTIVATIONS):
    return None
  bounds = adaptive.cluster_bounds(vocab, config.get("cutoffs", ()) or ())
  clusters = len(bounds)
  pre_lnorm = bool(config.get("pre_lnorm", False))
  final_lnorm = config.get("final_lnorm")
  final_lnorm = pre_lnorm if final_lnorm is None else bool(final_lnorm)
  hc = heads * d_head

  per_layer = (c * hc + c * 2 * hc + c * hc + hc * c                 # q, kv, r, o
               + c * d_inner + d_inner + d_inner * c + c              # ff_in, ff_out (bias)
               + 4 * c) * d                                           # two LayerNorms
  params = vocab * c * d + n_layers * per_layer                       # embedding table, layers
  params += 2 * hc * d * (n_layers if config.get("untie_r", False) else 1)   # u, v
  params += 2 * c * d if final_lnorm else 0
  params += vocab                                                     # output bias
  if clusters > 1:
    params += (clusters - 1) * c * d + (clusters - 1)                 # cluster head
  if not config.get("tie_weights", True):
    params += vocab * c * d                                           # own output tables

  b, t = int(batch_size), int(seq_len)
  k = t + (mem_len if with_mems and mem_len else 0)
  products = n_layers * (b * t * c * hc + b * k * c * 2 * hc + k * c * hc + b * t * hc * c
                         + 2 * b * t * c * d_inner)
  other = n_layers * 3 * b * heads * t * k * d_head * d
  n = b * t
  other += n * (bounds[0][1] + clusters - 1) * c * d                  # head cluster logits
  capacity = config.get("tail_capacity", 0.125)
  for lo, hi in bounds[1:]:
    rows = n
    if with_targets and capacity is not None:
      rows = min(n, math.ceil(capacity * n))                          # gathered tail positions
    other += rows * (hi - lo) * c * d
  return Sizes(params, products * mults, products * fast_mults, other)


# ---------------------------------------------------------------- matching
def match_image_model(name: str, algebra, *, match: str = "params", reference_algebra="r",
                      reference_width: float = 1.0, image_size: int = 224,
                      num_classes: int = 1000, tolerance: float = 0.02,
                      **model_kwargs) -> matching.MatchResult:
  """`models.match_image_model(models.MODELS[name], ...)` on the closed-form counts.

  The same target, starting width and search, so the same result; traced (the models function
  itself) when the formulas do not cover the model.
  """
  common.check_choice(match, matching.MATCH_KINDS, "match")
  kwargs = {k: v for k, v in model_kwargs.items() if k != "folded"}
  alg = algebras.get(algebra)

  def size(width, a):
    sizes = image_model(name, algebra=a, num_classes=num_classes, image_size=image_size,
                        width=width, **kwargs)
    return None if sizes is None else size_of(sizes, match)

  reference_width = matching.check_width(reference_width)
  target = size(reference_width, reference_algebra)
  if target is None or size(reference_width, alg) is None:
    return models.match_image_model(
        models.get_model(name), algebra, match=match, reference_algebra=reference_algebra,
        reference_width=reference_width, image_size=image_size, num_classes=num_classes,
        tolerance=tolerance, **model_kwargs)
  start = (alg.dim if match == "params" else alg.mults_per_product) ** -0.5
  return matching.match_width(lambda w: size(w, alg), target, tolerance=tolerance,
                              initial_width=start * reference_width)


def matched_config(reference: Mapping[str, Any], algebra, match: str = "params", *,
                   tol: float = 0.02, seq_len: Optional[int] = None) -> dict:
  """`transformer_xl.matched_config` on the closed-form counts (same rule, same search, same
  result); that function itself (traced) for "width" and where the formulas do not cover the
  model."""
  common.check_choice(match, transformer_xl.MATCH_MODES, "match")
  alg = algebras.get(algebra)
  ref = dict(reference)
  if seq_len is None:
    seq_len = ref.get("mem_len") or 128

  def cost(cfg, a=alg):
    sizes = transformer_xl_model(cfg, a, seq_len=seq_len)
    return None if sizes is None else size_of(sizes, match)

  if match == "width" or cost(ref, "r") is None or cost(ref) is None:
    return transformer_xl.matched_config(reference, algebra, match, tol=tol, seq_len=seq_len)
  c_ref, f_ref, ch_ref = ref["d_model"], ref["d_inner"], ref["d_head"]

  # From here on, transformer_xl.matched_config line by line.
  def sized(c, f, ch):
    out = dict(ref, d_model=c, d_inner=f, d_head=ch)
    if ref.get("d_embed") is not None:
      out["d_embed"] = max(1, round(ref["d_embed"] * c / c_ref))
    return out

  def at_width(w):
    c = matching.scaled_channels(c_ref, w)
    return sized(c, matching.scaled_channels(f_ref, w), max(1, round(ch_ref * c / c_ref)))

  target = cost(ref, "r")
  start = (alg.dim if match == "params" else alg.mults_per_product) ** -0.5
  coarse = matching.match_width(lambda w: cost(at_width(w)), target, tolerance=0.5,
                                stop_tolerance=tol / 4, initial_width=start,
                                max_evaluations=12)
  base = at_width(coarse.width)
  if abs(coarse.ratio - 1) <= tol / 10:
    return base
  fine = matching.match_width(
      lambda w: cost(dict(base, d_inner=matching.scaled_channels(base["d_inner"], w))),
      target, tolerance=tol, initial_width=1.0)
  return dict(base, d_inner=matching.scaled_channels(base["d_inner"], fine.width))
