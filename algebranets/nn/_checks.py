"""Argument and input checks shared by the nn modules (ValueErrors that name the bad value)."""

from __future__ import annotations

import numpy as np


def positive_int(v, what: str) -> int:
  if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
    raise ValueError(f"{what} must be a positive int, got {v!r}.")
  return int(v)


def int_pair(v, what: str) -> tuple[int, int]:
  """An int or a pair of positive ints -> a pair."""
  if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
    v = (v, v)
  try:
    v = tuple(v)
  except TypeError:
    raise ValueError(f"{what} must be a positive int or a pair of them, got {v!r}.") from None
  if len(v) != 2:
    raise ValueError(f"{what} must be a positive int or a pair of them, got {v!r}.")
  return tuple(positive_int(a, what) for a in v)


def check_algebra_input(x, algebra, what: str, layout: str, min_ndim: int = 2):
  """Raises a ValueError naming the expected layout unless x is [..., D] with ndim >= min_ndim."""
  d = algebra.dim
  if x.ndim < min_ndim or x.shape[-1] != d:
    raise ValueError(
        f"{what} expects algebra {algebra.name!r} inputs of shape {layout} with "
        f"D={d} components on the last axis; got shape {tuple(x.shape)}.")


def check_foldable(algebra, folded):
  """bool(folded), after checking that folding is possible for the algebra."""
  if folded and algebra.matrix_base is None:
    raise ValueError(f"folded=True needs a matrix algebra M_n(B); {algebra.name!r} is "
                     "not one.")
  return bool(folded)
