"""ops.dense / ops.conv2d: every path against independent float64 computations and each other.

The convolution and gradient checks call the layers under jax.jit: run op by op, every small
primitive of every path compiled on its own, which made them 2-4x slower (on two cores, one
process: test_gradients 93 s -> 26 s and test_conv_all_paths 74 s -> 39 s for the nine
algebras). The dense paths (cheaper eager than compiled) and test_conv_impls_agree still run op
by op, as a user's first call in a notebook does.
"""

import functools

import numpy as np
import pytest
import jax
import jax.numpy as jnp
from jax.test_util import check_grads

from algebranets import algebras, ops, sparse_ops
from tests import naive

NAMES = ["r", "c", "h", "m2r", "m3r", "m4r", "m2c", "dual", "cross3"]


def paths_for(alg, kind="conv"):
  paths = ["reference", "expanded", "sparse"] + (["right"] if kind == "dense" else [])
  if alg.matrix_base is not None:
    paths.append("folded")
  if alg.name == "c":
    paths.append("gauss")
  return paths


def rel_err(got, want):
  got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
  return np.abs(got - want).max() / np.abs(want).max()


def normal(rng, shape):
  return rng.normal(size=shape).astype(np.float32)


@pytest.mark.parametrize("name", NAMES)
def test_dense_all_paths_match_independent_product(name):
  alg = algebras.get(name)
  rng = np.random.default_rng(1)
  x, w = normal(rng, (2, 3, 6, alg.dim)), normal(rng, (6, 5, alg.dim))
  want = naive.dense(x, w, name)
  for path in paths_for(alg, "dense"):
    y = ops.dense(x, w, alg, path=path)
    assert y.shape == (2, 3, 5, alg.dim) and y.dtype == jnp.float32
    assert rel_err(y, want) < 1e-5, path
    # A weight prepared once for the path gives the same layer.
    assert rel_err(ops.dense(x, ops.prepare_dense(w, alg, path), alg), want) < 1e-5, path
  prepared = jax.jit(lambda w: ops.prepare_dense(w, alg))(w)  # decode default, through jit
  assert prepared.shape == w.shape and prepared.path == ops.default_path(alg, "decode")
  assert rel_err(jax.jit(lambda x, p: ops.dense(x, p, alg))(x, prepared), want) < 1e-5
  assert rel_err(ops.dense(x, w, name), want) < 1e-5  # default path, by name


# (stride, padding, dilation, groups, cin, cout)
CONV_CASES = [
    ((1, 1), "SAME", (1, 1), 1, 3, 4),
    ((2, 2), "SAME", (1, 1), 1, 2, 3),
    ((2, 1), "VALID", (1, 1), 1, 2, 2),
    ((1, 1), ((1, 0), (2, 1)), (2, 2), 1, 2, 2),
    ((1, 2), "SAME", (1, 1), 2, 4, 6),      # grouped
    ((1, 1), "SAME", (1, 1), 3, 3, 6),      # depthwise, channel multiplier 2
]


@pytest.mark.parametrize("name", NAMES)
def test_conv_all_paths_match_direct_convolution(name):
  alg = algebras.get(name)
  rng = np.random.default_rng(2)
  for stride, padding, dil, groups, cin, cout in CONV_CASES:
    x = normal(rng, (2, 7, 6, cin, alg.dim))
    w = normal(rng, (3, 2, cin // groups, cout, alg.dim))
    want = naive.conv2d(x, w, name, stride, padding, dil, groups)
    for path in paths_for(alg):
      y = jax.jit(functools.partial(ops.conv2d, algebra=alg, stride=stride, padding=padding,
                                    dilation=dil, feature_group_count=groups, path=path))(x, w)
      assert y.shape == want.shape, (path, stride, padding)
      assert rel_err(y, want) < 1e-5, (path, stride, padding, dil, groups)


@pytest.mark.parametrize("name", ["r", "c", "m2r"])
def test_conv_impls_agree(name):
  """The XLA and im2col real convolutions under every path give the same layer."""
  alg = algebras.get(name)
  rng = np.random.default_rng(8)
  for stride, padding, dil, groups, cin, cout in CONV_CASES[:4]:
    x = normal(rng, (2, 7, 6, cin, alg.dim))
    w = normal(rng, (3, 2, cin // groups, cout, alg.dim))
    want = naive.conv2d(x, w, name, stride, padding, dil, groups)
    for impl in ("xla", "im2col"):
      y = ops.conv2d(x, w, alg, stride=stride, padding=padding, dilation=dil, conv_impl=impl)
      assert rel_err(y, want) < 1e-5, (impl, stride, padding, dil)


@pytest.mark.parametrize("kernel,cin,stride,groups,want_conv", [
    ((3, 3), 64, 1, 1, True),     # narrow stride-1 KHxKW: XLA's convolution
    ((3, 3), 65, 1, 1, False),    # wider: im2col (slices + one matmul)
    ((3, 3), 16, 2, 1, False),    # strided: im2col
    ((1, 1), 16, 1, 1, False),    # 1x1: a plain matmul
    ((3, 3), 16, 1, 2, True),     # grouped: always XLA's
])
def test_auto_conv_impl_picks_by_shape_on_cpu(kernel, cin, stride, groups, want_conv):
  """conv_impl="auto" on CPU, in the compiled program: a convolution op or none (BENCHMARKS.md
  and ops._resolve_conv_impl for the measurements behind the choice)."""
  if jax.default_backend() != "cpu":
    pytest.skip("the rule is the CPU backend's")
  rng = np.random.default_rng(9)
  x = normal(rng, (2, 6, 6, cin, 1))
  w = normal(rng, kernel + (cin // groups, 4, 1))
  f = jax.jit(lambda x, w: ops.conv2d(x, w, "r", stride=stride, feature_group_count=groups))
  hlo = f.lower(x, w).as_text()
  assert ("convolution" in hlo) == want_conv, hlo[-3000:]
  want = jax.lax.conv_general_dilated(x[..., 0], w[..., 0], (stride, stride), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=groups,
                                      precision=jax.lax.Precision.HIGHEST)
  assert rel_err(f(x, w)[..., 0], want) < 1e-5


def test_real_algebra_is_exactly_an_ordinary_layer():
  rng = np.random.default_rng(3)
  x, w = normal(rng, (4, 8)), normal(rng, (8, 5))
  y = ops.dense(x[..., None], w[..., None], "r")
  np.testing.assert_array_equal(np.asarray(y[..., 0]), np.asarray(jnp.dot(x, w)))
  x, w = normal(rng, (2, 9, 9, 3)), normal(rng, (3, 3, 3, 4))
  y = ops.conv2d(x[..., None], w[..., None], "r", stride=2, conv_impl="xla")
  want = jax.lax.conv_general_dilated(x, w, (2, 2), "SAME",
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  np.testing.assert_array_equal(np.asarray(y[..., 0]), np.asarray(want))


@pytest.mark.parametrize("name", NAMES)
def test_gradients(name):
  alg = algebras.get(name)
  rng = np.random.default_rng(4)
  with jax.enable_x64(True):
    x = jnp.asarray(rng.normal(size=(2, 3, alg.dim)))
    w = jnp.asarray(rng.normal(size=(3, 2, alg.dim)))
    check_grads(jax.jit(lambda x, w: ops.dense(x, w, alg)), (x, w), order=2,
                modes=["rev", "fwd"])
    xc = jnp.asarray(rng.normal(size=(1, 4, 4, 2, alg.dim)))
    wc = jnp.asarray(rng.normal(size=(2, 2, 2, 2, alg.dim)))
    check_grads(jax.jit(lambda x, w: ops.conv2d(x, w, alg, stride=2)), (xc, wc), order=1,
                modes=["rev"])


@pytest.mark.parametrize("name", ["m2r", "m3r", "m2c"])
def test_folded_layout_between_layers(name):
  """A two-layer network kept in the folded layout equals the plain one."""
  alg = algebras.get(name)
  base = alg.matrix_base[1]
  rng = np.random.default_rng(5)
  x = normal(rng, (3, 5, 5, 2, alg.dim))
  w1, w2 = normal(rng, (3, 3, 2, 4, alg.dim)), normal(rng, (1, 1, 4, 3, alg.dim))
  plain = ops.conv2d(jax.nn.relu(ops.conv2d(x, w1, alg)), w2, alg, stride=2)
  xf = ops.fold(x, alg)
  assert xf.shape == (3 * alg.matrix_base[0], 5, 5, 2 * alg.matrix_base[0], base.dim)
  np.testing.assert_array_equal(np.asarray(ops.unfold(xf, alg)), x)
  h = jax.nn.relu(ops.conv2d(xf, ops.fold_weight(w1, alg), base))
  y = ops.unfold(ops.conv2d(h, ops.fold_weight(w2, alg), base, stride=2), alg)
  assert rel_err(y, plain) < 1e-5


def test_jit_and_bfloat16():
  alg = algebras.get("m2r")
  rng = np.random.default_rng(6)
  x, w = normal(rng, (8, 16, 4)), normal(rng, (16, 8, 4))
  f = jax.jit(lambda x, w: ops.dense(x, w, alg))
  y16 = f(x.astype(jnp.bfloat16), w.astype(jnp.bfloat16))
  assert y16.dtype == jnp.bfloat16
  assert rel_err(y16, naive.dense(x, w, "m2r")) < 3e-2


@pytest.mark.parametrize("call, match", [
    (lambda: ops.dense(jnp.ones((2, 3, 2)), jnp.ones((3, 4, 4)), "h"),
     r"x must be \[\.\.\., Cin, 4\]"),
    (lambda: ops.dense(jnp.ones((2, 3, 4)), jnp.ones((5, 4, 4)), "h"), r"Cin=3 .* Cin=5"),
    (lambda: ops.dense(jnp.ones((2, 3, 4)), jnp.ones((3, 4)), "h"), r"w must be \[Cin, Cout, 4\]"),
    (lambda: ops.dense(jnp.ones((2, 3, 4)), jnp.ones((3, 4, 4)), "quat"), "Valid names"),
    (lambda: ops.dense(jnp.ones((2, 3, 4)), jnp.ones((3, 4, 4)), "h", path="fast"),
     "valid paths"),
    (lambda: ops.dense(jnp.ones((2, 3, 4)), jnp.ones((3, 4, 4)), "h", path="folded"),
     "matrix algebra"),
    (lambda: ops.dense(jnp.ones((2, 3, 4)), jnp.ones((3, 4, 4)), "h", path="gauss"), "complex"),
    (lambda: ops.conv2d(jnp.ones((2, 5, 5, 3, 2)), jnp.ones((3, 3, 3, 4, 2)), "c",
                        feature_group_count=2), "divisible by 2"),
    (lambda: ops.conv2d(jnp.ones((5, 5, 3, 2)), jnp.ones((3, 3, 3, 4, 2)), "c"),
     r"\[N, H, W, Cin, 2\]"),
    (lambda: ops.conv2d(jnp.ones((2, 5, 5, 3, 2)), jnp.ones((3, 3, 3, 4, 2)), "c", padding="FULL"),
     "padding"),
    (lambda: ops.conv2d(jnp.ones((2, 5, 5, 3, 2)), jnp.ones((3, 3, 3, 4, 2)), "c", stride=0),
     "stride"),
    (lambda: ops.conv2d(jnp.ones((2, 5, 5, 3, 2)), jnp.ones((3, 3, 3, 4, 2)), "c", conv_impl="fft"),
     "conv_impl"),
    (lambda: ops.conv2d(jnp.ones((2, 5, 5, 3, 2)), jnp.ones((3, 3, 3, 4, 2)), "c", path="right"),
     "dense-only"),
    (lambda: ops.dense(jnp.ones((2, 3, 2)), ops.prepare_dense(jnp.ones((3, 4, 2)), "c", "gauss"),
                       "c", path="expanded"), "prepared for path 'gauss'"),
])
def test_bad_input_errors(call, match):
  with pytest.raises(ValueError, match=match):
    call()


def test_default_paths():
  assert ops.default_path("r") == "expanded"
  assert ops.default_path("h") == "expanded"
  assert ops.default_path("c", "dense") == "gauss"
  assert ops.default_path("c", "conv") == "expanded"
  for name in ("m2r", "m3r", "m4r", "m2c"):
    assert ops.default_path(name) == "folded"
  assert ops.default_path("dual") == ops.default_path("cross3") == "sparse"
  assert ops.default_path("m4r", "decode") == "folded"
  assert ops.default_path("h", "decode") == ops.default_path("dual", "decode") == "right"


def test_user_defined_algebra_works_in_ops():
  t = np.zeros((2, 2, 2))
  t[0, 0, 0] = t[0, 1, 1] = t[1, 0, 1] = t[1, 1, 0] = 1.0  # split-complex, j² = +1
  split = algebras.Algebra("split", t)
  rng = np.random.default_rng(7)
  x, w = normal(rng, (3, 4, 2)), normal(rng, (4, 2, 2))
  # Independent: split-complex a + bj acts like diag(a + b, a - b) in the basis (1±j)/2.
  def prod(u, v):
    p = (u[..., 0] + u[..., 1]) * (v[..., 0] + v[..., 1])
    q = (u[..., 0] - u[..., 1]) * (v[..., 0] - v[..., 1])
    return np.stack([(p + q) / 2, (p - q) / 2], -1)
  want = prod(w.astype(np.float64), x[:, :, None, :].astype(np.float64)).sum(1)
  for path in ("reference", "expanded", "sparse"):
    assert rel_err(ops.dense(x, w, split, path=path), want) < 1e-5


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("rows_kernel", [False, True])
def test_prepared_decode_weights_with_and_without_the_rows_kernel(name, rows_kernel):
  # Batch 1 (the 1-4 rows the kernel is for) and batch 3 (more rows than one kernel pass), the
  # decode default of every algebra, against the independent float64 product.
  if rows_kernel and not sparse_ops.kernel_available():
    pytest.skip("no C++ compiler for the CPU kernel")
  alg = algebras.get(name)
  rng = np.random.default_rng(4)
  w = normal(rng, (37, 21, alg.dim))
  prepared = ops.prepare_dense(w, alg, rows_kernel=rows_kernel)
  leaves = jax.tree.leaves(prepared.data, is_leaf=lambda a: isinstance(a, ops.RowsWeight))
  assert any(isinstance(a, ops.RowsWeight) for a in leaves) == rows_kernel
  for lead in ((1, 1), (3, 2)):
    x = normal(rng, lead + (37, alg.dim))
    got = jax.jit(lambda x, p: ops.dense(x, p, alg))(x, prepared)
    assert rel_err(got, naive.dense(x, w, name)) < 1e-5, lead
