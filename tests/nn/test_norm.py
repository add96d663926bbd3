"""BatchNorm (per component and whitening) and LayerNorm against numpy."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp
import haiku as hk

from algebranets import nn
from algebranets.nn import norm as norm_lib

RNG = np.random.default_rng(0)
KEY = jax.random.PRNGKey(0)  # BatchNorm/LayerNorm init draws no random numbers


def _bn(x, is_training=True, **kwargs):
  f = hk.transform_with_state(lambda x, t: nn.BatchNorm(**kwargs)(x, t))
  params, state = f.init(KEY, x, is_training)
  return f, params, state


def _correlated(n, c, d, extra=()):
  """x [n, *extra, c, d] with per-channel means and strongly correlated components."""
  z = RNG.standard_normal((n, *extra, c, d))
  mix = RNG.standard_normal((c, d, d)) + 2 * np.eye(d)
  mean = 3 * RNG.standard_normal((c, d))
  return (np.einsum("cij,...cj->...ci", mix, z) + mean).astype(np.float32)


def _np_whiten(x, eps):
  """float64 ZCA whitening per channel: (V + eps I)^{-1/2} (x - μ)."""
  x = np.asarray(x, np.float64)
  flat = x.reshape(-1, *x.shape[-2:])                       # [M, C, D]
  mu = flat.mean(0)
  xc = flat - mu
  cov = np.einsum("mci,mcj->cij", xc, xc) / flat.shape[0]
  lam, q = np.linalg.eigh(cov + eps * np.eye(x.shape[-1]))
  w = np.einsum("cij,cj,ckj->cik", q, lam ** -0.5, q)
  return np.einsum("cij,mcj->mci", w, xc).reshape(x.shape), mu, cov


# ---------------------------------------------------------- per component
def test_per_component_training_against_numpy():
  x = _correlated(8, 3, 2, extra=(5,))                     # [N, T, C, D]
  f, params, state = _bn(x, algebra="c", eps=1e-3)
  assert params["batch_norm"]["scale"].shape == (3, 2)
  assert params["batch_norm"]["offset"].shape == (3, 2)
  scale, offset = RNG.standard_normal((3, 2)), RNG.standard_normal((3, 2))
  params = {"batch_norm": {"scale": scale.astype(np.float32), "offset": offset.astype(np.float32)}}
  y, _ = f.apply(params, state, None, x, True)
  xd = x.astype(np.float64)
  want = (xd - xd.mean((0, 1))) / np.sqrt(xd.var((0, 1)) + 1e-3) * scale + offset
  np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4)


def test_per_component_running_statistics_update():
  x = _correlated(16, 2, 4)
  f, params, state = _bn(x, algebra="h", decay_rate=0.9)
  np.testing.assert_array_equal(state["batch_norm"]["mean"], 0.0)
  np.testing.assert_array_equal(state["batch_norm"]["var"], 1.0)
  _, state = f.apply(params, state, None, x, True)
  np.testing.assert_allclose(state["batch_norm"]["mean"], 0.1 * x.mean(0), rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(state["batch_norm"]["var"], 0.9 + 0.1 * x.var(0), rtol=1e-5)


# --------------------------------------------------------------- whitening
@pytest.mark.parametrize("name,d", [("c", 2), ("h", 4), ("m2r", 4)])
def test_whitened_output_has_identity_covariance(name, d):
  x = _correlated(512, 3, d)
  f, params, state = _bn(x, algebra=name, whitening=True)
  y, _ = f.apply(params, state, None, x, True)
  y = np.asarray(y, np.float64)
  cov = np.einsum("mci,mcj->cij", y - y.mean(0), y - y.mean(0)) / len(y)
  np.testing.assert_allclose(y.mean(0), 0.0, atol=1e-4)
  np.testing.assert_allclose(cov, np.broadcast_to(np.eye(d), cov.shape), atol=2e-3)
  # ZCA (the symmetric inverse square root), not just any whitening.
  want, _, _ = _np_whiten(x, 1e-5)
  np.testing.assert_allclose(y, want, rtol=1e-3, atol=1e-3)


def test_whitening_scale_and_offset_and_shapes():
  x = _correlated(64, 2, 2, extra=(3,))
  f, params, state = _bn(x, algebra="c", whitening=True, eps=1e-2)
  p = params["batch_norm"]
  assert p["scale"].shape == (2, 2, 2) and p["offset"].shape == (2, 2)
  np.testing.assert_array_equal(p["scale"], np.broadcast_to(np.eye(2), (2, 2, 2)))
  assert state["batch_norm"]["cov"].shape == (2, 2, 2)
  gamma, beta = RNG.standard_normal((2, 2, 2)), RNG.standard_normal((2, 2))
  params = {"batch_norm": {"scale": gamma.astype(np.float32), "offset": beta.astype(np.float32)}}
  y, _ = f.apply(params, state, None, x, True)
  xhat, _, _ = _np_whiten(x, 1e-2)
  np.testing.assert_allclose(y, np.einsum("cij,...cj->...ci", gamma, xhat) + beta,
                             rtol=1e-4, atol=1e-4)


def test_whitening_for_reals_is_ordinary_batchnorm():
  x = _correlated(32, 5, 1)
  f, params, state = _bn(x, algebra="r", whitening=True, eps=1e-3)
  y, _ = f.apply(params, state, None, x, True)
  np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-3), rtol=1e-4, atol=1e-4)


def test_trabelsi_scale_init():
  x = _correlated(8, 2, 4)
  _, params, _ = _bn(x, algebra="h", whitening=True, scale_init=norm_lib.trabelsi_scale_init)
  np.testing.assert_allclose(params["batch_norm"]["scale"],
                             np.broadcast_to(np.eye(4) / 2, (2, 4, 4)), rtol=1e-6)


@pytest.mark.parametrize("whitening", [False, True])
def test_eval_equals_train_when_running_stats_are_batch_stats(whitening):
  x = _correlated(32, 3, 4, extra=(2,))
  f, params, state = _bn(x, algebra="m2r", decay_rate=0.0, whitening=whitening)
  y_train, state = f.apply(params, state, None, x, True)
  y_eval, _ = f.apply(params, state, None, x, False)
  np.testing.assert_allclose(y_eval, y_train, rtol=1e-5, atol=1e-5)
  # Evaluation really uses the stored statistics, not the new batch's.
  x2 = _correlated(32, 3, 4, extra=(2,))
  y2, _ = f.apply(params, state, None, x2, False)
  flat = x.reshape(-1, 3, 4).astype(np.float64)
  mu = flat.mean(0)
  if whitening:
    cov = np.einsum("mci,mcj->cij", flat - mu, flat - mu) / len(flat)
    lam, q = np.linalg.eigh(cov + 1e-5 * np.eye(4))
    w = np.einsum("cij,cj,ckj->cik", q, lam ** -0.5, q)
    want = np.einsum("cij,...cj->...ci", w, x2 - mu)
  else:
    want = (x2 - mu) / np.sqrt(flat.var(0) + 1e-5)
  np.testing.assert_allclose(y2, want, rtol=1e-3, atol=1e-3)


def test_whitening_running_statistics_update():
  x = _correlated(16, 2, 2)
  f, params, state = _bn(x, algebra="c", whitening=True, decay_rate=0.9)
  np.testing.assert_array_equal(state["batch_norm"]["cov"], np.broadcast_to(np.eye(2), (2, 2, 2)))
  y0, _ = f.apply(params, state, None, x, False)  # before training: x / sqrt(1 + eps)
  np.testing.assert_allclose(y0, x / np.sqrt(1 + 1e-5), rtol=1e-5)
  _, state = f.apply(params, state, None, x, True)
  _, mu, cov = _np_whiten(x, 0.0)
  np.testing.assert_allclose(state["batch_norm"]["mean"], 0.1 * mu, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(state["batch_norm"]["cov"], 0.9 * np.eye(2) + 0.1 * cov,
                             rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("whitening", [False, True])
def test_cross_replica_statistics_are_global(whitening):
  x = _correlated(16, 2, 2)
  _, params, state = _bn(x[:8], algebra="c", whitening=whitening)  # pmean needs the axis
  f = hk.transform_with_state(lambda x, t: nn.BatchNorm(
      algebra="c", whitening=whitening, cross_replica_axis="i")(x, t))
  run = lambda xs: f.apply(params, state, None, xs, True)[0]
  y = jax.vmap(run, axis_name="i")(x.reshape(2, 8, 2, 2)).reshape(16, 2, 2)
  if whitening:
    want, _, _ = _np_whiten(x, 1e-5)
  else:
    want = (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5)
  np.testing.assert_allclose(y, want, rtol=1e-3, atol=1e-3)


def test_bfloat16_inputs_keep_their_dtype():
  x = _correlated(16, 2, 2)
  f, params, state = _bn(jnp.asarray(x, jnp.bfloat16), algebra="c", whitening=True)
  y, state = f.apply(params, state, None, jnp.asarray(x, jnp.bfloat16), True)
  assert y.dtype == jnp.bfloat16 and state["batch_norm"]["cov"].dtype == jnp.float32
  want, _, _ = _np_whiten(x, 1e-5)
  np.testing.assert_allclose(np.asarray(y, np.float32), want, rtol=0.05, atol=0.05)


# ------------------------------------------------------------- inv_sqrtm
def test_inv_sqrtm_value():
  a = RNG.standard_normal((3, 4, 4))
  v = (a @ a.transpose(0, 2, 1) + 0.5 * np.eye(4)).astype(np.float32)
  got = np.asarray(norm_lib.inv_sqrtm(jnp.asarray(v), 1e-3), np.float64)
  # (V + eps I)^{-1/2} squared and applied to V + eps I gives I.
  np.testing.assert_allclose(got @ got @ (v + 1e-3 * np.eye(4)),
                             np.broadcast_to(np.eye(4), v.shape), atol=1e-3)
  np.testing.assert_allclose(got, got.transpose(0, 2, 1), atol=1e-5)


def test_inv_sqrtm_gradient_at_repeated_eigenvalues():
  # At V = λI every eigenvalue is repeated: autodiff through eigh divides by
  # zero there. d(V^{-1/2}) = -½ (λ + eps)^{-3/2} dV exactly.
  eps, lam = 1e-3, 2.0
  r = RNG.standard_normal((4, 4)).astype(np.float32)
  grad = jax.grad(lambda v: jnp.sum(norm_lib.inv_sqrtm(v, eps) * r))(lam * jnp.eye(4))
  want = -0.5 * (lam + eps) ** -1.5 * (r + r.T) / 2
  np.testing.assert_allclose(grad, want, rtol=1e-4, atol=1e-6)


def test_inv_sqrtm_gradient_against_finite_differences():
  a = RNG.standard_normal((4, 4))
  v = a @ a.T + np.diag([0.5, 1.0, 1.0001, 3.0])        # two nearly equal eigenvalues
  r, e = RNG.standard_normal((4, 4)), RNG.standard_normal((4, 4))
  e = (e + e.T) / 2
  eps, h = 1e-2, 1e-5

  def f64(m):
    lam, q = np.linalg.eigh(m + eps * np.eye(4))
    return np.sum((q * lam ** -0.5) @ q.T * r)

  fd = (f64(v + h * e) - f64(v - h * e)) / (2 * h)
  grad = jax.grad(lambda m: jnp.sum(norm_lib.inv_sqrtm(m, eps) * r))(jnp.asarray(v, jnp.float32))
  assert np.sum(np.asarray(grad, np.float64) * e) == pytest.approx(fd, rel=1e-3, abs=1e-4)


# --------------------------------------------------------------- LayerNorm
def test_layer_norm_against_numpy():
  x = _correlated(2, 5, 4, extra=(3,))                    # [B, T, C, D]
  f = hk.transform(lambda x: nn.LayerNorm(algebra="h")(x))
  params = f.init(KEY, x)
  assert params["layer_norm"]["scale"].shape == (5, 4)
  scale, offset = RNG.standard_normal((5, 4)), RNG.standard_normal((5, 4))
  params = {"layer_norm": {"scale": scale.astype(np.float32), "offset": offset.astype(np.float32)}}
  y = f.apply(params, None, x)
  xd = x.astype(np.float64)
  mean, var = xd.mean((-2, -1), keepdims=True), xd.var((-2, -1), keepdims=True)
  np.testing.assert_allclose(y, (xd - mean) / np.sqrt(var + 1e-5) * scale + offset,
                             rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------ errors
def test_bad_arguments():
  x = np.zeros((4, 3, 2), np.float32)
  with pytest.raises(ValueError, match=r"\[B, \.\.\., C, D\].*D=4.*\(4, 3, 2\)"):
    _bn(x, algebra="h")
  with pytest.raises(ValueError, match=r"D=2.*\(3, 2\)"):
    _bn(np.zeros((3, 2), np.float32), algebra="c")
  with pytest.raises(ValueError, match="decay_rate.*1.5"):
    _bn(x, algebra="c", decay_rate=1.5)
  with pytest.raises(ValueError, match="scale_init.*create_scale"):
    _bn(x, algebra="c", create_scale=False, scale_init=jnp.ones)
  with pytest.raises(ValueError, match="Unknown algebra 'complex'"):
    _bn(x, algebra="complex")
  f = hk.transform(lambda x: nn.LayerNorm(algebra="m3r")(x))
  with pytest.raises(ValueError, match=r"\[\.\.\., C, D\].*D=9"):
    f.init(KEY, x)


def test_whitening_batchnorm_gradient_against_finite_differences():
  x = _correlated(12, 2, 2)
  r, e = RNG.standard_normal(x.shape), RNG.standard_normal(x.shape)
  f, params, state = _bn(x, algebra="c", whitening=True, eps=1e-2)
  loss = lambda x: jnp.sum(f.apply(params, state, None, x, True)[0] * r)
  grad = np.asarray(jax.grad(loss)(jnp.asarray(x)), np.float64)
  h = 1e-5
  fd = (np.sum(_np_whiten(x + h * e, 1e-2)[0] * r)
        - np.sum(_np_whiten(x - h * e, 1e-2)[0] * r)) / (2 * h)
  assert np.sum(grad * e) == pytest.approx(fd, rel=1e-3, abs=1e-3)
