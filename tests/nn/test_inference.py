"""nn.make_preparer: a model on prepared weights computes what it computes on its parameters."""

import numpy as np
import pytest
import haiku as hk
import jax
import jax.numpy as jnp

from algebranets import algebras, nn, ops
from tests import naive


@pytest.mark.parametrize("name", ["c", "h", "m2r", "m2c", "dual"])
def test_prepared_model_matches_plain_model(name):
  def fn(x):
    h = jax.nn.relu(nn.Linear(6, algebra=name, name="first")(x))
    return nn.Linear(3, algebra=name, path="sparse", with_bias=False, name="second")(h)

  f = hk.transform(fn)
  d = algebras.get(name).dim
  x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 5, d)), jnp.float32)
  params = f.init(jax.random.PRNGKey(0), x)
  prepare = nn.make_preparer(fn, params, x)
  prepared = jax.jit(prepare)(params)
  first, second = prepared["first"]["w"], prepared["second"]["w"]
  assert isinstance(first, ops.PreparedWeight) and first.path == ops.default_path(name, "decode")
  assert isinstance(second, ops.PreparedWeight) and second.path == "sparse"  # explicit path kept
  # Independent float64 computation of the same two layers.
  p = jax.tree.map(np.asarray, params)
  h = np.maximum(naive.dense(x, p["first"]["w"], name) + p["first"]["b"], 0)
  want = naive.dense(h, p["second"]["w"], name)
  got = f.apply(prepared, None, x)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-4, atol=1e-5)
