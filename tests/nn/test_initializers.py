"""Variance-scaling initialisers: fan counting and the variances they produce."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp
import haiku as hk

from algebranets import algebras, nn
from algebranets.nn import initializers as inits

# Real products feeding each output component, averaged over components, counted
# by hand: "multiplies per parameter" of PAPER.md (dual: 1 product for a, 2 for ε).
GAIN = {"r": 1, "c": 2, "h": 4, "m2r": 2, "m3r": 3, "m4r": 4, "m2c": 4, "dual": 1.5,
        "cross3": 2}


def _key(seed):
  # "rbg" keys: jax.random compiles far faster on CPU than with threefry.
  return jax.random.key(seed, impl="rbg")


def test_registered_algebras_are_all_covered():
  assert set(GAIN) == set(algebras.names())


@pytest.mark.parametrize("name", sorted(GAIN))
def test_product_gain_matches_hand_count(name):
  assert inits.product_gain(name) == pytest.approx(GAIN[name], rel=1e-9)


def test_effective_fans_count_kernel_and_channels():
  assert inits.effective_fans((3, 3, 8, 16, 2), "c") == pytest.approx(
      (3 * 3 * 8 * 2, 3 * 3 * 16 * 2))
  assert inits.effective_fans((5, 7, 4), "m2r") == pytest.approx((10, 14))
  with pytest.raises(ValueError, match=r"\[\*kernel, Cin, Cout, 4\].*\(5, 7, 2\)"):
    inits.effective_fans((5, 7, 2), "h")


def _sample(init, shape, seed=0):
  f = hk.transform(lambda: hk.get_parameter("w", shape, jnp.float32, init=init))
  # Eager, not jitted: jax.random's kernels are compiled once per shape and
  # reused, which is much faster on CPU than compiling a whole program each time.
  return np.asarray(f.init(_key(seed))["~"]["w"])


@pytest.mark.parametrize("name", sorted(GAIN))
def test_wide_layer_preserves_variance(name):
  """x ~ N(0, 1) components, c_in = 256: LeCun keeps Var(y) ≈ 1, He gives ≈ 2."""
  alg = algebras.get(name)
  cin, d = 256, alg.dim

  def fn(x):
    lecun = nn.Linear(64, algebra=name, with_bias=False, name="lecun")(x)
    he = nn.Linear(64, algebra=name, with_bias=False, w_init=nn.he_normal(name), name="he")(x)
    return lecun, he

  f = hk.transform(fn)
  x = np.random.default_rng(1).standard_normal((max(16, 512 // d), cin, d)).astype(np.float32)
  lecun, he = (np.asarray(a, np.float64) for a in f.apply(f.init(_key(2), x), None, x))
  var_x = np.var(x)
  assert np.var(lecun) / var_x == pytest.approx(1.0, rel=0.1)
  assert np.var(he) / var_x == pytest.approx(2.0, rel=0.1)
  # He's point: after a ReLU the second moment is back to Var(x).
  assert np.mean(np.square(np.maximum(he, 0))) / var_x == pytest.approx(1.0, rel=0.1)


@pytest.mark.parametrize("name", ["c", "dual", "m2r"])
def test_fan_out_preserves_gradient_variance(name):
  alg = algebras.get(name)
  init = inits.VarianceScaling(1.0, "fan_out", "normal", algebra=name)
  w = _sample(init, (32, 256, alg.dim))
  x = jnp.zeros((64, 32, alg.dim))
  g = np.random.default_rng(3).standard_normal((64, 256, alg.dim)).astype(np.float32)
  _, vjp = jax.vjp(lambda x: _dense(x, w, alg), x)
  (dx,) = vjp(g)  # Var(dx) = fan_out · g · σ_w² · Var(g)
  assert np.var(np.asarray(dx)) == pytest.approx(1.0, rel=0.1)


def _dense(x, w, alg):
  # Σ_i w_io · x_i from the structure tensor by hand (independent of ops).
  return jnp.einsum("ioa,nib,abk->nok", w, x, jnp.asarray(alg.structure, jnp.float32))


def test_conv_fan_in_includes_kernel():
  f = hk.transform(lambda x: nn.Conv2D(32, 3, algebra="h", padding="VALID", with_bias=False)(x))
  x = np.random.default_rng(4).standard_normal((8, 8, 8, 32, 4)).astype(np.float32)
  y = np.asarray(f.apply(f.init(_key(5), x), None, x))
  assert y.shape == (8, 6, 6, 32, 4)
  assert np.var(y) == pytest.approx(1.0, rel=0.1)


@pytest.mark.parametrize("mode", ["fan_in", "fan_out", "fan_avg"])
@pytest.mark.parametrize("dist", ["truncated_normal", "normal", "uniform"])
def test_sample_variance_and_support(mode, dist):
  shape = (2, 2, 48, 80, 4)  # m2r: g = 2
  fan_in, fan_out = 2 * 2 * 48 * 2, 2 * 2 * 80 * 2
  fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[mode]
  w = _sample(inits.VarianceScaling(3.0, mode, dist, algebra="m2r"), shape)
  target = 3.0 / fan
  assert w.shape == shape and w.dtype == np.float32
  assert np.var(w) == pytest.approx(target, rel=0.05)
  assert abs(np.mean(w)) < 0.05 * np.sqrt(target)
  bound = {"uniform": np.sqrt(3 * target), "truncated_normal": 2 * np.sqrt(target) / 0.8796,
           "normal": np.inf}[dist]
  assert np.max(np.abs(w)) <= bound * (1 + 1e-6)


def test_polar_complex_is_trabelsi_he():
  # Trabelsi et al.: Var(W) = E|W|² = 2 / fan_in with fan_in counted in complex units.
  w = _sample(inits.polar("c"), (64, 64, 2))
  assert np.mean(np.sum(w ** 2, -1)) == pytest.approx(2 / 64, rel=0.05)
  z = w[..., 0] + 1j * w[..., 1]
  # Uniform phase: E[z²] = 0 (would be E|z|² for a real-valued init).
  assert abs(np.mean(z ** 2)) < 0.1 * np.mean(np.abs(z) ** 2)


def test_polar_real_is_he_normal_and_initialisers_are_named():
  # For r (chi(1) modulus, direction ±1) polar is N(0, 2 / fan_in): no truncation.
  w = _sample(inits.polar("r"), (256, 256, 1))
  assert np.var(w) == pytest.approx(2 / 256, rel=0.05)
  assert np.max(np.abs(w)) > 2.5 * np.sqrt(2 / 256)  # tails a truncated normal would cut
  assert inits.by_name("polar", "h").distribution == "polar"
  assert inits.by_name("he_normal", "c").scale == 2.0
  with pytest.raises(ValueError, match="Unknown initializer 'xavier'; valid names: lecun_normal"):
    inits.by_name("xavier", "r")


def test_polar_quaternion_component_variances():
  w = _sample(inits.VarianceScaling(1.0, "fan_in", "polar", algebra="h"), (64, 128, 4))
  sigma2 = 1.0 / (64 * 4)
  var = np.var(w.reshape(-1, 4), axis=0)
  # w = |w|(cos θ + u sin θ), E|w|² = 4σ²: real part 2σ², each imaginary 2σ²/3.
  np.testing.assert_allclose(var, [2 * sigma2] + [2 * sigma2 / 3] * 3, rtol=0.06)


def test_default_linear_init_is_lecun_for_the_algebra():
  f = hk.transform(lambda x: nn.Linear(128, algebra="m3r")(x))
  params = f.init(_key(0), jnp.zeros((1, 64, 9)))
  w = np.asarray(params["linear"]["w"])
  assert np.var(w) == pytest.approx(1.0 / (64 * 3), rel=0.05)
  assert np.max(np.abs(w)) <= 2 / np.sqrt(64 * 3) / 0.8796 * (1 + 1e-6)
  np.testing.assert_array_equal(params["linear"]["b"], 0.0)


@pytest.mark.parametrize("name", sorted(GAIN))
def test_real_equivalent_normal_gives_the_real_layers_output_variance(name):
  """At equal real activation width, y = w·x has the variance of a real N(0, s²) layer."""
  alg = algebras.get(name)
  s, d = 0.02, alg.dim
  real_width = 144  # Cin·D for every registered D (1, 2, 3, 4, 8, 9, 16)
  cin, cout, n = real_width // d, 64, 256
  w = np.asarray(_sample(inits.RealEquivalentNormal(s, algebra=name), (cin, cout, d)), np.float64)
  assert w.shape == (cin, cout, d)
  rng = np.random.default_rng(7)
  x = rng.standard_normal((n, cin, d))
  y = np.einsum("ioa,nib,abk->nok", w, x, alg.structure)  # [n, Cout, D], by hand
  # The real layer itself, simulated: N(0, s²) weights on the same real width.
  w_real = rng.normal(0.0, s, (real_width, cout))
  y_real = x.reshape(n, real_width) @ w_real
  # y² averages n·Cout·D (alg) and n·Cout (real) samples: relative errors of a few % each.
  assert np.mean(y ** 2) == pytest.approx(np.mean(y_real ** 2), rel=0.12)
  assert np.mean(y_real ** 2) == pytest.approx(real_width * s ** 2, rel=0.08)
  if name != "dual":  # every component counts the same products (dual: 1 and 2, see module)
    np.testing.assert_allclose(np.mean(y ** 2, axis=(0, 1)), real_width * s ** 2, rtol=0.15)
  # Components: s·sqrt(D/g), e.g. M4(R) 2s, M2(R) s·sqrt(2), r/c/h s.
  assert np.std(w) == pytest.approx(s * np.sqrt(d / GAIN[name]), rel=0.05)
  with pytest.raises(ValueError, match="positive"):
    inits.RealEquivalentNormal(0.0, algebra=name)


def test_bad_arguments():
  with pytest.raises(ValueError, match="'fanin'.*fan_in, fan_out, fan_avg"):
    inits.VarianceScaling(1.0, "fanin", algebra="c")
  with pytest.raises(ValueError, match="'gaussian'.*truncated_normal"):
    inits.VarianceScaling(1.0, "fan_in", "gaussian", algebra="c")
  with pytest.raises(ValueError, match="scale"):
    inits.VarianceScaling(-1.0, algebra="c")
  with pytest.raises(ValueError, match="'polar'.*'m2r'"):
    inits.polar("m2r")
  with pytest.raises(ValueError, match="Unknown algebra"):
    inits.he_normal("quaternion")
