"""Nonlinearities for algebra-valued activations x [..., C, D].

Two families:

* Component-wise ("split") activations apply a real function to every one of
  the D components independently: relu, gelu, silu, tanh, ... This is the
  paper's choice (and the cheap default); it is not equivariant to any
  symmetry of the algebra but costs nothing extra.

* Algebra-aware activations act on each element through its Euclidean norm
  |x| = sqrt(Σ_k x_k²) and keep its direction x/|x|, so they commute with
  rotations of the components (e.g. complex phase):
    ModReLU   y = relu(|x| + b) · x / |x|      (Arjovsky et al. 2016), b [C]
    NormGate  y = σ(|x| + b) · x               (a sigmoid gate on the norm), b [C]
  Both carry a learned bias per channel and are therefore Haiku modules.
  Norms use a safe square root so gradients are finite at x = 0.

`ACTIVATIONS` maps config names to callables x -> y; the algebra-aware
entries construct their module when called, so they must be called inside
`hk.transform` and each call site gets its own bias.
"""

from __future__ import annotations

from typing import Callable, Optional, Union

import jax
import jax.numpy as jnp
import haiku as hk

__all__ = [
    "relu", "gelu", "silu", "tanh", "sigmoid", "elu", "leaky_relu", "softplus", "identity",
    "safe_norm", "ModReLU", "NormGate", "mod_relu", "norm_gate",
    "ACTIVATIONS", "get_activation",
]


# ------------------------------------------------------- component-wise
# Applied to every real component independently; the algebra does not enter.
relu = jax.nn.relu
gelu = jax.nn.gelu
silu = jax.nn.silu
tanh = jnp.tanh
sigmoid = jax.nn.sigmoid
elu = jax.nn.elu
leaky_relu = jax.nn.leaky_relu
softplus = jax.nn.softplus


def identity(x):
  return x


# ------------------------------------------------------- algebra-aware
def safe_norm(x, axis=-1, keepdims=False):
  """Euclidean norm over `axis` whose gradient is 0 (not NaN) at x = 0."""
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=keepdims)
  nonzero = sq > 0
  return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, sq, 1.0)), 0.0)


class _NormActivation(hk.Module):
  """Base: learned bias b [C] (one per channel), input [..., C, D]."""

  default_b: float = 0.0

  def __init__(self, b_init: Optional[hk.initializers.Initializer] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    self.b_init = b_init or hk.initializers.Constant(self.default_b)

  def _bias_and_norm(self, x):
    x = jnp.asarray(x)
    if x.ndim < 2:
      raise ValueError(f"{type(self).__name__} expects inputs [..., C, D]; got shape "
                       f"{tuple(x.shape)}.")
    b = hk.get_parameter("b", [x.shape[-2]], x.dtype, init=self.b_init)
    return x, b[:, None], safe_norm(x, keepdims=True)            # [C, 1], [..., C, 1]


class ModReLU(_NormActivation):
  """y = relu(|x| + b) · x/|x| per element; b [C] initialised to -0.5.

  With b = 0 ModReLU is the identity, so the default starts as a shrinkage
  of every norm by 0.5 (elements with |x| < 0.5 are zeroed; for complex
  elements with unit-variance components that is about 12% of them). Pass
  `b_init` to change it (Arjovsky et al. use U(-0.01, 0.01)).
  """

  default_b = -0.5

  def __call__(self, x):
    x, b, n = self._bias_and_norm(x)
    # At x = 0 the direction is undefined; n is 0 there, so use 1 to get y = 0.
    return jax.nn.relu(n + b) / jnp.where(n > 0, n, 1.0) * x


class NormGate(_NormActivation):
  """y = σ(|x| + b) · x per element; b [C] initialised to 0."""

  def __call__(self, x):
    x, b, n = self._bias_and_norm(x)
    return jax.nn.sigmoid(n + b) * x


def mod_relu(x):
  """ModReLU with a fresh module (own bias) per call; inside hk.transform."""
  return ModReLU()(x)


def norm_gate(x):
  """NormGate with a fresh module (own bias) per call; inside hk.transform."""
  return NormGate()(x)


ACTIVATIONS: dict[str, Callable] = {
    "relu": relu,
    "gelu": gelu,
    "silu": silu,
    "swish": silu,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "elu": elu,
    "leaky_relu": leaky_relu,
    "softplus": softplus,
    "identity": identity,
    "modrelu": mod_relu,
    "norm_gate": norm_gate,
}


def get_activation(name: Union[str, Callable]) -> Callable:
  """The activation registered under `name`; a callable passes through."""
  if callable(name):
    return name
  if not isinstance(name, str) or name.lower() not in ACTIVATIONS:
    raise ValueError(f"Unknown activation {name!r}; valid names: {', '.join(ACTIVATIONS)}.")
  return ACTIVATIONS[name.lower()]
