"""Algebras: conventions against independent products, axioms computed from T, registry."""

import numpy as np
import pytest
import jax.numpy as jnp

from algebranets import algebras
from tests import naive

NAMES = ["r", "c", "h", "m2r", "m3r", "m4r", "m2c", "dual", "cross3"]
rng = np.random.default_rng(0)


def rand(alg, *lead):
  return rng.normal(size=lead + (alg.dim,))


def close(a, b, tol=1e-5):
  np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def test_registry_has_every_paper_algebra():
  assert set(NAMES) <= set(algebras.names())
  assert algebras.get("M2R") is algebras.get("m2r")  # case-insensitive
  alg = algebras.get("h")
  assert algebras.get(alg) is alg


def test_unknown_name_lists_valid_names():
  with pytest.raises(ValueError) as e:
    algebras.get("octonion")
  for name in NAMES:
    assert name in str(e.value)
  assert "octonion" in str(e.value)


@pytest.mark.parametrize("name", NAMES)
def test_multiply_matches_independent_product(name):
  alg = algebras.get(name)
  a, b = rand(alg, 7, 3), rand(alg, 3)  # broadcasting over leading axes
  close(alg.multiply(a.astype(np.float32), b.astype(np.float32)), naive.PRODUCTS[name](a, b))


def test_quaternion_units():
  h = algebras.get("h")
  one, i, j, k = np.eye(4)
  close(h.multiply(i, i), -one)
  close(h.multiply(j, j), -one)
  close(h.multiply(k, k), -one)
  close(h.multiply(h.multiply(i, j), k), -one)  # ijk = -1
  close(h.multiply(i, j), k)
  close(h.multiply(j, i), -k)


def test_complex_against_python_complex():
  c = algebras.get("c")
  z, w = 1.5 - 2j, -0.25 + 3j
  got = c.multiply(np.array([z.real, z.imag]), np.array([w.real, w.imag]))
  assert complex(*np.asarray(got, np.float64)) == pytest.approx(z * w)


def test_dual_epsilon_squares_to_zero():
  dual = algebras.get("dual")
  close(dual.multiply([0.0, 1.0], [0.0, 1.0]), [0.0, 0.0])
  # (a + bε)(c + dε) = ac + (ad + bc)ε
  close(dual.multiply([2.0, 3.0], [5.0, 7.0]), [10.0, 2 * 7 + 3 * 5])


def test_m2c_layout_is_row_major_entries_then_re_im():
  m2c = algebras.get("m2c")
  a = np.array([[1 + 2j, 3 - 1j], [0.5j, -2.0]])
  b = np.array([[2 - 1j, 1j], [4.0, 1 + 1j]])
  flat = lambda m: np.stack([m.real, m.imag], -1).reshape(-1)
  close(m2c.multiply(flat(a), flat(b)), flat(a @ b))


@pytest.mark.parametrize("name", NAMES)
def test_properties_computed_from_structure(name):
  alg = algebras.get(name)
  assert alg.is_associative == (name != "cross3")
  assert alg.is_commutative == (name in ("r", "c", "dual"))
  # The paper's table of real multiplies per naive product.
  table = {"r": 1, "c": 4, "h": 16, "m2r": 8, "m3r": 27, "m4r": 64, "m2c": 32, "dual": 3,
           "cross3": 6}
  assert alg.mults_per_product == table[name]
  assert alg.fast_mults_per_product == {"c": 3, "m2c": 24}.get(name, table[name])
  dims = {"r": 1, "c": 2, "h": 4, "m2r": 4, "m3r": 9, "m4r": 16, "m2c": 8, "dual": 2, "cross3": 3}
  assert alg.dim == dims[name] and int(np.prod(alg.shape)) == alg.dim


@pytest.mark.parametrize("name", NAMES)
def test_axioms(name):
  alg = algebras.get(name)
  a, b, c = (rand(alg, 5) for _ in range(3))
  m = lambda u, v: np.asarray(alg.multiply(u, v), np.float64)
  # Distributivity on both sides and scalar bilinearity.
  close(m(a, b + c), m(a, b) + m(a, c))
  close(m(a + b, c), m(a, c) + m(b, c))
  close(m(2.5 * a, b), 2.5 * m(a, b))
  if alg.is_associative:
    close(m(m(a, b), c), m(a, m(b, c)), 1e-4)
    # L(ab) = L(a) L(b): the left-regular representation is a homomorphism.
    close(alg.left_matrix(m(a, b)),
          np.asarray(alg.left_matrix(a)) @ np.asarray(alg.left_matrix(b)), 1e-4)
  else:
    assert np.abs(m(m(a, b), c) - m(a, m(b, c))).max() > 1e-3
  if name == "cross3":
    assert alg.identity is None
    # The cross product satisfies the Jacobi identity instead.
    close(m(a, m(b, c)) + m(b, m(c, a)) + m(c, m(a, b)), 0 * a, 1e-4)
    with pytest.raises(ValueError, match="no identity"):
      alg.one()
  else:
    one = alg.identity
    close(m(one, a), a)
    close(m(a, one), a)


@pytest.mark.parametrize("name", NAMES)
def test_left_and_right_matrices(name):
  alg = algebras.get(name)
  a, b = rand(alg, 4), rand(alg, 4)
  ab = naive.PRODUCTS[name](a, b)
  close(np.einsum("nkj,nj->nk", np.asarray(alg.left_matrix(a)), b), ab)
  close(np.einsum("nki,ni->nk", np.asarray(alg.right_matrix(b)), a), ab)


def test_norm_is_euclidean():
  alg = algebras.get("m2c")
  a = rand(alg, 6)
  close(alg.norm(a), np.linalg.norm(a, axis=-1))


def test_matrix_views_round_trip():
  alg = algebras.get("m3r")
  a = rand(alg, 2).astype(np.float32)
  mat = np.asarray(alg.to_matrix(a))
  assert mat.shape == (2, 3, 3)
  assert mat[1, 2, 0] == a[1, 2 * 3 + 0]  # row-major
  close(alg.from_matrix(mat), a)


def test_user_defined_algebra_and_register(monkeypatch):
  monkeypatch.setattr(algebras, "_REGISTRY", dict(algebras._REGISTRY))  # keep other tests' registry
  # Split-complex numbers: j² = +1 (commutative, associative, has zero divisors).
  t = np.zeros((2, 2, 2))
  t[0, 0, 0] = t[0, 1, 1] = t[1, 0, 1] = t[1, 1, 0] = 1.0
  split = algebras.Algebra("split_complex", t, component_names=("1", "j"))
  assert split.is_associative and split.is_commutative
  close(split.identity, [1.0, 0.0])
  close(split.multiply([1.0, 2.0], [3.0, 4.0]), [1 * 3 + 2 * 4, 1 * 4 + 2 * 3])
  algebras.register(split)
  assert algebras.get("split_complex") == split
  with pytest.raises(ValueError, match="already registered"):
    algebras.register(algebras.Algebra("split_complex", -t))


def test_builders_reproduce_registered_algebras():
  assert algebras.matrix_algebra(2) == algebras.Algebra("m2r", algebras.get("m2r").structure,
                                                         shape=(2, 2))
  assert np.array_equal(algebras.matrix_algebra(2, algebras.get("c")).structure,
                        algebras.get("m2c").structure)
  # C ⊗ C is commutative, associative, 4-dimensional (the bicomplex numbers).
  cc = algebras.tensor_product(algebras.get("c"), algebras.get("c"))
  assert cc.dim == 4 and cc.is_commutative and cc.is_associative
  assert algebras.get("m2r").matrix_base[0] == 2


@pytest.mark.parametrize("structure, match", [
    (np.ones((2, 2)), r"\[d, d, d\]"),
    (np.ones((2, 2, 3)), r"\[d, d, d\]"),
    (np.full((2, 2, 2), np.nan), "non-finite"),
])
def test_bad_structure_tensor(structure, match):
  with pytest.raises(ValueError, match=match):
    algebras.Algebra("bad", structure)


def test_bad_element_shape_error_names_the_shape():
  with pytest.raises(ValueError, match=r"4 components on the\s+last axis.*\(3, 2\)"):
    algebras.get("h").multiply(jnp.ones((3, 2)), jnp.ones((3, 4)))
