"""Element-sparse execution against the dense masked layer and independent float64 products."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp
import haiku as hk

from tests import naive
from algebranets import algebras, ops, sparse_ops
from algebranets.models import decoding
from algebranets.models import transformer_xl as txl

IMPLS = [pytest.param("kernel", marks=pytest.mark.skipif(
    not sparse_ops.kernel_available(), reason="no C++ compiler for the CPU kernel")), "xla"]


def _pruned(rng, shape, sparsity):
  """A weight [..., D] with round(sparsity · elements) whole elements exactly zero."""
  w = rng.normal(size=shape)
  flat = w.reshape(-1, shape[-1])
  drop = rng.permutation(flat.shape[0])[:int(round(sparsity * flat.shape[0]))]
  flat[drop] = 0.0
  return flat.reshape(shape)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("name", algebras.names())
def test_element_dense_equals_the_dense_masked_layer(name, sparsity, impl):
  alg = algebras.get(name)
  rng = np.random.default_rng(7)
  w = _pruned(rng, (9, 7, alg.dim), sparsity)
  w[3] = 0.0                                # an input with no elements: an empty column
  w[:, 5] = 0.0                             # an output with no elements: an empty row
  bs = sparse_ops.prepare_element(w.astype(np.float32), alg, impl)
  assert bs.impl == impl
  assert bs.nnz == np.count_nonzero(np.any(w != 0, axis=-1))
  apply = jax.jit(lambda x, bs: sparse_ops.element_dense(x, bs, alg))
  for lead in [(1,), (5,), (2, 3)]:          # batch 1, batch > 1, two leading axes
    x = rng.normal(size=lead + (9, alg.dim))
    got = np.asarray(apply(jnp.asarray(x, jnp.float32), bs))
    want = naive.dense(x, w, name)          # float64, no structure tensor
    ref = ops.dense(jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32), alg,
                    path="reference")
    assert got.shape == lead + (7, alg.dim)
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=2e-5)
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=2e-5)
    assert np.all(got[..., 5, :] == 0)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("block", [(1, 1), (1, 4), (4, 1), (2, 2)])
def test_real_block_sparse_equals_numpy(block, impl):
  rng = np.random.default_rng(3)
  bi, bo = block
  # Zero whole blocks of the real weight (as the block-sparse baseline's masks do) plus
  # some single entries (which stay stored inside their non-zero blocks).
  keep = rng.random((12 // bi, 8 // bo)) > 0.7
  w = rng.normal(size=(12, 8)) * np.kron(keep, np.ones((bi, bo)))
  w[0, 0] = 0.0
  bs = sparse_ops.prepare_real(w.astype(np.float32), block, impl)
  assert bs.block_shape == (bo, bi)
  assert bs.nnz == np.count_nonzero(keep if block != (1, 1) else w)
  for lead in [(1,), (6,), (2, 3)]:
    x = rng.normal(size=lead + (12,))
    got = jax.jit(sparse_ops.real_dense)(jnp.asarray(x, jnp.float32), bs)
    np.testing.assert_allclose(got, x @ w, atol=2e-5, rtol=2e-5)


def test_real_blocks_must_tile_the_weight():
  with pytest.raises(ValueError, match="divisible"):
    sparse_ops.prepare_real(np.ones((6, 8), np.float32), (4, 1))


@pytest.mark.parametrize("name", ["m2r", "h", "m4r"])
def test_prepared_element_sparse_path_of_ops_dense(name):
  alg = algebras.get(name)
  rng = np.random.default_rng(1)
  w = jnp.asarray(_pruned(rng, (16, 6, alg.dim), 0.8), jnp.float32)
  x = jnp.asarray(rng.normal(size=(3, 16, alg.dim)), jnp.float32)
  pw = ops.prepare_dense(w, alg, ops.ELEMENT_SPARSE)
  assert pw.shape == w.shape and pw.path == ops.ELEMENT_SPARSE
  got = jax.jit(lambda x, pw: ops.dense(x, pw, alg))(x, pw)
  np.testing.assert_allclose(got, ops.dense(x, w, alg, path="reference"), atol=2e-5)
  with pytest.raises(ValueError, match="outside jit"):
    jax.jit(lambda w: ops.prepare_dense(w, alg, ops.ELEMENT_SPARSE))(w)


def test_element_sparsity_and_policy():
  rng = np.random.default_rng(0)
  w = _pruned(rng, (20, 10, 4), 0.9)
  assert sparse_ops.element_sparsity(w) == pytest.approx(0.9)
  assert sparse_ops.element_sparsity(np.ones((3, 3, 4))) == 0.0
  # Dense weights never take the sparse path; the XLA path is never chosen by default
  # on its own (not measured faster); a very sparse weight at batch 1 is, with the kernel.
  assert not sparse_ops.should_use_sparse(np.ones((3, 3, 4)), "m2r", 1, impl="kernel")
  assert not sparse_ops.should_use_sparse(w, "m2r", 1, impl="xla")
  assert sparse_ops.should_use_sparse(w, "m2r", 1, impl="kernel")
  assert sparse_ops.min_sparsity("m4r", 1, "kernel") <= sparse_ops.min_sparsity("m4r", 64, "kernel")
  with pytest.raises(ValueError, match="kernel, xla"):
    sparse_ops.min_sparsity("m2r", 1, impl="bsr")


@pytest.mark.parametrize("algebra", ["m2r", "h"])
def test_decoding_a_pruned_model_gives_the_same_tokens(algebra):
  cfg = dict(vocab_size=30, d_model=8, n_layers=2, n_heads=2, d_head=4, d_inner=16, mem_len=4)
  model_fn = lambda: txl.TransformerXL(**cfg, algebra=algebra)
  prompt = jnp.asarray(np.random.default_rng(1).integers(0, 30, (1, 3)), jnp.int32)
  f = hk.transform(lambda t: model_fn()(t, None))
  shapes = jax.eval_shape(f.init, jax.random.PRNGKey(0), prompt)
  rng = np.random.default_rng(0)
  d = algebras.get(algebra).dim
  # 95% of the elements of every algebra weight pruned; everything else dense.
  params = jax.tree_util.tree_map(
      lambda s: jnp.asarray(_pruned(rng, s.shape, 0.95) if len(s.shape) == 3 and s.shape[-1] == d
                            else rng.normal(0.0, 0.3, s.shape), s.dtype), shapes)
  plain = decoding.Decoder(model_fn)
  sparse = decoding.Decoder(model_fn, sparse=True)
  prepared = sparse.prepare(params, batch_size=1)
  paths = [w.path for w in jax.tree.leaves(
      prepared, is_leaf=lambda a: isinstance(a, ops.PreparedWeight))
           if isinstance(w, ops.PreparedWeight)]
  if sparse_ops.kernel_available():
    assert paths and all(p == ops.ELEMENT_SPARSE for p in paths), paths
  want, _ = plain.prefill(params, plain.init_cache(params, 1), prompt)
  got, _ = sparse.prefill(prepared, sparse.init_cache(params, 1), prompt)
  np.testing.assert_allclose(got, want, atol=1e-5)
  key = jax.random.PRNGKey(2)
  tokens = plain.sample(params, key, prompt, num_tokens=6, temperature=0.0)
  np.testing.assert_array_equal(sparse.sample(params, key, prompt, 6, temperature=0.0), tokens)
  np.testing.assert_array_equal(sparse.sample(prepared, key, prompt, 6, temperature=0.0), tokens)


@pytest.mark.skipif(not sparse_ops.kernel_available(), reason="no C++ compiler for the kernel")
@pytest.mark.parametrize("name", ["r", "m2r", "m3r", "h", "m4r"])
def test_element_kernel_large_enough_for_threads_equals_the_float64_product(name):
  # 301 output elements: more rows than 8 per thread, an odd count (the last thread's range is
  # shorter), and > 2^16 stored reals, so the kernel splits its rows over the thread pool.
  alg = algebras.get(name)
  rng = np.random.default_rng(11)
  w = _pruned(rng, (203, 301, alg.dim), 0.6)
  bs = sparse_ops.prepare_element(w.astype(np.float32), alg, "kernel")
  apply = jax.jit(lambda x, bs: sparse_ops.element_dense(x, bs, alg))
  for batch in (1, 2, 4, 37):                # the small-P loops (P = 1, 2, 4 columns) and wide
    x = rng.normal(size=(batch, 203, alg.dim))
    got = np.asarray(apply(jnp.asarray(x, jnp.float32), bs), np.float64)
    np.testing.assert_allclose(got, naive.dense(x, w, name), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("rows", [1, 2, 3, 4, 5, 8, 9])
@pytest.mark.parametrize("k,n", [(1, 1), (7, 3), (37, 21), (300, 1030)])
def test_rows_matmul_equals_the_float64_product(rows, k, n):
  # Kernel route up to ROWS_KERNEL_MAX rows (on CPU with a compiler), XLA past it; K and N
  # not multiples of the kernel's 8 lanes / 4 weight rows, and N large enough for two threads.
  rng = np.random.default_rng(rows * 100 + k)
  x = rng.normal(size=(rows, k)).astype(np.float32)
  wt = rng.normal(size=(n, k)).astype(np.float32)
  got = jax.jit(sparse_ops.rows_matmul)(x, wt)
  want = x.astype(np.float64) @ wt.T.astype(np.float64)
  assert got.shape == (rows, n) and got.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=1e-5, atol=1e-4)
  # Leading axes are flattened into rows and restored.
  got3 = sparse_ops.rows_matmul(x.reshape(rows, 1, k), wt)
  np.testing.assert_allclose(np.asarray(got3).reshape(rows, n), np.asarray(got), rtol=1e-6)


def test_rows_matmul_rejects_mismatched_shapes():
  with pytest.raises(ValueError, match="wt \\[N, K\\]"):
    sparse_ops.rows_matmul(jnp.ones((2, 5)), jnp.ones((3, 4)))
