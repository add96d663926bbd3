"""ResNet v1.5 over any algebra: the ImageNet depths 18-200 and the CIFAR family.

Shapes (D = algebra.dim, always the last axis):
  B batch, H/W spatial size, F real input channels (3: RGB), F' lifted input
  elements, C channels (algebra elements), K classes.

  images [B, H, W, F] --lift--> [B, H, W, F', D] --stem, stages--> [B, H', W', C, D]
  --global average pool--> [B, C, D] --head--> logits [B, K]

One `ResNet` serves every variant; the variants differ only in the table
entries and arguments passed to it (`imagenet_resnet`, `cifar_resnet`):

* ImageNet (He et al. 2016, v1.5 as in torchvision and `hk.nets.ResNet`):
  7×7/2 stem conv + BN + ReLU + 3×3/2 max pool, four stages of 64, 128, 256,
  512 channels with strides 1, 2, 2, 2; basic blocks (two 3×3 convs) for depths
  18 and 34, bottleneck blocks (1×1, 3×3, 1×1 with 4× expansion) from 50 up,
  the stride on the 3×3 conv (v1.5). Projection shortcuts (1×1 conv + BN)
  wherever the shape changes, identities elsewhere.
* CIFAR (He et al. 2016, Sec. 4.2): depth 6n + 2, a 3×3 stem of 16 channels,
  three stages of n basic blocks with 16, 32, 64 channels and strides 1, 2, 2.
  Shortcuts where the shape changes are projections (option B) by default;
  `shortcut="pad"` gives the paper's option A (subsample, zero-pad channels;
  no parameters). ResNet-20 has 272,474 real parameters with B, 269,722 with A.

Algebra choices (each an argument; the defaults make `algebra="r"` at width 1
exactly the real network, 25,557,032 parameters for ResNet-50):

* Width: a layer whose real network has c channels has
  `matching.scaled_channels(c, width, channel_divisor)` = round(c·width)
  algebra elements (bottleneck outputs: 4× the stage's rounded width). At
  width 1 an algebra model therefore has D× the real model's parameters;
  `matching.match_image_model` finds the width that matches a real model's
  parameters or MACs.
* Lift (`lift`, one of nn.LIFT_MODES; None picks): "identity" for algebras with
  an identity element -- pixel value v becomes v·1, no parameters, so the stem
  conv sees F = 3 input elements; "linear" for algebras without one (cross3):
  a learned real map F -> F·D per pixel (3·3D + 3D parameters).
* Padding (`padding`, one of PADDINGS): "symmetric" pads every conv by k//2
  on each side (explicit ((k//2, k//2), (k//2, k//2))) and the stem's max
  pool by 1 (with -inf), as torchvision, Caffe and He et al.'s Torch code do;
  "same" is TensorFlow's "SAME", which puts the odd pad of a stride-2 layer
  after the image: the 7×7/2 stem pads (2, 3) instead of (3, 3) and a 3×3/2
  conv (0, 1) instead of (1, 1), so every stride-2 branch samples its input
  one pixel off from the 1×1/2 projection shortcut (pad 0 either way) or the
  option-A subsampling x[::2, ::2] beside it. Output sizes, parameters and
  MACs (padded taps count, see `costs`) are the same for both; stride-1
  convs with odd kernels pad identically. Default "same" (the behaviour of
  earlier versions); the paper configs choose (configs/*.py docstrings).
* Convs have no bias (BN follows); weights ~ `nn.initializers.he_normal`.
* Norms: `nn.BatchNorm(algebra=..., **bn_config)`: per-component by default,
  `bn_config={"whitening": True}` for the D×D whitening of Trabelsi et al.
  `zero_init_last_bn` starts each residual branch at zero (Goyal et al. 2017).
* Nonlinearity: `activation`, a name in nn.ACTIVATIONS or a callable;
  component-wise ReLU by default. The stem's max pool is component-wise.
* Layout (`folded`, matrix algebras M_n(B) only): fold the activations once
  after the lift (`ops.fold`: columns into the batch, [B·n, H, W, C·n, Db]),
  run every conv and BN in that layout (`nn.Conv2D(folded=True)`,
  `nn.BatchNorm(folded=True)`; same parameters, same numbers) and unfold the
  pooled features before the head. Saves the per-layer transposes of the
  folded conv path (BENCHMARKS.md). Needs a component-wise activation.
  (`costs.model_costs` reads a folded conv's input as n× wider and n× more
  positions, so size such models unfolded -- `matching` does.)
* Head (`head`): "linear" (default) flattens the pooled C·D real components and
  applies a real fc layer (for algebra "r" exactly the usual fc); "component"
  and "norm" apply an algebra fc layer to K elements and read logits from one
  component (`head_component`) or from the element norms.
* Dropout (`dropout_rate`, default 0: none, as He et al.): on the pooled
  features before the head in training, per real component or per algebra
  element (`dropout_unit`, `nn.dropout`), as in MobileNet.
* Precision of the head (`classifier`): the global average pool, the
  projection out of the algebra, the classifier and the logits are computed
  in float32 whatever the compute dtype: under bfloat16 mixed precision the
  features are cast up before the mean and the head's parameters as they are
  read (`hk.custom_getter`; a bfloat16 value converts exactly), so the pool
  sums in float32 and every product and sum of the head (the weight-side
  sums of the Gauss path included) is done in float32: the logits are
  computed, not merely cast, in float32. Float32 models are unchanged.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import haiku as hk

from algebranets import algebras as algebras_lib
from algebranets import common
from algebranets import nn as ann
from algebranets import ops
from algebranets.models import matching

__all__ = ["ResNet", "imagenet_resnet", "cifar_resnet", "IMAGENET_DEPTHS", "CIFAR_DEPTHS",
           "STEMS", "SHORTCUTS", "HEADS", "PADDINGS", "BN_CONFIG_KEYS", "default_lift",
           "LayerChoices", "check_bn_config", "head_dtype", "classifier"]

STEMS = ("imagenet", "cifar")
SHORTCUTS = ("projection", "pad")
HEADS = ("linear", "component", "norm")
PADDINGS = ("same", "symmetric")
BN_CONFIG_KEYS = ("decay_rate", "eps", "whitening", "create_scale", "create_offset",
                  "scale_init", "offset_init", "cross_replica_axis")
EXPANSION = 4  # bottleneck output channels per stage channel
_NORM_ACTIVATIONS = (ann.activations.mod_relu, ann.activations.norm_gate)

# depth -> (blocks per stage, bottleneck)
IMAGENET_DEPTHS = {
    18: ((2, 2, 2, 2), False),
    34: ((3, 4, 6, 3), False),
    50: ((3, 4, 6, 3), True),
    101: ((3, 4, 23, 3), True),
    152: ((3, 8, 36, 3), True),
    200: ((3, 24, 36, 3), True),
}
CIFAR_DEPTHS = (20, 32, 44, 56, 110)  # the paper's; any 6n + 2 builds


def default_lift(algebra) -> str:
  """The default lift: "identity" if the algebra has an identity element, else "linear"."""
  return "identity" if algebras_lib.get(algebra).identity is not None else "linear"


def check_bn_config(bn_config: Optional[Mapping[str, Any]]) -> dict[str, Any]:
  """A copy of bn_config; ValueError naming unknown keys."""
  bn_config = dict(bn_config or {})
  unknown = sorted(set(bn_config) - set(BN_CONFIG_KEYS))
  if unknown:
    raise ValueError(f"Unknown bn_config keys {unknown}; valid keys: {', '.join(BN_CONFIG_KEYS)}.")
  return bn_config


def head_dtype(dtype):
  """The dtype the classification head computes in: float32, or wider if the model is."""
  return jnp.promote_types(dtype, jnp.float32)


def classifier(x, num_classes: int, algebra, head: str, head_component):
  """Pooled features [B, C, D] -> real logits [B, K], computed in float32 (or wider).

  head "linear": the real fc layer "logits" on the flattened C·D components; "component" /
  "norm": the algebra fc layer "logits" to K elements, then "project" (module docstring).
  """
  dtype = head_dtype(x.dtype)

  def wide_params(next_getter, value, context):
    del context
    return next_getter(value.astype(head_dtype(value.dtype)))

  x = x.astype(dtype)
  with hk.custom_getter(wide_params):
    if head == "linear":
      return ann.Project(num_classes, algebra=algebra, mode="linear", name="logits")(x)
    x = ann.Linear(num_classes, algebra=algebra, name="logits")(x)          # [B, K, D]
    return ann.Project(None, algebra=algebra, mode=head, component=head_component,
                       name="project")(x)                                    # [B, K]


class LayerChoices:
  """The conv / BN / activation choices of one model, shared by its blocks.

  Not a Haiku module: the layers it builds are named after their caller.
  """

  def __init__(self, algebra, bn_config, activation, w_init, conv_path, folded=False,
               padding="same"):
    self.algebra = algebra
    self.bn_config = bn_config
    self.activation = ann.get_activation(activation)
    self.w_init = w_init
    self.conv_path = conv_path
    self.folded = bool(folded)
    self.padding = common.check_choice(padding, PADDINGS, "padding")
    if self.folded:
      if algebra.matrix_base is None:
        raise ValueError(f"folded=True needs a matrix algebra M_n(B) (m2r, m3r, m4r, m2c, "
                         f"...); {algebra.name!r} is not one.")
      if self.activation in _NORM_ACTIVATIONS:
        raise ValueError(f"folded=True needs a component-wise activation; {activation!r} "
                         "acts on element norms, which the folded layout splits up.")

  def channels(self, x):
    """The number of algebra channels C of activations x (either layout)."""
    return x.shape[-2] // self.algebra.matrix_base[0] if self.folded else x.shape[-2]

  def conv(self, channels, kernel, stride=1, groups=1, name=None):
    """A bias-free conv (BN follows); groups = channels is a depthwise conv."""
    w_init = self.w_init or ann.initializers.he_normal(self.algebra)
    pad = kernel // 2
    padding = "SAME" if self.padding == "same" else ((pad, pad), (pad, pad))
    return ann.Conv2D(channels, kernel, algebra=self.algebra, stride=stride, padding=padding,
                      with_bias=False, feature_group_count=groups, w_init=w_init,
                      path=self.conv_path, folded=self.folded, name=name)

  def max_pool(self, x):
    """3×3/2 max pool over H and W of [B, H, W, C, D] (component-wise; either layout)."""
    window, strides = (1, 3, 3, 1, 1), (1, 2, 2, 1, 1)
    if self.padding == "same":
      return hk.max_pool(x, window_shape=window, strides=strides, padding="SAME")
    # torchvision's MaxPool2d(3, 2, padding=1): one -inf row/column on each side. (A Python
    # -inf, as hk.max_pool passes: JAX then lowers to its differentiable max-pool primitive.)
    pads = ((0, 0), (1, 1), (1, 1), (0, 0), (0, 0))
    return jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, window, strides, pads)

  def bn(self, name, zero_scale=False):
    """nn.BatchNorm with the model's bn_config (scale initialised to 0 if asked)."""
    config = dict(self.bn_config)
    if zero_scale and config.get("create_scale", True):
      config["scale_init"] = jnp.zeros
    return ann.BatchNorm(algebra=self.algebra, folded=self.folded, name=name, **config)

  def fold(self, x):
    """[B, ..., C, D] -> the model's layout."""
    return ops.fold(x, self.algebra) if self.folded else x

  def unfold(self, x):
    """The model's layout -> [B, ..., C, D]."""
    return ops.unfold(x, self.algebra) if self.folded else x


class Block(hk.Module):
  """A residual block, basic (3×3, 3×3) or bottleneck (1×1, 3×3/stride, 1×1·4)."""

  def __init__(self, channels: int, stride: int, *, bottleneck: bool, shortcut: str,
               zero_init_last_bn: bool, layers: LayerChoices, name: Optional[str] = None):
    super().__init__(name=name)
    self.channels = channels
    self.out_channels = channels * EXPANSION if bottleneck else channels
    self.stride = stride
    self.bottleneck = bottleneck
    self.shortcut = shortcut
    self.zero_init_last_bn = zero_init_last_bn
    self.layers = layers

  def __call__(self, x, is_training: bool, test_local_stats: bool = False):
    """x [B, H, W, Cin, D] -> [B, H/stride, W/stride, Cout, D] (or both folded)."""
    layers, s, c_out = self.layers, self.stride, self.out_channels
    c_in = layers.channels(x)
    shortcut = x
    if s != 1 or c_in != c_out:
      if self.shortcut == "projection":
        shortcut = layers.conv(c_out, 1, s, name="shortcut_conv")(x)  # [B, H', W', Cout, D]
        shortcut = layers.bn("shortcut_batchnorm")(shortcut, is_training, test_local_stats)
      else:
        if c_out < c_in:
          raise ValueError(f"shortcut 'pad' cannot shrink channels ({c_in} -> {c_out}); "
                           "use shortcut 'projection'.")
        # Zero elements appended to the channels; in the folded layout channel
        # i·n + r holds row r of element i, so whole elements are appended too.
        shortcut = x[:, ::s, ::s]                                     # [B, H', W', Cin, D]
        extra = x.shape[-2] // c_in * (c_out - c_in)
        shortcut = jnp.pad(shortcut, ((0, 0),) * 3 + ((0, extra), (0, 0)))
    if self.bottleneck:
      specs = ((self.channels, 1, 1), (self.channels, 3, s), (c_out, 1, 1))
    else:
      specs = ((c_out, 3, s), (c_out, 3, 1))
    out = x
    for i, (channels, kernel, stride) in enumerate(specs):
      last = i == len(specs) - 1
      out = layers.conv(channels, kernel, stride, name=f"conv_{i}")(out)  # [B, H', W', C, D]
      out = layers.bn(f"batchnorm_{i}", zero_scale=last and self.zero_init_last_bn)(
          out, is_training, test_local_stats)
      if not last:
        out = layers.activation(out)
    return layers.activation(out + shortcut)


class ResNet(hk.Module):
  """ResNet v1.5 over an algebra (see the module docstring)."""

  def __init__(self, blocks_per_stage: Sequence[int], num_classes: int, *,
               algebra="r", width: float = 1.0, bottleneck: bool = False,
               stage_channels: Sequence[int] = (64, 128, 256, 512),
               stem: str = "imagenet", shortcut: str = "projection",
               channel_divisor: int = 1,
               bn_config: Optional[Mapping[str, Any]] = None,
               zero_init_last_bn: bool = False,
               activation: Union[str, Callable] = "relu",
               lift: Optional[str] = None, head: str = "linear",
               head_component: Union[int, str] = 0,
               w_init: Union[None, str, hk.initializers.Initializer] = None,
               conv_path: Optional[str] = None, folded: bool = False,
               padding: str = "same", dropout_rate: float = 0.0,
               dropout_unit: str = ann.DEFAULT_DROPOUT_UNIT, name: Optional[str] = None):
    """Constructs the network.

    Args:
      blocks_per_stage: residual blocks in each stage; stage 0 keeps the stem's
        resolution, every later stage halves it in its first block.
      num_classes: K, the number of logits.
      algebra: an Algebra or a registered name.
      width: multiplies every channel count (then rounded, see module doc).
      bottleneck: bottleneck blocks (4× expansion) instead of basic blocks.
      stage_channels: channels of each stage at width 1 (bottleneck: its 3×3
        conv); also the stem's output is stage_channels[0].
      stem: one of STEMS: "imagenet" (7×7/2 conv, 3×3/2 max pool) or "cifar"
        (3×3 conv).
      shortcut: one of SHORTCUTS, for blocks that change the shape:
        "projection" (1×1 conv + BN, option B) or "pad" (option A).
      channel_divisor: channel counts are multiples of it.
      bn_config: keyword arguments of nn.BatchNorm (keys in BN_CONFIG_KEYS),
        e.g. {"whitening": True, "decay_rate": 0.9}.
      zero_init_last_bn: initialise the scale of each block's last BN to 0.
      activation: a name in nn.ACTIVATIONS or a callable on [..., C, D].
      lift: one of nn.LIFT_MODES, or None for `default_lift(algebra)`.
      head: one of HEADS (see module doc).
      head_component: the component read by head "component" (index or name).
      w_init: conv weight initialiser, or its name in nn.initializers.INITIALIZERS
        (e.g. "polar", so a config can choose it); default
        nn.initializers.he_normal(algebra).
      conv_path: `ops.conv2d` path of every conv; None picks the fastest (with
        `folded`, the path of the base algebra's op).
      folded: keep M_n(B) activations folded between layers (see module doc).
      padding: one of PADDINGS: "same" (TensorFlow's) or "symmetric" (k//2 on
        each side, torchvision's); see the module doc.
      dropout_rate: dropout on the pooled features in training (needs an rng); 0
        (default) is the standard ResNet.
      dropout_unit: one of nn.DROPOUT_UNITS, "component" (default) or "element".
      name: module name.
    """
    super().__init__(name=name)
    self.algebra = alg = algebras_lib.get(algebra)
    self.blocks_per_stage = tuple(int(n) for n in blocks_per_stage)
    if not self.blocks_per_stage or min(self.blocks_per_stage) < 1:
      raise ValueError(f"blocks_per_stage must be positive ints, got {blocks_per_stage!r}.")
    if len(stage_channels) != len(self.blocks_per_stage):
      raise ValueError(f"stage_channels {tuple(stage_channels)} must have one entry per stage "
                       f"of blocks_per_stage {self.blocks_per_stage}.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
      raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
    self.num_classes = num_classes
    self.width = matching.check_width(width)
    self.channels = tuple(matching.scaled_channels(int(c), self.width, channel_divisor)
                          for c in stage_channels)
    self.bottleneck = bool(bottleneck)
    self.stem = common.check_choice(stem, STEMS, "stem")
    self.shortcut = common.check_choice(shortcut, SHORTCUTS, "shortcut")
    self.lift = (default_lift(alg) if lift is None
                 else common.check_choice(lift, ann.LIFT_MODES, "lift"))
    self.head = common.check_choice(head, HEADS, "head")
    self.head_component = head_component
    self.zero_init_last_bn = bool(zero_init_last_bn)
    if isinstance(w_init, str):
      w_init = ann.initializers.by_name(w_init, alg)
    self.layers = LayerChoices(alg, check_bn_config(bn_config), activation, w_init, conv_path,
                               folded, padding)
    if not 0.0 <= dropout_rate < 1.0:
      raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}.")
    self.dropout_rate = float(dropout_rate)
    self.dropout_unit = ann.check_dropout_unit(dropout_unit)

  def __call__(self, images, is_training: bool, test_local_stats: bool = False):
    """Real images [B, H, W, F] -> real logits [B, K] (float32 or wider, see module doc)."""
    x = jnp.asarray(images)
    alg, layers = self.algebra, self.layers
    if x.ndim != 4:
      raise ValueError(f"ResNet expects real images [B, H, W, F], got shape {tuple(x.shape)}.")
    f = x.shape[-1]
    lift_channels = f // alg.dim if self.lift == "split" else f
    if lift_channels < 1:
      raise ValueError(f"lift 'split' needs at least D={alg.dim} input channels, got F={f}.")
    x = ann.Lift(lift_channels, algebra=alg, mode=self.lift, name="lift")(x)  # [B, H, W, F', D]
    x = layers.fold(x)                                  # folded: [B·n, H, W, F'·n, Db]

    if self.stem == "imagenet":
      x = layers.conv(self.channels[0], 7, 2, name="stem_conv")(x)          # [B, H/2, W/2, C, D]
    else:
      x = layers.conv(self.channels[0], 3, 1, name="stem_conv")(x)          # [B, H, W, C, D]
    x = layers.activation(layers.bn("stem_batchnorm")(x, is_training, test_local_stats))
    if self.stem == "imagenet":
      x = layers.max_pool(x)                                                # [B, H/4, W/4, C, D]

    for i, (num_blocks, channels) in enumerate(zip(self.blocks_per_stage, self.channels)):
      for j in range(num_blocks):
        stride = 2 if i > 0 and j == 0 else 1
        x = Block(channels, stride, bottleneck=self.bottleneck, shortcut=self.shortcut,
                  zero_init_last_bn=self.zero_init_last_bn, layers=layers,
                  name=f"stage_{i}_block_{j}")(x, is_training, test_local_stats)

    x = x.astype(head_dtype(x.dtype))                                       # float32 head
    x = layers.unfold(jnp.mean(x, axis=(1, 2)))                             # [B, C, D]
    if is_training and self.dropout_rate > 0:
      x = ann.dropout(hk.next_rng_key(), self.dropout_rate, x, self.dropout_unit)  # [B, C, D]
    return classifier(x, self.num_classes, alg, self.head, self.head_component)  # [B, K]


def imagenet_resnet(depth: int, num_classes: int = 1000, **kwargs) -> ResNet:
  """ResNet-{18, 34, 50, 101, 152, 200} v1.5 for ImageNet; kwargs go to ResNet."""
  if depth not in IMAGENET_DEPTHS:
    raise ValueError(f"Unknown ImageNet ResNet depth {depth!r}; valid depths: "
                     f"{', '.join(map(str, IMAGENET_DEPTHS))}.")
  blocks, bottleneck = IMAGENET_DEPTHS[depth]
  kwargs.setdefault("name", f"resnet{depth}")
  kwargs.setdefault("bottleneck", bottleneck)
  return ResNet(blocks, num_classes, **kwargs)


def cifar_resnet(depth: int, num_classes: int = 10, **kwargs) -> ResNet:
  """CIFAR ResNet-{20, 32, 44, 56, 110} (any depth 6n + 2); kwargs go to ResNet."""
  if isinstance(depth, bool) or not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
    raise ValueError(f"CIFAR ResNet depth must be 6n + 2 with n >= 1 (e.g. "
                     f"{', '.join(map(str, CIFAR_DEPTHS))}), got {depth!r}.")
  n = (depth - 2) // 6
  kwargs.setdefault("name", f"cifar_resnet{depth}")
  kwargs.setdefault("stage_channels", (16, 32, 64))
  kwargs.setdefault("stem", "cifar")
  return ResNet((n, n, n), num_classes, **kwargs)

