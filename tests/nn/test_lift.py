"""Lift (R -> A), Project (A -> R) and Embed against hand-written expectations."""

import numpy as np
import pytest
import jax
import haiku as hk

from algebranets import nn

RNG = np.random.default_rng(0)
KEY = jax.random.PRNGKey(0)


def _rand(*shape):
  return RNG.standard_normal(shape).astype(np.float32)


def _build(make):
  hk.transform(make).init(KEY)


def _apply(fn, x, params=None):
  f = hk.transform(fn)
  if params is None:
    params = f.init(KEY, x)
  return f.apply(params, None, x), params


# ------------------------------------------------------------------- Lift
def test_lift_linear_is_a_real_linear_map_reshaped():
  x = _rand(2, 3, 5)
  w, b = _rand(5, 4 * 2), _rand(4 * 2)
  y, _ = _apply(lambda x: nn.Lift(4, algebra="c")(x), x, {"lift/linear": {"w": w, "b": b}})
  np.testing.assert_allclose(y, (x @ w + b).reshape(2, 3, 4, 2), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,one", [
    ("r", [1]), ("c", [1, 0]), ("h", [1, 0, 0, 0]), ("m2r", [1, 0, 0, 1]), ("dual", [1, 0]),
    ("m2c", [1, 0, 0, 0, 0, 0, 1, 0])])
def test_lift_identity_puts_reals_on_the_unit(name, one):
  x = _rand(3, 6)
  y, params = _apply(lambda x: nn.Lift(6, algebra=name, mode="identity")(x), x)
  assert params == {}
  np.testing.assert_array_equal(y, x[..., None] * np.array(one, np.float32))


def test_lift_split_groups_consecutive_features():
  x = np.arange(24, dtype=np.float32).reshape(2, 12)
  y, _ = _apply(lambda x: nn.Lift(3, algebra="h", mode="split")(x), x)
  np.testing.assert_array_equal(y[1, 2], [20, 21, 22, 23])
  assert y.shape == (2, 3, 4)


def test_lift_errors():
  with pytest.raises(ValueError, match="'cross3' has none"):
    _build(lambda: nn.Lift(4, algebra="cross3", mode="identity"))
  with pytest.raises(ValueError, match="'embed'.*linear, identity, split"):
    _build(lambda: nn.Lift(4, algebra="c", mode="embed"))
  with pytest.raises(ValueError, match="channels must equal F.*channels=4"):
    _apply(lambda x: nn.Lift(4, algebra="c", mode="identity")(x), _rand(2, 3))
  with pytest.raises(ValueError, match="F must be channels·D = 8"):
    _apply(lambda x: nn.Lift(4, algebra="c", mode="split")(x), _rand(2, 6))


# ---------------------------------------------------------------- Project
def test_project_linear_flatten_component_norm():
  x = _rand(2, 3, 2)                                       # [B, C, D], complex
  z = x[..., 0] + 1j * x[..., 1]
  w, b = _rand(6, 5), _rand(5)
  y, _ = _apply(lambda x: nn.Project(5, algebra="c")(x), x, {"project/linear": {"w": w, "b": b}})
  np.testing.assert_allclose(y, x.reshape(2, 6) @ w + b, rtol=1e-5, atol=1e-5)
  y, _ = _apply(lambda x: nn.Project(None, algebra="c", mode="flatten")(x), x)
  np.testing.assert_array_equal(y, np.stack([z.real, z.imag], -1).reshape(2, 6))
  y, _ = _apply(lambda x: nn.Project(3, algebra="c", mode="component", component="im")(x), x)
  np.testing.assert_array_equal(y, z.imag.astype(np.float32))
  y, _ = _apply(lambda x: nn.Project(None, algebra="c", mode="norm")(x), x)
  np.testing.assert_allclose(y, np.abs(z), rtol=1e-6)


def test_project_errors():
  with pytest.raises(ValueError, match="needs an output_size"):
    _build(lambda: nn.Project(None, algebra="c"))
  with pytest.raises(ValueError, match="'logits'.*linear, flatten, component, norm"):
    _build(lambda: nn.Project(3, algebra="c", mode="logits"))
  with pytest.raises(ValueError, match=r"index in \[0, 4\).*'h'.*got 4"):
    _build(lambda: nn.Project(3, algebra="h", mode="component", component=4))
  with pytest.raises(ValueError, match="'z'.*valid: re, im"):
    _build(lambda: nn.Project(3, algebra="c", mode="component", component="z"))
  with pytest.raises(ValueError, match="produces 6 features.*output_size=5"):
    _apply(lambda x: nn.Project(5, algebra="c", mode="flatten")(x), _rand(2, 3, 2))
  with pytest.raises(ValueError, match=r"\[\.\.\., C, D\].*D=4"):
    _apply(lambda x: nn.Project(5, algebra="m2r")(x), _rand(2, 3, 2))


# ------------------------------------------------------------------ Embed
def test_embed_lookup_and_shape():
  ids = np.array([[0, 3, 3], [1, 2, 0]])
  f = hk.transform(lambda ids: nn.Embed(4, 5, algebra="h")(ids))
  params = f.init(KEY, ids)
  table = np.asarray(params["embed"]["embeddings"])
  assert table.shape == (4, 5, 4)
  assert 0.5 < np.std(table) < 1.0  # truncated normal, stddev 1 before truncation
  np.testing.assert_array_equal(f.apply(params, None, ids), table[ids])


def test_embed_errors():
  f = hk.transform(lambda ids: nn.Embed(4, 5, algebra="c")(ids))
  with pytest.raises(ValueError, match="integer token ids.*float32"):
    f.init(KEY, np.zeros((2,), np.float32))
  with pytest.raises(ValueError, match="vocab_size"):
    _build(lambda: nn.Embed(0, 5, algebra="c"))
