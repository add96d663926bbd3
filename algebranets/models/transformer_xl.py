"""Transformer-XL (Dai et al. 2019) with algebra-valued weights and activations.

The decoder of "Transformer-XL: Attentive Language Models Beyond a
Fixed-Length Context" -- relative positional attention with learned biases
u = r_w_bias and v = r_r_bias, segment-level recurrence over a memory of
cached hidden states -- in which every hidden state is an algebra element and
every weight layer an algebra layer (the AlgebraNets language models).

Shape glossary:
  B  batch                      T  segment (query) length
  M  memory length              K  keys, M + T
  L  layers                     H  heads
  Ch head width, d_head         C  model width, d_model
  F  feed-forward width, d_inner
  D  algebra components         V  vocabulary
  W  decoding cache length
Ch, C and F count algebra ELEMENTS: a model of width C has C·D real
components, so an algebra model with the activation width of a real model of
width d uses C = d / D elements (and then has about 1/D of its parameters,
see `matched_config`).

Where the algebra is, and where it is not:
  * Q, K, V and output projections, the projection W_r of the relative
    position encodings, and both feed-forward layers are `ann.Linear` with the
    model's algebra; hidden states between layers are [B, T, C, D];
    LayerNorm is `ann.LayerNorm` over [C, D]; the feed-forward nonlinearity is
    `activation` (component-wise ReLU by default, any of `ann.ACTIVATIONS`).
  * Attention is real: a head's query/key [Ch, D] is read as a real vector of
    Ch·D components, the score is their real dot product scaled by
    1/sqrt(Ch·D), the softmax is real, and the weighted sum of values acts on
    every real component alike. (An algebra-valued score would need a
    "softmax" over the algebra; the paper's models leave the algebra here.)
  * The relative encodings R are the reference's sinusoids of width C·D,
    reshaped to [K, C, D]; u and v are real parameters [H, Ch, D].
  * Logits are real dot products of the final hidden state's C·D components
    with the (tied by default) output embeddings; see `adaptive`.

Relative attention (the reference's "RelPartialLearnable"): for query i (at
absolute index M + i among the keys) and key j, with distance δ = M + i - j,

    score(i, j) = [(q_i + u)·k_j + (q_i + v)·(W_r R_δ)] / sqrt(Ch·D).

The second term is computed for all K distances at once and moved into place
by the rel-shift trick (`rel_shift`). Keys j > M + i are masked (causal); with
`same_length` every query sees exactly the last `mem_len` keys.

Memory (`mems`): one array [B, M, C, D] per layer, the inputs of that layer on
the previous segment(s); new memories are the last `mem_len` positions of
memory + current inputs, with gradients stopped.

Initialisation (`init`): "reference" (default) is the PyTorch reference's
`weights_init` (kimiyoung/transformer-xl pytorch/train.py) generalised to the
algebra: every weight layer N(0, init_std²) and the adaptive projections
N(0, proj_init_std²) in the form of `ann.initializers.RealEquivalentNormal`
(each real component N(0, (s·sqrt(D/g))²), so each output component has the
real layer's variance at equal real activation width; exactly N(0, s²) for
r), LayerNorm scales N(1, init_std²) and offsets 0 per real component, all
biases 0, embeddings, u, v and the adaptive cluster head N(0, init_std²) per
real component (no algebra product acts on them). "lecun" is this library's
earlier default: weight layers and projections `ann.Linear`'s algebra LeCun
(variance 1 / effective fan_in), LayerNorm scales 1, cluster head 0.

Mixed precision: under a bfloat16 compute dtype the attention scores (both
the content and the relative term) are computed by einsums that accumulate
and return float32 (`preferred_element_type`), the masking and softmax are
float32, and only the probabilities are cast back for the weighted sum of
values; the output logits likewise (`adaptive`). A bfloat16 score of size 20
is off by up to 0.06, a ~6% change of its probability.

Decoding (`init_cache`, `decode_step`; the loop is in `decoding`): a fixed
ring buffer of the keys and values of the last W positions per layer, a slot
position table and a step counter, so one new token costs one single-token
pass. A step equals `__call__` on a one-token segment with memory length
W - 1 (the Transformer-XL evaluation mode); W = mem_len + 1 by default.
"""

from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple, Optional, Sequence, Union

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from algebranets import algebras as algebras_lib
from algebranets import costs as costs_lib
from algebranets import nn as ann
from algebranets.models import adaptive, matching
from algebranets.nn._checks import positive_int

__all__ = [
    "TransformerXL", "DecoderLayer", "DecodeCache", "PRESETS", "INITS",
    "sinusoid_encoding", "rel_shift", "attention_mask", "relative_attention_logits",
    "initial_mems", "model_costs", "matched_config",
]

# Published real base models (Dai et al. 2019, the reference run scripts
# run_enwik8_base.sh / run_wt103_base.sh). enwik8 uses a byte vocabulary here.
# The widths count algebra ELEMENTS: a preset with algebra="m2r" has 4 reals per element and is
# 4x wider than the real model (enwik8_base: 164 M parameters, not 41 M). For an algebra model
# the size of the real one use `matched_config(PRESETS[name], algebra, match="params")`.
PRESETS: dict[str, dict[str, Any]] = {
    "enwik8_base": dict(vocab_size=256, d_model=512, n_layers=12, n_heads=8, d_head=64,
                        d_inner=2048, mem_len=512, dropout=0.1, dropatt=0.0),
    "wt103_base": dict(vocab_size=267_735, d_model=410, n_layers=16, n_heads=10, d_head=41,
                       d_inner=2100, mem_len=150, cutoffs=(20_000, 40_000, 200_000),
                       div_val=1, dropout=0.1, dropatt=0.0),
}


# Initialisation schemes (`TransformerXL(init=...)`, see the module docstring).
INITS = ("reference", "lecun")


# ------------------------------------------------------------ pure functions
def sinusoid_encoding(distances, width: int, dtype=jnp.float32):
  """R [K, width]: [sin(δ·f), cos(δ·f)] with f_k = 10000^(-2k/width) (reference order).

  For odd widths the last cosine is dropped.
  """
  half = (width + 1) // 2
  inv_freq = 1.0 / (10000.0 ** (np.arange(0, 2 * half, 2, dtype=np.float32) / width))
  x = jnp.asarray(distances, jnp.float32)[:, None] * inv_freq[None]  # [K, half]
  return jnp.concatenate([jnp.sin(x), jnp.cos(x)], axis=-1)[:, :width].astype(dtype)


def rel_shift(x):
  """Moves relative scores into key order: [..., T, K] -> [..., T, K].

  `x[..., i, j']` is the score of query i against the encoding of distance
  K-1-j'. The result holds, at [..., i, j], the score for distance M + i - j
  (M = K - T), i.e. out[..., i, j] = x[..., i, j + T - 1 - i], for every
  j <= M + i; entries with j > M + i (masked later) are garbage. One pad, two
  reshapes and a slice instead of a gather (Dai et al., Appendix B).
  """
  *lead, t, k = x.shape
  x = jnp.pad(x, [(0, 0)] * len(lead) + [(0, 0), (1, 0)])           # [..., T, K+1]
  x = x.reshape(*lead, k + 1, t)                                     # [..., K+1, T]
  return x[..., 1:, :].reshape(*lead, t, k)                          # [..., T, K]


def attention_mask(q_len: int, k_len: int, mem_len: int = 0, same_length: bool = False):
  """visible [T, K] (bool): key j is visible to query i iff j <= M + i.

  With same_length, additionally j > M + i - mem_len, so every query sees the
  same number (mem_len) of keys, as in the reference's evaluation setting.
  """
  m = k_len - q_len
  i = np.arange(q_len)[:, None]
  j = np.arange(k_len)[None, :]
  visible = j <= m + i
  if same_length:
    visible &= j > m + i - mem_len
  return jnp.asarray(visible)


def score_scale(ch: int, d: int) -> float:
  """1/sqrt(Ch·D): the scaling of the attention scores (a head's width in reals), shared by the
  full attention (`relative_attention_logits`) and the incremental one (`decode_step`)."""
  return 1.0 / math.sqrt(ch * d)


def relative_attention_logits(q, k, rel_k, r_w_bias, r_r_bias):
  """Scaled relative attention scores, real over the components of each head.

  Args:
    q: queries [B, T, H, Ch, D] (for the last T of the K key positions).
    k: keys [B, K, H, Ch, D].
    rel_k: projected encodings W_r R [K, H, Ch, D] of distances K-1, ..., 0.
    r_w_bias, r_r_bias: u and v [H, Ch, D].

  Returns:
    [B, H, T, K] scores, unmasked, in at least float32: under bfloat16 inputs the
    products accumulate into, and are returned as, float32 (not rounded to bfloat16).
  """
  ch, d = q.shape[-2:]
  f32 = _score_dtype(q.dtype)
  ac = jnp.einsum("bihcd,bjhcd->bhij", q + r_w_bias, k,
                  preferred_element_type=f32)                       # [B, H, T, K]
  bd = jnp.einsum("bihcd,jhcd->bhij", q + r_r_bias, rel_k,
                  preferred_element_type=f32)                       # [B, H, T, K] by distance
  return (ac + rel_shift(bd)) * score_scale(ch, d)


def _score_dtype(dtype):
  """The dtype attention scores are computed in: float32, or wider inputs' own."""
  return jnp.promote_types(dtype, jnp.float32)


def _masked(logits, visible):
  # A finite minimum, not -inf, so a fully masked row gives no NaN.
  return jnp.where(visible, logits, jnp.finfo(logits.dtype).min)


def initial_mems(batch_size: int, n_layers: int, d_model: int, algebra,
                 dtype=jnp.float32) -> tuple:
  """Empty memories (M = 0), one [B, 0, C, D] per layer; same as `mems=None`."""
  d = algebras_lib.get(algebra).dim
  return tuple(jnp.zeros((batch_size, 0, d_model, d), dtype) for _ in range(n_layers))


def _dropout(x, rate, is_training, unit="component"):
  """Dropout on x (`ann.dropout`: per real component, or per element of x [..., C, D])."""
  if is_training and rate > 0:
    return ann.dropout(hk.next_rng_key(), rate, x, unit)
  return x


class DecodeCache(NamedTuple):
  """The state of incremental decoding (all shapes static).

  keys, values: per layer [B·H, Ch·D, W] (batch-major, then heads), ring
      buffers; slot s holds position `positions[s]`.
  rel_keys: per layer W_r R [H, W, Ch·D] for distances 0..W-1 (clamped by
      clamp_len); they depend only on the parameters (`decode_rel_keys`).
  positions: [W] int32, the absolute position in each slot, -1 if empty.
  step: [] int32, the absolute position of the next token.

  These are the shapes and layouts that XLA on CPU contracts at batch 1 in
  place. Kept position-major ([B, W, H, Ch, D], the layout of `__call__`'s
  keys), both caches and the relative keys were copied into them at every
  step: a third of the traced step time of the 55 M-parameter M4(R) model
  (BENCHMARKS.md, issue 12).
  """

  keys: tuple
  values: tuple
  rel_keys: tuple
  positions: jax.Array
  step: jax.Array


# -------------------------------------------------------------------- layer
class DecoderLayer(hk.Module):
  """Relative multi-head attention + position-wise feed-forward, post- or pre-norm.

  Submodules (all algebra-valued, no bias unless stated): "q" C -> H·Ch,
  "kv" C -> 2·H·Ch, "r" C -> H·Ch (relative encodings), "o" H·Ch -> C,
  "attn_norm", "ff_in" C -> F (bias), "ff_out" F -> C (bias), "ff_norm".
  """

  def __init__(self, n_heads: int, d_head: int, d_inner: int, *, algebra,
               dropout: float = 0.0, dropatt: float = 0.0, pre_lnorm: bool = False,
               activation: Union[str, Callable] = "relu",
               w_init: Optional[hk.initializers.Initializer] = None,
               norm_scale_init: Optional[hk.initializers.Initializer] = None,
               dropout_unit: str = ann.DEFAULT_DROPOUT_UNIT,
               name: Optional[str] = None):
    """See the class docstring; w_init / norm_scale_init: initialisers of every weight
    layer's w and of the LayerNorm scales (None: `ann.Linear`'s LeCun default, ones);
    dropout_unit: see `TransformerXL`."""
    super().__init__(name=name)
    self.algebra = algebras_lib.get(algebra)
    self.w_init, self.norm_scale_init = w_init, norm_scale_init
    self.n_heads = positive_int(n_heads, "n_heads")
    self.d_head = positive_int(d_head, "d_head")
    self.d_inner = positive_int(d_inner, "d_inner")
    self.dropout, self.dropatt = dropout, dropatt
    self.dropout_unit = ann.check_dropout_unit(dropout_unit)
    self.pre_lnorm = pre_lnorm
    self.activation = ann.get_activation(activation)

  # Why every submodule factory below is `name_like("__call__")`: Haiku names a submodule by the
  # method that creates it, so a Linear built inside `decode_step` would get new parameters
  # (".../decode_step/q") instead of the trained ones ("…/q"). The factories are called from
  # both `__call__` (training, evaluation) and `decode_step` (one token at a time), and the
  # decorator makes both see the parameters `__call__` created. Building the submodules once in
  # `__init__` would also share them, but Haiku would then name them ".../~/q": every parameter
  # name would change, and with it saved checkpoints and the name patterns that select weights
  # for weight decay and pruning.
  @hk.experimental.name_like("__call__")
  def _linear(self, size, name, with_bias=False):
    return ann.Linear(size, algebra=self.algebra, with_bias=with_bias, w_init=self.w_init,
                      name=name)

  @hk.experimental.name_like("__call__")
  def _norm(self, name):
    return ann.LayerNorm(algebra=self.algebra, scale_init=self.norm_scale_init, name=name)

  @hk.experimental.name_like("__call__")
  def rel_keys(self, rel):
    """W_r R: encodings [K, C, D] -> [K, H, Ch, D]."""
    out = self._linear(self.n_heads * self.d_head, "r")(rel)         # [K, H·Ch, D]
    return out.reshape(rel.shape[0], self.n_heads, self.d_head, -1)  # [K, H, Ch, D]

  @hk.experimental.name_like("__call__")
  def _qkv(self, h, cat):
    """q from the T current positions, k and v from the K = M + T positions."""
    b, t, _, d = h.shape
    hc = self.n_heads * self.d_head
    x = self._norm("attn_norm")(cat) if self.pre_lnorm else cat     # [B, K, C, D]
    q = self._linear(hc, "q")(x[:, x.shape[1] - t:])                 # [B, T, H·Ch, D]
    kv = self._linear(2 * hc, "kv")(x)                               # [B, K, 2·H·Ch, D]
    q = q.reshape(b, t, self.n_heads, self.d_head, d)                # [B, T, H, Ch, D]
    kv = kv.reshape(b, x.shape[1], 2, self.n_heads, self.d_head, d)  # [B, K, 2, H, Ch, D]
    return q, kv[:, :, 0], kv[:, :, 1]

  @hk.experimental.name_like("__call__")
  def _attend_and_feed_forward(self, h, logits, v, is_training):
    """Softmax over keys, weighted values, output projection, residual, FFN."""
    b, t, _, d = h.shape
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)          # [B, H, T, K], f32 softmax
    probs = _dropout(probs, self.dropatt, is_training)
    out = jnp.einsum("bhij,bjhcd->bihcd", probs, v)                  # [B, T, H, Ch, D]
    out = out.reshape(b, t, self.n_heads * self.d_head, d)           # [B, T, H·Ch, D]
    return self._project_and_feed_forward(h, out, is_training)

  @hk.experimental.name_like("__call__")
  def _project_and_feed_forward(self, h, out, is_training):
    """Output projection of the attention out [B, T, H·Ch, D], residual, FFN."""
    c = h.shape[2]
    unit = self.dropout_unit
    out = _dropout(self._linear(c, "o")(out), self.dropout, is_training, unit)  # [B, T, C, D]
    h = h + out if self.pre_lnorm else self._norm("attn_norm")(h + out)

    x = self._norm("ff_norm")(h) if self.pre_lnorm else h
    y = self.activation(self._linear(self.d_inner, "ff_in", with_bias=True)(x))  # [B, T, F, D]
    y = _dropout(y, self.dropout, is_training, unit)
    y = _dropout(self._linear(c, "ff_out", with_bias=True)(y), self.dropout, is_training, unit)
    return h + y if self.pre_lnorm else self._norm("ff_norm")(h + y)  # [B, T, C, D]

  def __call__(self, h, mem, rel, visible, r_w_bias, r_r_bias, is_training=False):
    """One layer on a segment.

    Args:
      h: inputs [B, T, C, D].
      mem: memory [B, M, C, D] or None.
      rel: dropped-out encodings R [K, C, D] of distances K-1, ..., 0.
      visible: [T, K] attention mask.
      r_w_bias, r_r_bias: u, v [H, Ch, D].
      is_training: enables dropout.

    Returns:
      [B, T, C, D].
    """
    cat = h if mem is None else jnp.concatenate([mem, h], axis=1)    # [B, K, C, D]
    q, k, v = self._qkv(h, cat)
    logits = relative_attention_logits(q, k, self.rel_keys(rel), r_w_bias, r_r_bias)
    return self._attend_and_feed_forward(h, _masked(logits, visible), v, is_training)

  @hk.experimental.name_like("__call__")
  def step(self, h, keys, values, rel_k, slot, distance, visible, r_w_bias, r_r_bias):
    """One new position against the cache.

    Args:
      h: inputs [B, 1, C, D].
      keys, values: this layer's cache [B·H, Ch·D, W].
      rel_k: W_r R [H, W, Ch·D] for distances 0..W-1.
      slot: [] int, where the new key/value go.
      distance: [W] int, the distance from the new position to each slot.
      visible: [W] bool.
      r_w_bias, r_r_bias: u, v [H, Ch, D].

    Returns:
      (outputs [B, 1, C, D], keys, values) with the new position written.
    """
    b, _, _, d = h.shape
    n, k_dim = b * self.n_heads, self.d_head * d                     # B·H, Ch·D
    q, k, v = (x.reshape(n, k_dim) for x in self._qkv(h, h))         # [B·H, Ch·D]
    # Written first, then read: XLA on CPU then updates the caches in place. (Read first and
    # written after, each cache was copied twice per step; and caches of another rank than the
    # contractions below were updated twice, once per shape.) The operand order of the einsums
    # is the one in which XLA reads the caches without copying them into another layout.
    keys = jax.lax.dynamic_update_slice_in_dim(keys, k[..., None], slot, axis=2)
    values = jax.lax.dynamic_update_slice_in_dim(values, v[..., None], slot, axis=2)
    f32 = _score_dtype(q.dtype)
    u, r = (x.reshape(self.n_heads, k_dim) for x in (r_w_bias, r_r_bias))  # [H, Ch·D]
    qh = q.reshape(b, self.n_heads, k_dim)                           # [B, H, Ch·D]
    ac = jnp.einsum("nk,nkj->nj", (qh + u).reshape(n, k_dim), keys,
                    preferred_element_type=f32)                      # [B·H, W] by slot
    bd = jnp.einsum("bhk,hjk->bhj", qh + r, rel_k,
                    preferred_element_type=f32)                      # [B, H, W] by distance
    bd = jnp.take(bd, distance, axis=-1).reshape(n, -1)              # [B·H, W] by slot
    logits = _masked((ac + bd) * score_scale(self.d_head, d), visible)
    probs = jax.nn.softmax(logits, axis=-1).astype(v.dtype)          # [B·H, W], f32 softmax
    out = jnp.einsum("nkj,nj->nk", values, probs)                    # [B·H, Ch·D]
    out = out.reshape(b, 1, self.n_heads * self.d_head, d)           # [B, 1, H·Ch, D]
    return self._project_and_feed_forward(h, out, False), keys, values  # [B, 1, C, D], caches


# -------------------------------------------------------------------- model
class TransformerXL(hk.Module):
  """The Transformer-XL language model over any algebra (see the module docstring).

  Example (the enwik8 base model, real):

    def loss_fn(tokens, targets, mems, is_training):
      model = TransformerXL(**PRESETS["enwik8_base"], algebra="r")
      nll, new_mems = model(tokens, mems, is_training, targets=targets)
      return nll.mean(), new_mems

  The preset's widths count algebra elements, so `TransformerXL(**PRESETS["enwik8_base"],
  algebra="m2r")` is 4x wider in reals (164 M parameters); the M2(R) model of the real one's
  size is `TransformerXL(**matched_config(PRESETS["enwik8_base"], "m2r"), algebra="m2r")`
  (d_model 256, 41.3 M parameters).
  """

  def __init__(self, vocab_size: int, d_model: int, n_layers: int, n_heads: int, d_head: int,
               d_inner: int, *, algebra, mem_len: int, clamp_len: int = -1,
               dropout: float = 0.0, dropatt: float = 0.0, pre_lnorm: bool = False,
               same_length: bool = False, cutoffs: Sequence[int] = (), div_val: int = 1,
               d_embed: Optional[int] = None, tie_weights: bool = True,
               tie_projs: Union[None, bool, Sequence[bool]] = None, untie_r: bool = False,
               final_lnorm: Optional[bool] = None, activation: Union[str, Callable] = "relu",
               init: str = "reference", init_std: float = 0.02, proj_init_std: float = 0.01,
               tail_capacity: Optional[float] = 0.125,
               dropout_unit: str = ann.DEFAULT_DROPOUT_UNIT, name: Optional[str] = None):
    """Constructs the model.

    Args:
      vocab_size: V (256 for byte-level enwik8, 267,735 for WikiText-103).
      d_model: C, the model width in algebra elements (C·D real components).
      n_layers: L.
      n_heads: H.
      d_head: Ch, the head width in algebra elements.
      d_inner: F, the feed-forward width in algebra elements.
      algebra: an Algebra or a registered name.
      mem_len: memory positions kept per layer (0: no recurrence).
      clamp_len: relative distances above it use the encoding of clamp_len
        (<= 0: no clamping).
      dropout: rate on the embeddings, encodings, attention and FFN outputs,
        the FFN hidden layer and the final hidden state (component-wise).
      dropatt: rate on the attention probabilities.
      pre_lnorm: LayerNorm before each sublayer (residual outside) instead of
        after the residual add.
      same_length: every query attends to exactly mem_len keys.
      cutoffs, div_val, d_embed: adaptive input/softmax clusters; () is a
        plain softmax. d_embed (elements) defaults to d_model.
      tie_weights: output embeddings = input embeddings (logits are real dot
        products with them); False gives the softmax its own tables.
      tie_projs: see `adaptive.AdaptiveSoftmax`.
      untie_r: separate u, v per layer (the TF reference's option) instead of
        one pair shared by all layers (the PyTorch reference).
      final_lnorm: LayerNorm on the last layer's output; None: exactly when
        pre_lnorm (post-norm layers already end in one; the reference has
        none in either case, which leaves pre-norm outputs unnormalised).
      activation: FFN nonlinearity, a name in `ann.ACTIVATIONS` or a callable.
      init: one of INITS: "reference" (the PyTorch reference's scheme, in the
        algebra; see the module docstring) or "lecun" (algebra LeCun weights,
        LayerNorm scales 1, cluster head 0: this library's earlier default).
      init_std: the reference's init_std, 0.02: stddev of the embeddings, u, v
        (both schemes), and with init="reference" of the weight layers (in
        the algebra form), of the cluster head and of LayerNorm scales
        around 1.
      proj_init_std: the reference's proj_init_std, 0.01: stddev (algebra form)
        of the adaptive embedding/softmax projections with init="reference";
        they exist only when div_val > 1 or d_embed != d_model.
      tail_capacity: see `adaptive.AdaptiveSoftmax` (loss with targets).
      dropout_unit: one of `ann.DROPOUT_UNITS`: what `dropout` drops, each real
        component ("component", the default: the reference's dropout at equal real
        width, and what every earlier result here used) or whole algebra elements
        ("element": one mask entry per element of [..., C, D]); see `ann.dropout`.
        The attention probabilities (dropatt) are real: always per component.
      name: module name.
    """
    super().__init__(name=name)
    self.algebra = algebras_lib.get(algebra)
    self.dropout_unit = ann.check_dropout_unit(dropout_unit)
    self.vocab_size = positive_int(vocab_size, "vocab_size")
    self.d_model = positive_int(d_model, "d_model")
    self.n_layers = positive_int(n_layers, "n_layers")
    self.n_heads = positive_int(n_heads, "n_heads")
    self.d_head = positive_int(d_head, "d_head")
    self.d_inner = positive_int(d_inner, "d_inner")
    if isinstance(mem_len, bool) or not isinstance(mem_len, (int, np.integer)) or mem_len < 0:
      raise ValueError(f"mem_len must be a non-negative int, got {mem_len!r}.")
    if isinstance(clamp_len, bool) or not isinstance(clamp_len, (int, np.integer)):
      raise ValueError(f"clamp_len must be an int (<= 0 for no clamping), got {clamp_len!r}.")
    for what, rate in (("dropout", dropout), ("dropatt", dropatt)):
      if not 0.0 <= rate < 1.0:
        raise ValueError(f"{what} must be in [0, 1), got {rate!r}.")
    self.mem_len, self.clamp_len = int(mem_len), int(clamp_len)
    self.dropout, self.dropatt = float(dropout), float(dropatt)
    self.pre_lnorm, self.same_length = bool(pre_lnorm), bool(same_length)
    self.d_embed = self.d_model if d_embed is None else positive_int(d_embed, "d_embed")
    self.cutoffs, self.div_val = tuple(int(c) for c in cutoffs), int(div_val)
    adaptive.check_clusters(self.vocab_size, self.cutoffs, self.d_embed, self.div_val)
    self.tie_weights, self.tie_projs = bool(tie_weights), tie_projs
    self.untie_r = bool(untie_r)
    self.final_lnorm = self.pre_lnorm if final_lnorm is None else bool(final_lnorm)
    ann.get_activation(activation)  # validates the name now
    self.activation = activation
    if init not in INITS:
      raise ValueError(f"Unknown init {init!r}; valid: {', '.join(INITS)}.")
    for what, std in (("init_std", init_std), ("proj_init_std", proj_init_std)):
      if not std > 0:
        raise ValueError(f"{what} must be positive, got {std!r}.")
    self.init, self.init_std = init, float(init_std)
    if init == "reference":
      normal = lambda std, mean=0.0: hk.initializers.RandomNormal(stddev=std, mean=mean)
      self._w_init = ann.initializers.RealEquivalentNormal(self.init_std, algebra=self.algebra)
      self._proj_init = ann.initializers.RealEquivalentNormal(float(proj_init_std),
                                                               algebra=self.algebra)
      self._norm_scale_init = normal(self.init_std, 1.0)
      self._cluster_init = normal(self.init_std)
    else:
      self._w_init = self._proj_init = self._norm_scale_init = self._cluster_init = None
    self.tail_capacity = tail_capacity

  # ------------------------------------------------------------ submodules
  # name_like("__call__"): `decode_step` reuses the parameters `__call__` created (see
  # `DecoderLayer`'s submodule factories).
  @hk.experimental.name_like("__call__")
  def _embedding(self):
    return adaptive.AdaptiveEmbedding(
        self.vocab_size, self.d_embed, self.d_model, self.cutoffs, self.div_val,
        algebra=self.algebra, init_std=self.init_std, proj_init=self._proj_init, name="embed")

  @hk.experimental.name_like("__call__")
  def _softmax(self, embedding):
    return adaptive.AdaptiveSoftmax(
        self.vocab_size, self.d_embed, self.d_model, self.cutoffs, self.div_val,
        algebra=self.algebra, embedding=embedding, tie_weights=self.tie_weights,
        tie_projs=self.tie_projs, tail_capacity=self.tail_capacity,
        init_std=self.init_std, proj_init=self._proj_init, cluster_init=self._cluster_init,
        name="softmax")

  @hk.experimental.name_like("__call__")
  def _layers(self):
    return [DecoderLayer(self.n_heads, self.d_head, self.d_inner, algebra=self.algebra,
                         dropout=self.dropout, dropatt=self.dropatt,
                         pre_lnorm=self.pre_lnorm, activation=self.activation,
                         w_init=self._w_init, norm_scale_init=self._norm_scale_init,
                         dropout_unit=self.dropout_unit,
                         name=f"layer_{l}") for l in range(self.n_layers)]

  @hk.experimental.name_like("__call__")
  def _r_biases(self):
    """u, v: [H, Ch, D] shared, or [L, H, Ch, D] with untie_r."""
    shape = ([self.n_layers] if self.untie_r else []) + [self.n_heads, self.d_head,
                                                        self.algebra.dim]
    init = hk.initializers.RandomNormal(stddev=self.init_std)
    u = hk.get_parameter("r_w_bias", shape, init=init)
    v = hk.get_parameter("r_r_bias", shape, init=init)
    if self.untie_r:
      return [(u[l], v[l]) for l in range(self.n_layers)]
    return [(u, v)] * self.n_layers

  @hk.experimental.name_like("__call__")
  def _output(self, h, is_training):
    if self.final_lnorm:
      h = ann.LayerNorm(algebra=self.algebra, scale_init=self._norm_scale_init,
                        name="final_norm")(h)
    return _dropout(h, self.dropout, is_training, self.dropout_unit)

  def _distances(self, n):
    """Distances n-1, ..., 0 (clamped) as encodings R [n, C, D]."""
    dist = np.arange(n - 1, -1, -1)
    if self.clamp_len > 0:
      dist = np.minimum(dist, self.clamp_len)
    return sinusoid_encoding(dist, self.d_model * self.algebra.dim).reshape(
        n, self.d_model, self.algebra.dim)                           # [n, C, D]

  # --------------------------------------------------------------- forward
  def __call__(self, tokens, mems=None, is_training: bool = False, *, targets=None):
    """Runs one segment.

    Args:
      tokens: int [B, T].
      mems: None, or one memory [B, M, C, D] per layer (as returned by the
        previous call; M may be 0).
      is_training: enables dropout (needs an rng).
      targets: optional int [B, T]. If given, the per-token negative log
        likelihood is returned instead of log-probabilities; with adaptive
        softmax this never builds the [B, T, V] tensor.

    Returns:
      (log_probs [B, T, V] or nll [B, T], new_mems), new_mems a tuple of L
      arrays [B, min(M + T, mem_len), C, D] (stop-gradient), None if mem_len
      is 0.
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f"tokens must be integers [B, T], got {tokens.dtype} "
                       f"{tuple(tokens.shape)}.")
    b, t = tokens.shape
    c, d = self.d_model, self.algebra.dim
    if mems is not None:
      mems = tuple(mems)
      shapes = {tuple(m.shape) for m in mems}
      if len(mems) != self.n_layers or len(shapes) != 1 or (
          next(iter(shapes))[:1] + next(iter(shapes))[2:] != (b, c, d)):
        raise ValueError(f"mems must be {self.n_layers} arrays [B={b}, M, C={c}, D={d}] of one "
                         f"shape; got {len(mems)} of shapes {sorted(shapes)}.")
    m = mems[0].shape[1] if mems else 0
    k = m + t

    embedding = self._embedding()
    unit = self.dropout_unit
    h = _dropout(embedding(tokens), self.dropout, is_training, unit)  # [B, T, C, D]
    rel = _dropout(self._distances(k), self.dropout, is_training, unit)  # [K, C, D]
    visible = attention_mask(t, k, self.mem_len, self.same_length)  # [T, K]
    inputs = []
    for l, (layer, (u, v)) in enumerate(zip(self._layers(), self._r_biases())):
      inputs.append(h)
      mem = mems[l] if m else None
      h = layer(h, mem, rel, visible, u, v, is_training)             # [B, T, C, D]
    h = self._output(h, is_training)

    new_mems = None
    if self.mem_len:
      new_mems = tuple(
          jax.lax.stop_gradient((x if not m else jnp.concatenate([mem, x], 1))[:, -self.mem_len:])
          for x, mem in zip(inputs, mems or inputs))                 # L × [B, M', C, D]
    softmax = self._softmax(embedding)
    if targets is None:
      return softmax.log_probs(h), new_mems
    return softmax.nll(h, targets), new_mems

  # -------------------------------------------------------------- decoding
  @hk.experimental.name_like("__call__")
  def decode_rel_keys(self, cache_len: Optional[int] = None) -> tuple:
    """Per layer W_r R [H, W, Ch·D] for the distances 0..W-1 of a decoding cache of W =
    cache_len positions (default mem_len + 1): they depend only on the parameters."""
    w = self.mem_len + 1 if cache_len is None else positive_int(cache_len, "cache_len")
    rel = self._distances(w)[::-1]                                   # [W, C, D], distances 0..W-1
    return tuple(layer.rel_keys(rel).swapaxes(0, 1).reshape(self.n_heads, w, -1)
                 for layer in self._layers())                        # L × [H, W, Ch·D]

  @hk.experimental.name_like("__call__")
  def init_cache(self, batch_size: int, cache_len: Optional[int] = None,
                 dtype=jnp.float32, rel_keys: Optional[Sequence[jax.Array]] = None
                 ) -> DecodeCache:
    """An empty cache of W = cache_len positions (default mem_len + 1).

    rel_keys: `decode_rel_keys(cache_len)` computed earlier (`decoding.Decoder.prepare` keeps
    them with the prepared weights); None computes them here.
    """
    batch_size = positive_int(batch_size, "batch_size")
    w = self.mem_len + 1 if cache_len is None else positive_int(cache_len, "cache_len")
    d = self.algebra.dim
    zeros = jnp.zeros((batch_size * self.n_heads, self.d_head * d, w), dtype)  # [B·H, Ch·D, W]
    if rel_keys is None:
      rel_keys = self.decode_rel_keys(w)
    want = (self.n_heads, w, self.d_head * d)
    if len(rel_keys) != self.n_layers or any(r.shape != want for r in rel_keys):
      raise ValueError(f"rel_keys were computed for another model or cache length: this cache "
                       f"needs {self.n_layers} arrays [H, W, Ch·D] = {want}, got "
                       f"{[tuple(r.shape) for r in rel_keys]}; prepare the params with the "
                       "decoder that uses them (or pass the raw params).")
    return DecodeCache(keys=(zeros,) * self.n_layers, values=(zeros,) * self.n_layers,
                       rel_keys=tuple(rel_keys), positions=jnp.full((w,), -1, jnp.int32),
                       step=jnp.zeros((), jnp.int32))

  @hk.experimental.name_like("__call__")
  def decode_step(self, tokens, cache: DecodeCache):
    """Feeds one token per sequence, tokens int [B]; returns (log_probs [B, V], cache).

    The new token attends to itself and the cached positions (at most W in
    all; with same_length, to the last mem_len of them), exactly as
    `__call__` on a one-token segment with a memory of W - 1 positions.
    Dropout is off. All sequences of the batch share one position counter.
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 1 or not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f"decode_step takes one integer token per sequence, [B]; got "
                       f"{tokens.dtype} {tuple(tokens.shape)}.")
    w = cache.positions.shape[0]
    pos = cache.step
    slot = pos % w
    positions = cache.positions.at[slot].set(pos)                    # [W]
    distance = pos - positions                                       # [W], in [0, W) where filled
    visible = positions >= 0
    if self.same_length:
      visible &= distance < self.mem_len
    distance = jnp.clip(distance, 0, w - 1)

    embedding = self._embedding()
    h = embedding(tokens[:, None])                                   # [B, 1, C, D]
    keys, values = [], []
    for l, (layer, (u, v)) in enumerate(zip(self._layers(), self._r_biases())):
      h, k_l, v_l = layer.step(h, cache.keys[l], cache.values[l], cache.rel_keys[l], slot,
                               distance, visible, u, v)              # [B, 1, C, D]
      keys.append(k_l)
      values.append(v_l)
    h = self._output(h, False)
    log_probs = self._softmax(embedding).log_probs(h[:, 0])          # [B, V]
    return log_probs, cache._replace(keys=tuple(keys), values=tuple(values),
                                     positions=positions, step=pos + 1)


# ------------------------------------------------------------ matched sizes
def model_costs(config: dict, algebra, seq_len: int = 128, batch_size: int = 1,
                with_mems: bool = True, with_targets: bool = True) -> costs_lib.ModelCost:
  """`costs.model_costs` of TransformerXL(**config, algebra=algebra), abstractly.

  The forward pass of one training segment of `seq_len` tokens per sequence
  with a full memory of config["mem_len"] positions (`with_mems`), computing
  the training loss (`with_targets`: the adaptive softmax's `nll` path, whose
  tail clusters are computed for a gathered `tail_capacity` share of the
  positions; without targets, the log-probabilities of every word for every
  position, as evaluation's `log_probs`).

  `macs` counts the weight layers (the paper's MACs); `other_macs` the rest
  (`costs`): per layer and sequence, 3·T·K·H·Ch·D for the two score terms and
  the attention-weighted values (K = M + T keys, real dot products over a
  head's Ch·D components), plus the output logits (T·V·C·D for a plain tied
  softmax, per cluster for an adaptive one).
  """
  alg = algebras_lib.get(algebra)
  mem_len = config.get("mem_len", 0)
  n_layers, c = config["n_layers"], config["d_model"]
  tokens = jax.ShapeDtypeStruct((batch_size, seq_len), jnp.int32)
  mems = None
  if with_mems and mem_len:
    mems = [jax.ShapeDtypeStruct((batch_size, mem_len, c, alg.dim), jnp.float32)] * n_layers
  targets = tokens if with_targets else None

  def fn(tokens, mems, targets):
    return TransformerXL(**config, algebra=alg)(tokens, mems, targets=targets)

  return costs_lib.model_costs(fn, tokens, mems, targets)


MATCH_MODES = ("params", "macs", "flops", "width")


def matched_config(reference: dict, algebra, match: str = "params", *, tol: float = 0.02,
                   seq_len: Optional[int] = None) -> dict:
  """Sizes of an algebra model that matches a real reference model.

  The rule (depth, heads, vocabulary and all other settings unchanged):
    * "width": the same real activation width: d_model, d_inner and d_head
      divided by D (each rounded, at least 1); about 1/D of the parameters.
    * "params" / "macs" / "flops": one width factor w scales d_model,
      d_inner and d_head (each rounded; n_heads fixed, so every head keeps
      its share of the width, and n_heads·d_head equals d_model up to
      rounding -- the projections C -> H·Ch do not need equality) and
      `matching.match_width` picks the w whose cost is closest to the
      reference's. If rounding leaves the cost more than tol/4 away, d_inner
      alone is then re-tuned with d_model fixed (one element of d_inner
      changes the cost by about 2·L·d_model·D parameters). Costs come from
      `model_costs` of one training segment of `seq_len` tokens with a full
      memory: real parameters, weight-layer MACs ("macs": attention scores,
      attention-weighted values and logits left out), or all multiply-adds
      ("flops": those included, `ModelCost.all_macs`; flops = 2 × MACs).

  Args:
    reference: TransformerXL keyword arguments of the real model (no algebra),
      e.g. PRESETS["enwik8_base"].
    algebra: the algebra of the new model.
    match: one of MATCH_MODES.
    tol: accepted |cost / reference cost - 1|; ValueError if missed.
    seq_len: segment length for MACs; default the reference's mem_len (the
      published models train with tgt_len = mem_len), or 128 without memory.

  Returns:
    A copy of `reference` with d_model, d_head and d_inner (and d_embed, if
    given, scaled like d_model) replaced.
  """
  if match not in MATCH_MODES:
    raise ValueError(f"Unknown match {match!r}; valid: {', '.join(MATCH_MODES)}.")
  alg = algebras_lib.get(algebra)
  ref = dict(reference)
  c_ref, f_ref, ch_ref = ref["d_model"], ref["d_inner"], ref["d_head"]
  if seq_len is None:
    seq_len = ref.get("mem_len") or 128

  def sized(c, f, ch):
    out = dict(ref, d_model=c, d_inner=f, d_head=ch)
    if ref.get("d_embed") is not None:
      out["d_embed"] = max(1, round(ref["d_embed"] * c / c_ref))
    return out

  if match == "width":
    return sized(max(1, round(c_ref / alg.dim)), max(1, round(f_ref / alg.dim)),
                 max(1, round(ch_ref / alg.dim)))

  def cost(cfg, a=alg):
    report = model_costs(cfg, a, seq_len=seq_len)
    if match == "params":
      return report.total_params
    return report.macs if match == "macs" else report.all_macs

  def at_width(w):
    c = matching.scaled_channels(c_ref, w)
    return sized(c, matching.scaled_channels(f_ref, w), max(1, round(ch_ref * c / c_ref)))

  target = cost(ref, "r")
  # At width 1 the model costs about D (params) or m (MACs) times the real one.
  start = (alg.dim if match == "params" else alg.mults_per_product) ** -0.5
  coarse = matching.match_width(lambda w: cost(at_width(w)), target, tolerance=0.5,
                                stop_tolerance=tol / 4, initial_width=start,
                                max_evaluations=12)
  base = at_width(coarse.width)
  if abs(coarse.ratio - 1) <= tol / 10:
    return base
  fine = matching.match_width(
      lambda w: cost(dict(base, d_inner=matching.scaled_channels(base["d_inner"], w))),
      target, tolerance=tol, initial_width=1.0)
  return dict(base, d_inner=matching.scaled_channels(base["d_inner"], fine.width))
