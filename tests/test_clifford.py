"""Clifford algebras Cl(p, q, r): products against an independent implementation, isomorphisms.

The products are checked against `kingdon` (a geometric-algebra package written independently
of this one) for every signature with p + q + r <= 5. The isomorphisms with C, H, the dual
numbers, M2(R) and M2(C) are found here, by solving for the images of the generators in the
target algebra (least squares from random starts), not taken from the library; the library's
own basis changes (`Algebra.isomorphism`, used by the ops' isomorphic path) are checked against
the classification of Clifford algebras and against products computed in both bases.
"""

import itertools

import numpy as np
import pytest
import scipy.optimize

from algebranets import algebras

kingdon = pytest.importorskip("kingdon")

SIGNATURES = [(p, q, r) for p, q, r in itertools.product(range(6), repeat=3) if p + q + r <= 5]


def _name(p, q, r):
  return f"cl_{p}_{q}" if r == 0 else f"cl_{p}_{q}_{r}"


def _bitmap(label: str) -> int:
  """kingdon's key of a component label "1", "e1", "e12", ... (bit g-1 for generator g)."""
  return sum(1 << (int(g) - 1) for g in label[1:]) if label != "1" else 0


@pytest.mark.parametrize("p,q,r", SIGNATURES, ids=[_name(*s) for s in SIGNATURES])
def test_products_equal_kingdon(p, q, r):
  alg = algebras.get(_name(p, q, r))
  d = 2 ** (p + q + r)
  assert alg.dim == d and alg.name == _name(p, q, r)
  # Our generator order: p squaring to +1, then q to -1, then r to 0 (kingdon's default puts
  # the null vectors first, so the signature is given explicitly).
  ref = kingdon.Algebra(signature=np.array([1] * p + [-1] * q + [0] * r), start_index=1)
  keys = tuple(_bitmap(label) for label in alg.component_names)
  assert sorted(keys) == list(range(d))
  rng = np.random.default_rng(p * 100 + q * 10 + r)
  for _ in range(3):
    a, b = rng.normal(size=(2, d))
    z = ref.multivector(values=a, keys=keys) * ref.multivector(values=b, keys=keys)
    expected = dict(zip(z.keys(), z.values()))
    want = np.array([float(expected.get(k, 0.0)) for k in keys])
    got = np.einsum("i,j,ijk->k", a, b, alg.structure)                # float64, our T
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    got32 = np.asarray(alg.multiply(a.astype(np.float32), b.astype(np.float32)))
    np.testing.assert_allclose(got32, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def test_blade_order_and_names():
  alg = algebras.clifford(3, 0)
  assert alg.component_names == ("1", "e1", "e2", "e3", "e12", "e13", "e23", "e123")
  assert algebras.clifford_blades(3)[4:] == ((0, 1), (0, 2), (1, 2), (0, 1, 2))
  assert algebras.get("CL_2_0_0") is algebras.get("cl_2_0")
  assert algebras.get("cl_0_0_1").name == "cl_0_0_1"
  assert np.array_equal(algebras.get("cl_0_0_1").identity, [1.0, 0.0])
  # The r = 1 generator of Cl(1,0,1) is e2: e2² = 0, e1 e2 = e12 = -e2 e1.
  t = algebras.get("cl_1_0_1").structure
  assert not t[2, 2].any() and t[1, 2, 3] == 1 and t[2, 1, 3] == -1
  with pytest.raises(ValueError, match="at most 6 are supported"):
    algebras.get("cl_4_3")
  with pytest.raises(ValueError, match="non-negative int"):
    algebras.clifford(-1, 2)
  with pytest.raises(ValueError, match="families cl_P_Q"):
    algebras.get("cl_1")


# ----------------------------------------------------------------------------- isomorphisms
def _mul(t, a, b):
  return np.einsum("...i,...j,ijk->...k", a, b, t)


def _find_isomorphism(source, target, seed=0):
  """P [d, d] with a -> a @ P an isomorphism Cl(p,q,r) -> target, found by least squares.

  Unknowns: the images g_i (target elements) of the generators; equations: g_i g_j + g_j g_i
  = 2 η_ij 1 for i <= j (and |g_i| = 1 where η_i = 0). Blade images are products of generator
  images (in blade order).
  """
  d = source.dim
  n = int(np.log2(d))
  ts, tt = source.structure, target.structure
  gens = [source.component_names.index(f"e{i + 1}") for i in range(n)]
  eta = [ts[g, g, 0] for g in gens]                                    # e_i² = η_i · 1
  one = target.identity
  blades = algebras.clifford_blades(n)

  def residual(flat):
    g = flat.reshape(n, d)
    out = []
    for i in range(n):
      for j in range(i, n):
        anti = _mul(tt, g[i], g[j]) + _mul(tt, g[j], g[i])
        out.append(anti - (2 * eta[i] * one if i == j else 0))
      if eta[i] == 0:  # a nilpotent generator: fix its scale, or 0 would solve the equations
        out.append(np.array([g[i] @ g[i] - 1.0]))
    return np.concatenate(out)

  rng = np.random.default_rng(seed)
  for _ in range(20):
    sol = scipy.optimize.least_squares(residual, rng.normal(size=n * d), xtol=1e-15,
                                       ftol=1e-15, gtol=1e-15, method="lm")
    # A nilpotent generator (dual numbers) converges only linearly: its vanishing entries are
    # tiny, not 0, so also try the solution with them set to 0.
    for x in (sol.x, np.where(np.abs(sol.x) < 1e-4, 0.0, sol.x)):
      g = x.reshape(n, d)
      rows = []
      for blade in blades:
        v = one
        for i in blade:
          v = _mul(tt, v, g[i])
        rows.append(v)
      p = np.stack(rows)
      if np.max(np.abs(residual(x))) < 1e-10 and np.linalg.cond(p) < 1e6:
        return p
  raise AssertionError(f"no isomorphism {source.name} -> {target.name} found")


@pytest.mark.parametrize("source,target", [
    ("cl_0_1", "c"), ("cl_0_2", "h"), ("cl_1_1", "m2r"), ("cl_2_0", "m2r"),
    ("cl_0_0_1", "dual"), ("cl_3_0", "m2c")])
def test_isomorphisms_found_by_solving_for_generators(source, target):
  a, b = algebras.get(source), algebras.get(target)
  p = _find_isomorphism(a, b)
  # Structure constants: φ(e_i) φ(e_j) = φ(e_i e_j) exactly (float64) ...
  np.testing.assert_allclose(np.einsum("ia,jb,abc->ijc", p, p, b.structure),
                             np.einsum("ijk,kc->ijc", a.structure, p), atol=1e-9)
  # ... and products of random elements agree through φ to float32 rounding.
  rng = np.random.default_rng(1)
  x, y = rng.normal(size=(2, 64, a.dim)).astype(np.float32)
  lhs = np.asarray(a.multiply(x, y)) @ p                              # φ(x·y)
  rhs = np.asarray(b.multiply((x @ p).astype(np.float32), (y @ p).astype(np.float32)))
  scale = np.abs(rhs).max()
  np.testing.assert_allclose(lhs, rhs, atol=2e-6 * scale * a.dim)


# Cl(p, q) with p + q <= 5 that are matrix algebras M_n(B), n >= 2 (the classification).
MATRIX_CLIFFORD = {(2, 0): "m2r", (1, 1): "m2r", (3, 0): "m2c", (1, 2): "m2c", (4, 0): "m2h",
                   (1, 3): "m2h", (0, 4): "m2h", (3, 1): "m4r", (2, 2): "m4r", (4, 1): "m4c",
                   (2, 3): "m4c", (0, 5): "m4c"}


@pytest.mark.parametrize("p,q,r", SIGNATURES, ids=[_name(*s) for s in SIGNATURES])
def test_library_isomorphisms_follow_the_classification(p, q, r):
  alg = algebras.get(_name(p, q, r))
  expected = MATRIX_CLIFFORD.get((p, q)) if r == 0 else None
  if expected is None:
    assert alg.isomorphism is None
    return
  pmat, target = alg.isomorphism
  assert target.name == expected and target.matrix_base is not None
  rng = np.random.default_rng(0)
  x, y = rng.normal(size=(2, 8, alg.dim))
  np.testing.assert_allclose(_mul(alg.structure, x, y) @ pmat,
                             _mul(target.structure, x @ pmat, y @ pmat), atol=1e-10)
  assert alg.fast_mults_per_product == target.fast_mults_per_product < alg.mults_per_product


def test_a_wrong_isomorphism_is_refused():
  a = algebras.get("cl_1_1")
  with pytest.raises(ValueError, match="not a homomorphism"):
    algebras.with_isomorphism(a, np.eye(4), algebras.get("m2r"))
  with pytest.raises(ValueError, match="not invertible"):
    algebras.with_isomorphism(a, np.zeros((4, 4)), algebras.get("m2r"))
  p = _find_isomorphism(a, algebras.get("m2r"), seed=3)
  user = algebras.with_isomorphism(a, p, algebras.get("m2r"))
  assert user != a and user.isomorphism[1].name == "m2r"
