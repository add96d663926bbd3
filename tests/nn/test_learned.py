"""Learned algebras in the layers and models: the structure tensor T as a parameter.

The three checks of the issue: with T frozen at a named algebra's tensor the layer equals that
algebra's layer; gradients with respect to T match central finite differences (float64); the
PHM form equals the einsum definition (tests/test_ops_families.py). Then the plumbing: per-layer
and per-network T, costs, decoding with T multiplied in once, a training config.
"""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algebranets import algebras
from algebranets import costs
from algebranets import nn as ann
from algebranets import ops
from algebranets.models import decoding
from algebranets.models import transformer_xl as txl


def _linear_params(algebra, x, conv=False):
  def f(x):
    layer = (ann.Conv2D(3, 3, algebra=algebra, name="layer") if conv
             else ann.Linear(3, algebra=algebra, name="layer"))
    return layer(x)
  f = hk.without_apply_rng(hk.transform(f))
  return f, f.init(jax.random.PRNGKey(0), x)


@pytest.mark.parametrize("conv", [False, True])
@pytest.mark.parametrize("name", ["h", "m2r", "dual", "cl_1_1"])
def test_frozen_structure_equals_the_named_algebras_layer(name, conv):
  alg = algebras.get(name)
  rng = np.random.default_rng(0)
  shape = (2, 5, 5, 4, alg.dim) if conv else (2, 4, alg.dim)
  x = jnp.asarray(rng.normal(size=shape), jnp.float32)
  named, named_params = _linear_params(alg, x, conv)
  # Starting from the named algebra, T is initialised to its tensor ...
  learned, params = _linear_params(f"learned:{name}", x, conv)
  np.testing.assert_array_equal(params["layer"]["structure"], alg.structure)
  params = {"layer": dict(params["layer"], w=named_params["layer"]["w"],
                          b=named_params["layer"]["b"])}
  want = named.apply(named_params, x)
  np.testing.assert_allclose(learned.apply(params, x), want, atol=1e-5 * float(abs(want).max()))
  # ... and a random start with T set to that tensor is the same layer.
  rand, rand_params = _linear_params(f"learned:{alg.dim}", x, conv)
  assert not np.allclose(rand_params["layer"]["structure"], alg.structure)
  rand_params = {"layer": dict(params["layer"])}
  np.testing.assert_allclose(rand.apply(rand_params, x), want, atol=1e-5 * float(abs(want).max()))


@pytest.mark.parametrize("conv", [False, True])
def test_gradients_with_respect_to_the_structure_match_finite_differences(conv):
  with jax.enable_x64(True):
    rng = np.random.default_rng(1)
    shape = (2, 4, 4, 3, 4) if conv else (3, 3, 4)
    x = jnp.asarray(rng.normal(size=shape), jnp.float64)
    f, params = _linear_params("learned:4", x, conv)
    params = jax.tree.map(lambda p: jnp.asarray(p, jnp.float64), params)

    def loss(t):
      p = {"layer": dict(params["layer"], structure=t)}
      return jnp.sum(jnp.tanh(f.apply(p, x)))

    t0 = params["layer"]["structure"]
    grad = np.asarray(jax.grad(loss)(t0))
    eps = 1e-6
    numeric = np.zeros(t0.shape)
    for idx in np.ndindex(*t0.shape):
      step = np.zeros(t0.shape)
      step[idx] = eps
      numeric[idx] = (loss(t0 + step) - loss(t0 - step)) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-8)
    assert np.abs(grad).max() > 1e-3


def test_network_share_has_one_structure_parameter():
  def f(x):
    return ann.Linear(4, algebra="learned:h:network", name="b")(
        ann.Linear(4, algebra="learned:h:network", name="a")(x))
  f = hk.without_apply_rng(hk.transform(f))
  x = jnp.ones((2, 3, 4))
  params = f.init(jax.random.PRNGKey(0), x)
  assert set(params) == {"a", "b", "learned_algebra"}
  assert set(params["a"]) == {"w", "b"} and set(params["learned_algebra"]) == {"structure"}
  grads = jax.grad(lambda p: jnp.sum(f.apply(p, x) ** 2))(params)
  # Both layers feed T's gradient: it equals the sum of two per-layer T gradients.
  def g(x):
    return ann.Linear(4, algebra="learned:h", name="b")(ann.Linear(4, algebra="learned:h",
                                                                   name="a")(x))
  g = hk.without_apply_rng(hk.transform(g))
  layer_params = {n: dict(params[n], structure=params["learned_algebra"]["structure"])
                  for n in ("a", "b")}
  layer_grads = jax.grad(lambda p: jnp.sum(g.apply(p, x) ** 2))(layer_params)
  np.testing.assert_allclose(grads["learned_algebra"]["structure"],
                             layer_grads["a"]["structure"] + layer_grads["b"]["structure"],
                             rtol=1e-5, atol=1e-5)


def test_random_start_is_drawn_from_the_rng_with_the_dense_gain():
  x = jnp.ones((1, 16, 8))
  _, p0 = _linear_params("learned:8", x)
  f, p1 = _linear_params("learned:8", x)
  t = np.asarray(p0["layer"]["structure"])
  assert t.shape == (8, 8, 8) and abs(t.std() - 8 ** -0.5) < 0.03
  _, p2 = (f, f.init(jax.random.PRNGKey(1), x))
  assert not np.allclose(p2["layer"]["structure"], t)
  assert ann.product_gain("learned:8") == 8.0 and ann.product_gain("learned:h") == 4.0


CFG = dict(vocab_size=30, d_model=8, n_layers=2, n_heads=2, d_head=4, d_inner=16, mem_len=8)


@pytest.mark.parametrize("algebra", ["learned:4", "learned:h:network"])
def test_transformer_xl_costs_count_the_structure(algebra):
  alg = algebras.get(algebra)
  report = txl.model_costs(CFG, algebra, seq_len=4)
  assert report.params_consistent
  real = txl.model_costs(CFG, "h", seq_len=4)
  layers = sum(1 for l in report.layers if l.kind == "dense" and l.call == 0)
  extra = 64 * layers if alg.share == "layer" else 64
  assert report.total_params == real.total_params + extra
  assert report.macs == real.macs  # D² = 16 MACs per product, like H
  assert costs.structure_params(algebra) == (64 if alg.share == "layer" else 0)


@pytest.mark.parametrize("algebra", ["learned:4", "learned:cl_1_1:network"])
def test_decoding_prepares_the_learned_weights_once_and_equals_the_forward_pass(algebra):
  model_fn = lambda: txl.TransformerXL(**CFG, algebra=algebra)
  f = hk.transform(lambda t, mems=None: model_fn()(t, mems))
  tokens = jnp.asarray(np.random.default_rng(2).integers(0, 30, (2, 5)), jnp.int32)
  params = f.init(jax.random.PRNGKey(0), tokens)
  rng = np.random.default_rng(3)
  params = jax.tree.map(lambda p: jnp.asarray(rng.normal(0, 0.3, p.shape), p.dtype), params)
  full, _ = jax.jit(f.apply)(params, None, tokens)
  decoder = decoding.Decoder(model_fn)
  prepared = decoder.prepare(params)
  w = prepared["transformer_xl/layer_0/q"]["w"]
  assert isinstance(w, ops.PreparedWeight) and w.structured and w.path == "right"
  cache = decoder.init_cache(params, 2)
  for t in range(5):
    log_probs, cache = decoder.step(prepared, cache, tokens[:, t])
    np.testing.assert_allclose(log_probs, full[:, t], atol=1e-4, err_msg=f"step {t}")
