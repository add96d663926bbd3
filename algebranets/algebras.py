"""Finite-dimensional real algebras, defined by their structure tensor.

An algebra A of dimension d has a basis e_0 .. e_{d-1}; its product is fixed by
the structure tensor T of shape [d, d, d]:

    e_i · e_j = Σ_k T[i, j, k] e_k,    so    (a · b)_k = Σ_ij a_i b_j T[i, j, k].

An element of A is stored as a real array whose trailing axis holds its d
components. Everything else in this package (ops, layers, models) is written
against this one representation, so any algebra built here -- registered or
user-defined -- works everywhere.

Component conventions of the registered algebras (fixed; tests check each
against an independent computation):

  name    algebra                      d   shape      components
  r       real numbers                 1   ()         (1,)
  c       complex numbers              2   (2,)       (re, im)
  h       quaternions                  4   (4,)       (1, i, j, k), i² = j² = k² = ijk = -1
  m2r     2x2 real matrices            4   (2, 2)     entries row-major: (00, 01, 10, 11)
  m3r     3x3 real matrices            9   (3, 3)     entries row-major
  m4r     4x4 real matrices           16   (4, 4)     entries row-major
  m2c     2x2 complex matrices         8   (2, 2, 2)  entries row-major, each as (re, im)
  dual    dual numbers a + bε, ε² = 0  2   (2,)       (a, b)
  cross3  R³ with the cross product    3   (3,)       (x, y, z); NOT associative, no identity

`cross3` is the only registered algebra that is not associative: its products
cannot be re-bracketed (so e.g. a product of several weight layers is not a
single layer), and it has no identity element, so lifting a real number into
"the identity component" is not available for it.

Matrix algebras M_n(B) over a base algebra B carry `matrix_base = (n, B)`;
ops use it to compute their layers by folding matrix columns into the batch
(the paper's Appendix E) instead of expanding the structure tensor.

Families resolved by name (`get`), besides the registered names above:

  cl_P_Q, cl_P_Q_R   the Clifford algebra Cl(p, q, r) (`clifford`): p generators
                     squaring to +1, q to -1, r to 0; d = 2^(p+q+r), at most
                     MAX_CLIFFORD_GENERATORS generators. cl_0_1, cl_0_2 and
                     cl_0_0_1 have exactly the structure tensors of c, h and dual.
  learned:N, learned:NAME, ...[:network]
                     a learned structure tensor (`LearnedAlgebra`, `learned`):
                     T [d, d, d] is a parameter of every layer (or, with
                     ":network", one parameter shared by the whole network),
                     initialised at random (N = d) or from the algebra NAME.

They are built on first use and cached; `names()` lists only the registered
algebras, `FAMILIES` describes the families (both appear in the error of an
unknown name). No commas in these names: the config argument splits on them.

Isomorphisms (`Algebra.isomorphism = (P, B)`): a basis change P [d, d] with
φ(a) = a @ P an algebra isomorphism onto B (φ(a·b) = φ(a)·φ(b), checked on
construction). When B is a matrix algebra M_n(B') (n >= 2), ops compute a layer
in B on its folded path, changing basis at the layer boundary
(`ops.default_path` "isomorphic"), so e.g. Cl(1,1) costs what M2(R) costs.
`clifford` finds P for every Cl(p, q) that is a matrix algebra over R, C or H
(for p + q <= 5: Cl(2,0), Cl(1,1) -> M2(R); Cl(3,0), Cl(1,2) -> M2(C);
Cl(4,0), Cl(1,3), Cl(0,4) -> M2(H); Cl(3,1), Cl(2,2) -> M4(R); Cl(4,1),
Cl(2,3), Cl(0,5) -> M4(C)); `with_isomorphism` attaches a user's.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import re
from typing import Optional, Sequence, Union

import numpy as np
import jax.numpy as jnp

__all__ = [
    "Algebra", "LearnedAlgebra", "get", "register", "names", "matrix_algebra",
    "tensor_product", "clifford", "clifford_blades", "learned", "with_isomorphism",
    "FAMILIES", "SHARES", "MAX_CLIFFORD_GENERATORS",
    "REAL", "COMPLEX", "QUATERNION", "DUAL", "CROSS3",
]


@dataclasses.dataclass(frozen=True, eq=False)
class Algebra:
  """An algebra over R given by its structure tensor.

  Attributes:
    name: short name used in configs and the registry.
    structure: T, a float64 array [d, d, d]; `T[i, j, k]` is the coefficient of
      e_k in e_i · e_j. Stored read-only.
    shape: the shape of one element when viewed naturally, e.g. (2, 2) for
      M2(R); `prod(shape) == d`. Defaults to (d,) (and () for d = 1).
    component_names: one label per component, for logs and docs.
    matrix_base: `(n, B)` when this algebra is M_n(B) with components ordered
      (row, column, component of B); lets ops fold columns into the batch.
    fast_product_mults: real multiplies of the cheapest known product
      algorithm, if cheaper than the naive count (e.g. 3 for C with Gauss's
      trick). Reported by costs beside the naive count; never used for math.
    isomorphism: `(P, B)`: P [d, d] with a -> a @ P an isomorphism onto the
      algebra B (see the module docstring); checked on construction.
  """

  name: str
  structure: np.ndarray
  shape: tuple[int, ...] = ()
  component_names: tuple[str, ...] = ()
  matrix_base: Optional[tuple[int, "Algebra"]] = None
  fast_product_mults: Optional[int] = None
  isomorphism: Optional[tuple[np.ndarray, "Algebra"]] = None

  # __post_init__ normalises the fields once, while the object is being built (the way a frozen
  # dataclass converts its own arguments: object.__setattr__); no field changes afterwards.
  def __post_init__(self):
    t = np.array(self.structure, dtype=np.float64)
    if t.ndim != 3 or not (t.shape[0] == t.shape[1] == t.shape[2]) or t.shape[0] == 0:
      raise ValueError(
          f"Algebra {self.name!r}: the structure tensor must have shape [d, d, d] "
          f"with d >= 1, got shape {t.shape}.")
    if not np.all(np.isfinite(t)):
      raise ValueError(f"Algebra {self.name!r}: the structure tensor has non-finite entries.")
    d = t.shape[0]
    t.setflags(write=False)
    object.__setattr__(self, "structure", t)
    shape = tuple(int(s) for s in self.shape) if self.shape else ((d,) if d > 1 else ())
    if int(np.prod(shape, dtype=np.int64)) != d:
      raise ValueError(
          f"Algebra {self.name!r}: element shape {shape} does not hold d={d} components.")
    object.__setattr__(self, "shape", shape)
    labels = tuple(self.component_names) or tuple(f"e{i}" for i in range(d))
    if len(labels) != d:
      raise ValueError(f"Algebra {self.name!r}: {len(labels)} component names for d={d}.")
    object.__setattr__(self, "component_names", labels)
    if self.matrix_base is not None:
      n, base = self.matrix_base
      expected = _matrix_structure(n, base.structure)
      if expected.shape != t.shape or not np.array_equal(expected, t):
        raise ValueError(
            f"Algebra {self.name!r}: matrix_base=({n}, {base.name}) does not match its "
            "structure tensor (components must be ordered row, column, base component).")
    if self.isomorphism is not None:
      object.__setattr__(self, "isomorphism", _check_isomorphism(self.name, t, *self.isomorphism))

  # Identity and hashing follow the math (name + structure, and the basis
  # change the ops use), so two equal algebras built separately share jit
  # caches and compare equal.
  def _key(self):
    iso = None
    if self.isomorphism is not None:
      iso = (self.isomorphism[0].tobytes(), self.isomorphism[1]._key())
    return (type(self).__name__, self.name, self.structure.shape, self.structure.tobytes(), iso)

  @property
  def learned(self) -> bool:
    """Whether the structure tensor is a parameter (`LearnedAlgebra`)."""
    return False

  def __eq__(self, other):
    return isinstance(other, Algebra) and self._key() == other._key()

  def __hash__(self):
    return hash(self._key())

  def __repr__(self):
    return f"Algebra({self.name!r}, d={self.dim})"

  # ---------------------------------------------------------------- structure
  @property
  def dim(self) -> int:
    """d: real components per element."""
    return self.structure.shape[0]

  @functools.cached_property
  def is_associative(self) -> bool:
    """(e_i e_j) e_l == e_i (e_j e_l) for all basis triples, computed from T."""
    t = self.structure
    left = np.einsum("ijm,mlk->ijlk", t, t)   # (e_i e_j) e_l
    right = np.einsum("jlm,imk->ijlk", t, t)  # e_i (e_j e_l)
    return bool(np.allclose(left, right, atol=1e-12))

  @functools.cached_property
  def is_commutative(self) -> bool:
    """e_i e_j == e_j e_i for all basis pairs, computed from T."""
    return bool(np.allclose(self.structure, self.structure.transpose(1, 0, 2), atol=1e-12))

  @functools.cached_property
  def identity(self) -> Optional[np.ndarray]:
    """The two-sided unit element as a [d] array, or None if there is none.

    Solves Σ_i u_i T[i, j, k] = δ_jk and Σ_j u_j T[i, j, k] = δ_ik in the least
    squares sense and keeps the solution only if it is exact.
    """
    t, d = self.structure, self.dim
    eye = np.eye(d)
    a = np.concatenate([t.reshape(d, d * d).T, t.transpose(1, 0, 2).reshape(d, d * d).T])
    b = np.concatenate([eye.reshape(-1), eye.reshape(-1)])
    u, *_ = np.linalg.lstsq(a, b, rcond=None)
    if not np.allclose(a @ u, b, atol=1e-9):
      return None
    u = np.where(np.abs(u) < 1e-12, 0.0, u)
    u.setflags(write=False)
    return u

  @functools.cached_property
  def mults_per_product(self) -> int:
    """Real multiplies of the naive product: pairs (i, j) with e_i e_j != 0."""
    return _naive_mults(self.structure)

  @property
  def fast_mults_per_product(self) -> int:
    """Real multiplies of the cheapest known product (naive if none is known)."""
    return self.fast_product_mults or self.mults_per_product

  # ------------------------------------------------------------------- math
  def _t(self, dtype):
    return jnp.asarray(self.structure, dtype=dtype)

  def _check_last_axis(self, a, what):
    if a.shape[-1:] != (self.dim,):
      raise ValueError(
          f"{what} of algebra {self.name!r} must have its {self.dim} components on the "
          f"last axis; got shape {tuple(a.shape)}.")

  def multiply(self, a, b):
    """a · b over the trailing axis, broadcasting over the leading axes."""
    a, b = jnp.asarray(a), jnp.asarray(b)
    self._check_last_axis(a, "the left factor")
    self._check_last_axis(b, "the right factor")
    dtype = jnp.result_type(a, b)
    return jnp.einsum("...i,...j,ijk->...k", a, b, self._t(dtype))

  def left_matrix(self, a):
    """L(a) [..., d, d] with L(a) @ b == a · b: the left-regular representation."""
    a = jnp.asarray(a)
    self._check_last_axis(a, "the element")
    return jnp.einsum("...i,ijk->...kj", a, self._t(a.dtype))

  def right_matrix(self, b):
    """R(b) [..., d, d] with R(b) @ a == a · b."""
    b = jnp.asarray(b)
    self._check_last_axis(b, "the element")
    return jnp.einsum("...j,ijk->...ki", b, self._t(b.dtype))

  def norm(self, a, axis=-1, keepdims=False):
    """Euclidean norm over the d components."""
    a = jnp.asarray(a)
    return jnp.sqrt(jnp.sum(jnp.square(a), axis=axis, keepdims=keepdims))

  def one(self, dtype=jnp.float32):
    """The identity element as a [d] array; raises if the algebra has none."""
    if self.identity is None:
      raise ValueError(f"Algebra {self.name!r} has no identity element.")
    return jnp.asarray(self.identity, dtype=dtype)

  def to_matrix(self, a):
    """View elements [..., d] in their natural shape [..., *shape]."""
    a = jnp.asarray(a)
    self._check_last_axis(a, "the element")
    return a.reshape(a.shape[:-1] + self.shape)

  def from_matrix(self, m):
    """Inverse of `to_matrix`."""
    m = jnp.asarray(m)
    k = len(self.shape)
    if tuple(m.shape[m.ndim - k:]) != self.shape:
      raise ValueError(
          f"expected trailing shape {self.shape} for algebra {self.name!r}, got {m.shape}.")
    return m.reshape(m.shape[:m.ndim - k] + (self.dim,))


# ------------------------------------------------------------------ builders
def _naive_mults(t: np.ndarray) -> int:
  """Real multiplies of the naive product with structure tensor t: pairs (i, j), e_i e_j != 0."""
  return int(np.count_nonzero(np.any(t != 0, axis=2)))


def _matrix_structure(n: int, base: np.ndarray) -> np.ndarray:
  """T [d, d, d] of M_n(B) from B's structure tensor [b, b, b] (d = n²·b), components ordered
  (row, column, component of B): M_n(R) ⊗ B."""
  t_mat = np.zeros((n * n,) * 3)
  for a, b, c in itertools.product(range(n), repeat=3):
    t_mat[a * n + b, b * n + c, a * n + c] = 1.0  # e_ab e_bc = e_ac
  return np.einsum("ijk,pqr->ipjqkr", t_mat, base).reshape((n * n * base.shape[0],) * 3)


def _structure_from_basis(mats: Sequence[np.ndarray]) -> np.ndarray:
  """T of the algebra spanned by (linearly independent, closed) real matrices."""
  basis = np.stack([np.asarray(m, np.float64).reshape(-1) for m in mats], axis=1)
  d = basis.shape[1]
  t = np.zeros((d, d, d))
  for i, j in itertools.product(range(d), repeat=2):
    prod = (np.asarray(mats[i]) @ np.asarray(mats[j])).reshape(-1)
    coef, *_ = np.linalg.lstsq(basis, prod, rcond=None)
    if not np.allclose(basis @ coef, prod, atol=1e-9):
      raise ValueError("the given matrices do not span a closed algebra.")
    t[i, j] = np.where(np.abs(coef) < 1e-12, 0.0, coef)
  return t


def tensor_product(a: Algebra, b: Algebra, name: Optional[str] = None) -> Algebra:
  """A ⊗ B with components ordered (component of A, component of B).

  (x ⊗ y)(x' ⊗ y') = (x x') ⊗ (y y'), so T[(i,p),(j,q),(k,r)] = T_A[i,j,k] T_B[p,q,r].
  """
  t = np.einsum("ijk,pqr->ipjqkr", a.structure, b.structure).reshape((a.dim * b.dim,) * 3)
  labels = tuple(f"{x}{y}" if y not in ("1", "re") else x for x in a.component_names
                 for y in b.component_names)
  return Algebra(name or f"{a.name}x{b.name}", t, shape=a.shape + b.shape, component_names=labels)


def matrix_algebra(n: int, base: Optional[Algebra] = None, name: Optional[str] = None) -> Algebra:
  """M_n(B): n×n matrices with entries in B (default R), entries row-major.

  Components are ordered (row, column, component of B); e.g. M2(C) has
  components (00re, 00im, 01re, 01im, 10re, 10im, 11re, 11im).
  """
  if not isinstance(n, (int, np.integer)) or n < 1:
    raise ValueError(f"matrix size must be a positive integer, got {n!r}.")
  base = REAL if base is None else base
  t = _matrix_structure(n, base.structure)
  labels = tuple(f"{r}{c}{s if base.dim > 1 else ''}" for r in range(n) for c in range(n)
                 for s in base.component_names)
  fast = n ** 3 * base.fast_product_mults if base.fast_product_mults else None
  return Algebra(name or f"m{n}{base.name}", t, shape=(n, n) + base.shape,
                 component_names=labels, matrix_base=(n, base), fast_product_mults=fast)


def _check_isomorphism(name: str, t: np.ndarray, p, target: "Algebra"):
  """(P read-only float64, target) after checking that a -> a @ P is an isomorphism onto target."""
  if not isinstance(target, Algebra):
    raise ValueError(f"Algebra {name!r}: the isomorphism's target must be an Algebra, got "
                     f"{type(target).__name__}.")
  if target.learned:
    raise ValueError(f"Algebra {name!r}: the isomorphism's target cannot be a learned algebra.")
  p = np.array(p, dtype=np.float64)
  d = t.shape[0]
  if p.shape != (d, target.dim):
    raise ValueError(f"Algebra {name!r}: the basis change onto {target.name!r} must have shape "
                     f"[{d}, {d}] (and the target d = {d}); got {p.shape} onto d = {target.dim}.")
  if not np.all(np.isfinite(p)) or np.linalg.matrix_rank(p) < d:
    raise ValueError(f"Algebra {name!r}: the basis change onto {target.name!r} is not invertible.")
  # φ(e_i) φ(e_j) == φ(e_i e_j):  Σ_ab P[i,a] P[j,b] T_B[a,b,c] == Σ_k T[i,j,k] P[k,c].
  lhs = np.einsum("ia,jb,abc->ijc", p, p, target.structure, optimize=True)
  rhs = np.einsum("ijk,kc->ijc", t, p, optimize=True)
  scale = max(1.0, float(np.max(np.abs(rhs))))
  if not np.allclose(lhs, rhs, rtol=0, atol=1e-9 * scale):
    err = float(np.max(np.abs(lhs - rhs)))
    raise ValueError(f"Algebra {name!r}: a -> a @ P is not a homomorphism onto {target.name!r} "
                     f"(products differ by up to {err:.3g}).")
  p.setflags(write=False)
  return p, target


def with_isomorphism(algebra: "Algebra", basis_change, target: "Algebra") -> "Algebra":
  """A copy of `algebra` whose ops compute in `target` through a -> a @ basis_change.

  basis_change: [d, d]; row i is the image of basis element e_i in target's components.
  ValueError unless it is an isomorphism (`Algebra.isomorphism`).
  """
  return dataclasses.replace(algebra, isomorphism=(basis_change, target))


# ------------------------------------------------------------------ Clifford
MAX_CLIFFORD_GENERATORS = 6


def clifford_blades(n: int) -> tuple[tuple[int, ...], ...]:
  """The canonical blade order of a Clifford algebra with n generators.

  Blades are tuples of generator indices (0-based, increasing), ordered by
  grade and then lexicographically: (), (0,), (1,), ..., (0, 1), (0, 2), ...,
  (0, 1, ..., n-1). Blade (i, j, ...) is the product e_(i+1) e_(j+1) ... of
  generators in increasing order; its component is named "e" + the 1-based
  indices ("1" for the scalar), e.g. e1, e2, e12, e123.
  """
  return tuple(c for k in range(n + 1) for c in itertools.combinations(range(n), k))


def _blade_product(a: tuple, b: tuple, signature: Sequence[int]) -> tuple[int, tuple]:
  """(sign, blade) with e_a e_b = sign · e_blade for blades a, b (increasing index tuples)."""
  # Moving each generator of b left past the larger generators of a flips the sign once
  # per pair; then equal generators meet and square to their signature.
  swaps = sum(1 for x in a for y in b if x > y)
  sign = -1 if swaps % 2 else 1
  for g in set(a) & set(b):
    sign *= signature[g]
  return sign, tuple(sorted(set(a) ^ set(b)))


def _check_counts(p, q, r):
  for what, v in (("p", p), ("q", q), ("r", r)):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
      raise ValueError(f"clifford: {what} must be a non-negative int, got {v!r}.")
  n = int(p) + int(q) + int(r)
  if n > MAX_CLIFFORD_GENERATORS:
    raise ValueError(f"clifford: Cl({p},{q},{r}) has {n} generators (d = 2^{n}); at most "
                     f"{MAX_CLIFFORD_GENERATORS} are supported (d = "
                     f"{2 ** MAX_CLIFFORD_GENERATORS}).")
  return int(p), int(q), int(r)


def clifford(p: int, q: int, r: int = 0, name: Optional[str] = None) -> Algebra:
  """Cl(p, q, r): the Clifford (geometric) algebra of signature (p, q, r).

  Generators e1..ep square to +1, e(p+1)..e(p+q) to -1, e(p+q+1)..e(p+q+r)
  to 0, and distinct generators anticommute. The d = 2^(p+q+r) components are
  the blades in `clifford_blades` order (scalar, vectors, bivectors, ...; e.g.
  Cl(3,0): 1, e1, e2, e3, e12, e13, e23, e123). Default name cl_P_Q (r = 0) or
  cl_P_Q_R, the name `get` resolves. If Cl(p, q) is a matrix algebra M_n(B)
  with n >= 2 over B = R, C or H, the isomorphism onto it is attached (see
  the module docstring), found constructively (`_clifford_matrix_images`),
  and the target's product count is the fast one (`fast_product_mults`).
  """
  p, q, r = _check_counts(p, q, r)
  return _clifford(p, q, r, name)


@functools.lru_cache(maxsize=None)
def _clifford(p: int, q: int, r: int, name: Optional[str]) -> Algebra:
  n = p + q + r
  signature = [1] * p + [-1] * q + [0] * r
  blades = clifford_blades(n)
  index = {b: i for i, b in enumerate(blades)}
  d = len(blades)
  t = np.zeros((d, d, d))
  for i, a in enumerate(blades):
    for j, b in enumerate(blades):
      sign, c = _blade_product(a, b, signature)
      if sign:
        t[i, j, index[c]] = sign
  labels = tuple("e" + "".join(str(g + 1) for g in b) if b else "1" for b in blades)
  name = name or (f"cl_{p}_{q}" if r == 0 else f"cl_{p}_{q}_{r}")
  iso = None
  images = _clifford_matrix_images(p, q) if r == 0 else None
  if images is not None and images[0] >= 2:
    size, base, gens = images
    target = _matrix_target(size, base)
    tt = target.structure
    one = np.einsum("ij,d->ijd", np.eye(size), base.identity).reshape(-1)
    rows = []
    for b in blades:
      v = one
      for g in b:
        v = np.einsum("i,j,ijk->k", v, gens[g].reshape(-1), tt)
      rows.append(v)
    iso = (np.where(np.abs(np.stack(rows)) < 1e-12, 0.0, np.stack(rows)), target)
  # Through the isomorphism a product costs what the target's does (8 for M2(R), not the
  # 16 of the dense Clifford tensor): reported by costs as the fast count.
  fast = iso[1].fast_mults_per_product if iso is not None else None
  if fast is not None and fast >= _naive_mults(t):
    fast = None
  return Algebra(name, t, component_names=labels, isomorphism=iso, fast_product_mults=fast)


def _matrix_target(n: int, base: Algebra) -> Algebra:
  """M_n(base): the registered algebra if there is one (m2r, m4r, m2c), else a new one."""
  for alg in _REGISTRY.values():
    if alg.matrix_base is not None and alg.matrix_base[0] == n and alg.matrix_base[1] == base:
      return alg
  return matrix_algebra(n, base)


# Generator images as matrices over B, arrays [n, n, D_B] in M_n(B)'s component order.
_SX = np.array([[0.0, 1.0], [1.0, 0.0]])
_SZ = np.array([[1.0, 0.0], [0.0, -1.0]])
_EPS = np.array([[0.0, 1.0], [-1.0, 0.0]])           # squares to -1, anticommutes with SX, SZ


def _over(m, b):
  """Real matrix m [n, n] times the base element b [D_B]: [n, n, D_B]."""
  return np.einsum("ij,d->ijd", np.asarray(m, np.float64), np.asarray(b, np.float64))


def _complex(m):
  """Complex matrix [n, n] -> [n, n, 2] (re, im)."""
  m = np.asarray(m, np.complex128)
  return np.stack([m.real, m.imag], axis=-1)


def _kron2(x, s):
  """X [m, m, D_B] ⊗ real S [2, 2] -> [2m, 2m, D_B] (S outer): a real S commutes with B."""
  m, _, db = x.shape
  return np.einsum("ab,ijd->aibjd", s, x).reshape(2 * m, 2 * m, db)


def _clifford_matrix_images(p: int, q: int):
  """(n, B, generator images [n, n, D_B]) of Cl(p, q) ≅ M_n(B), or None if it is not simple.

  Cl(p, q) ≅ M_2(Cl(p-1, q-1)) with generators γ_i ⊗ σx, 1 ⊗ σz (+1) and 1 ⊗ ε (-1),
  down to Cl(k, 0) or Cl(0, k), whose images are written out below (k <= 5).
  """
  if p >= 1 and q >= 1:
    inner = _clifford_matrix_images(p - 1, q - 1)
    if inner is None:
      return None
    m, base, gens = inner
    one = _over(np.eye(m), base.identity)
    pos = [_kron2(g, _SX) for g in gens[:p - 1]] + [_kron2(one, _SZ)]
    neg = [_kron2(g, _SX) for g in gens[p - 1:]] + [_kron2(one, _EPS)]
    return 2 * m, base, pos + neg
  h = np.eye(4)                                          # quaternion units 1, i, j, k
  sy = np.array([[0, -1j], [1j, 0]])
  qi, qj = np.diag([1j, -1j]), np.array([[0, 1], [-1, 0]], np.complex128)
  qk = qi @ qj                                           # H as 2x2 complex matrices
  table = {
      (0, 0): (1, REAL, []),
      (0, 1): (1, COMPLEX, [_complex([[1j]])]),
      (0, 2): (1, QUATERNION, [_over([[1]], h[1]), _over([[1]], h[2])]),
      (2, 0): (2, REAL, [_over(_SZ, [1]), _over(_SX, [1])]),
      (3, 0): (2, COMPLEX, [_complex(_SX), _complex(sy), _complex(_SZ)]),
      (4, 0): (2, QUATERNION, [_over(_SX, h[0]), _over(_SZ, h[0]), _over(_EPS, h[1]),
                               _over(_EPS, h[2])]),
      (0, 4): (2, QUATERNION, [_over(np.eye(2), h[1]), _over(np.eye(2), h[2]),
                               _over(_SZ, h[3]), _over(_SX, h[3])]),
      (0, 5): (4, COMPLEX, [_complex(np.kron(qi, np.eye(2))), _complex(np.kron(qj, np.eye(2))),
                            _complex(np.kron(qk, _SX)), _complex(np.kron(qk, sy)),
                            _complex(np.kron(qk, _SZ))]),
  }
  return table.get((p, q))


# ------------------------------------------------------------------ learned
SHARES = ("layer", "network")


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class LearnedAlgebra(Algebra):
  """An algebra whose structure tensor T [d, d, d] is a parameter of the network.

  The layers (`nn.Linear`, `nn.Conv2D`) read T from their parameters
  ("structure", or the network's module "learned_algebra" with share
  "network") and pass it to the ops (`ops.dense(..., structure=T)`); the
  `structure` attribute here is only T's initial value: the tensor of
  `init` (an algebra name), or zeros for init "random" (then T starts as
  N(0, 1/d) per entry, drawn from the network's rng: `nn.learned`). The math
  methods (`multiply`, ...) raise: the tensor they would need is a parameter.

  What is known without the parameter: d; that a product costs d² real
  multiplies (T is dense once trained; the expanded form); the initial
  algebra's identity (used only to lift real inputs as v·1); and none of
  associativity, commutativity or an isomorphism.

  Attributes (besides Algebra's):
    init: "random" or the name of the algebra T starts from.
    share: one of SHARES: "layer" (every weight layer its own T) or
      "network" (one T for the whole network).
  """

  init: str = "random"
  share: str = "layer"

  def __post_init__(self):
    super().__post_init__()
    if self.share not in SHARES:
      raise ValueError(f"LearnedAlgebra {self.name!r}: share must be one of {SHARES}, got "
                       f"{self.share!r}.")
    if self.isomorphism is not None or self.matrix_base is not None:
      raise ValueError(f"LearnedAlgebra {self.name!r}: a learned structure has no fixed "
                       "isomorphism or matrix form.")

  def _key(self):
    return super()._key() + (self.init, self.share)

  @property
  def learned(self) -> bool:
    return True

  @functools.cached_property
  def is_associative(self) -> bool:
    """Not known for a learned tensor: False."""
    return False

  @functools.cached_property
  def is_commutative(self) -> bool:
    """Not known for a learned tensor: False."""
    return False

  @functools.cached_property
  def identity(self) -> Optional[np.ndarray]:
    """The initial algebra's identity (None for a random start)."""
    return None if self.init == "random" else get(self.init).identity

  @functools.cached_property
  def mults_per_product(self) -> int:
    """d²: a learned T is dense (the layers use the expanded form)."""
    return self.dim ** 2

  @property
  def gain(self) -> float:
    """Expected Σ_abk T[a, b, k]² / d of the initial T (nn.initializers.product_gain)."""
    if self.init == "random":
      return float(self.dim)  # d³ entries of variance 1/d, divided by d
    return float(np.sum(np.square(self.structure)) / self.dim)

  def _t(self, dtype):
    raise ValueError(f"algebra {self.name!r} is learned: its structure tensor is a network "
                     "parameter; compute with ops.dense/conv2d(..., structure=T) or the nn "
                     "layers, which read it.")


def learned(init: Union[int, str, Algebra] = 4, share: str = "layer",
            name: Optional[str] = None) -> LearnedAlgebra:
  """A learned algebra (`LearnedAlgebra`), named like `get` resolves it.

  Args:
    init: d (an int: T starts at random) or the algebra T starts from (a name
      or an Algebra; its structure is copied, d is its dimension).
    share: "layer" or "network" (SHARES).
    name: default "learned:<d or algebra name>" (+ ":network").
  """
  if share not in SHARES:
    raise ValueError(f"learned: share must be one of {SHARES}, got {share!r}.")
  if isinstance(init, (int, np.integer)) and not isinstance(init, bool):
    d = int(init)
    if not 1 <= d <= 64:
      raise ValueError(f"learned: d must be in [1, 64], got {d}.")
    tag, structure, shape, labels = str(d), np.zeros((d, d, d)), (), ()
  else:
    base = get(init)
    if base.learned:
      raise ValueError(f"learned: cannot start from the learned algebra {base.name!r}.")
    tag, structure, shape, labels = base.name, base.structure, base.shape, base.component_names
  suffix = ":network" if share == "network" else ""
  return LearnedAlgebra(name or f"learned:{tag}{suffix}", structure, shape=shape,
                        component_names=labels, init="random" if tag.isdigit() else tag,
                        share=share)


# ------------------------------------------------------------------ registry
REAL = Algebra("r", np.ones((1, 1, 1)), shape=(), component_names=("1",))

COMPLEX = Algebra(
    "c", _structure_from_basis([np.eye(2), np.array([[0.0, -1.0], [1.0, 0.0]])]),
    shape=(), component_names=("re", "im"),
    fast_product_mults=3)  # Gauss: 3 real multiplies per complex product.

# Hamilton product, written out from the multiplication table
# i j = k, j k = i, k i = j, i² = j² = k² = -1.
_H = np.zeros((4, 4, 4))
_H_TABLE = {  # (i, j): (sign, k) for e_i e_j = sign e_k, with e0 = 1, e1 = i, e2 = j, e3 = k
    (1, 1): (-1, 0), (2, 2): (-1, 0), (3, 3): (-1, 0),
    (1, 2): (1, 3), (2, 1): (-1, 3),
    (2, 3): (1, 1), (3, 2): (-1, 1),
    (3, 1): (1, 2), (1, 3): (-1, 2),
}
for _i in range(4):
  _H[0, _i, _i] = _H[_i, 0, _i] = 1.0
for (_i, _j), (_s, _k) in _H_TABLE.items():
  _H[_i, _j, _k] = _s
QUATERNION = Algebra("h", _H, shape=(), component_names=("1", "i", "j", "k"))

_DUAL = np.zeros((2, 2, 2))
_DUAL[0, 0, 0] = _DUAL[0, 1, 1] = _DUAL[1, 0, 1] = 1.0  # ε² = 0
DUAL = Algebra("dual", _DUAL, shape=(), component_names=("a", "eps"))

_CROSS = np.zeros((3, 3, 3))
for _i, _j, _k in itertools.permutations(range(3)):
  _CROSS[_i, _j, _k] = np.linalg.det(np.eye(3)[[_i, _j, _k]])  # Levi-Civita ε_ijk
CROSS3 = Algebra("cross3", _CROSS, shape=(3,), component_names=("x", "y", "z"))

_REGISTRY: dict[str, Algebra] = {}


def register(algebra: Algebra, overwrite: bool = False) -> Algebra:
  """Adds a user-defined algebra to the registry so configs can name it."""
  if not isinstance(algebra, Algebra):
    raise TypeError(f"register() takes an Algebra, got {type(algebra).__name__}.")
  key = algebra.name.lower()
  if key in _REGISTRY and not overwrite and _REGISTRY[key] != algebra:
    raise ValueError(f"an algebra named {algebra.name!r} is already registered; "
                     "pass overwrite=True to replace it.")
  _REGISTRY[key] = algebra
  return algebra


for _alg in (REAL, COMPLEX, QUATERNION,
             matrix_algebra(2, name="m2r"), matrix_algebra(3, name="m3r"),
             matrix_algebra(4, name="m4r"), matrix_algebra(2, COMPLEX, name="m2c"),
             DUAL, CROSS3):
  register(_alg)


def names() -> tuple[str, ...]:
  """Names of all registered algebras, in registration order (not the FAMILIES)."""
  return tuple(_REGISTRY)


# Algebras resolved by name pattern (module docstring): pattern -> what it is.
FAMILIES = {
    "cl_P_Q, cl_P_Q_R": "Clifford algebra Cl(p,q,r), p+q+r <= %d (e.g. cl_1_1, cl_0_0_1)"
                        % MAX_CLIFFORD_GENERATORS,
    "learned:N, learned:NAME, learned:...:network": "a learned structure tensor of N "
                                                    "components, or starting from NAME",
}
_CLIFFORD_NAME = re.compile(r"cl_(\d+)_(\d+)(?:_(\d+))?")


def _family(key: str) -> Optional[Algebra]:
  """The algebra of a family name (lower case), None if it is not one; ValueError if malformed."""
  m = _CLIFFORD_NAME.fullmatch(key)
  if m:
    p, q, r = (int(g) if g else 0 for g in m.groups())
    return clifford(p, q, r)
  if key.startswith("learned:"):
    parts = key.split(":")[1:]
    if len(parts) not in (1, 2) or not parts[0] or (len(parts) == 2 and parts[1] not in SHARES):
      raise ValueError(f"Malformed learned algebra {key!r}: expected learned:N or learned:NAME "
                       f"(N components, or starting from the algebra NAME), optionally "
                       f"followed by :layer or :network (e.g. learned:4, learned:h:network).")
    init = int(parts[0]) if parts[0].isdigit() else parts[0]
    return _learned(init, parts[1] if len(parts) == 2 else "layer")
  return None


@functools.lru_cache(maxsize=None)
def _learned(init, share):
  return learned(init, share)


def get(name) -> Algebra:
  """Looks up an algebra by name (case-insensitive); an Algebra passes through.

  Registered names first, then the FAMILIES (built once, then cached).
  """
  if isinstance(name, Algebra):
    return name
  if isinstance(name, str):
    key = name.strip().lower()
    if key in _REGISTRY:
      return _REGISTRY[key]
    alg = _family(key)
    if alg is not None:
      return alg
  families = "; ".join(f"{k} ({v})" for k, v in FAMILIES.items())
  raise ValueError(f"Unknown algebra {name!r}. Valid names: {', '.join(names())}; the "
                   f"families {families}; or build one with "
                   "algebranets.algebras.Algebra(name, structure) and register() it.")
