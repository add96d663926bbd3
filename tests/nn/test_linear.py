"""Linear and Conv2D against Haiku's real layers and hand-written algebra math."""

import numpy as np
import pytest
import jax
import haiku as hk

from algebranets import nn

RNG = np.random.default_rng(0)


def _init_apply(fn, x):
  """Parameter shapes (traced, not compiled: compiles are slow on CPU) and the transform."""
  f = hk.transform(fn)
  return jax.eval_shape(f.init, jax.random.PRNGKey(0), x), f


def _build(make):
  """Constructs a module inside hk.transform (where Haiku requires it)."""
  hk.transform(make).init(jax.random.PRNGKey(0))


def _rand(*shape):
  return RNG.standard_normal(shape).astype(np.float32)


# ------------------------------------------------------------ Linear
def test_linear_real_equals_hk_linear():
  x = _rand(5, 7)
  params, f = _init_apply(lambda x: nn.Linear(3, algebra="r")(x), x[..., None])
  p = params["linear"]
  assert p["w"].shape == (7, 3, 1) and p["b"].shape == (3, 1)
  w, b = _rand(7, 3, 1), _rand(3, 1)
  got = f.apply({"linear": {"w": w, "b": b}}, None, x[..., None])
  ref_f = hk.transform(lambda x: hk.Linear(3)(x))
  want = ref_f.apply({"linear": {"w": w[..., 0], "b": b[:, 0]}}, None, x)
  np.testing.assert_allclose(got[..., 0], want, rtol=1e-5, atol=1e-5)


def test_linear_complex_against_numpy():
  x, w, b = _rand(4, 6, 2), _rand(6, 3, 2), _rand(3, 2)
  f = hk.transform(lambda x: nn.Linear(3, algebra="c")(x))
  got = np.asarray(f.apply({"linear": {"w": w, "b": b}}, None, x))
  xc, wc, bc = (a[..., 0] + 1j * a[..., 1] for a in (x, w, b))
  want = xc @ wc + bc
  np.testing.assert_allclose(got[..., 0], want.real, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(got[..., 1], want.imag, rtol=1e-5, atol=1e-5)


def _hamilton(p, q):
  a1, b1, c1, d1 = np.moveaxis(p, -1, 0)
  a2, b2, c2, d2 = np.moveaxis(q, -1, 0)
  return np.stack([a1 * a2 - b1 * b2 - c1 * c2 - d1 * d2,
                   a1 * b2 + b1 * a2 + c1 * d2 - d1 * c2,
                   a1 * c2 - b1 * d2 + c1 * a2 + d1 * b2,
                   a1 * d2 + b1 * c2 - c1 * b2 + d1 * a2], axis=-1)


def test_linear_quaternion_weight_on_the_left():
  x, w = _rand(2, 5, 4), _rand(5, 3, 4)
  f = hk.transform(lambda x: nn.Linear(3, algebra="h", with_bias=False)(x))
  got = f.apply({"linear": {"w": w}}, None, x)
  want = _hamilton(w[None], x[:, :, None]).sum(1)  # Σ_i w_io x_i
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  wrong = _hamilton(x[:, :, None], w[None]).sum(1)
  assert not np.allclose(got, wrong, atol=1e-3)


def test_linear_m2r_is_matrix_product():
  x, w = _rand(3, 4, 4), _rand(4, 2, 4)
  f = hk.transform(lambda x: nn.Linear(2, algebra="m2r", with_bias=False)(x))
  got = np.asarray(f.apply({"linear": {"w": w}}, None, x))
  want = np.einsum("ioab,nibc->noac", w.reshape(4, 2, 2, 2), x.reshape(3, 4, 2, 2))
  np.testing.assert_allclose(got, want.reshape(3, 2, 4), rtol=1e-5, atol=1e-5)


def test_linear_param_shapes_attributes_and_leading_axes():
  x = np.zeros((2, 3, 5, 8), np.float32)  # [..., Cin=5, D=8]
  mod = {}

  def fn(x):
    mod["m"] = nn.Linear(7, algebra="m2c", name="lin")
    return mod["m"](x)

  params, f = _init_apply(fn, x)
  assert params["lin"]["w"].shape == (5, 7, 8)
  assert params["lin"]["b"].shape == (7, 8)
  assert jax.eval_shape(f.apply, params, None, x).shape == (2, 3, 7, 8)
  assert mod["m"].algebra.name == "m2c" and mod["m"].output_size == 7
  params2, _ = _init_apply(lambda x: nn.Linear(7, algebra="m2c", with_bias=False)(x), x)
  assert set(params2["linear"]) == {"w"}


def test_linear_bad_arguments():
  with pytest.raises(ValueError, match="Unknown algebra 'quat'.*Valid names"):
    _build(lambda: nn.Linear(3, algebra="quat"))
  with pytest.raises(ValueError, match="output_size"):
    _build(lambda: nn.Linear(0, algebra="c"))
  with pytest.raises(ValueError, match="Unknown path 'fast'"):
    _build(lambda: nn.Linear(3, algebra="c", path="fast"))
  f = hk.transform(lambda x: nn.Linear(3, algebra="h")(x))
  with pytest.raises(ValueError, match=r"\[\.\.\., Cin, D\].*D=4.*\(2, 5, 2\)"):
    f.init(jax.random.PRNGKey(0), np.zeros((2, 5, 2), np.float32))


# ------------------------------------------------------------ Conv2D
@pytest.mark.parametrize("stride,rate,padding,groups", [
    (1, 1, "SAME", 1), (2, 1, "VALID", 1), (1, 2, "SAME", 2), ((2, 1), 1, ((1, 0), (2, 1)), 1)])
def test_conv_real_equals_hk_conv(stride, rate, padding, groups):
  x = _rand(2, 7, 6, 4)
  kwargs = dict(stride=stride, rate=rate, padding=padding, feature_group_count=groups)
  params, f = _init_apply(lambda x: nn.Conv2D(6, (3, 2), algebra="r", **kwargs)(x), x[..., None])
  p = params["conv2_d"]
  assert p["w"].shape == (3, 2, 4 // groups, 6, 1) and p["b"].shape == (6, 1)
  w, b = _rand(3, 2, 4 // groups, 6, 1), _rand(6, 1)
  got = f.apply({"conv2_d": {"w": w, "b": b}}, None, x[..., None])
  ref = hk.transform(lambda x: hk.Conv2D(6, (3, 2), **kwargs)(x))
  want = ref.apply({"conv2_d": {"w": w[..., 0], "b": b[:, 0]}}, None, x)
  np.testing.assert_allclose(got[..., 0], want, rtol=1e-5, atol=1e-5)


def _np_complex_conv(x, w, stride, pad, rate, groups):
  """Direct complex conv, NHWC / HWIO, explicit padding, by loops."""
  x = np.pad(x, ((0, 0), pad[0], pad[1], (0, 0)))
  n, h, wd, cin = x.shape
  kh, kw, cg, cout = w.shape
  eh, ew = (kh - 1) * rate + 1, (kw - 1) * rate + 1
  ho, wo = (h - eh) // stride + 1, (wd - ew) // stride + 1
  og = cout // groups
  y = np.zeros((n, ho, wo, cout), complex)
  for i in range(ho):
    for j in range(wo):
      for p in range(kh):
        for q in range(kw):
          xs = x[:, i * stride + p * rate, j * stride + q * rate]  # [N, Cin]
          for g in range(groups):
            y[:, i, j, g * og:(g + 1) * og] += (
                xs[:, g * cg:(g + 1) * cg] @ w[p, q, :, g * og:(g + 1) * og])  # [N, Og]
  return y


@pytest.mark.parametrize("stride,rate,padding,groups", [
    (1, 1, "SAME", 1), (2, 1, "VALID", 1), (1, 2, ((2, 1), (0, 2)), 1), (1, 1, "SAME", 3)])
def test_conv_complex_against_numpy(stride, rate, padding, groups):
  x, w, b = _rand(2, 6, 5, 3, 2), _rand(3, 3, 3 // groups, 6, 2), _rand(6, 2)
  f = hk.transform(lambda x: nn.Conv2D(6, 3, algebra="c", stride=stride, rate=rate,
                                       padding=padding, feature_group_count=groups)(x))
  got = np.asarray(f.apply({"conv2_d": {"w": w, "b": b}}, None, x))
  named = {"SAME": ((1, 1), (1, 1)), "VALID": ((0, 0), (0, 0))}  # for a 3x3 kernel, stride 1
  pad = named[padding] if isinstance(padding, str) else padding
  xc, wc, bc = (a[..., 0] + 1j * a[..., 1] for a in (x, w, b))
  want = _np_complex_conv(xc, wc, stride, pad, rate, groups) + bc
  assert got.shape == want.shape + (2,)
  np.testing.assert_allclose(got[..., 0], want.real, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(got[..., 1], want.imag, rtol=1e-4, atol=1e-4)


def test_conv_attributes_depthwise_unbatched_and_padfn():
  mod = {}

  def fn(x):
    mod["m"] = nn.Conv2D(8, 3, algebra="h", stride=(2, 1), rate=2, feature_group_count=4,
                         padding=hk.pad.same)
    return mod["m"](x)

  x = np.zeros((5, 5, 4, 4), np.float32)  # unbatched [H, W, Cin, D]
  params, f = _init_apply(fn, x)
  m = mod["m"]
  assert (m.kernel_shape, m.stride, m.rate, m.feature_group_count, m.output_channels) == \
      ((3, 3), (2, 1), (2, 2), 4, 8)
  assert m.algebra.name == "h" and m.padding == ((2, 2), (2, 2))
  assert params["conv2_d"]["w"].shape == (3, 3, 1, 8, 4)  # depthwise, channel multiplier 2
  assert jax.eval_shape(f.apply, params, None, x).shape == (3, 5, 8, 4)


def test_conv_bad_arguments():
  with pytest.raises(ValueError, match="padding.*'FULL'"):
    _build(lambda: nn.Conv2D(4, 3, algebra="c", padding="FULL"))
  with pytest.raises(ValueError, match="kernel_shape"):
    _build(lambda: nn.Conv2D(4, (3, 3, 3), algebra="c"))
  with pytest.raises(ValueError, match="Unknown algebra"):
    _build(lambda: nn.Conv2D(4, 3, algebra="octonion"))
  with pytest.raises(ValueError, match="output_channels=5.*feature_group_count=2"):
    _build(lambda: nn.Conv2D(5, 3, algebra="c", feature_group_count=2))
  f = hk.transform(lambda x: nn.Conv2D(4, 3, algebra="m2r")(x))
  with pytest.raises(ValueError, match=r"\[N, H, W, Cin, D\].*D=4.*\(1, 5, 5, 3, 2\)"):
    f.init(jax.random.PRNGKey(0), np.zeros((1, 5, 5, 3, 2), np.float32))
  g = hk.transform(lambda x: nn.Conv2D(4, 3, algebra="c", feature_group_count=2)(x))
  with pytest.raises(ValueError, match="Cin=3.*feature_group_count=2"):
    g.init(jax.random.PRNGKey(0), np.zeros((1, 5, 5, 3, 2), np.float32))
