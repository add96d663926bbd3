"""Real parameter and multiply-accumulate (MAC) counts, per layer and per model.

Two counts of the forward pass, both in MACs (flops = 2 × MACs):
  * `macs` (weight-layer MACs): the calls of the recorded weight layers
    (algebranets.nn.Linear / Conv2D / Embed and Haiku's own Linear / ConvND /
    DepthwiseConvND / Embed), from formulas. This is the paper's "MACs".
  * `all_macs` (every multiply-add): `macs` plus `other_macs`, the
    contractions outside those layers, read from the traced program: every
    dot_general and convolution of the model's jaxpr that does not run
    inside a recorded weight layer, counted as the real multiply-adds it does
    (output elements × contraction size). In Transformer-XL these are the
    attention scores (q·k and the relative-position term, per query over all
    M + T keys), the attention-weighted values and the output logits against
    the embedding table(s); in image models there are none (global pooling
    and max pooling are reductions, not multiply-adds) except the covariances
    and D×D products of whitening batch norm. `match="flops"` matches it.

What is counted:
  * Parameters are real numbers: an algebra element of dimension D is D
    parameters. Biases are parameters. A learned algebra's structure tensor
    (`algebras.LearnedAlgebra`) is D³ parameters: of every weight layer with
    share "layer" (`structure_params`, in `dense_params` / `conv_params`), or
    once, in the network's module "learned_algebra", with share "network".
  * A learned algebra's product costs D² MACs (`mults_per_product`: T is dense
    once trained; the layers run the expanded form). Building a layer's expanded
    weight from w and T (Cin·Cout·D³ multiply-adds per call, whatever the batch)
    is per step, not per example, and is in neither count.
  * A MAC is one real multiply whose product is accumulated. An algebra product
    whose naive form needs m real multiplies (`Algebra.mults_per_product`, the
    table in PAPER.md: 1 r, 4 c, 16 h, 8 m2r, 27 m3r, 64 m4r, 32 m2c, 3 dual,
    6 cross3) costs m MACs inside a layer: every partial product a_i·b_j is
    accumulated straight into its output component. A layer costs
    (products per output position) × m MACs per output position.
  * The fast variant (`fast=True`, the `fast_macs` columns) uses
    `Algebra.fast_mults_per_product` instead (3 for c by Gauss's trick, 24 for
    m2c, naive otherwise). It is reported beside the naive count, never in
    place of it: the registered ops run the naive product (or, on the
    "expanded" path, D² MACs per product). The few extra additions of such
    tricks (Gauss: weight-side sums once per weight, input-side sums once per
    input, one combination per output) are not MACs and are not counted.
  * Not MACs in either count: bias adds, normalisation statistics and scales,
    activations, softmax, pooling, residual adds, embedding lookups: the
    element-wise and reduction work, O(activations) next to the contractions'
    O(activations × width). Products between two activations are not
    weight-layer MACs but are in `other_macs`: in this library's attention
    they are real dot products over the Ch·D components of a head (the
    algebra is not used there, see models/transformer_xl), so they cost one
    MAC per real component pair. A product with parameters outside a weight
    layer call (tied output logits `x @ embed.embeddings.T`, the adaptive
    softmax's tied projections) is in `other_macs` too, at the MACs of the op
    path that computes it.
  * Control flow in `other_macs`: a `lax.cond` counts its cheapest branch
    (the branches in this library are a fast path and an exact fallback, e.g.
    the adaptive softmax's gathered tail clusters and their every-position
    fallback when a batch overflows the gather; the count is of the path a
    step normally takes); a `lax.scan` counts its body `length` times; a
    `while_loop` counts its body once (its trip count is not static).
  * Convolutions count every kernel tap at every output position, including
    taps that fall on zero padding ("SAME" or explicit, e.g. the symmetric
    padding of the ResNets), the usual convention and the one behind the
    published 4.1 G MACs of ResNet-50: the count depends on the output size
    only, so "SAME" and symmetric padding (same output size) cost the same.
    XLA's own cost analysis skips padded taps, so it reports fewer flops for
    padded convolutions.

Use:
  dense_macs / conv_macs / dense_params / conv_params / embed_params: pure
      formulas from layer sizes.
  model_costs(fn, *args, **kwargs): the per-layer account of a whole Haiku
      model, found by tracing `fn` abstractly (`jax.make_jaxpr`, no compute)
      under `hk.intercept_methods`; the model needs no cost code of its own.
  jaxpr_macs(closed_jaxpr): the real MACs of every contraction of a program.
  format_table(report): the report as a markdown table.
  algebra_table(...): one dense and one conv layer for every registered algebra.

Only counting lives here, below the models (which count themselves with it).
The command line, `python -m algebranets.costs` (a layer per algebra, a
registered model per algebra, or the model a config trains), sits above the
models and the trainer, in `algebranets.cost_report`; exact closed-form
counts of the registered models, for fast width matching, are in
`algebranets.analytic_costs`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional, Sequence, Union

import haiku as hk
import jax
import numpy as np

from algebranets import algebras
from algebranets import common
from algebranets import nn as ann

__all__ = [
    "dense_macs", "conv_macs", "dense_params", "conv_params", "embed_params", "structure_params",
    "LayerCost", "ModelCost", "model_costs", "format_table", "algebra_table",
    "block_costs", "jaxpr_macs",
]

AlgebraLike = Union[str, algebras.Algebra]


# ------------------------------------------------------------------ formulas
def _positive_int(value, what: str) -> int:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
    raise ValueError(f"{what} must be a positive integer, got {value!r}.")
  return int(value)


def _kernel_taps(kernel_hw) -> int:
  """Taps of a kernel given as an int (square 2-D kernel) or a shape."""
  if isinstance(kernel_hw, (int, np.integer)):
    size = _positive_int(kernel_hw, "kernel_hw")
    return size * size
  dims = tuple(kernel_hw)
  if not dims:
    raise ValueError(f"kernel_hw must be an int or a non-empty shape, got {kernel_hw!r}.")
  return math.prod(_positive_int(k, f"kernel_hw entry (in {kernel_hw!r})") for k in dims)


def _check_groups(c_in: int, c_out: int, groups) -> int:
  groups = _positive_int(groups, "groups")
  if c_in % groups or c_out % groups:
    raise ValueError(
        f"groups={groups} must divide both c_in={c_in} and c_out={c_out}.")
  return groups


def _mults(algebra: AlgebraLike, fast: bool) -> int:
  alg = algebras.get(algebra)
  return alg.fast_mults_per_product if fast else alg.mults_per_product


def dense_macs(batch_positions: int, c_in: int, c_out: int, algebra: AlgebraLike,
               fast: bool = False) -> int:
  """MACs of a dense layer [..., c_in, D] -> [..., c_out, D].

  Args:
    batch_positions: positions the layer is applied at (product of the leading
      axes of the input, e.g. B·T).
    c_in, c_out: input and output channels, counted in algebra elements.
    algebra: an Algebra or a registered name.
    fast: count the cheapest known product instead of the naive one.

  Returns:
    batch_positions · c_in · c_out · (real multiplies per product).
  """
  batch_positions = _positive_int(batch_positions, "batch_positions")
  c_in = _positive_int(c_in, "c_in")
  c_out = _positive_int(c_out, "c_out")
  return batch_positions * c_in * c_out * _mults(algebra, fast)


def conv_macs(out_positions: int, kernel_hw, c_in: int, c_out: int, groups: int,
              algebra: AlgebraLike, fast: bool = False) -> int:
  """MACs of a (grouped) convolution.

  Args:
    out_positions: output positions, N·H_out·W_out (stride and padding enter
      only through the output size).
    kernel_hw: kernel size, an int for a square 2-D kernel or a shape such as
      (kh, kw); dilation does not change the count.
    c_in, c_out: input and output channels in algebra elements.
    groups: feature groups; c_in for a depthwise convolution.
    algebra: an Algebra or a registered name.
    fast: count the cheapest known product instead of the naive one.

  Returns:
    out_positions · taps · (c_in / groups) · c_out · (real multiplies per
    product), padded taps included.
  """
  out_positions = _positive_int(out_positions, "out_positions")
  c_in = _positive_int(c_in, "c_in")
  c_out = _positive_int(c_out, "c_out")
  groups = _check_groups(c_in, c_out, groups)
  taps = _kernel_taps(kernel_hw)
  return out_positions * taps * (c_in // groups) * c_out * _mults(algebra, fast)


def structure_params(algebra: AlgebraLike) -> int:
  """Real parameters a weight layer holds for its algebra's product: D³ for a learned
  algebra shared per layer (its own T), else 0 (fixed T, or one T for the network)."""
  alg = algebras.get(algebra)
  return alg.dim ** 3 if alg.learned and alg.share == "layer" else 0


def dense_params(c_in: int, c_out: int, algebra: AlgebraLike, with_bias: bool = True) -> int:
  """Real parameters of a dense layer: (c_in·c_out [+ c_out]) · D [+ D³ of a learned T]."""
  c_in = _positive_int(c_in, "c_in")
  c_out = _positive_int(c_out, "c_out")
  return ((c_in * c_out + (c_out if with_bias else 0)) * algebras.get(algebra).dim
          + structure_params(algebra))


def conv_params(kernel_hw, c_in: int, c_out: int, groups: int, algebra: AlgebraLike,
                with_bias: bool = True) -> int:
  """Real parameters of a conv layer: (taps·c_in/groups·c_out [+ c_out]) · D [+ D³ of a
  learned T]."""
  c_in = _positive_int(c_in, "c_in")
  c_out = _positive_int(c_out, "c_out")
  groups = _check_groups(c_in, c_out, groups)
  weights = _kernel_taps(kernel_hw) * (c_in // groups) * c_out
  return ((weights + (c_out if with_bias else 0)) * algebras.get(algebra).dim
          + structure_params(algebra))


def embed_params(vocab_size: int, embed_dim: int, algebra: AlgebraLike) -> int:
  """Real parameters of an embedding table: vocab_size · embed_dim · D."""
  vocab_size = _positive_int(vocab_size, "vocab_size")
  embed_dim = _positive_int(embed_dim, "embed_dim")
  return vocab_size * embed_dim * algebras.get(algebra).dim


# ------------------------------------------------------------ model account
@dataclasses.dataclass(frozen=True)
class LayerCost:
  """One call of one weight layer.

  Attributes:
    name: the Haiku module name (the key of its parameters).
    kind: "dense", "conv" or "embed".
    algebra: the algebra's name ("r" for plain Haiku layers).
    input_shape, output_shape: shapes of the call's input and output.
    params: real parameters of the layer, counted on its first call only (0 on
      later calls of a shared layer), so the column sums to the model's
      weight-layer parameters.
    macs, fast_macs: naive and fast-product MACs of this call.
    call: 0 for the first call of this module, 1, 2, ... for later ones.
  """

  name: str
  kind: str
  algebra: str
  input_shape: tuple[int, ...]
  output_shape: tuple[int, ...]
  params: int
  macs: int
  fast_macs: int
  call: int = 0


@dataclasses.dataclass(frozen=True)
class ModelCost:
  """The cost report of a whole model (see `model_costs`).

  Attributes:
    layers: one LayerCost per weight-layer call, in call order.
    total_params: real parameters, summed over ALL parameter leaves (norm
      scales, lift/project layers ... included).
    layer_params: parameters of the recorded weight layers, from the formulas.
    other_params: leaves of modules that are not recorded weight layers,
      {module name: size}.
    state_size: real numbers in the Haiku state (e.g. batch-norm statistics);
      not parameters, reported for completeness.
    macs, fast_macs: weight-layer MACs, summed over all layer calls.
    other_macs: real MACs of the contractions outside the weight layers
      (attention scores and values, logits against embedding tables, ...; see
      the module docstring).
  """

  layers: tuple[LayerCost, ...]
  total_params: int
  layer_params: int
  other_params: dict[str, int]
  state_size: int
  macs: int
  fast_macs: int
  other_macs: int = 0

  @property
  def all_macs(self) -> int:
    """Every multiply-add of the forward pass: weight layers + other contractions."""
    return self.macs + self.other_macs

  @property
  def all_fast_macs(self) -> int:
    """`all_macs` with the weight layers' fast-product count."""
    return self.fast_macs + self.other_macs

  @property
  def params_consistent(self) -> bool:
    """Formula params of the weight layers + other leaves == all leaves."""
    return self.layer_params + sum(self.other_params.values()) == self.total_params

  def to_dict(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out["params_consistent"] = self.params_consistent
    out["all_macs"] = self.all_macs
    out["all_fast_macs"] = self.all_fast_macs
    return out


def _size(shape) -> int:
  return math.prod(int(s) for s in shape)


def _bias(module) -> bool:
  # Our nn layers and Haiku's both keep the constructor flag as `with_bias`.
  return bool(getattr(module, "with_bias", True))


# Each handler maps (module, input shape, output shape) of one recorded
# `__call__` to (kind, algebra, params, macs, fast_macs).
def _hk_linear(module, x, y):
  c_in, c_out = int(x[-1]), int(module.output_size)
  macs = dense_macs(_size(x[:-1]), c_in, c_out, "r")
  return "dense", algebras.REAL, dense_params(c_in, c_out, "r", _bias(module)), macs, macs


def _hk_conv(module, x, y):
  c_in, c_out = int(x[module.channel_index]), int(module.output_channels)
  groups = int(module.feature_group_count)
  pos = _size(y) // c_out
  macs = conv_macs(pos, module.kernel_shape, c_in, c_out, groups, "r")
  return ("conv", algebras.REAL,
          conv_params(module.kernel_shape, c_in, c_out, groups, "r", _bias(module)), macs, macs)


def _hk_depthwise(module, x, y):
  c_in = int(x[module.channel_index])
  c_out = c_in * int(module.channel_multiplier)
  pos = _size(y) // c_out
  macs = conv_macs(pos, module.kernel_shape, c_in, c_out, c_in, "r")
  return ("conv", algebras.REAL,
          conv_params(module.kernel_shape, c_in, c_out, c_in, "r", _bias(module)), macs, macs)


def _hk_embed(module, x, y):
  del x, y
  params = embed_params(int(module.vocab_size), int(module.embed_dim), "r")
  return "embed", algebras.REAL, params, 0, 0


def _nn_linear(module, x, y):
  alg = module.algebra
  c_in, c_out = int(x[-2]), int(module.output_size)
  pos = _size(x[:-2])
  return ("dense", alg, dense_params(c_in, c_out, alg, _bias(module)),
          dense_macs(pos, c_in, c_out, alg), dense_macs(pos, c_in, c_out, alg, fast=True))


def _nn_conv(module, x, y):
  alg = module.algebra
  # A folded M_n conv sees n× the channels on n× the positions (ops.fold).
  n = alg.matrix_base[0] if getattr(module, "folded", False) else 1
  c_in, c_out = int(x[-2]) // n, int(module.output_channels)
  groups = int(module.feature_group_count)
  pos = _size(y[:-2]) // n
  args = (pos, module.kernel_shape, c_in, c_out, groups, alg)
  return ("conv", alg, conv_params(module.kernel_shape, c_in, c_out, groups, alg, _bias(module)),
          conv_macs(*args), conv_macs(*args, fast=True))


def _nn_embed(module, x, y):
  del x, y
  alg = module.algebra
  return "embed", alg, embed_params(int(module.vocab_size), int(module.embed_dim), alg), 0, 0


# The recorded layer types, most specific first: (types, handler of their `__call__`).
_LAYERS: tuple[tuple[tuple[type, ...], Callable], ...] = (
    ((ann.Linear,), _nn_linear),
    ((ann.Conv2D,), _nn_conv),
    ((ann.Embed,), _nn_embed),
    ((hk.Linear,), _hk_linear),
    ((hk.ConvND,), _hk_conv),
    ((hk.DepthwiseConv1D, hk.DepthwiseConv2D, hk.DepthwiseConv3D), _hk_depthwise),
    ((hk.Embed,), _hk_embed),
)


def _handler(module, method: str) -> Optional[Callable]:
  """The handler of a call of `module.method`: only `__call__` of a recorded type has one."""
  if method != "__call__":
    return None
  for types, handler in _LAYERS:
    if isinstance(module, types):
      return handler
  return None


def _first_array(args, kwargs):
  for a in list(args) + list(kwargs.values()):
    if hasattr(a, "shape"):
      return a
  raise ValueError("a recorded layer was called without an array argument.")


def _is_array(leaf) -> bool:
  return isinstance(leaf, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))


# The name scope wrapped around every recorded weight-layer call: contractions traced inside it
# are covered by the layer's formula and left out of `other_macs`.
_LAYER_SCOPE = "algebranets_costs_weight_layer"


def _contraction_macs(eqn) -> int:
  """Real MACs of one dot_general / convolution equation (0 for any other primitive)."""
  name = eqn.primitive.name
  if name == "dot_general":
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
    lhs, rhs = (tuple(v.aval.shape) for v in eqn.invars[:2])
    lhs_free = [d for i, d in enumerate(lhs) if i not in lhs_contract and i not in lhs_batch]
    rhs_free = [d for i, d in enumerate(rhs) if i not in rhs_contract and i not in rhs_batch]
    return (math.prod(lhs[i] for i in lhs_batch) * math.prod(lhs[i] for i in lhs_contract)
            * math.prod(lhs_free) * math.prod(rhs_free))
  if name == "conv_general_dilated":
    # Every output element sums taps × (input features per group) products, padded taps
    # included (the module docstring's convention).
    rhs_spec = eqn.params["dimension_numbers"].rhs_spec   # (out feature, in feature, spatial...)
    rhs = tuple(eqn.invars[1].aval.shape)
    out = tuple(eqn.outvars[0].aval.shape)
    return math.prod(out) * math.prod(rhs[i] for i in rhs_spec[2:]) * rhs[rhs_spec[1]]
  return 0


def _sub_jaxprs(value):
  """The jaxprs held by one equation parameter (a jaxpr, a closed jaxpr or a tuple of them)."""
  if hasattr(value, "eqns"):
    return [value]
  if hasattr(value, "jaxpr") and hasattr(value.jaxpr, "eqns"):
    return [value.jaxpr]
  if isinstance(value, (tuple, list)):
    return [j for v in value for j in _sub_jaxprs(v)]
  return []


def _walk_macs(jaxpr, skip_scope: Optional[str]) -> int:
  total = 0
  for eqn in jaxpr.eqns:
    if skip_scope and skip_scope in str(eqn.source_info.name_stack):
      continue
    total += _contraction_macs(eqn)
    name = eqn.primitive.name
    if name == "cond":
      branches = _sub_jaxprs(eqn.params["branches"])
      total += min(_walk_macs(b, skip_scope) for b in branches)
      continue
    inner = sum(_walk_macs(j, skip_scope) for v in eqn.params.values() for j in _sub_jaxprs(v))
    total += inner * int(eqn.params["length"]) if name == "scan" else inner
  return total


def jaxpr_macs(closed_jaxpr, skip_scope: Optional[str] = None) -> int:
  """Real multiply-adds of every dot_general and convolution of a traced program.

  Args:
    closed_jaxpr: e.g. `jax.make_jaxpr(f)(*args)`.
    skip_scope: leave out equations traced inside a `jax.named_scope` of this
      name (and everything nested in them).

  Returns:
    The MACs, with `lax.cond` at its cheapest branch, `lax.scan` times its
    length and `while_loop` bodies once (see the module docstring).
  """
  jaxpr = closed_jaxpr.jaxpr if hasattr(closed_jaxpr, "jaxpr") else closed_jaxpr
  return int(_walk_macs(jaxpr, skip_scope))


def model_costs(fn: Callable[..., Any], *args, **kwargs) -> ModelCost:
  """Per-layer parameters and MACs of the Haiku model built by `fn`.

  `fn` is what one would pass to `hk.transform_with_state`. It is initialised
  (`jax.eval_shape`) and applied (`jax.make_jaxpr`) to `*args, **kwargs`
  abstractly (shapes only, no compute: a ResNet-50 takes seconds), while
  `hk.intercept_methods` records every call of algebranets.nn.Linear / Conv2D
  / Embed and of Haiku's own Linear / ConvND / DepthwiseConvND / Embed (the
  real algebra "r") and wraps it in a name scope; the contractions of the
  traced program outside those scopes are `other_macs` (`jaxpr_macs`).

  A layer applied twice is counted twice in MACs and once in parameters. A
  recorded layer called from inside another recorded layer is not counted
  again (the outer formula covers it); a recorded layer inside any other
  module (say an hk.Linear inside a Lift) is counted. Known limits: layers
  inside `hk.vmap` / `hk.scan` / `hk.layer_stack` are seen once, with the
  shapes of one iteration (the parameter check then fails, as it should);
  transposed convolutions add no weight-layer MACs. Products between
  activations are in `other_macs`, not in `macs`.

  Args:
    fn: the un-transformed model function.
    *args, **kwargs: its inputs; arrays or `jax.ShapeDtypeStruct`s are traced
      abstractly, every other leaf (flags like `is_training=True`) is passed
      through as a Python value.

  Returns:
    A ModelCost; check `.params_consistent`.
  """
  leaves, treedef = jax.tree_util.tree_flatten((args, kwargs))
  dynamic = [_is_array(leaf) for leaf in leaves]

  def call_fn(*arrays):
    it = iter(arrays)
    full = [next(it) if d else leaf for leaf, d in zip(leaves, dynamic)]
    a, k = jax.tree_util.tree_unflatten(treedef, full)
    return fn(*a, **k)

  records: list[tuple[Any, tuple[int, ...], tuple[int, ...], Callable]] = []
  depth = [0]

  def interceptor(next_f, f_args, f_kwargs, context):
    handler = _handler(context.module, context.method_name)
    if handler is None or depth[0]:
      return next_f(*f_args, **f_kwargs)
    x = _first_array(f_args, f_kwargs)
    depth[0] += 1
    try:
      with jax.named_scope(_LAYER_SCOPE):
        out = next_f(*f_args, **f_kwargs)
    finally:
      depth[0] -= 1
    y = out[0] if isinstance(out, (tuple, list)) else out
    records.append((context.module, tuple(x.shape), tuple(y.shape), handler))
    return out

  def recorded_fn(*arrays):
    with hk.intercept_methods(interceptor):
      return call_fn(*arrays)

  arrays = [leaf for leaf, d in zip(leaves, dynamic) if d]
  rng = jax.random.PRNGKey(0)
  init = hk.transform_with_state(call_fn).init
  params, state = jax.eval_shape(init, rng, *arrays)
  apply = hk.transform_with_state(recorded_fn).apply
  program = jax.make_jaxpr(apply)(params, state, rng, *arrays)
  other_macs = jaxpr_macs(program, skip_scope=_LAYER_SCOPE)

  layers, calls = [], {}
  for module, x, y, handler in records:
    result = handler(module, x, y)
    kind, alg, layer_params, macs, fast = result
    name = module.module_name
    call = calls.get(name, 0)
    calls[name] = call + 1
    layers.append(LayerCost(name=name, kind=kind, algebra=alg.name, input_shape=x,
                            output_shape=y, params=layer_params if call == 0 else 0,
                            macs=int(macs), fast_macs=int(fast), call=call))

  other = {}
  for module_name, module_params in params.items():
    if module_name not in calls:
      other[module_name] = sum(_size(p.shape) for p in jax.tree_util.tree_leaves(module_params))
  total = sum(_size(p.shape) for p in jax.tree_util.tree_leaves(params))
  state_size = sum(_size(s.shape) for s in jax.tree_util.tree_leaves(state))
  return ModelCost(
      layers=tuple(layers), total_params=total,
      layer_params=sum(l.params for l in layers), other_params=other,
      state_size=state_size, macs=sum(l.macs for l in layers),
      fast_macs=sum(l.fast_macs for l in layers), other_macs=other_macs)


# ------------------------------------------------------------------- tables
def _shape(s) -> str:
  return "[" + ",".join(str(d) for d in s) + "]"


def format_table(report: ModelCost) -> str:
  """A markdown table: one row per layer call, then other params and totals."""
  rows = []
  for l in report.layers:
    params = f"{l.params:,}" if l.call == 0 else f"(shared, call {l.call + 1})"
    rows.append([l.name, l.kind, l.algebra, _shape(l.input_shape), _shape(l.output_shape),
                 params, f"{l.macs:,}", f"{l.fast_macs:,}"])
  for name, size in report.other_params.items():
    rows.append([name, "other", "", "", "", f"{size:,}", "", ""])
  if report.other_macs:
    rows.append(["(contractions outside weight layers)", "other", "", "", "", "",
                 f"{report.other_macs:,}", f"{report.other_macs:,}"])
  rows.append(["total", "", "", "", "", f"{report.total_params:,}", f"{report.all_macs:,}",
               f"{report.all_fast_macs:,}"])
  table = common.markdown(["layer", "kind", "algebra", "input", "output", "params", "MACs",
                     "fast MACs"], rows)
  check = "ok" if report.params_consistent else "MISMATCH"
  return (f"{table}\n\nparameter check (weight layers {report.layer_params:,} + other "
          f"{sum(report.other_params.values()):,} == leaves {report.total_params:,}): {check}; "
          f"state: {report.state_size:,} numbers.\nMACs: weight layers {report.macs:,} + "
          f"other contractions {report.other_macs:,} = all {report.all_macs:,} "
          f"(flops = 2 × MACs).")


# ------------------------------------------------------------ layer tables
# Members of the algebra families (algebras.FAMILIES) that `algebra_table` lists after the
# registered algebras by default: Clifford algebras (Cl(2,0) and Cl(1,1) ≅ M2(R) and Cl(3,0) ≅
# M2(C) compute on the isomorphic path; Cl(0,0,1) is the dual numbers) and learned algebras
# (per-layer T: D³ more parameters per layer; per-network T: counted once, not per layer).
FAMILY_EXAMPLES = ("cl_2_0", "cl_1_1", "cl_3_0", "cl_0_0_1", "learned:4", "learned:4:network")


def algebra_table(c_in: int, c_out: int, batch: int, spatial: int, kernel: int,
                  with_bias: bool = True, real_width: bool = False,
                  names: Optional[Sequence[str]] = None) -> list[dict[str, Any]]:
  """Cost of one dense and one conv layer for each algebra.

  The dense layer is applied at `batch` positions, the conv layer ("SAME",
  stride 1) at batch·spatial² output positions. With `real_width`, c_in and
  c_out count real components and each algebra gets c // D elements (at least
  one); otherwise they count algebra elements. Default `names`: every registered algebra,
  then FAMILY_EXAMPLES.
  """
  rows = []
  for name in (names or algebras.names() + FAMILY_EXAMPLES):
    alg = algebras.get(name)
    ci, co = c_in, c_out
    if real_width:
      ci, co = max(1, c_in // alg.dim), max(1, c_out // alg.dim)
    pos = batch * spatial * spatial
    rows.append(dict(
        algebra=alg.name, d=alg.dim, c_in=ci, c_out=co,
        mults=alg.mults_per_product, fast_mults=alg.fast_mults_per_product,
        dense_params=dense_params(ci, co, alg, with_bias),
        dense_macs=dense_macs(batch, ci, co, alg),
        dense_fast_macs=dense_macs(batch, ci, co, alg, fast=True),
        conv_params=conv_params(kernel, ci, co, 1, alg, with_bias),
        conv_macs=conv_macs(pos, kernel, ci, co, 1, alg),
        conv_fast_macs=conv_macs(pos, kernel, ci, co, 1, alg, fast=True)))
  return rows


def _block_of(name: str, depth: int = 2) -> str:
  """The enclosing block of a layer: its module path cut to `depth` parts."""
  parts = [p for p in name.replace("/~/", "/").split("/") if p]
  return "/".join(parts[:depth])


def block_costs(report: ModelCost, depth: int = 2) -> list[dict[str, Any]]:
  """Params and MACs summed per block (module path prefix of `depth` parts)."""
  blocks: dict[str, dict[str, Any]] = {}
  for l in report.layers:
    b = blocks.setdefault(_block_of(l.name, depth), {"block": _block_of(l.name, depth),
                                                     "params": 0, "macs": 0, "fast_macs": 0})
    b["params"] += l.params if l.call == 0 else 0
    b["macs"] += l.macs
    b["fast_macs"] += l.fast_macs
  return list(blocks.values())
