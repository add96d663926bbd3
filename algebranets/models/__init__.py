"""Algebra-valued models: ResNet (ImageNet and CIFAR), MobileNet-v1, Transformer-XL.

Every model takes its algebra (and its layer choices) as constructor
arguments; none reads a config. `MODELS` maps the names configs use to
constructors; an image model is built and applied inside `hk.transform` as

    model = MODELS["resnet50"](num_classes=1000, algebra="m2r", width=0.5)
    logits = model(images, is_training=True)          # [B, H, W, 3] -> [B, K]

`matching.match_image_model(MODELS[name], algebra, match="params" | "macs")`
returns the width at which a model matches the real model's size. Widths count
algebra elements: `TRANSFORMER_XL_PRESETS` are the real models, and a preset
built in an algebra of D components is D times wider in reals (enwik8_base in
m2r: 164 M parameters); `matched_config(TRANSFORMER_XL_PRESETS[name], algebra,
match="params")` gives the algebra model of the real one's size.
"""

import functools
from typing import Callable

from algebranets import common
from algebranets.models import matching, mobilenet, resnet
from algebranets.models.matching import (
    MATCH_KINDS, MatchResult, match_image_model, match_width, model_size, scaled_channels)
from algebranets.models.mobilenet import MOBILENET_V1_BLOCKS, MobileNetV1
from algebranets.models.resnet import (
    CIFAR_DEPTHS, IMAGENET_DEPTHS, Block, ResNet, cifar_resnet, imagenet_resnet)

from algebranets.models import adaptive, decoding, transformer_xl
from algebranets.models.decoding import Decoder, sample
from algebranets.models.transformer_xl import PRESETS as TRANSFORMER_XL_PRESETS
from algebranets.models.transformer_xl import TransformerXL, matched_config

# Language models take token ids and memories, not images: their own registry.
LANGUAGE_MODELS: dict[str, Callable] = {"transformer_xl": TransformerXL}

MODELS: dict[str, Callable] = {
    "resnet18": functools.partial(imagenet_resnet, 18),
    "resnet34": functools.partial(imagenet_resnet, 34),
    "resnet50": functools.partial(imagenet_resnet, 50),
    "resnet101": functools.partial(imagenet_resnet, 101),
    "resnet152": functools.partial(imagenet_resnet, 152),
    "resnet200": functools.partial(imagenet_resnet, 200),
    "cifar_resnet20": functools.partial(cifar_resnet, 20),
    "cifar_resnet32": functools.partial(cifar_resnet, 32),
    "cifar_resnet44": functools.partial(cifar_resnet, 44),
    "cifar_resnet56": functools.partial(cifar_resnet, 56),
    "cifar_resnet110": functools.partial(cifar_resnet, 110),
    "mobilenet_v1": MobileNetV1,
}


def get_model(name: str) -> Callable:
  """The constructor registered under `name`."""
  return MODELS[common.check_choice(name, MODELS, "model")]


__all__ = [
    "MODELS", "get_model", "matching", "mobilenet", "resnet",
    "ResNet", "Block", "imagenet_resnet", "cifar_resnet", "IMAGENET_DEPTHS", "CIFAR_DEPTHS",
    "MobileNetV1", "MOBILENET_V1_BLOCKS",
    "MATCH_KINDS", "MatchResult", "match_width", "match_image_model", "model_size",
    "scaled_channels",
    "LANGUAGE_MODELS", "TransformerXL", "TRANSFORMER_XL_PRESETS", "matched_config", "Decoder",
    "sample", "transformer_xl", "decoding", "adaptive",
]
