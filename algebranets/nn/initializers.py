"""Weight initialisers that count the real products of an algebra layer.

Shapes (D = algebra.dim, always the last axis):
  dense weight  w [Cin, Cout, D]
  conv weight   w [KH, KW, Cin/G, Cout, D]
In general `[*kernel, Cin, Cout, D]`: every axis before Cin is a kernel axis.

The variance-scaling rule, derived for an algebra
-------------------------------------------------
An algebra layer computes output component k of element o as

    y_ok = Σ_i Σ_ab T[a, b, k] w_ioa x_ib,

a sum over the `n = prod(kernel)·Cin` input elements i (all kernel taps
included) of the real products w_ioa x_ib that T routes to component k. With
all w components i.i.d. with mean 0 and variance σ_w², and all x components
i.i.d. with mean 0 and variance σ_x² (independent of w), the cross terms
vanish and

    Var(y_ok) = n · Σ_ab T[a, b, k]² · σ_w² σ_x².

The count Σ_ab T[a, b, k]² depends on k for some algebras (dual numbers: 1
for the real part, 2 for ε), so the rule uses its average over k,

    g = Σ_abk T[a, b, k]² / D          (`product_gain(algebra)`),

and defines the effective fans

    fan_in  = prod(kernel) · Cin  · g,
    fan_out = prod(kernel) · Cout · g.

fan_out follows from the same argument on the backward pass: the gradient
w.r.t. x_ib collects Σ_ak T[a, b, k]² products per output element, whose
average over b is the same g. Then, exactly as in Haiku/Keras, σ_w² = scale /
fan (fan_in, fan_out or their mean), so `scale=1, mode="fan_in"` keeps the
component variance averaged over k equal to the input's (LeCun), and
`scale=2` compensates a following ReLU (He).

g for the registered algebras: r 1, c 2, h 4, m2r 2, m3r 3, m4r 4, m2c 4,
dual 1.5, cross3 2 -- the "multiplies per parameter" of the paper's table (for
M_n(R), an output entry sums n·Cin real products: n per input element).

The default initialiser of `Linear` and `Conv2D` is `lecun_normal(algebra)`
= `VarianceScaling(1.0, "fan_in", "truncated_normal", algebra)`: Haiku's
default in spirit (truncated normal, variance ∝ 1/fan_in), but with the
algebra's fan_in and with the truncation corrected so that the variance really
is 1/fan_in (Haiku's `TruncatedNormal(1/sqrt(fan_in))` default is ~0.77×).

Fixed-std initialisers, generalised (`RealEquivalentNormal`)
------------------------------------------------------------
Some published real recipes do not scale with the fan: Transformer-XL draws every weight from
N(0, 0.02²) whatever the layer's width. The algebra version of "N(0, s²)" used here keeps what
such a real layer does to the variance at equal real activation width. A real layer with
n = Cin·D real inputs and weights N(0, s²) has Var(y) = Cin·D·s²·σ_x². By the count above,
an algebra layer of Cin elements (the same Cin·D real inputs) has, per output component
averaged over k, Var(y_ok) = Cin·g·σ_w²·σ_x². They are equal for

    σ_w = s · sqrt(D / g),

independent of the width. So: r, c, h (g = D) keep s per component; M_n(R) (D = n², g = n)
uses s·sqrt(n), because each output entry sums only n·Cin products where a real layer of the
same activation width sums n²·Cin; dual (D = 2, g = 1.5) s·sqrt(4/3). The ratio of σ_w to the
LeCun σ_w is then the same as the real layer's, sqrt(Cin·D)·s, at every algebra. The literal
alternative, N(0, s²) per component, would shrink each M_n(R) layer's output variance by a
factor D/g = n relative to the real recipe (4x for M4(R)), which is not the real recipe's
behaviour in the algebra but a different initialisation.

`distribution="polar"` (c and h) is the initialisation of Trabelsi et al. 2018
(complex: Rayleigh modulus, uniform phase) and Gaudet & Maida 2018 (quaternion:
chi(4) modulus, uniform phase θ, uniform unit imaginary axis u,
w = |w|(cos θ + u sin θ)), scaled so that the component variance averaged over
the D components is the same scale/fan as for the other distributions (hence
E|w|² = D·scale/fan: for c with "fan_in" and scale 2 this is Trabelsi's He
criterion Var(W) = 2/fan_in(complex)). For c it is the same distribution as
"normal" (a Rayleigh modulus with uniform phase is a 2D Gaussian); for h the
real part gets variance 2σ² and each imaginary part 2σ²/3. For r (modulus chi(1), direction
±1) it is "normal" too: defined so that the real reference of a polar-initialised model exists
(width matching builds one).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import jax
import jax.numpy as jnp
import haiku as hk

from algebranets import algebras as algebras_lib

__all__ = [
    "VarianceScaling", "product_gain", "effective_fans", "MODES", "DISTRIBUTIONS",
    "lecun_normal", "lecun_uniform", "he_normal", "he_uniform", "glorot_normal",
    "glorot_uniform", "polar", "INITIALIZERS", "by_name", "RealEquivalentNormal",
]

MODES = ("fan_in", "fan_out", "fan_avg")
DISTRIBUTIONS = ("truncated_normal", "normal", "uniform", "polar")
# Standard deviation of a unit normal truncated to [-2, 2]
# (scipy.stats.truncnorm.std(a=-2, b=2)); the same constant Haiku uses.
_TRUNCATED_STD = 0.87962566103423978


def product_gain(algebra) -> float:
  """g = Σ_abk T[a, b, k]² / D: real products per weight component (see module doc).

  For a learned algebra, g of its initial T (its expectation, D, for a random start).
  """
  alg = algebras_lib.get(algebra)
  if alg.learned:
    return alg.gain
  return float(np.sum(np.square(alg.structure)) / alg.dim)


def effective_fans(shape: Sequence[int], algebra) -> tuple[float, float]:
  """(fan_in, fan_out) of an algebra weight `[*kernel, Cin, Cout, D]`."""
  alg = algebras_lib.get(algebra)
  shape = tuple(int(s) for s in shape)
  if len(shape) < 3 or shape[-1] != alg.dim:
    raise ValueError(
        f"an algebra weight for {alg.name!r} must have shape [*kernel, Cin, Cout, {alg.dim}] "
        f"(components last); got shape {shape}.")
  receptive = int(np.prod(shape[:-3], dtype=np.int64))
  g = product_gain(alg)
  return receptive * shape[-3] * g, receptive * shape[-2] * g


class VarianceScaling(hk.initializers.Initializer):
  """Variance scaling for algebra weights: σ_w² = scale / effective fan.

  See the module docstring for the formula and its derivation. Usable wherever
  Haiku takes an initialiser (`init(shape, dtype)` inside `hk.transform`).
  """

  def __init__(self, scale: float = 1.0, mode: str = "fan_in",
               distribution: str = "truncated_normal", *, algebra):
    """Constructs the initialiser.

    Args:
      scale: multiplies the variance (1: LeCun/Glorot, 2: He).
      mode: one of MODES: which effective fan divides the variance.
      distribution: one of DISTRIBUTIONS ("polar" only for algebras r, c and h).
      algebra: an Algebra or a registered name.
    """
    self.algebra = algebras_lib.get(algebra)
    if not np.isfinite(scale) or scale <= 0:
      raise ValueError(f"scale must be a positive number, got {scale!r}.")
    if mode not in MODES:
      raise ValueError(f"Unknown mode {mode!r}; valid modes: {', '.join(MODES)}.")
    if distribution not in DISTRIBUTIONS:
      raise ValueError(f"Unknown distribution {distribution!r}; valid distributions: "
                       f"{', '.join(DISTRIBUTIONS)}.")
    if distribution == "polar" and self.algebra not in (
        algebras_lib.REAL, algebras_lib.COMPLEX, algebras_lib.QUATERNION):
      raise ValueError(f"distribution 'polar' is defined for algebras 'r', 'c' and 'h' only, "
                       f"not {self.algebra.name!r}.")
    self.scale = float(scale)
    self.mode = mode
    self.distribution = distribution

  def variance(self, shape: Sequence[int]) -> float:
    """The per-component weight variance σ_w² this initialiser targets."""
    fan_in, fan_out = effective_fans(shape, self.algebra)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
    return self.scale / max(1.0, fan)

  def __call__(self, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    shape = tuple(int(s) for s in shape)
    std = float(np.sqrt(self.variance(shape)))
    key = hk.next_rng_key()
    if self.distribution == "truncated_normal":
      unit = jax.random.truncated_normal(key, -2.0, 2.0, shape, jnp.float32)
      return (unit * (std / _TRUNCATED_STD)).astype(dtype)
    if self.distribution == "normal":
      return (jax.random.normal(key, shape, jnp.float32) * std).astype(dtype)
    if self.distribution == "uniform":
      limit = np.sqrt(3.0) * std
      return jax.random.uniform(key, shape, jnp.float32, -limit, limit).astype(dtype)
    return _polar(key, shape, std, self.algebra.dim).astype(dtype)


def _polar(key, shape, std, d):
  """Polar sample with mean squared modulus d·std² (see module doc)."""
  k_mod, k_phase, k_axis = jax.random.split(key, 3)
  lead = shape[:-1]
  if d == 1:  # chi(1) modulus, direction ±1: the normal distribution
    return std * jax.random.normal(k_mod, shape)
  # chi(d) modulus with scale std: |w|² = std² · χ²_d, so E|w|² = d·std².
  modulus = std * jnp.sqrt(jnp.sum(jnp.square(jax.random.normal(k_mod, lead + (d,))), -1))
  theta = jax.random.uniform(k_phase, lead, minval=-np.pi, maxval=np.pi)
  if d == 2:
    return jnp.stack([modulus * jnp.cos(theta), modulus * jnp.sin(theta)], axis=-1)
  axis = jax.random.normal(k_axis, lead + (3,))  # uniform on S²
  axis = axis / jnp.linalg.norm(axis, axis=-1, keepdims=True)
  return jnp.concatenate([(modulus * jnp.cos(theta))[..., None],
                          (modulus * jnp.sin(theta))[..., None] * axis], axis=-1)


class RealEquivalentNormal(hk.initializers.Initializer):
  """N(0, σ_w²) per component, σ_w = stddev·sqrt(D / g): real N(0, stddev²) weights, generalised.

  See "Fixed-std initialisers, generalised" in the module docstring: at equal real activation
  width (Cin·D real inputs), each output component has the variance (averaged over components)
  of a real layer with N(0, stddev²) weights. For r it is exactly N(0, stddev²) -- the
  Transformer-XL reference's `init_std`/`proj_init_std` -- and it does not depend on the
  layer's fans. Usable wherever Haiku takes an initialiser.
  """

  def __init__(self, stddev: float, *, algebra):
    """Constructs the initialiser.

    Args:
      stddev: s, the standard deviation of the real layer's weights.
      algebra: an Algebra or a registered name.
    """
    self.algebra = algebras_lib.get(algebra)
    if not np.isfinite(stddev) or stddev <= 0:
      raise ValueError(f"stddev must be a positive number, got {stddev!r}.")
    self.stddev = float(stddev)

  @property
  def component_stddev(self) -> float:
    """σ_w, the standard deviation of every real component of the weight."""
    return self.stddev * float(np.sqrt(self.algebra.dim / product_gain(self.algebra)))

  def __call__(self, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
    shape = tuple(int(s) for s in shape)
    if not shape or shape[-1] != self.algebra.dim:
      raise ValueError(f"an algebra weight for {self.algebra.name!r} must have its "
                       f"{self.algebra.dim} components last; got shape {shape}.")
    unit = jax.random.normal(hk.next_rng_key(), shape, jnp.float32)
    return (unit * self.component_stddev).astype(dtype)


def lecun_normal(algebra) -> VarianceScaling:
  return VarianceScaling(1.0, "fan_in", "truncated_normal", algebra=algebra)


def lecun_uniform(algebra) -> VarianceScaling:
  return VarianceScaling(1.0, "fan_in", "uniform", algebra=algebra)


def he_normal(algebra) -> VarianceScaling:
  return VarianceScaling(2.0, "fan_in", "truncated_normal", algebra=algebra)


def he_uniform(algebra) -> VarianceScaling:
  return VarianceScaling(2.0, "fan_in", "uniform", algebra=algebra)


def glorot_normal(algebra) -> VarianceScaling:
  return VarianceScaling(1.0, "fan_avg", "truncated_normal", algebra=algebra)


def glorot_uniform(algebra) -> VarianceScaling:
  return VarianceScaling(1.0, "fan_avg", "uniform", algebra=algebra)


def polar(algebra, scale: float = 2.0, mode: str = "fan_in") -> VarianceScaling:
  """Trabelsi (c) / Gaudet-Maida (h) polar init; He criterion by default."""
  return VarianceScaling(scale, mode, "polar", algebra=algebra)


# name -> factory(algebra): the initialisers a config can name (a model's `w_init="polar"`).
INITIALIZERS = {
    "lecun_normal": lecun_normal,
    "lecun_uniform": lecun_uniform,
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
    "polar": polar,
}


def by_name(name: str, algebra) -> VarianceScaling:
  """INITIALIZERS[name](algebra); ValueError naming the choices for an unknown name."""
  if name not in INITIALIZERS:
    raise ValueError(f"Unknown initializer {name!r}; valid names: {', '.join(INITIALIZERS)}.")
  return INITIALIZERS[name](algebra)
