"""Algebra-valued dense and convolution layers as pure functions (no Haiku).

Shapes (D = algebra.dim, the components of one element, always the last axis):
  dense:   x [..., Cin, D]        w [Cin, Cout, D]             -> [..., Cout, D]
  conv2d:  x [N, H, W, Cin, D]    w [KH, KW, Cin/G, Cout, D]   -> [N, H', W', Cout, D]

Both compute y_o = Σ_i w_io · x_i with the algebra's product and the weight on
the left. Every op has several paths that give the same numbers (tests hold
them equal to the reference to float32 rounding):

  reference  outer products of all component pairs, then contraction with the
             structure tensor T. Slow and obviously the definition.
  expanded   each weight element becomes its D×D left-multiplication matrix;
             one real matmul/conv of width Cin·D -> Cout·D. Costs D² real MACs
             per element product: optimal when T is dense (R, C, H), n× the
             naive cost for M_n(R). This is the form that PHM / hypercomplex /
             quaternion libraries use.
  folded     M_n(B) only (paper, Appendix E): an element is an n×n matrix over
             B whose n columns see the same weights, so columns fold into the
             batch and the layer becomes a B-layer of width n·Cin -> n·Cout on
             n× the batch. No expanded weight, exactly the naive n³·m_B MACs.
  sparse     for sparse T (dual numbers, cross3): output component k gathers
             only the (weight comp, input comp) pairs with T[a, b, k] != 0, so
             the real work is the naive count instead of D².
  gauss      C only: Gauss's 3-multiply complex product, 3 real matmuls
             instead of 4 (slightly larger rounding error).
  isomorphic algebras with an isomorphism onto M_n(B) (`Algebra.isomorphism`,
             e.g. Clifford algebras: Cl(1,1), Cl(2,0) ≅ M2(R)): the weight and
             the input change basis (a -> a @ P), the layer runs in M_n(B) on
             its folded path and the output changes back; each basis change is
             one einsum (for dense, one that also folds or unfolds). Costs what M_n(B) costs
             plus two O(activation) passes; the weight's is once per call (or
             once, prepared).

Learned algebras (`algebras.LearnedAlgebra`) and any explicit structure
tensor: `dense(..., structure=T)` / `conv2d(..., structure=T)` with T
[D, D, D] an array (a parameter, traced under jit and differentiated): paths
`expanded` (default; the expanded weight is one einsum of w with T, so it is
built once per call, and once in all by `prepare_dense`), `reference` and
`right` (STRUCTURE_PATHS). The PHM form of the expanded weight,
Σ_a w[..., a] ⊗ T[a] (Zhang et al. 2021), is `phm_weight`: the same matrix.

`default_path(algebra, kind)` picks per algebra; the choice and the
measurements behind it are documented there and in BENCHMARKS.md.

The folded layout can also be kept *between* layers (`fold` / `unfold` /
`fold_weight`), which saves the activation transposes of the folded path;
component-wise nonlinearities and per-component norms do not care about the
layout.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import numpy as np
import jax
import jax.numpy as jnp

from algebranets import algebras as algebras_lib
from algebranets import sparse_ops
from algebranets.algebras import Algebra

__all__ = ["dense", "conv2d", "default_path", "PATHS", "fold", "unfold", "fold_weight",
           "PreparedWeight", "prepare_dense", "ELEMENT_SPARSE", "STRUCTURE_PATHS",
           "expand_weight", "phm_weight", "change_basis", "RowsWeight"]

PATHS = ("reference", "expanded", "folded", "sparse", "gauss", "right", "isomorphic")
# The paths that take an explicit structure tensor (`structure=`, learned algebras).
STRUCTURE_PATHS = ("expanded", "reference", "right")
# A prepared-only path: weights with zero algebra elements in block-CSR form
# (sparse_ops), built on the host from concrete values by `prepare_dense`.
ELEMENT_SPARSE = "element_sparse"
CONV_IMPLS = ("auto", "xla", "im2col")
IntPair = Union[int, Sequence[int]]
Padding = Union[str, Sequence[tuple[int, int]]]

_HIGHEST = jax.lax.Precision.HIGHEST


# ----------------------------------------------------------------- dispatch
def default_path(algebra, kind: str = "dense") -> str:
  """The fastest correct path for `algebra` ("dense" or "conv").

  Chosen from the cost model and confirmed by `scripts/benchmark_ops.py`
  (BENCHMARKS.md, 2 CPU cores; forward+backward, which is what training runs):
  * D = 1 (R): `expanded` is literally the real layer.
  * M_n(B): `folded` does 1/n of the expanded MACs; dense measured 2.0× (M2),
    2.3× (M3), 3.6× (M4) faster than `expanded`, conv 1.6-2.3×.
  * sparse T (naive multiplies < 0.8·D², i.e. dual and cross3): `sparse`,
    which does the naive count; `expanded` would do 4/3× (dual), 3/2× (cross3).
    Measured 1.2-1.3× faster than `expanded` for dense and for convs of 128+
    real channels (at 64 channels `expanded` wins the dual conv).
  * C: `gauss` for dense (3 real matmuls instead of the 4-MAC expanded one:
    1.1-1.5× faster), `expanded` for conv (with the im2col conv the three
    patch copies of `gauss` cost more than its saved quarter of the MACs).
  * an isomorphism onto M_n(B) (Clifford algebras such as Cl(1,1), Cl(2,0)
    ≅ M2(R)): `isomorphic`, M_n(B)'s folded path between basis changes
    (BENCHMARKS.md, "Isomorphic path").
  * learned algebras: `expanded` (`right` for "decode"); T is dense.
  * otherwise (H and dense user algebras): `expanded`, one real op with no
    wasted work.
  kind "decode" is for weights prepared once and applied at batch 1
  (`prepare_dense`), where reading the weight is the cost: `folded` for
  M_n(B) (the folded weight has the size of the parameters) and `right` for
  every other algebra (a transposed copy of the parameters; `expanded` would
  read D× the parameters, `gauss` 1.5×). On CPU in float32 `prepare_dense`
  stores those matrices transposed for `sparse_ops.rows_matmul`, which reads
  each weight once for the 1-4 rows of a batch-1 call (XLA's matmul took
  2-4× one row's time there; BENCHMARKS.md, issue 12).
  """
  if kind not in ("dense", "conv", "decode"):
    raise ValueError(f"kind must be 'dense', 'conv' or 'decode', got {kind!r}.")
  alg = algebras_lib.get(algebra)
  if alg.learned:
    return "right" if kind == "decode" else "expanded"
  if alg.dim == 1:
    return "expanded"
  if alg.isomorphism is not None and alg.isomorphism[1].matrix_base is not None:
    return "isomorphic"
  if alg.matrix_base is not None:
    return "folded"
  if kind == "decode":
    return "right"
  if alg == algebras_lib.COMPLEX:
    return "gauss" if kind == "dense" else "expanded"
  if alg.mults_per_product < 0.8 * alg.dim ** 2:
    return "sparse"
  return "expanded"


def _resolve(algebra, path, kind, structure=None, prepared_with_structure=False):
  alg = algebras_lib.get(algebra)
  if prepared_with_structure:
    return alg, path
  if structure is None and alg.learned:
    raise ValueError(f"algebra {alg.name!r} is learned: pass its structure tensor "
                     f"(structure=T [{alg.dim}, {alg.dim}, {alg.dim}], the layer's parameter).")
  path = default_path(alg, kind) if path is None else path
  if path not in PATHS:
    raise ValueError(f"Unknown path {path!r}; valid paths: {', '.join(PATHS)}.")
  if structure is not None:
    d = alg.dim
    if tuple(np.shape(structure)) != (d, d, d):
      raise ValueError(f"structure must be [{d}, {d}, {d}] for algebra {alg.name!r}, got "
                       f"{tuple(np.shape(structure))}.")
    if path not in STRUCTURE_PATHS:
      raise ValueError(f"path {path!r} cannot take an explicit structure tensor; paths that "
                       f"can: {', '.join(STRUCTURE_PATHS)}.")
    return alg, path
  if path == "isomorphic" and alg.isomorphism is None:
    raise ValueError(f"path 'isomorphic' needs an algebra with an isomorphism "
                     f"(algebras.with_isomorphism); {alg.name!r} has none.")
  if path == "folded" and alg.matrix_base is None:
    raise ValueError(f"path 'folded' needs a matrix algebra M_n(B); {alg.name!r} is not one.")
  if path == "gauss" and alg != algebras_lib.COMPLEX:
    raise ValueError(f"path 'gauss' is only for the complex numbers, not {alg.name!r}.")
  return alg, path


def _pair(v, what) -> tuple[int, int]:
  if isinstance(v, (int, np.integer)):
    v = (int(v), int(v))
  v = tuple(int(a) for a in v)
  if len(v) != 2 or min(v) < 1:
    raise ValueError(f"{what} must be a positive int or a pair of them, got {v!r}.")
  return v


def _structure(alg: Algebra, dtype):
  return jnp.asarray(alg.structure, dtype=dtype)


# -------------------------------------------------------------------- dense
def dense(x, w, algebra, *, path: Optional[str] = None, precision=None, structure=None):
  """Algebra-valued fully connected layer, y_o = Σ_i w_io · x_i.

  Args:
    x: [..., Cin, D] activations.
    w: [Cin, Cout, D] weights, or a `PreparedWeight` from `prepare_dense`
      (then its path is used and `path` must be None or the same).
    algebra: an Algebra or a registered name.
    path: one of PATHS, or None for `default_path(algebra, "dense")`.
    precision: passed to the real matmuls (None: JAX's default).
    structure: T [D, D, D] to compute with instead of algebra.structure (an
      array, may be traced: a learned algebra's parameter; required for learned
      algebras); then path is one of STRUCTURE_PATHS (default "expanded").
      Ignored for a PreparedWeight (prepared with its T).

  Returns:
    [..., Cout, D].
  """
  prepared = isinstance(w, PreparedWeight)
  if prepared:
    if path not in (None, w.path):
      raise ValueError(f"dense: w was prepared for path {w.path!r}, not {path!r}.")
    path = w.path
    if path == ELEMENT_SPARSE:
      return sparse_ops.element_dense(x, w.data, algebra)
    structure = None
  structured = w.structured if prepared else structure is not None
  alg, path = _resolve(algebra, path, "dense", None if prepared else structure,
                       prepared_with_structure=prepared and structured)
  x = jnp.asarray(x)
  if not prepared:
    w = jnp.asarray(w)
  d = alg.dim
  if x.ndim < 2 or x.shape[-1] != d:
    raise ValueError(f"dense: x must be [..., Cin, {d}] for algebra {alg.name!r}, got {x.shape}.")
  if len(w.shape) != 3 or w.shape[-1] != d:
    raise ValueError(f"dense: w must be [Cin, Cout, {d}] for algebra {alg.name!r}, got {w.shape}.")
  if x.shape[-2] != w.shape[0]:
    raise ValueError(f"dense: x has Cin={x.shape[-2]} but w expects Cin={w.shape[0]} "
                     f"(x {x.shape}, w {w.shape}).")
  if structured:
    prepare, apply = _DENSE_T[path]
    data = w.data if prepared else prepare(w, jnp.asarray(structure, w.dtype))
    return apply(x, data, w.shape[1], precision)
  prepare, apply = _DENSE[path]
  data = w.data if prepared else prepare(w, alg)
  return apply(x, data, w.shape[1], alg, precision)


@jax.tree_util.register_pytree_node_class
class PreparedWeight:
  """A dense weight already transformed into the layout its path computes with.

  Every path turns the weight into its own layout first (the expanded D×D
  blocks, the folded matrix, Gauss's sums, ...). Inside a training step that is
  cheap next to the matmul, but at batch 1 -- autoregressive decoding -- a
  layer's time is the time to read its weights, and the transform (a D× larger
  expanded weight for H, a transposed copy for M_n) costs several times the
  matmul. `prepare_dense` does it once; `dense` then reads only `data`.
  `shape` and `dtype` are those of the original [Cin, Cout, D] weight, so a
  Haiku module can take a PreparedWeight wherever it takes its parameter.
  `structured`: prepared with an explicit structure tensor (learned
  algebras), which `data` then holds or has been multiplied into.
  """

  def __init__(self, data, shape, dtype, path: str, structured: bool = False):
    self.data, self.shape, self.dtype, self.path = data, tuple(shape), dtype, path
    self.structured = bool(structured)

  def tree_flatten(self):
    return (self.data,), (self.shape, self.dtype, self.path, self.structured)

  @classmethod
  def tree_unflatten(cls, aux, children):
    return cls(children[0], *aux)

  def __repr__(self):
    return f"PreparedWeight(path={self.path!r}, shape={self.shape})"


def prepare_dense(w, algebra, path: Optional[str] = None, structure=None,
                  rows_kernel: Optional[bool] = None) -> PreparedWeight:
  """Transforms w [Cin, Cout, D] once for `dense` (see PreparedWeight).

  path None picks `default_path(algebra, "decode")`: the path that reads the
  fewest bytes per call at batch 1. path ELEMENT_SPARSE stores only the
  non-zero elements (`sparse_ops.prepare_element`); it reads the values of w,
  so it runs on the host, outside jit (`sparse_ops.should_use_sparse` says
  when it is faster). `structure`: as for `dense` (required for a learned
  algebra: its T is multiplied in here, once).

  rows_kernel: store the real matrix that the `expanded`, `right` and
  `folded` paths multiply by transposed (`RowsWeight`), for
  `sparse_ops.rows_matmul`, which streams it once for all the 1-4 rows a
  batch-1 call multiplies (n folded columns, D right-multiplication rows);
  None: where that kernel runs (`sparse_ops.rows_kernel_default`: CPU,
  float32). Measured in BENCHMARKS.md ("models-decode").
  """
  if path == ELEMENT_SPARSE:
    alg = algebras_lib.get(algebra)
    if alg.learned or structure is not None:
      raise ValueError("prepare_dense: the element-sparse path needs a fixed structure tensor; "
                       f"algebra {alg.name!r} is learned or structure= was given.")
    return PreparedWeight(sparse_ops.prepare_element(w, alg), np.shape(w), w.dtype, path)
  alg, path = _resolve(algebra, path, "decode", structure)
  w = jnp.asarray(w)
  if w.ndim != 3 or w.shape[-1] != alg.dim:
    raise ValueError(f"prepare_dense: w must be [Cin, Cout, {alg.dim}] for algebra "
                     f"{alg.name!r}, got {w.shape}.")
  if rows_kernel is None:
    rows_kernel = sparse_ops.rows_kernel_default(w.dtype)
  if structure is not None:
    data = _DENSE_T[path][0](w, jnp.asarray(structure, w.dtype))
    if rows_kernel and path == "right":
      data = (RowsWeight.of(data[0]), data[1])
    elif rows_kernel and path == "expanded":
      data = RowsWeight.of(data)
    return PreparedWeight(data, w.shape, w.dtype, path, structured=True)
  if path == "folded":
    data = _prepare_folded(w, alg, "decode", rows_kernel)
  elif path == "isomorphic":
    data = _prepare_isomorphic(w, alg, "decode", rows_kernel)
  else:
    data = _DENSE[path][0](w, alg)
    if rows_kernel and path in ("expanded", "right"):
      data = RowsWeight.of(data)
  return PreparedWeight(data, w.shape, w.dtype, path)


@jax.tree_util.register_pytree_node_class
class RowsWeight:
  """A real weight matrix [K, N] stored transposed, wt [N, K], for `sparse_ops.rows_matmul`.

  What `prepare_dense(..., rows_kernel=True)` keeps of the matrix a path multiplies by: at
  batch 1 each weight row is then streamed once for all the rows of the call.
  """

  def __init__(self, wt):
    self.wt = wt

  @classmethod
  def of(cls, w):
    return cls(jnp.swapaxes(w, -1, -2))                                  # [N, K]

  @property
  def shape(self):
    return tuple(self.wt.shape[::-1])

  def tree_flatten(self):
    return (self.wt,), None

  @classmethod
  def tree_unflatten(cls, aux, children):
    del aux
    return cls(children[0])


def _matmul(x, w, precision):
  """x [..., K] @ w, w a [K, N] array or a RowsWeight."""
  if isinstance(w, RowsWeight):
    return sparse_ops.rows_matmul(x, w.wt, precision)                   # [..., N]
  return matmul_2d(x, w, precision)                                    # [..., N]


def matmul_2d(x, w, precision=None):
  """x [..., K] @ w [K, N] as one 2-D matmul over the flattened leading axes.

  The weight gradient of a matmul with several leading axes contracts all of them, and XLA's
  CPU backend then copied the whole output gradient into [N, rows] first (about 14 ms per
  1×1 conv of a ResNet-50 stage-3 block of M4(R), BENCHMARKS.md issue 12); with one leading
  axis its dot reads the operand transposed in place.
  """
  lead = x.shape[:-1]
  y = jnp.matmul(x.reshape(-1, x.shape[-1]), w, precision=precision)
  return y.reshape(*lead, w.shape[-1])


def _dense_reference(x, w, cout, alg, precision):
  # Every component pair first, then T: z[..., o, a, b] = Σ_i w_ioa x_ib.
  z = jnp.einsum("...ib,ioa->...oab", x, w, precision=_HIGHEST)  # [..., Cout, D, D]
  return jnp.einsum("...oab,abk->...ok", z, _structure(alg, z.dtype), precision=_HIGHEST)


def _signed_sum(w, terms):
  """Σ coef · w[..., a] over (a, coef) in terms, skipping multiplications by 1.

  A coefficient is a Python float (weakly typed), so w keeps its dtype: a numpy float64
  scalar would promote bfloat16 weights -- and with them the whole layer -- to float32.
  """
  out = None
  for a, coef in terms:
    coef = float(coef)
    part = w[..., a] if coef == 1 else (-w[..., a] if coef == -1 else w[..., a] * coef)
    out = part if out is None else out + part
  return out


def _expand_weight(w, alg):
  """[..., Cin, Cout, D] -> [..., Cin·D, Cout·D], real block (i, o) = L(w_io).

  Built from signed slices of w with stack/concatenate rather than a dot with
  T: XLA fuses these into one pass that writes the expanded weight in place,
  while a dot with a contraction of size D (2 for C) runs far below matmul
  speed and dominated the C layer's time.
  """
  *lead, cin, cout, d = w.shape
  if d == 1:
    return w.reshape(*lead, cin, cout)
  t = alg.structure
  zero = jnp.zeros(w.shape[:-1], w.dtype)
  blocks = [[_signed_sum(w, [(a, t[a, b, k]) for a in np.flatnonzero(t[:, b, k])])
             for k in range(d)] for b in range(d)]
  blocks = [[zero if blk is None else blk for blk in row] for row in blocks]
  wr = jnp.stack([jnp.stack(row, axis=-1) for row in blocks], axis=-3)  # [..., Cin, D, Cout, D]
  return wr.reshape(*lead, cin * d, cout * d)


def _dense_expanded(x, wr, cout, alg, precision):
  *lead, cin, d = x.shape
  y = _matmul(x.reshape(*lead, cin * d), wr, precision)               # [..., Cout·D]
  return y.reshape(*lead, cout, d)


def _prepare_folded(w, alg, kind, rows_kernel=False):
  base = alg.matrix_base[1]
  wf = fold_weight(w, alg)                                                # [Cin·n, Cout·n, Db]
  if kind == "decode":
    return prepare_dense(wf, base, default_path(base, kind), rows_kernel=rows_kernel)
  return PreparedWeight(_DENSE[default_path(base, kind)][0](wf, base), wf.shape, wf.dtype,
                        default_path(base, kind))


def _dense_folded(x, wf, cout, alg, precision):
  *lead, cin, d = x.shape
  xf = fold(x.reshape(-1, cin, d), alg)                                   # [L·n, Cin·n, Db]
  yf = dense(xf, wf, alg.matrix_base[1], precision=precision)             # [L·n, Cout·n, Db]
  return unfold(yf, alg).reshape(*lead, cout, d)


def _sparse_groups(alg: Algebra):
  """Output components grouped by how many (a, b) pairs feed them.

  Returns a list of (ks [K], a [K, P], b [K, P], coef [K, P]) numpy arrays.
  """
  t = alg.structure
  by_count: dict[int, list] = {}
  for k in range(alg.dim):
    a, b = np.nonzero(t[:, :, k])
    by_count.setdefault(len(a), []).append((k, a, b, t[a, b, k]))
  groups = []
  for count, items in sorted(by_count.items()):
    if count == 0:
      continue
    ks = np.array([it[0] for it in items])
    groups.append((ks, *(np.stack([it[i] for it in items]) for i in (1, 2, 3))))
  return groups


def _gather_weights(w, idx, coef):
  """[..., Cin, Cout, D] -> [..., P·Cin, Cout], block p = coef[p] · w[..., idx[p]]."""
  return jnp.concatenate([_signed_sum(w, [(a, c)]) for a, c in zip(idx, coef)], axis=-2)


def _prepare_sparse(w, alg):
  """One [P·Cin, Cout] weight per output component k (None where no product reaches k)."""
  ws = [None] * alg.dim
  for ks, a, _, coef in _sparse_groups(alg):
    for k, ak, ck in zip(ks, a, coef):
      ws[k] = _gather_weights(w, ak, ck)
  return tuple(ws)


def _dense_sparse(x, ws, cout, alg, precision):
  # Component-major activations make every component slice contiguous; one
  # matmul per output component then reads only the products that feed it.
  # (Measured faster than a batched einsum over components of equal count.)
  del cout
  xt = jnp.moveaxis(x, -1, 0)                                            # [D, ..., Cin]
  ys = [None] * alg.dim
  for ks, _, b, _ in _sparse_groups(alg):
    for k, bk in zip(ks, b):
      xk = jnp.concatenate([xt[j] for j in bk], axis=-1)                 # [..., P·Cin]
      ys[k] = matmul_2d(xk, ws[k], precision)                            # [..., Cout]
  return _stack_components(ys)


def _stack_components(ys):
  """List of D arrays [..., Cout] (None: no product reaches it) -> [..., Cout, D]."""
  ref = next(y for y in ys if y is not None)
  return jnp.stack([jnp.zeros_like(ref) if y is None else y for y in ys], axis=-1)


def _prepare_gauss(w, alg):
  wr, wi = w[..., 0], w[..., 1]
  return jnp.stack([wr + wi, wr, wi])                     # [3, Cin, Cout]


def _dense_gauss(x, ws, cout, alg, precision):
  xr, xi = x[..., 0], x[..., 1]
  xs = jnp.stack([xr, xi - xr, xr + xi])                  # [3, ..., Cin]
  lead = xr.shape[:-1]
  # The positions flattened into one axis, as in `matmul_2d`.
  k = jnp.einsum("sni,sio->sno", xs.reshape(3, -1, xs.shape[-1]), ws, precision=precision)
  k1, k2, k3 = k.reshape(3, *lead, cout)
  return jnp.stack([k1 - k3, k1 + k2], axis=-1)


def _prepare_right(w, alg):
  cin, cout, d = w.shape
  return jnp.swapaxes(w, 1, 2).reshape(cin * d, cout)    # [(Cin, A), Cout]


def _dense_right(x, wt, cout, alg, precision):
  # y_ok = Σ_ia w_ioa R(x_i)_ka with R(x) the right-multiplication matrix of
  # x: the weight is read once in (a prepared copy of) its own size, where the
  # expanded path reads D× more; the work is D² MACs per product, like
  # `expanded`. Wins when reading weights dominates (batch 1 decoding).
  *lead, cin, d = x.shape
  r = jnp.einsum("...ib,abk->...kia", x, _structure(alg, x.dtype))     # [..., D(k), Cin, D(a)]
  y = _matmul(r.reshape(*lead, d, cin * d), wt, precision)            # [..., D(k), Cout]
  return jnp.swapaxes(y, -1, -2)                                       # [..., Cout, D]


# ---------------------------------------------------------- isomorphic path
def change_basis(x, matrix):
  """x [..., D] -> x @ matrix [..., D'], for a constant (numpy) matrix [D, D'].

  One small matmul (HIGHEST precision: a basis change must not round to TF32/bf16 on
  accelerators). Measured on CPU against signed sums of component slices (the form of
  `_expand_weight`): XLA fused those into the fold / im2col copies that follow and recomputed
  them there, which made the Cl(1,1) layer 1.6-2x slower forward+backward than with the
  matmul, which stays a separate, cheap pass.
  """
  m = np.asarray(matrix)
  x = jnp.asarray(x)
  return jnp.einsum("...d,de->...e", x, jnp.asarray(m, x.dtype), precision=_HIGHEST)


def _iso(alg: Algebra):
  """(P, P^-1, target) of an algebra with an isomorphism."""
  p, target = alg.isomorphism
  return p, _inverse(alg), target


_INVERSES: dict = {}


def _inverse(alg: Algebra) -> np.ndarray:
  key = alg.isomorphism[0].tobytes()
  if key not in _INVERSES:
    inv = np.linalg.inv(alg.isomorphism[0])
    _INVERSES[key] = np.where(np.abs(inv) < 1e-12, 0.0, inv)
  return _INVERSES[key]


def _iso_folded(alg: Algebra) -> bool:
  return alg.isomorphism[1].matrix_base is not None


def _fold_changed(x, alg):
  """x [B, ..., C, D] in alg's basis -> the target M_n(B')'s folded [B·n, ..., C·n, Db].

  `change_basis` and `fold` in one einsum (one pass over x instead of two).
  """
  p, _, target = _iso(alg)
  n, base = target.matrix_base
  b, *mid, c, d = x.shape
  q = jnp.asarray(p.reshape(d, n, n, base.dim), x.dtype)                 # [D, Row, Col, Db]
  xf = jnp.einsum("bmcd,drlk->blmcrk", x.reshape(b, -1, c, d), q,
                  precision=_HIGHEST)                                    # [B, Col, M, C, Row, Db]
  return xf.reshape(b * n, *mid, c * n, base.dim)


def _unfold_changed(yf, alg):
  """Inverse of `_fold_changed`: [B·n, ..., C·n, Db] -> [B, ..., C, D] in alg's basis."""
  _, p_inv, target = _iso(alg)
  n, base = target.matrix_base
  bn, *mid, cn, db = yf.shape
  b, c, d = bn // n, cn // n, p_inv.shape[1]
  q = jnp.asarray(p_inv.reshape(n, n, db, d), yf.dtype)                  # [Row, Col, Db, D]
  y5 = yf.reshape(b, n, -1, c, n, db)                                    # [B, Col, M, C, Row, Db]
  y = jnp.einsum("blmcrk,rlke->bmce", y5, q, precision=_HIGHEST)         # [B, M, C, D]
  return y.reshape(b, *mid, c, d)


def _fold_weight_changed(w, alg):
  """w [..., Cin, Cout, D] in alg's basis -> the target's folded [..., Cin·n, Cout·n, Db]."""
  p, _, target = _iso(alg)
  n, base = target.matrix_base
  *lead, cin, cout, d = w.shape
  q = jnp.asarray(p.reshape(d, n, n, base.dim), w.dtype)                 # [D, A(row), R(col), Db]
  wf = jnp.einsum("...iod,dark->...iroak", w, q,
                  precision=_HIGHEST)                          # [..., Cin, R, Cout, A, Db]
  return wf.reshape(*lead, cin * n, cout * n, base.dim)


def _prepare_isomorphic(w, alg, kind, rows_kernel=False):
  p, _, target = _iso(alg)
  if _iso_folded(alg):
    base = target.matrix_base[1]
    wf = _fold_weight_changed(w, alg)                                    # [Cin·n, Cout·n, Db]
    return prepare_dense(wf, base, default_path(base, kind), rows_kernel=rows_kernel)
  return prepare_dense(change_basis(w, p), target, default_path(target, kind),
                       rows_kernel=rows_kernel)


def _dense_isomorphic(x, wt, cout, alg, precision):
  p, p_inv, target = _iso(alg)
  if _iso_folded(alg):
    *lead, cin, d = x.shape
    xf = _fold_changed(x.reshape(-1, cin, d), alg)                       # [L·n, Cin·n, Db]
    yf = dense(xf, wt, target.matrix_base[1], precision=precision)       # [L·n, Cout·n, Db]
    return _unfold_changed(yf, alg).reshape(*lead, cout, d)
  y = dense(change_basis(x, p), wt, target, precision=precision)        # [..., Cout, D] in target
  return change_basis(y, p_inv)


# ------------------------------------------------------ explicit structure T
def expand_weight(w, structure):
  """[..., Cin, Cout, D] -> [..., Cin·D, Cout·D] with T an array: block (i, o) = L(w_io).

  Real entry ((i, b), (o, k)) = Σ_a w_ioa T[a, b, k]: one einsum, differentiable in w and T.
  """
  *lead, cin, cout, d = w.shape
  t = jnp.asarray(structure, w.dtype)
  wr = jnp.einsum("...ioa,abk->...ibok", w, t, precision=_HIGHEST)    # [..., Cin, D, Cout, D]
  return wr.reshape(*lead, cin * d, cout * d)


def phm_weight(w, structure):
  """The PHM form of the expanded weight: Σ_a S_a ⊗ A_a with S_a = w[..., a], A_a = T[a].

  Zhang et al. (ICLR 2021) parameterise a hypercomplex layer as H = Σ_i A_i ⊗ S_i (here with
  the Kronecker factors in the order that matches this library's [Cin·D, Cout·D] layout);
  with A_a = T[a] it is exactly `expand_weight`. Provided for comparison; the einsum form
  is what the layers use.
  """
  w = jnp.asarray(w)
  t = jnp.asarray(structure, w.dtype)
  return sum(jnp.kron(w[..., a], t[a]) for a in range(w.shape[-1]))  # [Cin·D, Cout·D]


def _dense_reference_t(x, w, cout, precision):
  del cout, precision
  w, t = w
  z = jnp.einsum("...ib,ioa->...oab", x, w, precision=_HIGHEST)          # [..., Cout, D, D]
  return jnp.einsum("...oab,abk->...ok", z, t, precision=_HIGHEST)


def _dense_right_t(x, data, cout, precision):
  wt, t = data
  *lead, cin, d = x.shape
  r = jnp.einsum("...ib,abk->...kia", x, t)                              # [..., D(k), Cin, D(a)]
  y = _matmul(r.reshape(*lead, d, cin * d), wt, precision)              # [..., D(k), Cout]
  return jnp.swapaxes(y, -1, -2)                                         # [..., Cout, D]


# path -> (prepare(w, alg) -> data, apply(x, data, cout, alg, precision) -> y)
_DENSE = {
    "reference": (lambda w, alg: w, _dense_reference),
    "expanded": (_expand_weight, _dense_expanded),
    "folded": (lambda w, alg: _prepare_folded(w, alg, "dense"), _dense_folded),
    "sparse": (_prepare_sparse, _dense_sparse),
    "gauss": (_prepare_gauss, _dense_gauss),
    "right": (_prepare_right, _dense_right),
    "isomorphic": (lambda w, alg: _prepare_isomorphic(w, alg, "dense"), _dense_isomorphic),
}
# With an explicit T: path -> (prepare(w, T) -> data, apply(x, data, cout, precision) -> y).
_DENSE_T = {
    "reference": (lambda w, t: (w, t), _dense_reference_t),
    "expanded": (expand_weight,
                 lambda x, wr, cout, precision: _dense_expanded(x, wr, cout, None, precision)),
    "right": (lambda w, t: (_prepare_right(w, None), t), _dense_right_t),
}


# --------------------------------------------------------------------- conv
def conv2d(x, w, algebra, *, stride: IntPair = 1, padding: Padding = "SAME",
           dilation: IntPair = 1, feature_group_count: int = 1,
           path: Optional[str] = None, precision=None, conv_impl: str = "auto",
           structure=None):
  """Algebra-valued 2D convolution (NHWC), y_o = Σ_{taps, i} w_io · x_i.

  Args:
    x: [N, H, W, Cin, D].
    w: [KH, KW, Cin/G, Cout, D]; G = feature_group_count (G = Cin with
      Cout = m·Cin is the depthwise conv of MobileNet: one element per channel).
    algebra: an Algebra or a registered name.
    stride, dilation: int or (h, w) pair.
    padding: "SAME", "VALID" or ((top, bottom), (left, right)).
    path: one of PATHS, or None for `default_path(algebra, "conv")`.
    precision: passed to the real convolutions / matmuls.
    conv_impl: how the real convolutions inside run: "xla"
      (lax.conv_general_dilated), "im2col" (slices + one matmul; ungrouped
      convs only) or "auto" (on CPU: XLA for narrow stride-1 KH×KW > 1
      kernels, im2col for the other ungrouped convs; XLA for grouped convs and
      on other backends; see `_resolve_conv_impl` for the measurements).
    structure: T [D, D, D] instead of algebra.structure (learned algebras; see
      `dense`); path "expanded" (default) or "reference".

  Returns:
    [N, H', W', Cout, D].
  """
  alg, path = _resolve(algebra, path, "conv", structure)
  if structure is not None and path not in _CONV_T:
    raise ValueError(f"conv2d: with a structure tensor the path must be one of "
                     f"{', '.join(_CONV_T)}, not {path!r}.")
  if path not in _CONV:
    raise ValueError(f"conv2d: path {path!r} is dense-only; conv paths: {', '.join(_CONV)}.")
  x, w = jnp.asarray(x), jnp.asarray(w)
  d = alg.dim
  if x.ndim != 5 or x.shape[-1] != d:
    raise ValueError(f"conv2d: x must be [N, H, W, Cin, {d}] for algebra {alg.name!r}, "
                     f"got {x.shape}.")
  if w.ndim != 5 or w.shape[-1] != d:
    raise ValueError(f"conv2d: w must be [KH, KW, Cin/G, Cout, {d}] for algebra "
                     f"{alg.name!r}, got {w.shape}.")
  g = feature_group_count
  if not isinstance(g, (int, np.integer)) or g < 1:
    raise ValueError(f"conv2d: feature_group_count must be a positive int, got {g!r}.")
  cin, cout = x.shape[3], w.shape[3]
  if cin % g or cout % g or w.shape[2] * g != cin:
    raise ValueError(
        f"conv2d: with feature_group_count={g}, Cin={cin} and Cout={cout} must be divisible "
        f"by {g} and w must have Cin/G={cin // g if cin % g == 0 else '?'} input elements; "
        f"got w {w.shape}.")
  if isinstance(padding, str):
    if padding.upper() not in ("SAME", "VALID"):
      raise ValueError(f"conv2d: padding must be 'SAME', 'VALID' or pairs, got {padding!r}.")
    padding = padding.upper()
  else:
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  if conv_impl not in CONV_IMPLS:
    raise ValueError(f"conv2d: conv_impl must be one of {', '.join(CONV_IMPLS)}, got "
                     f"{conv_impl!r}.")
  args = dict(stride=_pair(stride, "stride"), padding=padding,
              dilation=_pair(dilation, "dilation"), groups=int(g), precision=precision,
              impl=conv_impl)
  if structure is not None:
    return _CONV_T[path](x, w, jnp.asarray(structure, w.dtype), **args)
  return _CONV[path](x, w, alg, **args)


# "auto" on CPU: XLA's convolution for ungrouped KH×KW > 1, stride-1 convolutions with at most
# this many real input channels, im2col otherwise (see `_resolve_conv_impl`).
AUTO_XLA_MAX_CHANNELS = 64


def _resolve_conv_impl(impl, groups, kernel_shape, stride):
  """"xla" or "im2col" for a real conv with kernel [KH, KW, C/G, ...] and stride (h, w).

  "auto" on CPU, measured on 2 cores (forward+backward; 2026-12-03): im2col + one matmul for
  1×1 kernels (a plain matmul), strided kernels and wide layers, where XLA's CPU convolution's
  backward pass is slow (XLA for every conv made a ResNet-50 stage-3 step 1.7× slower); XLA's
  convolution for the narrow stride-1 KH×KW kernels (at most AUTO_XLA_MAX_CHANNELS real input
  channels: a ResNet-20's, or an M_n(R) model's folded ones), where the KH·KW patch copies cost
  more than XLA's slower backward: a whole ResNet-20 SGD step at equal MACs ran 1.31-1.41×
  faster than with im2col everywhere (r, M2(R), M4(R)).
  """
  if impl == "auto":
    if groups != 1 or jax.default_backend() != "cpu":
      return "xla"
    if (kernel_shape[0] * kernel_shape[1] > 1 and tuple(stride) == (1, 1)
        and kernel_shape[2] <= AUTO_XLA_MAX_CHANNELS):
      return "xla"
    return "im2col"
  return "im2col" if impl == "im2col" and groups == 1 else "xla"


def _real_conv(x, k, stride, padding, dilation, groups, precision, impl):
  # [N, H, W, C] * [KH, KW, C/G, O] -> [N, H', W', O]
  if _resolve_conv_impl(impl, groups, k.shape, stride) == "im2col":
    return _im2col_conv(x, k, stride, padding, dilation, precision)
  return jax.lax.conv_general_dilated(
      x, k, window_strides=stride, padding=padding, rhs_dilation=dilation,
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
      precision=precision)


def _same_padding(size, k, stride, dilation):
  out = -(-size // stride)
  total = max((out - 1) * stride + (k - 1) * dilation + 1 - size, 0)
  return total // 2, total - total // 2


def _im2col(x, kernel_hw, stride, padding, dilation):
  """[N, H, W, C] -> patches [N, H', W', KH·KW·C], ordered (tap, channel)."""
  n, h, w, c = x.shape
  kh, kw = kernel_hw
  (sh, sw), (dh, dw) = stride, dilation
  if padding == "VALID":
    ph = pw = (0, 0)
  elif padding == "SAME":
    ph, pw = _same_padding(h, kh, sh, dh), _same_padding(w, kw, sw, dw)
  else:
    ph, pw = padding
  xp = jnp.pad(x, ((0, 0), ph, pw, (0, 0)))
  ho = (h + sum(ph) - (kh - 1) * dh - 1) // sh + 1
  wo = (w + sum(pw) - (kw - 1) * dw - 1) // sw + 1
  taps = [xp[:, i * dh:i * dh + (ho - 1) * sh + 1:sh, j * dw:j * dw + (wo - 1) * sw + 1:sw]
          for i in range(kh) for j in range(kw)]                        # KH·KW × [N, H', W', C]
  return jnp.concatenate(taps, axis=-1) if len(taps) > 1 else taps[0]


def _im2col_conv(x, k, stride, padding, dilation, precision):
  """Convolution as KH·KW strided slices concatenated on channels, then one matmul.

  XLA's CPU convolution runs its backward pass far below matmul speed; this
  form differentiates into slices, pads and one matmul per operand, and on 2
  CPU cores trained 1.2-1.9x faster (forward+backward) across the layer sizes
  in BENCHMARKS.md, at the price of KH·KW copies of the activations. Those
  copies cost more than XLA's backward for narrow stride-1 layers, which
  "auto" gives to XLA (`_resolve_conv_impl`).
  """
  kh, kw, c, o = k.shape
  patches = _im2col(x, (kh, kw), stride, padding, dilation)           # [N, H', W', KH·KW·C]
  return matmul_2d(patches, k.reshape(kh * kw * c, o), precision)     # [N, H', W', O]


def _conv_reference(x, w, alg, stride, padding, dilation, groups, precision, impl, _t=None):
  del impl, precision  # the reference uses XLA's patch extraction and HIGHEST einsums only
  n, h, wd, cin, d = x.shape
  kh, kw, cg, cout, _ = w.shape
  # Patch features come out ordered (channel, kh, kw), channel-major.
  patches = jax.lax.conv_general_dilated_patches(
      x.reshape(n, h, wd, cin * d), (kh, kw), stride, padding, rhs_dilation=dilation,
      dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=_HIGHEST)
  ho, wo = patches.shape[1:3]
  patches = patches.reshape(n, ho, wo, groups, cg, d, kh, kw)      # [N, H', W', G, Cg, D, KH, KW]
  wg = w.reshape(kh, kw, cg, groups, cout // groups, d)            # [KH, KW, Cg, G, Og, D]
  z = jnp.einsum("nhwgibpq,pqigoa->nhwgoab", patches, wg, precision=_HIGHEST)
  t = _structure(alg, z.dtype) if _t is None else _t.astype(z.dtype)
  y = jnp.einsum("nhwgoab,abk->nhwgok", z, t, precision=_HIGHEST)
  return y.reshape(n, ho, wo, cout, d)


def _conv_expanded(x, w, alg, precision, **conv):
  n, h, wd, cin, d = x.shape
  y = _real_conv(x.reshape(n, h, wd, cin * d), _expand_weight(w, alg), precision=precision, **conv)
  return y.reshape(y.shape[:3] + (w.shape[3], d))  # [N, H', W', Cout, D]


def _conv_folded(x, w, alg, precision, **conv):
  _, base = alg.matrix_base
  xf = fold(x, alg)                                   # [N·Col, H, W, Cin·R, Db]
  yf = conv2d(xf, fold_weight(w, alg), base, stride=conv["stride"], padding=conv["padding"],
              dilation=conv["dilation"], feature_group_count=conv["groups"],
              precision=precision, conv_impl=conv["impl"])  # [N·Col, H', W', Cout·A, Db]
  return unfold(yf, alg)


def _conv_sparse(x, w, alg, precision, **conv):
  n, h, wd, cin, d = x.shape
  kh, kw, cg, cout, _ = w.shape
  ys = [None] * alg.dim
  groups = _sparse_groups(alg)
  if _resolve_conv_impl(conv["impl"], conv["groups"], w.shape[:3],
                        conv["stride"]) == "im2col":
    # One im2col per input component j and one matmul against the weights of
    # every product that reads it (N = |S_j|·Cout): no patch is copied twice
    # and the backward pass gets one patch gradient per component.
    t = alg.structure
    xt = jnp.moveaxis(x, -1, 0)                                          # [D, N, H, W, Cin]
    for j in range(d):
      reads = [(a, k, t[a, j, k]) for a, k in zip(*np.nonzero(t[:, j, :]))]
      if not reads:
        continue
      pj = _im2col(xt[j], (kh, kw), conv["stride"], conv["padding"], conv["dilation"])
      wj = jnp.concatenate([_signed_sum(w, [(a, c)]) for a, _, c in reads], axis=-1)
      yj = matmul_2d(pj, wj.reshape(kh * kw * cin, len(reads) * cout),
                     precision)                               # [N, H', W', |S_j|·Cout]
      for r, (_, k, _) in enumerate(reads):
        part = yj[..., r * cout:(r + 1) * cout]
        ys[k] = part if ys[k] is None else ys[k] + part
    return _stack_components(ys)
  for ks, a, b, coef in groups:
    for k, ak, bk, ck in zip(ks, a, b, coef):
      # Channel blocks are ordered (i, p) so each group's input channels stay contiguous.
      xk = jnp.stack([x[..., j] for j in bk], axis=-1).reshape(n, h, wd, -1)    # [N, H, W, Cin·P]
      # [KH, KW, Cg, P, Cout]
      wk = jnp.stack([_signed_sum(w, [(i, c)]) for i, c in zip(ak, ck)], axis=3)
      ys[k] = _real_conv(xk, wk.reshape(kh, kw, cg * len(ak), cout), precision=precision, **conv)
  return _stack_components(ys)


def _conv_gauss(x, w, alg, precision, **conv):
  xr, xi = x[..., 0], x[..., 1]
  wr, wi = w[..., 0], w[..., 1]
  k1 = _real_conv(xr, wr + wi, precision=precision, **conv)
  k2 = _real_conv(xi - xr, wr, precision=precision, **conv)
  k3 = _real_conv(xr + xi, wi, precision=precision, **conv)
  return jnp.stack([k1 - k3, k1 + k2], axis=-1)


def _conv_isomorphic(x, w, alg, precision, **conv):
  # Basis changes as separate einsums, then the target's conv (folded inside): measured faster
  # for convs than folding in the same einsum as for `dense` (whose fold is a plain transpose
  # of [L, C, D]; here the column axis moves past H and W), BENCHMARKS.md.
  p, p_inv, target = _iso(alg)
  y = conv2d(change_basis(x, p), change_basis(w, p), target, stride=conv["stride"],
             padding=conv["padding"], dilation=conv["dilation"],
             feature_group_count=conv["groups"], precision=precision,
             conv_impl=conv["impl"])                          # [N, H', W', Cout, D] in target
  return change_basis(y, p_inv)


def _conv_expanded_t(x, w, t, precision, **conv):
  n, h, wd, cin, d = x.shape
  y = _real_conv(x.reshape(n, h, wd, cin * d), expand_weight(w, t), precision=precision, **conv)
  return y.reshape(y.shape[:3] + (w.shape[3], d))             # [N, H', W', Cout, D]


def _conv_reference_t(x, w, t, precision, **conv):
  return _conv_reference(x, w, None, precision=precision, **conv, _t=t)


_CONV = {
    "reference": _conv_reference,
    "expanded": _conv_expanded,
    "folded": _conv_folded,
    "sparse": _conv_sparse,
    "gauss": _conv_gauss,
    "isomorphic": _conv_isomorphic,
}
_CONV_T = {"expanded": _conv_expanded_t, "reference": _conv_reference_t}


# ----------------------------------------------------------- folded layout
def _matrix_base(alg: Algebra):
  if alg.matrix_base is None:
    raise ValueError(f"folding needs a matrix algebra M_n(B); {alg.name!r} is not one.")
  return alg.matrix_base


def _swap_minor(x, rows, cols, db):
  """[B, rows·cols·Db] viewed as [B, rows, cols, Db] -> [B, cols, rows, Db].

  Written as one batched 2-D transpose (with Db carried along): XLA's CPU
  backend runs that several times faster than the equivalent moveaxis on the
  5-D view, most of all in the backward pass (measured: M4(R) dense
  forward+backward 3.4 ms -> 2.5 ms at width 1024).
  """
  b = x.shape[0]
  if db == 1:
    return jnp.swapaxes(x.reshape(b, rows, cols), 1, 2)
  return jnp.swapaxes(x.reshape(b, rows, cols, db), 1, 2)


def fold(x, algebra):
  """M_n(B) activations [B, ..., C, D] -> B-activations [B·n, ..., C·n, Db].

  Column c of every element goes to batch row b·n + c; row r of channel i to
  channel i·n + r. A network can stay in this layout between layers, calling
  the base-algebra ops with `fold_weight(w)`.
  """
  alg = algebras_lib.get(algebra)
  n, base = _matrix_base(alg)
  x = jnp.asarray(x)
  b, *mid, c, _ = x.shape
  rows = int(np.prod(mid, dtype=np.int64)) * c * n                 # (..., C, R) flattened
  xf = _swap_minor(x, rows, n, base.dim)                           # [B, Col, (..., C, R), Db]
  return xf.reshape(b * n, *mid, c * n, base.dim)


def unfold(xf, algebra):
  """Inverse of `fold`: [B·n, ..., C·n, Db] -> [B, ..., C, D]."""
  alg = algebras_lib.get(algebra)
  n, base = _matrix_base(alg)
  xf = jnp.asarray(xf)
  bn, *mid, cn, _ = xf.shape
  rows = int(np.prod(mid, dtype=np.int64)) * cn
  x = _swap_minor(xf.reshape(bn // n, -1), n, rows, base.dim)       # [B, (..., C, R), Col, Db]
  return x.reshape(bn // n, *mid, cn // n, alg.dim)


def fold_weight(w, algebra):
  """M_n(B) weights [..., Cin, Cout, D] -> B-weights [..., Cin·n, Cout·n, Db].

  Real block ((i, r), (o, a)) holds entry (a, r) of w_io, so the folded layer
  computes y_o[a, c] = Σ_{i, r} w_io[a, r] · x_i[r, c].
  """
  alg = algebras_lib.get(algebra)
  n, base = _matrix_base(alg)
  w = jnp.asarray(w)
  *lead, cin, cout, _ = w.shape
  wf = w.reshape(*lead, cin, cout, n, n, base.dim)     # [..., Cin, Cout, A, R, Db]
  wf = jnp.moveaxis(wf, -2, -4)                        # [..., Cin, R, Cout, A, Db]
  return wf.reshape(*lead, cin * n, cout * n, base.dim)
