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
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Iterable, Optional, Sequence

import numpy as np
import jax.numpy as jnp

__all__ = [
    "Algebra", "get", "register", "names", "matrix_algebra", "tensor_product",
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
  """

  name: str
  structure: np.ndarray
  shape: tuple[int, ...] = ()
  component_names: tuple[str, ...] = ()
  matrix_base: Optional[tuple[int, "Algebra"]] = None
  fast_product_mults: Optional[int] = None

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
      raise ValueError(f"Algebra {self.name!r}: element shape {shape} does not hold d={d} components.")
    object.__setattr__(self, "shape", shape)
    labels = tuple(self.component_names) or tuple(f"e{i}" for i in range(d))
    if len(labels) != d:
      raise ValueError(f"Algebra {self.name!r}: {len(labels)} component names for d={d}.")
    object.__setattr__(self, "component_names", labels)
    if self.matrix_base is not None:
      n, base = self.matrix_base
      expected = matrix_algebra(n, base, name="_check").structure
      if expected.shape != t.shape or not np.array_equal(expected, t):
        raise ValueError(
            f"Algebra {self.name!r}: matrix_base=({n}, {base.name}) does not match its "
            "structure tensor (components must be ordered row, column, base component).")

  # Identity and hashing follow the math (name + structure), so two equal
  # algebras built separately share jit caches and compare equal.
  def _key(self):
    return (self.name, self.structure.shape, self.structure.tobytes())

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
    return int(np.count_nonzero(np.any(self.structure != 0, axis=2)))

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
      raise ValueError(f"expected trailing shape {self.shape} for algebra {self.name!r}, got {m.shape}.")
    return m.reshape(m.shape[:m.ndim - k] + (self.dim,))


# ------------------------------------------------------------------ builders
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
  t_mat = np.zeros((n * n,) * 3)
  for a, b, c in itertools.product(range(n), repeat=3):
    t_mat[a * n + b, b * n + c, a * n + c] = 1.0  # e_ab e_bc = e_ac
  t = np.einsum("ijk,pqr->ipjqkr", t_mat, base.structure).reshape((n * n * base.dim,) * 3)
  labels = tuple(f"{r}{c}{s if base.dim > 1 else ''}" for r in range(n) for c in range(n)
                 for s in base.component_names)
  fast = None
  if base.fast_product_mults:
    fast = n ** 3 * base.fast_product_mults
  # matrix_base is attached after construction checks (avoids recursion).
  alg = Algebra(name or f"m{n}{base.name}", t, shape=(n, n) + base.shape,
                component_names=labels, fast_product_mults=fast)
  if name == "_check":
    return alg
  object.__setattr__(alg, "matrix_base", (n, base))
  return alg


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
  """Names of all registered algebras, in registration order."""
  return tuple(_REGISTRY)


def get(name) -> Algebra:
  """Looks up an algebra by name (case-insensitive); an Algebra passes through."""
  if isinstance(name, Algebra):
    return name
  if not isinstance(name, str) or name.lower() not in _REGISTRY:
    raise ValueError(f"Unknown algebra {name!r}. Valid names: {', '.join(names())}; "
                     "or build one with algebranets.algebras.Algebra(name, structure) "
                     "and register() it.")
  return _REGISTRY[name.lower()]


def resolve_all(items: Iterable) -> tuple[Algebra, ...]:
  return tuple(get(x) for x in items)
