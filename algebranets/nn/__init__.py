"""Haiku modules for algebra-valued networks, thin over `algebranets.ops`.

Every algebra-valued tensor keeps its D = algebra.dim real components on the
last axis: activations [..., C, D], dense weights [Cin, Cout, D], conv
weights [KH, KW, Cin/G, Cout, D], biases [Cout, D].

  linear        Linear, Conv2D
  norm          BatchNorm (per component or whitening), LayerNorm
  activations   component-wise and norm-based nonlinearities, ACTIVATIONS
  initializers  variance scaling that counts the algebra's real products
  lift          Lift (R -> A), Project (A -> R), Embed (tokens -> A)
  inference     weights prepared once for batch-1 inference (decoding)
  learned       the structure tensor of a learned algebra as a parameter
  drop          dropout per real component or per whole algebra element
"""

from algebranets.nn import activations, initializers, learned
from algebranets.nn.drop import DEFAULT_UNIT as DEFAULT_DROPOUT_UNIT
from algebranets.nn.drop import DROPOUT_UNITS, dropout
from algebranets.nn.drop import check_unit as check_dropout_unit
from algebranets.nn.activations import (
    ACTIVATIONS, ModReLU, NormGate, get_activation, safe_norm)
from algebranets.nn.initializers import (
    VarianceScaling, effective_fans, glorot_normal, glorot_uniform, he_normal, he_uniform,
    lecun_normal, lecun_uniform, polar, product_gain)
from algebranets.nn.lift import Embed, LIFT_MODES, Lift, PROJECT_MODES, Project
from algebranets.nn.linear import Conv2D, Linear
from algebranets.nn.inference import linear_layers, make_preparer
from algebranets.nn.norm import BatchNorm, LayerNorm, inv_sqrtm

__all__ = [
    "Linear", "Conv2D", "BatchNorm", "LayerNorm", "inv_sqrtm",
    "ACTIVATIONS", "get_activation", "ModReLU", "NormGate", "safe_norm",
    "activations", "initializers", "VarianceScaling", "effective_fans", "product_gain",
    "lecun_normal", "lecun_uniform", "he_normal", "he_uniform", "glorot_normal",
    "glorot_uniform", "polar",
    "Lift", "Project", "Embed", "LIFT_MODES", "PROJECT_MODES",
    "make_preparer", "linear_layers",
    "learned", "dropout", "DROPOUT_UNITS", "DEFAULT_DROPOUT_UNIT", "check_dropout_unit",
]
