"""Element-sparse algebra dense layers that skip their zero elements (pure functions).

A pruned AlgebraNet weight w [Cin, Cout, D] has whole elements set to zero
(all D components). Each remaining element w_io acts on its input x_i as a
small real matrix, so the layer is a block-sparse real matmul whose block is
the algebra element:

  M_n(B)   (paper, Appendix E) the element is an n×n matrix over B acting on
           the n columns of x_i, which fold into the batch: a (n·Db)×(n·Db)
           real block applied to n× the batch, n³·m_B MACs per element.
  others   the D×D left-multiplication matrix L(w_io) acting on x_i (D²
           MACs: the naive count for R, C, H).

That is the paper's point about compute density: every non-zero loaded does
n³ (M_n) or D² (H) multiply-adds, where an unstructured real weight does 1
per loaded value *and* one loaded index. The real baselines -- unstructured
(1×1 blocks) and block-sparse (1×4, 4×1, 2×2 blocks of the real weight) -- run
through the same format and kernel.

Format (`BlockSparse`, built once on the host with numpy from a concrete
weight; zero blocks are detected from the weight itself):
  indptr  [R + 1] int32   block-row (output block) o holds blocks indptr[o]:indptr[o+1]
  indices [nnz] int32     input block of each stored block
  rows    [nnz] int32     output block of each stored block (the XLA path's segment ids)
  values  [nnz, bo, bi]   the blocks, y_o += values[k] @ x_indices[k]
All shapes are static, so one jitted function serves a weight's whole life.

Execution (`block_matmul`, x laid out [C, bi, P] with the P columns minor):
  kernel  a C++ block-CSR kernel called through XLA's FFI (CPU, float32),
          compiled with the system C++ compiler on first use and cached.
  xla     gather + batched block products + segment_sum; the portable path
          (GPU/TPU, other dtypes, no compiler).
Measured on a 2-core AMD EPYC (BENCHMARKS.md, "sparse" section): XLA's CPU
gather alone costs 60-200 µs for a 90%-sparse 1024² layer and a host
callback (scipy BSR) ~150 µs of overhead, against ~200 µs for the whole dense
layer at batch 1, so neither can be much faster than dense there; the kernel
is, and `should_use_sparse` says where, by measurement.

The same compiled library holds a dense kernel for batch-1 decoding, `rows_matmul`:
y = x @ wt.T for a few rows of x and a weight stored transposed, which streams each
weight row once for all rows (where XLA's CPU GEMM takes 2-5x one row's time for 2-4
rows); `ops.prepare_dense` routes prepared decode weights through it on CPU.

This is an inference path: nothing here defines gradients.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from typing import Optional

import numpy as np
import jax
import jax.numpy as jnp

from algebranets import algebras as algebras_lib
from algebranets.algebras import Algebra

__all__ = ["BlockSparse", "from_blocks", "block_matmul", "element_blocks", "prepare_element",
           "element_dense", "prepare_real", "real_dense", "element_sparsity", "min_sparsity",
           "should_use_sparse", "kernel_available", "IMPLS", "rows_matmul",
           "rows_kernel_default", "ROWS_KERNEL_MAX"]

IMPLS = ("kernel", "xla")


# ------------------------------------------------------------------- format
@jax.tree_util.register_pytree_node_class
class BlockSparse:
  """A block-CSR matrix: R block rows of bo outputs, C block columns of bi inputs.

  y [R, bo, P] = Σ over stored blocks k of row o: values[k] [bo, bi] @ x[indices[k]] [bi, P].
  `impl` ("kernel" or "xla") is fixed when built, as the best path for where
  it will run; `block_matmul` may be told otherwise.
  """

  def __init__(self, indptr, indices, rows, values, num_cols: int, impl: str):
    self.indptr, self.indices, self.rows, self.values = indptr, indices, rows, values
    self.num_cols, self.impl = int(num_cols), impl

  def tree_flatten(self):
    return (self.indptr, self.indices, self.rows, self.values), (self.num_cols, self.impl)

  @classmethod
  def tree_unflatten(cls, aux, children):
    return cls(*children, *aux)

  @property
  def num_rows(self) -> int:
    return self.indptr.shape[0] - 1

  @property
  def nnz(self) -> int:
    """Stored blocks."""
    return self.values.shape[0]

  @property
  def block_shape(self) -> tuple[int, int]:
    """(bo, bi): outputs and inputs of one block."""
    return tuple(self.values.shape[1:])

  @property
  def density(self) -> float:
    return self.nnz / max(1, self.num_rows * self.num_cols)

  def __repr__(self):
    bo, bi = self.block_shape
    return (f"BlockSparse({self.num_rows}x{self.num_cols} blocks of {bo}x{bi}, nnz={self.nnz}, "
            f"density={self.density:.3f}, impl={self.impl!r})")


def _default_impl(dtype) -> str:
  if jax.default_backend() == "cpu" and np.dtype(dtype) == np.float32 and kernel_available():
    return "kernel"
  return "xla"


def _check_impl(impl):
  if impl not in IMPLS:
    raise ValueError(f"Unknown sparse impl {impl!r}; valid: None (best available), "
                     f"{', '.join(IMPLS)}.")
  return impl


def _host(a, what) -> np.ndarray:
  try:
    return np.asarray(a)
  except jax.errors.TracerArrayConversionError as e:
    raise ValueError(f"{what} reads the weight's values on the host: call it outside jit, "
                     "on concrete weights.") from e


def from_blocks(blocks, impl: Optional[str] = None) -> BlockSparse:
  """Block-CSR of `blocks` [R, C, bo, bi] (numpy or concrete), keeping non-zero blocks.

  A block is dropped only when all its entries are exactly zero, so the
  result computes exactly what the dense blocks do. Runs on the host: call it
  outside jit, once per weight.
  """
  blocks = _host(blocks, "from_blocks")
  if blocks.ndim != 4:
    raise ValueError(f"blocks must be [R, C, bo, bi], got shape {blocks.shape}.")
  impl = _default_impl(blocks.dtype) if impl is None else _check_impl(impl)
  r, c = blocks.shape[:2]
  keep = np.any(blocks != 0, axis=(2, 3))                            # [R, C]
  rows, cols = np.nonzero(keep)                                      # row-major: sorted by row
  indptr = np.zeros(r + 1, np.int32)
  np.cumsum(np.bincount(rows, minlength=r), out=indptr[1:])
  return BlockSparse(jnp.asarray(indptr), jnp.asarray(cols.astype(np.int32)),
                     jnp.asarray(rows.astype(np.int32)), jnp.asarray(blocks[rows, cols]), c, impl)


# ---------------------------------------------------------------- execution
def block_matmul(bs: BlockSparse, x, impl: Optional[str] = None):
  """y [R, bo, P] = bs @ x for x [C, bi, P] (columns minor)."""
  bo, bi = bs.block_shape
  if x.ndim != 3 or x.shape[:2] != (bs.num_cols, bi):
    raise ValueError(f"block_matmul: x must be [{bs.num_cols}, {bi}, P], got {x.shape}.")
  impl = bs.impl if impl is None else _check_impl(impl)
  dtype = jnp.result_type(x, bs.values)
  p = x.shape[-1]
  if bs.nnz == 0 or p == 0:
    return jnp.zeros((bs.num_rows, bo, p), dtype)
  if impl == "kernel" and dtype == jnp.float32 and kernel_available():
    return jax.ffi.ffi_call(_TARGET, jax.ShapeDtypeStruct((bs.num_rows, bo, p), dtype))(
        bs.indptr, bs.indices, bs.values.astype(dtype), x.astype(dtype))
  g = jnp.take(x, bs.indices, axis=0, mode="clip")                    # [nnz, bi, P]
  prod = jnp.einsum("zar,zrp->zap", bs.values.astype(dtype), g.astype(dtype))  # [nnz, bo, P]
  return jax.ops.segment_sum(prod, bs.rows, num_segments=bs.num_rows,
                             indices_are_sorted=True)                # [R, bo, P]


# ------------------------------------------------------- algebra elements
def _layout(alg: Algebra) -> tuple[int, Algebra]:
  """(n, B): an element is an n×n matrix over B (n = 1, B = A for non-matrix algebras)."""
  if alg.matrix_base is not None:
    return alg.matrix_base
  return 1, alg


def element_blocks(w, algebra) -> np.ndarray:
  """w [Cin, Cout, D] -> real blocks [Cout, Cin, n·Db, n·Db] (numpy, host side).

  Block (o, i) maps x_i's rows (r, b) to y_o's rows (a, k):
  V[(a, k), (r, b)] = Σ_q w_io[a, r, q] T_B[q, b, k], i.e. L(w_io) for n = 1
  and the folded M_n(B) element otherwise. A zero element gives a zero block.
  """
  alg = algebras_lib.get(algebra)
  w = _host(w, "element_blocks")
  if w.ndim != 3 or w.shape[-1] != alg.dim:
    raise ValueError(f"w must be [Cin, Cout, {alg.dim}] for algebra {alg.name!r}, got {w.shape}.")
  n, base = _layout(alg)
  cin, cout, _ = w.shape
  w5 = w.reshape(cin, cout, n, n, base.dim)                            # [Cin, Cout, A, R, Q]
  t = base.structure.astype(w.dtype)
  v = np.einsum("ioarq,qbk->oiakrb", w5, t)                            # [Cout, Cin, A, K, R, B]
  m = n * base.dim
  return np.ascontiguousarray(v.reshape(cout, cin, m, m))


def prepare_element(w, algebra, impl: Optional[str] = None) -> BlockSparse:
  """The element-sparse form of an algebra weight w [Cin, Cout, D] (host side, once)."""
  return from_blocks(element_blocks(w, algebra), impl)


def element_dense(x, bs: BlockSparse, algebra):
  """y [..., Cout, D] = Σ_i w_io · x_i for x [..., Cin, D], skipping zero elements.

  `bs` comes from `prepare_element(w, algebra)` with the same algebra.
  """
  alg = algebras_lib.get(algebra)
  n, base = _layout(alg)
  x = jnp.asarray(x)
  d, db = alg.dim, base.dim
  if x.ndim < 2 or x.shape[-1] != d or x.shape[-2] != bs.num_cols:
    raise ValueError(f"element_dense: x must be [..., {bs.num_cols}, {d}] for algebra "
                     f"{alg.name!r}, got {x.shape}.")
  if bs.block_shape != (n * db, n * db):
    raise ValueError(f"element_dense: blocks {bs.block_shape} were not built for algebra "
                     f"{alg.name!r} (expected {(n * db,) * 2}).")
  *lead, cin, _ = x.shape
  l = int(np.prod(lead, dtype=np.int64))
  xl = x.reshape(l, cin, n, n, db)                                     # [L, Cin, R, C, B]
  xb = jnp.transpose(xl, (1, 2, 4, 0, 3)).reshape(cin, n * db, l * n)  # [Cin, (R, B), (L, C)]
  y = block_matmul(bs, xb)                                             # [Cout, (A, K), (L, C)]
  cout = bs.num_rows
  y = jnp.transpose(y.reshape(cout, n, db, l, n), (3, 0, 1, 4, 2))     # [L, Cout, A, C, K]
  return y.reshape(*lead, cout, d)


# ------------------------------------------------------------ real baselines
def prepare_real(w, block: tuple[int, int] = (1, 1), impl: Optional[str] = None) -> BlockSparse:
  """Block-sparse form of a real weight w [Cin, Cout] (y = x @ w) with blocks of
  `block` = (inputs, outputs) entries: (1, 1) is unstructured CSR, (1, d) / (d, 1)
  / (n, n) the block baselines of an algebra element's size."""
  w = _host(w, "prepare_real")
  bi, bo = (int(b) for b in block)
  if w.ndim != 2 or bi < 1 or bo < 1 or w.shape[0] % bi or w.shape[1] % bo:
    raise ValueError(f"prepare_real: w must be [Cin, Cout] with Cin divisible by {bi} and "
                     f"Cout by {bo}; got {w.shape} and block {block}.")
  cin, cout = w.shape
  # [Cout/bo, Cin/bi, bo, bi]
  blocks = w.reshape(cin // bi, bi, cout // bo, bo).transpose(2, 0, 3, 1)
  return from_blocks(np.ascontiguousarray(blocks), impl)


def real_dense(x, bs: BlockSparse):
  """y [..., Cout] = x @ w for x [..., Cin], with bs = prepare_real(w, block)."""
  x = jnp.asarray(x)
  bo, bi = bs.block_shape
  if x.ndim < 1 or x.shape[-1] != bs.num_cols * bi:
    raise ValueError(f"real_dense: x must be [..., {bs.num_cols * bi}], got {x.shape}.")
  *lead, cin = x.shape
  l = int(np.prod(lead, dtype=np.int64))
  xb = jnp.transpose(x.reshape(l, cin // bi, bi), (1, 2, 0))           # [Cin/bi, bi, L]
  y = block_matmul(bs, xb)                                             # [Cout/bo, bo, L]
  return jnp.transpose(y, (2, 0, 1)).reshape(*lead, bs.num_rows * bo)


# ------------------------------------------------------- dense, few rows
# Rows up to which `rows_matmul` uses the kernel: it streams the weight once per group of 4
# rows, so past a few groups XLA's GEMM (which reuses each weight panel across rows) wins.
ROWS_KERNEL_MAX = 8


def rows_kernel_default(dtype=np.float32) -> bool:
  """Whether `rows_matmul` runs the kernel by default: CPU, float32, compiler found."""
  return (jax.default_backend() == "cpu" and np.dtype(dtype) == np.float32
          and kernel_available())


def rows_matmul(x, wt, precision=None):
  """y [..., N] = x [..., K] @ wt.T, for a weight stored transposed, wt [N, K].

  Batch-1 decoding multiplies 1-4 rows (the n folded columns of an M_n element, the D rows of
  the `right` path) by a weight it must read from memory: with up to ROWS_KERNEL_MAX rows on
  CPU in float32 a kernel streams each weight row once for all rows (XLA's CPU matmul takes
  2-3x one row's time for 2 rows and 3-5x for 4, BENCHMARKS.md "models-dot"); otherwise, and
  on other backends, XLA's dot with the transposed operand. Dense and exact (float32
  accumulation). Inference only: no gradient is defined through the kernel.
  """
  x, wt = jnp.asarray(x), jnp.asarray(wt)
  if wt.ndim != 2 or x.ndim < 1 or x.shape[-1] != wt.shape[1]:
    raise ValueError(f"rows_matmul: x must be [..., K] and wt [N, K]; got x {x.shape}, "
                     f"wt {wt.shape}.")
  *lead, k = x.shape
  m = int(np.prod(lead, dtype=np.int64))
  dtype = jnp.result_type(x, wt)
  if (0 < m <= ROWS_KERNEL_MAX and dtype == jnp.float32 and wt.shape[0] > 0 and k > 0
      and rows_kernel_default(dtype)):
    y = jax.ffi.ffi_call(_ROWS_TARGET, jax.ShapeDtypeStruct((m, wt.shape[0]), dtype),
                         vmap_method="sequential")(x.reshape(m, k), wt)   # [M, N]
    return y.reshape(*lead, wt.shape[0])
  return jnp.einsum("...k,nk->...n", x, wt, precision=precision)


# ------------------------------------------------------------------ policy
def element_sparsity(w) -> float:
  """Fraction of the elements of w [..., D] whose D components are all zero."""
  w = _host(w, "element_sparsity")
  return float(np.mean(~np.any(w != 0, axis=-1))) if w.size else 0.0


# Sparsity from which the kernel beats the dense layer, by columns per call
# P = batch · n (n = 1 unless M_n), measured by scripts/benchmark_sparse.py on
# a 2-core AMD EPYC (BENCHMARKS.md, "sparse"; width 1024, equal dense params):
#   P = 1 (R, H at batch 1): 70% is the first measured sparsity that wins
#     (1.3-1.4×; at 50% H 0.84×, R 0.91×);
#   P = 2-4 (M2(R), M4(R) at batch 1): 50% already wins (1.7×, 2.8×);
#   P = 64-256 (batch 64): 90% wins for all four (2.1-3.0×), 80% not for H
#     and only by 1.08× for R; batches in between were not measured, so they
#     get the batch-64 threshold.
# Past the table: dense (a batched matmul reuses each weight across the batch).
_BREAK_EVEN = ((1, 0.7), (4, 0.5), (256, 0.9))


def min_sparsity(algebra, batch: int = 1, impl: Optional[str] = None) -> float:
  """Element sparsity from which the sparse path pays for `algebra` at `batch`.

  Returns > 1 (never) where it was not measured to pay: the XLA path on CPU
  (gathers cost as much as the dense layer), other backends (unmeasured), and
  batches past the measured table.
  """
  alg = algebras_lib.get(algebra)
  impl = _default_impl(np.float32) if impl is None else _check_impl(impl)
  if impl != "kernel":
    return 2.0
  p = batch * _layout(alg)[0]
  for rows, threshold in _BREAK_EVEN:
    if p <= rows:
      return threshold
  return 2.0


def should_use_sparse(w, algebra, batch: int = 1, impl: Optional[str] = None) -> bool:
  """Whether `element_dense` on w's element-sparse form beats the dense layer."""
  return element_sparsity(w) >= min_sparsity(algebra, batch, impl)


# ------------------------------------------------------------------ kernel
_TARGET = "algebranets_bsr_matmul_f32"
_ROWS_TARGET = "algebranets_rows_matmul_f32"

_KERNEL_SOURCE = r"""
// Block-CSR times dense for algebranets.sparse_ops (see its docstring).
// y[o] (bo x P) = sum over stored blocks k of row o: V[k] (bo x bi) @ x[indices[k]] (bi x P).
#include <atomic>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif
#include <cstdint>
#include <cstring>
#include <thread>
#include "xla/ffi/api/ffi.h"
namespace ffi = xla::ffi;

// Runs fn(i0, i1) on [0, n) split into ranges of whole `align` items, one per thread of XLA's
// intra-op pool (at most 16; one when `small`, where a task costs more than it saves); the
// calling thread takes the first range and waits for the others.
template <typename F>
static void SplitOverPool(ffi::ThreadPool& pool, int64_t n, int64_t align, bool small, F fn) {
  int64_t threads = pool.num_threads();
  threads = threads < 1 ? 1 : (threads > 16 ? 16 : threads);
  if (small || n < 8 * threads) threads = 1;
  if (threads == 1) {
    fn(int64_t{0}, n);
    return;
  }
  const int64_t chunk = ((n + threads - 1) / threads + align - 1) / align * align;
  std::atomic<int64_t> pending(threads - 1);
  for (int64_t t = 1; t < threads; ++t) {
    const int64_t i0 = t * chunk < n ? t * chunk : n, i1 = i0 + chunk < n ? i0 + chunk : n;
    pool.Schedule([=, &pending] {
      fn(i0, i1);
      pending.fetch_sub(1, std::memory_order_release);
    });
  }
  fn(int64_t{0}, chunk < n ? chunk : n);
  while (pending.load(std::memory_order_acquire) > 0) std::this_thread::yield();
}

// Small P (batch-1 decoding: P = the n columns of an M_n element, or 1): the
// row's bo x P outputs live in registers; when they are few, U independent
// accumulators hide the add latency.
#define ROW_LOOP_SMALL_BODY                                                              \
  constexpr int N = BO * PC;                                                             \
  constexpr int U = N >= 8 ? 1 : (N >= 4 ? 2 : 4);                                       \
  for (int64_t o = 0; o < rows; ++o) {                                                   \
    float acc[U][N] = {};                                                                \
    int32_t k = indptr[o];                                                               \
    const int32_t end = indptr[o + 1];                                                   \
    for (; k + U <= end; k += U)                                                         \
      for (int u = 0; u < U; ++u) {                                                      \
        const float* v = vals + static_cast<int64_t>(k + u) * (BO * BI);                 \
        const float* xi = x + static_cast<int64_t>(indices[k + u]) * (BI * PC);          \
        for (int a = 0; a < BO; ++a)                                                     \
          for (int r = 0; r < BI; ++r)                                                   \
            for (int c = 0; c < PC; ++c) acc[u][a * PC + c] += v[a * BI + r] * xi[r * PC + c]; \
      }                                                                                  \
    for (; k < end; ++k) {                                                               \
      const float* v = vals + static_cast<int64_t>(k) * (BO * BI);                       \
      const float* xi = x + static_cast<int64_t>(indices[k]) * (BI * PC);                \
      for (int a = 0; a < BO; ++a)                                                       \
        for (int r = 0; r < BI; ++r)                                                     \
          for (int c = 0; c < PC; ++c) acc[0][a * PC + c] += v[a * BI + r] * xi[r * PC + c]; \
    }                                                                                    \
    float* yo = y + o * N;                                                               \
    for (int j = 0; j < N; ++j) {                                                        \
      float s = 0.f;                                                                     \
      for (int u = 0; u < U; ++u) s += acc[u][j];                                        \
      yo[j] = s;                                                                         \
    }                                                                                    \
  }

template <int BO, int BI, int PC>
static void RowLoopSmall(const int32_t* indptr, const int32_t* indices, const float* vals,
                         const float* x, float* y, int64_t rows) { ROW_LOOP_SMALL_BODY }

// P = 1: GCC vectorises the k loop with gathers, which are slow on AMD Zen
// (measured 3x slower than scalar code here), so this one stays scalar.
template <int BO, int BI, int PC>
__attribute__((optimize("no-tree-vectorize")))
static void RowLoopScalar(const int32_t* indptr, const int32_t* indices, const float* vals,
                          const float* x, float* y, int64_t rows) { ROW_LOOP_SMALL_BODY }

// Large P (batched inference): the row's outputs stay in L1 and the inner
// loop runs over the P contiguous columns (vectorised).
static void RowLoopWide(const int32_t* indptr, const int32_t* indices, const float* vals,
                        const float* x, float* y, int64_t rows, int64_t P, int64_t bo,
                        int64_t bi) {
  for (int64_t o = 0; o < rows; ++o) {
    float* __restrict__ yo = y + o * bo * P;
    std::memset(yo, 0, sizeof(float) * bo * P);
    for (int32_t k = indptr[o]; k < indptr[o + 1]; ++k) {
      const float* v = vals + static_cast<int64_t>(k) * bo * bi;
      const float* __restrict__ xi = x + static_cast<int64_t>(indices[k]) * bi * P;
      for (int64_t a = 0; a < bo; ++a)
        for (int64_t r = 0; r < bi; ++r) {
          const float w = v[a * bi + r];
          float* __restrict__ ya = yo + a * P;
          const float* __restrict__ xr = xi + r * P;
          for (int64_t p = 0; p < P; ++p) ya[p] += w * xr[p];
        }
    }
  }
}

template <int BO, int BI>
static bool SmallP(const int32_t* ip, const int32_t* ix, const float* v, const float* x,
                   float* y, int64_t rows, int64_t P, int64_t bo, int64_t bi) {
  if (bo != BO || bi != BI) return false;
  switch (P) {
    case 1:  // wide blocks vectorise over their outputs; narrow ones stay scalar
      if (BO >= 4) RowLoopSmall<BO, BI, 1>(ip, ix, v, x, y, rows);
      else RowLoopScalar<BO, BI, 1>(ip, ix, v, x, y, rows);
      return true;
    case 2: RowLoopSmall<BO, BI, 2>(ip, ix, v, x, y, rows); return true;
    case 4: RowLoopSmall<BO, BI, 4>(ip, ix, v, x, y, rows); return true;
    default: return false;
  }
}

// Output rows [r0, r1): the row loops index indices/values through indptr, which holds
// absolute offsets, so a range only moves indptr and y.
static void BsrRange(const int32_t* ip, const int32_t* ix, const float* v, const float* x,
                     float* y, int64_t r0, int64_t r1, int64_t P, int64_t bo, int64_t bi) {
  ip += r0;
  y += r0 * bo * P;
  const int64_t rows = r1 - r0;
  if (SmallP<1, 1>(ip, ix, v, x, y, rows, P, bo, bi) ||
      SmallP<1, 4>(ip, ix, v, x, y, rows, P, bo, bi) ||
      SmallP<4, 1>(ip, ix, v, x, y, rows, P, bo, bi) ||
      SmallP<2, 2>(ip, ix, v, x, y, rows, P, bo, bi) ||
      SmallP<3, 3>(ip, ix, v, x, y, rows, P, bo, bi) ||
      SmallP<4, 4>(ip, ix, v, x, y, rows, P, bo, bi))
    return;
  RowLoopWide(ip, ix, v, x, y, rows, P, bo, bi);
}

static ffi::Error BsrMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::S32> indptr,
                            ffi::Buffer<ffi::S32> indices, ffi::Buffer<ffi::F32> values,
                            ffi::Buffer<ffi::F32> x, ffi::ResultBuffer<ffi::F32> y) {
  auto vd = values.dimensions();   // [nnz, bo, bi]
  auto yd = y->dimensions();       // [rows, bo, P]
  if (vd.size() != 3 || yd.size() != 3 || vd[1] != yd[1])
    return ffi::Error::InvalidArgument("bsr_matmul: values must be [nnz, bo, bi], y [rows, bo, P]");
  const int64_t bo = vd[1], bi = vd[2], rows = yd[0], P = yd[2];
  const int32_t* ip = indptr.typed_data();
  const int32_t* ix = indices.typed_data();
  const float* v = values.typed_data();
  const float* xx = x.typed_data();
  float* yy = y->typed_data();
  // The output rows are split over the intra-op thread pool (rows of a randomly pruned weight
  // hold about equal numbers of blocks).
  SplitOverPool(pool, rows, 1, vd[0] * bo * bi * P < (int64_t{1} << 16),
                [=](int64_t r0, int64_t r1) { BsrRange(ip, ix, v, xx, yy, r0, r1, P, bo, bi); });
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(AlgebranetsBsrMatmulF32, BsrMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::S32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

// ---- Dense rows kernel (rows_matmul): y [M, N] = x [M, K] @ wt [N, K]^T for a few rows M.
// Each weight row is read once, contiguously, for all M rows (XLA's CPU GEMM packs weight
// panels first, so 2-4 rows cost 2-4x one row there). J weight rows x M input rows of
// accumulators, 8 lanes over K (AVX2 + FMA; a scalar loop elsewhere); the N weight rows are
// split over the intra-op thread pool.
template <int M, int J>
static void DenseRows(const float* __restrict__ x, const float* __restrict__ wt,
                      float* __restrict__ y, int64_t K, int64_t N, int64_t n0, int64_t n1) {
  int64_t n = n0;
  for (; n + J <= n1; n += J) {
    const float* w0 = wt + n * K;
    int64_t k = 0;
    float s[J][M];
#if defined(__AVX2__) && defined(__FMA__)
    // Intrinsics: GCC's generic vectors measured 1.2-1.6x slower here for 4 rows.
    __m256 acc[J][M];
    for (int j = 0; j < J; ++j)
      for (int m = 0; m < M; ++m) acc[j][m] = _mm256_setzero_ps();
    for (; k + 8 <= K; k += 8) {
      __m256 xv[M];
      for (int m = 0; m < M; ++m) xv[m] = _mm256_loadu_ps(x + m * K + k);
      for (int j = 0; j < J; ++j) {
        const __m256 wv = _mm256_loadu_ps(w0 + j * K + k);
        for (int m = 0; m < M; ++m) acc[j][m] = _mm256_fmadd_ps(wv, xv[m], acc[j][m]);
      }
    }
    for (int j = 0; j < J; ++j)
      for (int m = 0; m < M; ++m) {
        __m128 v = _mm_add_ps(_mm256_castps256_ps128(acc[j][m]),
                              _mm256_extractf128_ps(acc[j][m], 1));
        v = _mm_hadd_ps(v, v);
        s[j][m] = _mm_cvtss_f32(_mm_hadd_ps(v, v));
      }
#else
    for (int j = 0; j < J; ++j)
      for (int m = 0; m < M; ++m) s[j][m] = 0.f;
#endif
    for (int j = 0; j < J; ++j)
      for (int m = 0; m < M; ++m) {
        float t = s[j][m];
        for (int64_t kk = k; kk < K; ++kk) t += w0[j * K + kk] * x[m * K + kk];
        y[m * N + n + j] = t;
      }
  }
  for (; n < n1; ++n)
    for (int m = 0; m < M; ++m) {
      float t = 0.f;
      for (int64_t k = 0; k < K; ++k) t += wt[n * K + k] * x[m * K + k];
      y[m * N + n] = t;
    }
}

static void DenseRange(const float* x, const float* wt, float* y, int64_t M, int64_t K,
                       int64_t N, int64_t n0, int64_t n1) {
  for (int64_t m = 0; m < M; m += 4) {  // groups of 4 rows (one weight pass per group)
    const float* xm = x + m * K;
    float* ym = y + m * N;
    switch (M - m < 4 ? M - m : 4) {
      case 1: DenseRows<1, 4>(xm, wt, ym, K, N, n0, n1); break;
      case 2: DenseRows<2, 4>(xm, wt, ym, K, N, n0, n1); break;
      case 3: DenseRows<3, 4>(xm, wt, ym, K, N, n0, n1); break;
      default: DenseRows<4, 4>(xm, wt, ym, K, N, n0, n1); break;
    }
  }
}

static ffi::Error RowsMatmul(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                             ffi::Buffer<ffi::F32> wt, ffi::ResultBuffer<ffi::F32> y) {
  auto xd = x.dimensions();
  auto wd = wt.dimensions();
  auto yd = y->dimensions();
  if (xd.size() != 2 || wd.size() != 2 || yd.size() != 2 || xd[1] != wd[1] ||
      yd[0] != xd[0] || yd[1] != wd[0])
    return ffi::Error::InvalidArgument("rows_matmul: x must be [M, K], wt [N, K], y [M, N]");
  const int64_t M = xd[0], K = xd[1], N = wd[0];
  const float* xp = x.typed_data();
  const float* wp = wt.typed_data();
  float* yp = y->typed_data();
  // Whole groups of J = 4 weight rows per thread.
  SplitOverPool(pool, N, 4, N * K < (int64_t{1} << 16),
                [=](int64_t n0, int64_t n1) { DenseRange(xp, wp, yp, M, K, N, n0, n1); });
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(AlgebranetsRowsMatmulF32, RowsMatmul,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
"""

_FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-w")


def _cpu_name() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      return next((l for l in f if l.startswith("model name")), platform.machine())
  except OSError:
    return platform.machine()


@functools.lru_cache(maxsize=None)
def kernel_available() -> bool:
  """Builds (once, cached on disk) and registers the CPU kernels (block-CSR, dense rows).

  False -- with one warning -- where there is no C++ compiler or the build
  fails; everything then runs on the XLA path.
  """
  compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
  if compiler is None:
    warnings.warn("algebranets.sparse_ops: no C++ compiler found; sparse layers use the "
                  "slower XLA gather path.", stacklevel=2)
    return False
  key = hashlib.sha256("\0".join((_KERNEL_SOURCE, compiler, *_FLAGS, _cpu_name(),
                                  jax.__version__)).encode()).hexdigest()[:16]
  cache = os.environ.get("ALGEBRANETS_CACHE") or os.path.join(
      os.path.expanduser("~"), ".cache", "algebranets")
  lib_path = os.path.join(cache, f"bsr_matmul_{key}.so")
  try:
    if not os.path.exists(lib_path):
      os.makedirs(cache, exist_ok=True)
      with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "bsr_matmul.cc")
        with open(src, "w") as f:
          f.write(_KERNEL_SOURCE)
        out = os.path.join(tmp, "bsr_matmul.so")
        subprocess.run([compiler, *_FLAGS, "-I", jax.ffi.include_dir(), src, "-o", out],
                       check=True, capture_output=True, text=True)
        os.replace(out, lib_path)   # atomic: concurrent builders never see half a file
    lib = ctypes.cdll.LoadLibrary(lib_path)
    jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(lib.AlgebranetsBsrMatmulF32),
                                platform="cpu")
    jax.ffi.register_ffi_target(_ROWS_TARGET, jax.ffi.pycapsule(lib.AlgebranetsRowsMatmulF32),
                                platform="cpu")
  except (OSError, subprocess.CalledProcessError) as e:
    detail = getattr(e, "stderr", "") or str(e)
    warnings.warn(f"algebranets.sparse_ops: building the CPU sparse kernel failed; using the "
                  f"XLA path. {detail[-500:]}", stacklevel=2)
    return False
  return True
