"""Ops for the algebra families: the isomorphic path and explicit (learned) structure tensors.

Every path is held to the reference path (outer products, then T: the definition) and, for the
isomorphic path, to the gradients of the reference; the PHM form of a learned weight to the
einsum definition and to a Kronecker sum written out with numpy.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algebranets import algebras
from algebranets import ops

ISO = ["cl_1_1", "cl_2_0", "cl_3_0", "cl_1_2", "cl_0_4", "cl_2_2", "cl_2_3"]


def _rand(rng, *shape):
  return jnp.asarray(rng.normal(size=shape), jnp.float32)


@pytest.mark.parametrize("name", ISO)
def test_isomorphic_dense_equals_the_reference(name):
  alg = algebras.get(name)
  assert ops.default_path(alg) == ops.default_path(alg, "conv") == "isomorphic"
  rng = np.random.default_rng(0)
  x, w = _rand(rng, 3, 2, 5, alg.dim), _rand(rng, 5, 4, alg.dim)
  ref = ops.dense(x, w, alg, path="reference")
  tol = 1e-5 * float(jnp.abs(ref).max())
  np.testing.assert_allclose(ops.dense(x, w, alg), ref, atol=tol)
  prepared = ops.prepare_dense(w, alg)
  assert prepared.path == "isomorphic"
  np.testing.assert_allclose(ops.dense(x, prepared, alg), ref, atol=tol)


@pytest.mark.parametrize("name", ["cl_1_1", "cl_2_0", "cl_3_0"])
@pytest.mark.parametrize("groups", [1, 3])
def test_isomorphic_conv_and_its_gradients_equal_the_reference(name, groups):
  alg = algebras.get(name)
  rng = np.random.default_rng(1)
  x, w = _rand(rng, 2, 7, 6, 6, alg.dim), _rand(rng, 3, 3, 6 // groups, 6, alg.dim)
  args = dict(stride=2, padding="SAME", feature_group_count=groups)

  def loss(path):
    return lambda x, w: jnp.sum(jnp.sin(ops.conv2d(x, w, alg, path=path, **args)))

  # Compiled: op by op, every small primitive of the two paths compiled on its own (2x slower).
  ref, ref_grads = jax.jit(jax.value_and_grad(loss("reference"), (0, 1)))(x, w)
  val, grads = jax.jit(jax.value_and_grad(loss("isomorphic"), (0, 1)))(x, w)
  np.testing.assert_allclose(val, ref, rtol=1e-4)
  for g, r in zip(grads, ref_grads):
    np.testing.assert_allclose(g, r, atol=1e-4 * float(jnp.abs(r).max()))


def test_isomorphic_path_is_refused_without_an_isomorphism():
  with pytest.raises(ValueError, match="needs an algebra with an isomorphism"):
    ops.dense(jnp.ones((2, 4)), jnp.ones((2, 2, 4)), "h", path="isomorphic")


def test_change_basis_sparse_and_dense_forms_agree():
  rng = np.random.default_rng(2)
  x = _rand(rng, 5, 4)
  sparse = np.array([[1, 0, 0, 1], [1, 0, 0, -1], [0, 1, -1, 0], [0, 1, 1, 0.5]])
  dense = rng.normal(size=(4, 4))
  for m in (sparse, dense):
    np.testing.assert_allclose(ops.change_basis(x, m), np.asarray(x) @ m, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- explicit T
@pytest.mark.parametrize("path", ops.STRUCTURE_PATHS)
@pytest.mark.parametrize("name", ["h", "m2r", "dual", "cl_1_1", "cross3"])
def test_structure_paths_equal_the_named_algebras_reference(path, name):
  alg = algebras.get(name)
  learned = algebras.learned(alg.dim)
  t = jnp.asarray(alg.structure, jnp.float32)
  rng = np.random.default_rng(3)
  x, w = _rand(rng, 2, 3, 5, alg.dim), _rand(rng, 5, 6, alg.dim)
  ref = ops.dense(x, w, alg, path="reference")
  tol = 1e-5 * float(jnp.abs(ref).max())
  np.testing.assert_allclose(ops.dense(x, w, learned, path=path, structure=t), ref, atol=tol)
  prepared = ops.prepare_dense(w, learned, path, structure=t)
  np.testing.assert_allclose(ops.dense(x, prepared, learned), ref, atol=tol)


def test_conv_with_structure_equals_the_reference():
  alg = algebras.QUATERNION
  t = jnp.asarray(alg.structure, jnp.float32)
  rng = np.random.default_rng(4)
  x, w = _rand(rng, 2, 5, 5, 3, 4), _rand(rng, 3, 3, 3, 2, 4)
  ref = ops.conv2d(x, w, alg, path="reference", padding="VALID")
  for path in ("expanded", "reference"):
    got = ops.conv2d(x, w, "learned:4", path=path, padding="VALID", structure=t)
    np.testing.assert_allclose(got, ref, atol=1e-5 * float(jnp.abs(ref).max()))


def test_phm_form_equals_the_einsum_definition():
  rng = np.random.default_rng(5)
  d, cin, cout = 4, 3, 5
  w, t = rng.normal(size=(cin, cout, d)), rng.normal(size=(d, d, d))
  # Zhang et al.'s H = Σ_i A_i ⊗ S_i, written out: block (i, o) of the Kronecker sum.
  kron = sum(np.kron(w[..., a], t[a]) for a in range(d))               # [Cin·D, Cout·D]
  by_hand = np.zeros((cin * d, cout * d))
  for i, o, a, b, k in np.ndindex(cin, cout, d, d, d):
    by_hand[i * d + b, o * d + k] += w[i, o, a] * t[a, b, k]
  np.testing.assert_allclose(kron, by_hand, atol=1e-12)
  w32, t32 = jnp.asarray(w, jnp.float32), jnp.asarray(t, jnp.float32)
  np.testing.assert_allclose(ops.phm_weight(w32, t32), by_hand, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(ops.expand_weight(w32, t32), by_hand, rtol=1e-5, atol=1e-5)
  # And the layer it defines is y_ok = Σ_iab w_ioa x_ib T[a, b, k].
  x = rng.normal(size=(7, cin, d))
  y = ops.dense(jnp.asarray(x, jnp.float32), w32, "learned:4", structure=t32)
  np.testing.assert_allclose(y, np.einsum("nib,ioa,abk->nok", x, w, t), rtol=1e-4, atol=1e-4)


def test_learned_algebras_need_their_structure():
  with pytest.raises(ValueError, match="is learned: pass its structure tensor"):
    ops.dense(jnp.ones((2, 4)), jnp.ones((2, 3, 4)), "learned:4")
  with pytest.raises(ValueError, match="cannot take an explicit structure"):
    ops.dense(jnp.ones((2, 4)), jnp.ones((2, 3, 4)), "learned:4", path="gauss",
              structure=jnp.ones((4, 4, 4)))
  with pytest.raises(ValueError, match=r"structure must be \[4, 4, 4\]"):
    ops.dense(jnp.ones((2, 4)), jnp.ones((2, 3, 4)), "learned:4", structure=jnp.ones((2, 2, 2)))
  with pytest.raises(ValueError, match="structure tensor is a network parameter"):
    algebras.get("learned:4").multiply(jnp.ones(4), jnp.ones(4))
