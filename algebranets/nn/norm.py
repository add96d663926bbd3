"""Normalisation of algebra-valued activations: BatchNorm and LayerNorm.

Shapes (D = algebra.dim, always the last axis; C channels; M = the number of
positions reduced over, e.g. N·H·W):
  inputs         x [..., C, D]
  per-component  mean, var, scale, offset [C, D]
  whitening      mean [C, D], cov [C, D, D], scale Γ [C, D, D], offset β [C, D]
  LayerNorm      statistics per example over [C, D]; scale, offset [C, D]

BatchNorm has two modes.

* Per-component (default, cheap): every (channel, component) pair is
  normalised like a real BatchNorm channel -- exactly `hk.BatchNorm` on the
  flattened C·D features. This is what the AlgebraNets paper asks about as
  the cheap alternative to whitening.

* Whitening (`whitening=True`; Trabelsi et al. 2018 "Deep Complex Networks",
  Gaudet & Maida 2018 "Deep Quaternion Networks"): each channel's elements are
  decorrelated across their D components,

      x̂ = (V + eps·I)^{-1/2} (x - μ),      y = Γ x̂ + β,

  with μ [C, D] and V [C, D, D] the per-channel mean and covariance. The
  inverse square root is the symmetric (ZCA) one of Trabelsi, computed by
  `eigh`: V = Q diag(λ) Qᵀ, V^{-1/2} = Q diag((λ + eps)^{-1/2}) Qᵀ (λ clipped
  at 0). Differentiating through `eigh` is unstable when eigenvalues are
  (nearly) equal -- the usual case at initialisation, where V ≈ σ²I -- so
  `inv_sqrtm` has its own JVP, the Daleckii-Krein formula with the divided
  difference of f(λ) = (λ + eps)^{-1/2} written without a subtraction:
      (f(λ_i) - f(λ_j)) / (λ_i - λ_j) = -1 / (s_i s_j (s_i + s_j)),  s = sqrt(λ + eps),
  which is finite and exact for equal eigenvalues too.

  Γ is initialised to the identity. Trabelsi initialise Γ to I/sqrt(2) for
  complex numbers (I/sqrt(d) in general) so that the output *modulus* has unit
  second moment; with the identity each *component* has unit variance instead.
  We pick the identity because (1) the per-component mode and hk.BatchNorm
  give unit-variance components, so switching modes does not rescale what
  the next layer sees; (2) the variance-scaling initialisers
  (`initializers`) assume unit-variance components; (3) for d = 1 whitening
  is then exactly ordinary BatchNorm. Pass
  `scale_init=trabelsi_scale_init` for Trabelsi's choice.

Folded layout (`folded=True`, matrix algebras M_n(B) only): BatchNorm takes
and returns activations in the layout of `ops.fold`, [B·n, ..., C·n, Db], and
computes exactly what it computes on the unfolded [B, ..., C, D] (same
statistics per channel and component, same parameters and state shapes), by
reducing over a view [B, Col, M, C·Row·Db] of the folded array instead of
transposing it back. This lets networks of folded convolutions keep the layout.

Running statistics (hk state "mean" [C, D] and "var" [C, D] or "cov"
[C, D, D]) start at mean 0 and var 1 / cov I and are updated in training as
`running = decay_rate·running + (1 - decay_rate)·batch`. Evaluation
(`is_training=False`) uses them in the same formula as training, so when they
equal the batch statistics (e.g. after one update with decay_rate=0) both
paths give the same output. Statistics are computed in at least float32.
"""

from __future__ import annotations

import functools
from typing import Optional, Sequence, Union

import numpy as np
import jax
import jax.numpy as jnp
import haiku as hk

from algebranets import algebras as algebras_lib
from algebranets.nn._checks import check_algebra_input, check_foldable

__all__ = ["BatchNorm", "LayerNorm", "inv_sqrtm", "trabelsi_scale_init"]

_HIGHEST = jax.lax.Precision.HIGHEST


# ------------------------------------------------------------ inverse sqrt
@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def inv_sqrtm(cov, eps: float):
  """(cov + eps·I)^{-1/2} for symmetric PSD cov [..., D, D] (see module doc)."""
  q, s = _eig_sqrt(cov, eps)
  return _sandwich(q, 1.0 / s)


def _eig_sqrt(cov, eps):
  lam, q = jnp.linalg.eigh(cov)                      # [..., D], [..., D, D]
  return q, jnp.sqrt(jnp.maximum(lam, 0.0) + eps)


def _sandwich(q, diag):
  """Q diag Qᵀ, or Q (M) Qᵀ when `diag` is a matrix [..., D, D]."""
  mid = diag[..., None, :] * q if diag.ndim == q.ndim - 1 else q @ diag
  return jnp.matmul(mid, jnp.swapaxes(q, -1, -2), precision=_HIGHEST)


@inv_sqrtm.defjvp
def _inv_sqrtm_jvp(eps, primals, tangents):
  (cov,), (dcov,) = primals, tangents
  q, s = _eig_sqrt(cov, eps)
  qt = jnp.swapaxes(q, -1, -2)
  dcov = 0.5 * (dcov + jnp.swapaxes(dcov, -1, -2))
  inner = jnp.matmul(jnp.matmul(qt, dcov, precision=_HIGHEST), q, precision=_HIGHEST)
  ratio = -1.0 / (s[..., :, None] * s[..., None, :] * (s[..., :, None] + s[..., None, :]))
  return _sandwich(q, 1.0 / s), _sandwich(q, ratio * inner)


def trabelsi_scale_init(shape, dtype):
  """Γ = I/sqrt(D) [C, D, D]: the whitening scale init of Trabelsi et al."""
  d = shape[-1]
  return jnp.broadcast_to(jnp.eye(d, dtype=dtype) / np.sqrt(d), shape)


def _identity_init(shape, dtype):
  return jnp.broadcast_to(jnp.eye(shape[-1], dtype=dtype), shape)


def _stats_dtype(dtype):
  return jnp.promote_types(dtype, jnp.float32)


# --------------------------------------------------------------- BatchNorm
class BatchNorm(hk.Module):
  """Batch normalisation for [..., C, D]: per component or whitening."""

  def __init__(self, *, algebra, create_scale: bool = True, create_offset: bool = True,
               decay_rate: float = 0.9, eps: float = 1e-5, whitening: bool = False,
               scale_init: Optional[hk.initializers.Initializer] = None,
               offset_init: Optional[hk.initializers.Initializer] = None,
               cross_replica_axis: Optional[Union[str, Sequence[str]]] = None,
               folded: bool = False, name: Optional[str] = None):
    """Constructs the module.

    Args:
      algebra: an Algebra or a registered name.
      create_scale: learn a scale ([C, D], or Γ [C, D, D] when whitening).
      create_offset: learn an offset [C, D].
      decay_rate: running statistics decay, in [0, 1].
      eps: added to the variances (eps·I to the covariance).
      whitening: decorrelate each element's D components (see module doc).
      scale_init: default ones (per component) / identity (whitening).
      offset_init: default zeros.
      cross_replica_axis: axis name(s) to average batch statistics over when
        run inside a named-axis map (shard_map, vmap). Not needed under jit
        with sharded global arrays, where the batch mean is already global.
      folded: inputs are in the folded layout of `ops.fold` (see module doc);
        needs a matrix algebra M_n(B).
      name: module name.
    """
    super().__init__(name=name)
    self.algebra = algebras_lib.get(algebra)
    self.folded = check_foldable(self.algebra, folded)
    if not create_scale and scale_init is not None:
      raise ValueError("scale_init was given but create_scale=False.")
    if not create_offset and offset_init is not None:
      raise ValueError("offset_init was given but create_offset=False.")
    if not 0.0 <= decay_rate <= 1.0:
      raise ValueError(f"decay_rate must be in [0, 1], got {decay_rate!r}.")
    if not eps > 0:
      raise ValueError(f"eps must be positive, got {eps!r}.")
    self.create_scale = create_scale
    self.create_offset = create_offset
    self.decay_rate = float(decay_rate)
    self.eps = float(eps)
    self.whitening = bool(whitening)
    self.scale_init = scale_init or (_identity_init if whitening else jnp.ones)
    self.offset_init = offset_init or jnp.zeros
    self.cross_replica_axis = cross_replica_axis

  def _pmean(self, v):
    if self.cross_replica_axis is None:
      return v
    return jax.lax.pmean(v, axis_name=self.cross_replica_axis)

  def __call__(self, inputs, is_training: bool, test_local_stats: bool = False):
    """Normalises inputs [..., C, D] (at least [B, C, D]).

    Args:
      inputs: the activations; statistics reduce over all axes but the last two.
      is_training: use batch statistics and update the running ones.
      test_local_stats: use batch statistics without updating (evaluation).
    """
    inputs = jnp.asarray(inputs)
    alg = self.algebra
    d = alg.dim
    sdt = _stats_dtype(inputs.dtype)
    if self.folded:
      x, c, to_cd, from_cd = _folded_view(inputs.astype(sdt), alg)    # [B, Col, M, K]
      axes = (0, 2)
    else:
      check_algebra_input(inputs, alg, "BatchNorm", "[B, ..., C, D]", min_ndim=3)
      x, c = inputs.astype(sdt), inputs.shape[-2]
      to_cd = from_cd = lambda v: v
      axes = tuple(range(inputs.ndim - 2))
    second_name, second_shape = (("cov", [c, d, d]) if self.whitening else ("var", [c, d]))
    second_init = _identity_init if self.whitening else jnp.ones
    running_mean = hk.get_state("mean", [c, d], sdt, init=jnp.zeros)
    running_second = hk.get_state(second_name, second_shape, sdt, init=second_init)

    if is_training or test_local_stats:
      mean = self._pmean(to_cd(jnp.mean(x, axes)))                    # [C, D]
      xc = x - from_cd(mean)
      if self.whitening:
        m = int(np.prod([x.shape[a] for a in axes], dtype=np.int64))
        second = _covariance(xc, alg, self.folded) / m                # [C, D, D]
      else:
        second = to_cd(jnp.mean(jnp.square(xc), axes))                # [C, D]
      second = self._pmean(second)
    else:
      mean, second = running_mean, running_second
      xc = x - from_cd(mean)

    if is_training:
      decay = self.decay_rate
      hk.set_state("mean", decay * running_mean + (1.0 - decay) * jax.lax.stop_gradient(mean))
      hk.set_state(second_name,
                   decay * running_second + (1.0 - decay) * jax.lax.stop_gradient(second))

    dtype = inputs.dtype
    if self.whitening:
      mat = inv_sqrtm(second, self.eps)                               # [C, D, D]
      if self.create_scale:
        gamma = hk.get_parameter("scale", [c, d, d], dtype, init=self.scale_init)
        mat = jnp.matmul(gamma.astype(sdt), mat, precision=_HIGHEST)  # Γ V^{-1/2}
      out = _whiten(mat, xc, alg, self.folded)
    else:
      inv = jax.lax.rsqrt(second + self.eps)                          # [C, D]
      if self.create_scale:
        inv = inv * hk.get_parameter("scale", [c, d], dtype, init=self.scale_init).astype(sdt)
      out = xc * from_cd(inv)
    if self.create_offset:
      offset = hk.get_parameter("offset", [c, d], dtype, init=self.offset_init)
      out = out + from_cd(offset.astype(sdt))
    return out.reshape(inputs.shape).astype(dtype)


def _folded_view(x, alg):
  """Folded M_n(B) activations [B·n, ..., C·n, Db] as a view [B, Col, M, K].

  K = C·Row·Db: keeping (C, Row, Db) merged on the minor axis makes the
  reductions as fast as on unfolded activations (a 6-D view with a size-1
  minor axis for B = R measured 1.5-2× slower on CPU). Returns (view, C,
  to_cd, from_cd): to_cd maps per-element statistics of the view, [Col, K], to
  the usual [C, D] (D ordered row, column, base component); from_cd maps [C, D]
  back to [Col, 1, K], broadcastable against the view.
  """
  n, base = alg.matrix_base
  if (x.ndim < 3 or x.shape[-1] != base.dim or x.shape[0] % n or x.shape[-2] % n):
    raise ValueError(
        f"BatchNorm(folded=True) expects algebra {alg.name!r} inputs in the folded layout "
        f"[B·{n}, ..., C·{n}, {base.dim}] (see ops.fold); got shape {tuple(x.shape)}.")
  b, c, db = x.shape[0] // n, x.shape[-2] // n, base.dim
  m = int(np.prod(x.shape[1:-2], dtype=np.int64))
  view = x.reshape(b, n, m, c * n * db)                               # [B, Col, M, (C, Row, Db)]

  def to_cd(v):                                                       # [Col, (C, Row, Db)]
    v = jnp.transpose(v.reshape(n, c, n, db), (1, 2, 0, 3))           # [C, Row, Col, Db]
    return v.reshape(c, n * n * db)                                   # [C, D]

  def from_cd(v):                                                     # [C, D]
    v = jnp.transpose(v.reshape(c, n, n, db), (2, 0, 1, 3))           # [Col, C, Row, Db]
    return v.reshape(n, 1, c * n * db)                                # [Col, 1, K]

  return view, c, to_cd, from_cd


def _unmerge(xc, alg):
  """The folded view [B, Col, M, K] as [B, Col, M, C, Row, Db]."""
  n, base = alg.matrix_base
  b, _, m, k = xc.shape
  return xc.reshape(b, n, m, k // (n * base.dim), n, base.dim)


def _covariance(xc, alg, folded):
  """Σ over samples of xc_i xc_j per channel: [C, D, D] (not yet divided by the count)."""
  if not folded:
    return jnp.einsum("...ci,...cj->cij", xc, xc, precision=_HIGHEST)
  x6 = _unmerge(xc, alg)                                              # [B, Col, M, C, Row, Db]
  c, d = x6.shape[3], alg.dim
  cov = jnp.einsum("bkmcrp,bKmcRP->crkpRKP", x6, x6, precision=_HIGHEST)  # [C, R, K, P, ...]
  return cov.reshape(c, d, d)


def _whiten(mat, xc, alg, folded):
  """mat [C, D, D] applied to every element of xc (unfolded [..., C, D] or folded view)."""
  if not folded:
    return jnp.einsum("cij,...cj->...ci", mat, xc, precision=_HIGHEST)  # [..., C, D]
  n, base = alg.matrix_base
  x6 = _unmerge(xc, alg)                                              # [B, Col, M, C, Row, Db]
  mat = mat.reshape(x6.shape[3], n, n, base.dim, n, n, base.dim)      # [C, R, K, P, r, k, p]
  out = jnp.einsum("cRKPrkp,bkmcrp->bKmcRP", mat, x6, precision=_HIGHEST)
  return out.reshape(xc.shape)                                        # [B, Col, M, K]


# --------------------------------------------------------------- LayerNorm
class LayerNorm(hk.Module):
  """Layer normalisation over the last two axes [C, D] of [..., C, D].

  y = (x - mean) / sqrt(var + eps) · scale + offset, with mean and var taken
  per example over all C·D real components (the real LayerNorm of the
  flattened features), scale [C, D] (init 1) and offset [C, D] (init 0)
  applied per component.
  """

  def __init__(self, *, algebra, create_scale: bool = True, create_offset: bool = True,
               eps: float = 1e-5,
               scale_init: Optional[hk.initializers.Initializer] = None,
               offset_init: Optional[hk.initializers.Initializer] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    self.algebra = algebras_lib.get(algebra)
    if not create_scale and scale_init is not None:
      raise ValueError("scale_init was given but create_scale=False.")
    if not create_offset and offset_init is not None:
      raise ValueError("offset_init was given but create_offset=False.")
    if not eps > 0:
      raise ValueError(f"eps must be positive, got {eps!r}.")
    self.create_scale = create_scale
    self.create_offset = create_offset
    self.eps = float(eps)
    self.scale_init = scale_init or jnp.ones
    self.offset_init = offset_init or jnp.zeros

  def __call__(self, inputs):
    """Normalises inputs [..., C, D]; returns the same shape."""
    inputs = jnp.asarray(inputs)
    alg = self.algebra
    check_algebra_input(inputs, alg, "LayerNorm", "[..., C, D]")
    c, d = inputs.shape[-2:]
    dtype = inputs.dtype
    x = inputs.astype(_stats_dtype(dtype))
    mean = jnp.mean(x, axis=(-2, -1), keepdims=True)                  # [..., 1, 1]
    var = jnp.mean(jnp.square(x - mean), axis=(-2, -1), keepdims=True)
    out = (x - mean) * jax.lax.rsqrt(var + self.eps)
    if self.create_scale:
      out = out * hk.get_parameter("scale", [c, d], dtype, init=self.scale_init)
    if self.create_offset:
      out = out + hk.get_parameter("offset", [c, d], dtype, init=self.offset_init)
    return out.astype(dtype)
