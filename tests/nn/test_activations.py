"""Activations: component-wise functions, norm-based modules, the registry."""

import math

import numpy as np
import pytest
import jax
import jax.numpy as jnp
import haiku as hk

from algebranets import nn
from algebranets.nn import activations as act

RNG = np.random.default_rng(0)
KEY = jax.random.PRNGKey(0)


def test_component_wise_against_numpy():
  x = RNG.standard_normal((3, 4, 2)).astype(np.float32)
  xd = x.astype(np.float64)
  want = {
      "relu": np.maximum(xd, 0),
      "tanh": np.tanh(xd),
      "sigmoid": 1 / (1 + np.exp(-xd)),
      "silu": xd / (1 + np.exp(-xd)),
      "swish": xd / (1 + np.exp(-xd)),
      "softplus": np.log1p(np.exp(xd)),
      "elu": np.where(xd > 0, xd, np.expm1(xd)),
      "leaky_relu": np.where(xd > 0, xd, 0.01 * xd),
      "identity": xd,
      # tanh approximation of GELU (jax.nn.gelu's default).
      "gelu": 0.5 * xd * (1 + np.tanh(np.sqrt(2 / np.pi) * (xd + 0.044715 * xd ** 3))),
  }
  for name, expected in want.items():
    np.testing.assert_allclose(nn.get_activation(name)(x), expected, rtol=1e-5, atol=1e-6,
                               err_msg=name)


def test_mod_relu_complex_against_python_complex():
  x = RNG.standard_normal((5, 3, 2)).astype(np.float32)
  b = np.array([-0.5, 0.2, -1.5], np.float32)
  f = hk.transform(lambda x: nn.ModReLU()(x))
  params = f.init(KEY, x)
  assert params["mod_re_lu"]["b"].shape == (3,)
  np.testing.assert_allclose(params["mod_re_lu"]["b"], -0.5)
  y = np.asarray(f.apply({"mod_re_lu": {"b": b}}, None, x))
  for idx in np.ndindex(5, 3):
    z = complex(*x[idx])
    w = max(abs(z) + b[idx[1]], 0.0) * z / abs(z)
    assert y[idx] == pytest.approx([w.real, w.imag], abs=1e-5)


def test_norm_gate_quaternion_against_numpy():
  x = RNG.standard_normal((4, 2, 4)).astype(np.float32)
  b = np.array([0.3, -2.0], np.float32)
  f = hk.transform(lambda x: nn.NormGate()(x))
  params = f.init(KEY, x)
  np.testing.assert_array_equal(params["norm_gate"]["b"], 0.0)
  y = f.apply({"norm_gate": {"b": b}}, None, x)
  n = np.sqrt(np.sum(x.astype(np.float64) ** 2, -1, keepdims=True))
  np.testing.assert_allclose(y, x / (1 + np.exp(-(n + b[:, None]))), rtol=1e-5, atol=1e-6)


def test_norm_activations_preserve_direction_and_are_rotation_equivariant():
  # Rotating a complex element by a phase commutes with ModReLU.
  x = RNG.standard_normal((6, 3, 2)).astype(np.float32)
  theta = 0.7
  rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]],
                 np.float32)
  f = hk.transform(lambda x: nn.ModReLU(b_init=hk.initializers.Constant(-0.8))(x))
  params = f.init(KEY, x)
  y_rot = f.apply(params, None, x @ rot.T)
  rot_y = np.asarray(f.apply(params, None, x)) @ rot.T
  np.testing.assert_allclose(y_rot, rot_y, rtol=1e-5, atol=1e-5)


def test_gradients_are_finite_at_zero():
  x = jnp.zeros((2, 3, 4))
  for module in (nn.ModReLU, nn.NormGate):
    f = hk.transform(lambda x, module=module: module(b_init=hk.initializers.Constant(0.5))(x))
    params = f.init(KEY, x)
    y, g = jax.value_and_grad(lambda x, f=f, params=params: jnp.sum(f.apply(params, None, x)))(x)
    assert np.all(np.isfinite(g)) and np.isfinite(y), module.__name__
  g = jax.grad(lambda x: jnp.sum(nn.safe_norm(x)))(x)
  np.testing.assert_array_equal(g, 0.0)
  np.testing.assert_allclose(nn.safe_norm(jnp.array([[3.0, 4.0], [0.0, 0.0]])), [5.0, 0.0])


def test_registry_builds_a_module_per_call_site():
  f = hk.transform(lambda x: nn.get_activation("modrelu")(nn.get_activation("norm_gate")(x)))
  params = f.init(KEY, np.zeros((2, 5, 2), np.float32))
  assert params["norm_gate"]["b"].shape == (5,) and params["mod_re_lu"]["b"].shape == (5,)


def test_registry_errors_and_passthrough():
  assert nn.get_activation("ReLU") is act.relu
  assert nn.get_activation(jnp.sin) is jnp.sin
  assert set(nn.ACTIVATIONS) >= {"relu", "gelu", "silu", "tanh", "modrelu", "norm_gate"}
  with pytest.raises(ValueError, match="'crelu'.*valid names: relu, gelu"):
    nn.get_activation("crelu")
  with pytest.raises(ValueError, match=r"\[\.\.\., C, D\]"):
    hk.transform(lambda x: nn.NormGate()(x)).init(KEY, np.zeros((3,), np.float32))
