"""MobileNet-v1 over any algebra (Howard et al. 2017), with a width multiplier.

Shapes (D = algebra.dim, always the last axis):
  B batch, H/W spatial size, F real input channels (3: RGB), F' lifted input
  elements, C channels (algebra elements), K classes.

  images [B, H, W, F] --lift--> [B, H, W, F', D] --3×3/2 conv--> [B, H/2, W/2, C, D]
  --13 depthwise-separable blocks--> [B, H/32, W/32, C, D] --average pool--> [B, C, D]
  --head--> logits [B, K]

The architecture of the paper (Table 1): a 3×3/2 conv of 32 channels, then 13
blocks of [3×3 depthwise conv, BN, ReLU, 1×1 conv, BN, ReLU] with output
channels 64, 128/2, 128, 256/2, 256, 512/2, 5 × 512, 1024/2, 1024 (/2: stride
2 on the depthwise conv), global average pooling and a fully connected layer
with bias. Convs have no bias (BN follows). With `algebra="r"`, width 1 and
1000 classes: 4,231,976 parameters and 569 M multiply-adds at 224×224.

The depthwise conv is an algebra depthwise conv: `nn.Conv2D` with
feature_group_count = channels, one algebra element weight per channel and tap
(D real parameters, one algebra product per tap and output element).

Width, lift, norms, activation and head work as in `resnet` (see its
docstring): C = `matching.scaled_channels(c, width, channel_divisor)` algebra
elements where the real network has c channels (the paper's α multiplier
truncates instead, int(c·α), with at least 8 channels; equal at α = 1), lift
"identity" (or "linear" without an identity element), component-wise ReLU,
per-component BatchNorm, and a real fc layer on the flattened C·D components;
`folded=True` keeps M_n(B) activations folded between layers; the pool and the
head compute in float32 under bfloat16 mixed precision.

Padding (`padding`, as in `resnet`): "same" (TensorFlow's, as the paper's
TF-slim code) or "symmetric" (1 on each side of every 3×3 conv, as Caffe,
MXNet/GluonCV and torchvision). They differ only at the stride-2 convs (the
stem and the depthwise convs of blocks 1, 3, 5 and 11), where "SAME" pads
(0, 1) and so samples the input one pixel off the symmetric grid; output
sizes, parameters and MACs are the same.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence, Union

import jax.numpy as jnp
import haiku as hk

from algebranets import algebras as algebras_lib
from algebranets import common
from algebranets import nn as ann
from algebranets.models import matching
from algebranets.models.resnet import (
    HEADS, LayerChoices, check_bn_config, classifier, default_lift,
    head_dtype)

__all__ = ["MobileNetV1", "MOBILENET_V1_BLOCKS"]

# (output channels, stride) of the 13 depthwise-separable blocks.
MOBILENET_V1_BLOCKS = (
    (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
    (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1),
)


class MobileNetV1(hk.Module):
  """MobileNet-v1 over an algebra (see the module docstring)."""

  def __init__(self, num_classes: int = 1000, *, algebra="r", width: float = 1.0,
               stem_channels: int = 32,
               blocks: Sequence[tuple[int, int]] = MOBILENET_V1_BLOCKS,
               channel_divisor: int = 1,
               bn_config: Optional[Mapping[str, Any]] = None,
               activation: Union[str, Callable] = "relu",
               lift: Optional[str] = None, head: str = "linear",
               head_component: Union[int, str] = 0, dropout_rate: float = 0.0,
               w_init: Optional[hk.initializers.Initializer] = None,
               conv_path: Optional[str] = None, folded: bool = False,
               padding: str = "same", dropout_unit: str = ann.DEFAULT_DROPOUT_UNIT,
               name: Optional[str] = "mobilenet_v1"):
    """Constructs the network.

    Args:
      num_classes: K, the number of logits.
      algebra: an Algebra or a registered name.
      width: the width multiplier α (channels rounded, see module doc).
      stem_channels: channels of the first conv at width 1.
      blocks: (channels at width 1, stride) of each depthwise-separable block.
      channel_divisor: channel counts are multiples of it.
      bn_config: keyword arguments of nn.BatchNorm (resnet.BN_CONFIG_KEYS).
      activation: a name in nn.ACTIVATIONS or a callable (e.g. jax.nn.relu6).
      lift: one of nn.LIFT_MODES, or None for `resnet.default_lift(algebra)`.
      head: one of resnet.HEADS.
      head_component: the component read by head "component".
      dropout_rate: dropout on the pooled features in training (needs an rng).
      w_init: conv weight initialiser; default nn.initializers.he_normal(algebra).
      conv_path: `ops.conv2d` path of every conv; None picks the fastest.
      folded: keep M_n(B) activations folded between layers (resnet docstring).
      padding: one of resnet.PADDINGS, "same" or "symmetric" (module doc).
      dropout_unit: one of nn.DROPOUT_UNITS: dropout per real component of the
        pooled features ("component", default: as before the option existed) or per
        algebra element ("element"); see `nn.dropout`.
      name: module name.
    """
    super().__init__(name=name)
    self.algebra = alg = algebras_lib.get(algebra)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
      raise ValueError(f"num_classes must be a positive int, got {num_classes!r}.")
    if not 0.0 <= dropout_rate < 1.0:
      raise ValueError(f"dropout_rate must be in [0, 1), got {dropout_rate!r}.")
    self.num_classes = num_classes
    self.width = matching.check_width(width)
    scale = lambda c: matching.scaled_channels(int(c), self.width, channel_divisor)
    self.stem_channels = scale(stem_channels)
    blocks = tuple((int(c), int(s)) for c, s in blocks)
    if not blocks or any(s not in (1, 2) for _, s in blocks):
      raise ValueError(f"blocks must be a non-empty sequence of (channels, stride in {{1, 2}}), "
                       f"got {blocks!r}.")
    self.blocks = tuple((scale(c), s) for c, s in blocks)
    self.layers = LayerChoices(alg, check_bn_config(bn_config), activation, w_init, conv_path,
                               folded, padding)
    self.lift = (default_lift(alg) if lift is None
                 else common.check_choice(lift, ann.LIFT_MODES, "lift"))
    self.head = common.check_choice(head, HEADS, "head")
    self.head_component = head_component
    self.dropout_rate = float(dropout_rate)
    self.dropout_unit = ann.check_dropout_unit(dropout_unit)

  def __call__(self, images, is_training: bool, test_local_stats: bool = False):
    """Real images [B, H, W, F] -> real logits [B, K] (float32 or wider)."""
    x = jnp.asarray(images)
    alg = self.algebra
    if x.ndim != 4:
      raise ValueError(f"MobileNetV1 expects real images [B, H, W, F], got shape "
                       f"{tuple(x.shape)}.")
    f = x.shape[-1]
    lift_channels = f // alg.dim if self.lift == "split" else f
    if lift_channels < 1:
      raise ValueError(f"lift 'split' needs at least D={alg.dim} input channels, got F={f}.")
    layers = self.layers

    def bn_act(x, name):
      return layers.activation(layers.bn(name)(x, is_training, test_local_stats))

    x = ann.Lift(lift_channels, algebra=alg, mode=self.lift, name="lift")(x)  # [B, H, W, F', D]
    x = layers.fold(x)                                  # folded: [B·n, H, W, F'·n, Db]
    x = layers.conv(self.stem_channels, 3, 2, name="stem_conv")(x)          # [B, H/2, W/2, C, D]
    x = bn_act(x, "stem_batchnorm")
    for i, (channels, stride) in enumerate(self.blocks):
      c_in = layers.channels(x)
      x = layers.conv(c_in, 3, stride, groups=c_in, name=f"block_{i}_depthwise")(x)
      x = bn_act(x, f"block_{i}_depthwise_batchnorm")                       # [B, H', W', Cin, D]
      x = layers.conv(channels, 1, name=f"block_{i}_pointwise")(x)          # [B, H', W', C, D]
      x = bn_act(x, f"block_{i}_pointwise_batchnorm")
    x = x.astype(head_dtype(x.dtype))                                       # float32 head
    x = layers.unfold(jnp.mean(x, axis=(1, 2)))                             # [B, C, D]
    if is_training and self.dropout_rate > 0:
      x = ann.dropout(hk.next_rng_key(), self.dropout_rate, x, self.dropout_unit)  # [B, C, D]
    return classifier(x, self.num_classes, alg, self.head, self.head_component)  # [B, K]
