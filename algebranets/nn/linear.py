"""Algebra-valued Linear and Conv2D: thin Haiku modules over `algebranets.ops`.

Shapes (D = algebra.dim, always the last axis; G = feature_group_count):
  Linear   x [..., Cin, D]        w [Cin, Cout, D]            b [Cout, D]  -> [..., Cout, D]
  Conv2D   x [N, H, W, Cin, D]    w [KH, KW, Cin/G, Cout, D]  b [Cout, D]  -> [N, H', W', Cout, D]

Both compute y_o = b_o + Σ_i w_io · x_i with the algebra's product, weight on
the left (the paper's layer). Arguments mean what they mean for `hk.Linear`
and `hk.Conv2D`; `algebra` picks the algebra and `path` the op implementation
(None: `ops.default_path`, the fastest correct one).

Folded layout (Conv2D, `folded=True`, matrix algebras M_n(B) only): the
layer takes and returns activations in the layout of `ops.fold`,
[N·n, H, W, C·n, Db] (matrix columns folded into the batch, rows into the
channels, Db = B's dimension), so a network can fold once at its entry and
skip the per-layer transposes of the "folded" op path (BENCHMARKS.md: 0-20%
per layer). The weight parameter is the same [KH, KW, Cin/G, Cout, D] array as
unfolded (same initialiser, checkpoints interchangeable); it is folded with
`ops.fold_weight` on every call, and `path` then picks the base algebra's op.

Learned algebras (`algebras.LearnedAlgebra`, e.g. algebra="learned:4"): the
layer also reads the structure tensor T [D, D, D] (`nn.learned.structure`: its
own parameter "structure", or the network's) and computes on the expanded
path with it, building its expanded weight once per call.

Default initialisers: w ~ `initializers.lecun_normal(algebra)` (truncated
normal with variance 1 / effective fan_in, where the effective fan_in counts
the real products feeding each output component; see `initializers`), b = 0.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import jax.numpy as jnp
import haiku as hk

from algebranets import algebras as algebras_lib
from algebranets import ops
from algebranets.nn import initializers
from algebranets.nn import learned
from algebranets.nn._checks import (
    check_algebra_input, check_foldable, int_pair, positive_int)

__all__ = ["Linear", "Conv2D"]


def _check_path(path):
  if path is not None and path not in ops.PATHS:
    raise ValueError(f"Unknown path {path!r}; valid paths: None (fastest), "
                     f"{', '.join(ops.PATHS)}.")
  return path


class Linear(hk.Module):
  """Algebra-valued fully connected layer (see the module docstring)."""

  def __init__(self, output_size: int, *, algebra, with_bias: bool = True,
               w_init: Optional[hk.initializers.Initializer] = None,
               b_init: Optional[hk.initializers.Initializer] = None,
               path: Optional[str] = None, name: Optional[str] = None):
    """Constructs the layer.

    Args:
      output_size: Cout, the number of output elements.
      algebra: an Algebra or a registered name.
      with_bias: whether to add an algebra-valued bias b [Cout, D].
      w_init: initialiser of w [Cin, Cout, D]; default
        `initializers.lecun_normal(algebra)`.
      b_init: initialiser of b; default zeros.
      path: `ops.dense` implementation; None picks the fastest.
      name: module name.
    """
    super().__init__(name=name)
    self.algebra = algebras_lib.get(algebra)
    self.output_size = positive_int(output_size, "output_size")
    self.with_bias = with_bias
    self.w_init = w_init
    self.b_init = b_init or jnp.zeros
    self.path = _check_path(path)

  def __call__(self, inputs, *, precision=None):
    """Applies the layer to inputs [..., Cin, D]; returns [..., Cout, D]."""
    inputs = jnp.asarray(inputs)
    alg = self.algebra
    check_algebra_input(inputs, alg, "Linear", "[..., Cin, D]")
    cin, dtype = inputs.shape[-2], inputs.dtype
    w_init = self.w_init or initializers.lecun_normal(alg)
    w = hk.get_parameter("w", [cin, self.output_size, alg.dim], dtype, init=w_init)
    t = learned.structure(alg, dtype) if alg.learned else None             # [D, D, D]
    out = ops.dense(inputs, w, alg, path=self.path, precision=precision,
                    structure=t)                                           # [..., Cout, D]
    if self.with_bias:
      b = hk.get_parameter("b", [self.output_size, alg.dim], dtype, init=self.b_init)
      out = out + b
    return out


class Conv2D(hk.Module):
  """Algebra-valued 2D convolution, NHWC with the algebra axis last."""

  def __init__(self, output_channels: int, kernel_shape: Union[int, Sequence[int]], *,
               algebra, stride: Union[int, Sequence[int]] = 1,
               rate: Union[int, Sequence[int]] = 1, padding="SAME",
               with_bias: bool = True,
               w_init: Optional[hk.initializers.Initializer] = None,
               b_init: Optional[hk.initializers.Initializer] = None,
               feature_group_count: int = 1, path: Optional[str] = None,
               folded: bool = False, name: Optional[str] = None):
    """Constructs the layer.

    Args:
      output_channels: Cout, the number of output elements per position.
      kernel_shape: int or (KH, KW).
      algebra: an Algebra or a registered name.
      stride: int or pair.
      rate: kernel dilation, int or pair.
      padding: "SAME", "VALID", a pair of (low, high) pairs, or Haiku pad
        function(s) (`hk.pad.*`).
      with_bias: whether to add an algebra-valued bias b [Cout, D].
      w_init: initialiser of w [KH, KW, Cin/G, Cout, D]; default
        `initializers.lecun_normal(algebra)`.
      b_init: initialiser of b; default zeros.
      feature_group_count: G; G == Cin is a depthwise convolution (one element
        weight per channel and tap, Cout a multiple of Cin).
      path: `ops.conv2d` implementation; None picks the fastest. With
        `folded=True` the path of the base algebra's op.
      folded: take and return activations in the folded layout (see the
        module docstring); needs a matrix algebra M_n(B).
      name: module name.
    """
    super().__init__(name=name)
    self.algebra = algebras_lib.get(algebra)
    self.folded = check_foldable(self.algebra, folded)
    self.output_channels = positive_int(output_channels, "output_channels")
    self.kernel_shape = int_pair(kernel_shape, "kernel_shape")
    self.stride = int_pair(stride, "stride")
    self.rate = int_pair(rate, "rate")
    self.feature_group_count = positive_int(feature_group_count, "feature_group_count")
    if self.output_channels % self.feature_group_count:
      raise ValueError(f"output_channels={self.output_channels} must be a multiple of "
                       f"feature_group_count={self.feature_group_count}.")
    self.with_bias = with_bias
    self.w_init = w_init
    self.b_init = b_init or jnp.zeros
    self.path = _check_path(path)
    if isinstance(padding, str):
      if padding.upper() not in ("SAME", "VALID"):
        raise ValueError(f"padding must be 'SAME', 'VALID', ((top, bottom), (left, right)) "
                         f"or hk.pad functions; got {padding!r}.")
      self.padding = padding.upper()
    elif hk.pad.is_padfn(padding):
      self.padding = tuple(tuple(p) for p in hk.pad.create_from_padfn(
          padding=padding, kernel=self.kernel_shape, rate=self.rate, n=2))
    else:
      try:
        self.padding = tuple((int(lo), int(hi)) for lo, hi in padding)
      except (TypeError, ValueError):
        self.padding = None
      if self.padding is None or len(self.padding) != 2:
        raise ValueError(f"padding must be 'SAME', 'VALID', ((top, bottom), (left, right)) "
                         f"or hk.pad functions; got {padding!r}.")

  def __call__(self, inputs, *, precision=None):
    """Applies the layer to [N, H, W, Cin, D] (or unbatched [H, W, Cin, D]).

    With `folded=True`: to [N·n, H, W, Cin·n, Db]; returns [N·n, H', W', Cout·n, Db].
    """
    inputs = jnp.asarray(inputs)
    alg = self.algebra
    if self.folded:
      return self._folded(inputs, precision)
    if inputs.ndim not in (4, 5) or inputs.shape[-1] != alg.dim:
      raise ValueError(
          f"Conv2D expects algebra {alg.name!r} inputs of shape [N, H, W, Cin, D] (or "
          f"[H, W, Cin, D]) with D={alg.dim} components on the last axis; got shape "
          f"{tuple(inputs.shape)}.")
    unbatched = inputs.ndim == 4
    if unbatched:
      inputs = inputs[None]                                  # [1, H, W, Cin, D]
    cin, g = inputs.shape[3], self.feature_group_count
    w = self._weight(cin, inputs.dtype)
    t = learned.structure(alg, inputs.dtype) if alg.learned else None   # [D, D, D]
    out = ops.conv2d(inputs, w, alg, stride=self.stride, padding=self.padding,
                     dilation=self.rate, feature_group_count=g, path=self.path,
                     precision=precision, structure=t)      # [N, H', W', Cout, D]
    if self.with_bias:
      b = hk.get_parameter("b", [self.output_channels, alg.dim], inputs.dtype,
                           init=self.b_init)
      out = out + b
    return out[0] if unbatched else out

  def _weight(self, cin, dtype):
    """The kernel w [KH, KW, Cin/G, Cout, D] of `cin` input channels (elements)."""
    g = self.feature_group_count
    if cin % g:
      raise ValueError(f"Conv2D: input channels Cin={cin} must be a multiple of "
                       f"feature_group_count={g}.")
    w_shape = [*self.kernel_shape, cin // g, self.output_channels, self.algebra.dim]
    w_init = self.w_init or initializers.lecun_normal(self.algebra)
    return hk.get_parameter("w", w_shape, dtype, init=w_init)

  def _folded(self, inputs, precision):
    alg = self.algebra
    n, base = alg.matrix_base
    if (inputs.ndim != 5 or inputs.shape[-1] != base.dim or inputs.shape[0] % n
        or inputs.shape[3] % n):
      raise ValueError(
          f"Conv2D(folded=True) expects algebra {alg.name!r} inputs in the folded layout "
          f"[N·{n}, H, W, Cin·{n}, {base.dim}] (see ops.fold); got shape "
          f"{tuple(inputs.shape)}.")
    cin, g = inputs.shape[3] // n, self.feature_group_count
    w = self._weight(cin, inputs.dtype)
    out = ops.conv2d(inputs, ops.fold_weight(w, alg), base, stride=self.stride,
                     padding=self.padding, dilation=self.rate, feature_group_count=g,
                     path=self.path, precision=precision)   # [N·n, H', W', Cout·n, Db]
    if self.with_bias:
      b = hk.get_parameter("b", [self.output_channels, alg.dim], inputs.dtype,
                           init=self.b_init)
      out = add_folded_bias(out, b, alg)
    return out


def add_folded_bias(out, b, algebra):
  """out [N·n, ..., C·n, Db] (folded M_n(B) activations) + bias b [C, D].

  Entry (row a, column c) of b_o belongs to channel o·n + a of the batch rows
  that hold column c: in the view [N, Col, ..., C·Row, Db] of `out` the bias
  is [Col, 1, ..., 1, C·Row, Db].
  """
  n, base = algebra.matrix_base
  c = b.shape[0]
  bf = jnp.transpose(b.reshape(c, n, n, base.dim), (2, 0, 1, 3))   # [Col, C, Row, Db]
  bf = bf.reshape((n,) + (1,) * (out.ndim - 3) + (c * n, base.dim))
  view = out.reshape((out.shape[0] // n, n) + out.shape[1:])       # [N, Col, ..., C·Row, Db]
  return (view + bf).reshape(out.shape)
