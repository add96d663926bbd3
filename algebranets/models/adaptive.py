"""Adaptive input embeddings and adaptive softmax with algebra-valued embeddings.

Transformer-XL's word-level models (WikiText-103, 267,735 word types) use the
adaptive input of Baevski & Auli (2019) and the adaptive softmax of Grave et
al. (2017), in the "projected" form of the Transformer-XL reference code.

Shape glossary:
  N   positions (all leading axes flattened)
  V   vocabulary; V_i tokens of cluster i
  C   model width d_proj (the Transformer's d_model), in algebra elements
  E_i embedding width of cluster i, d_embed // div_val**i elements
  D   algebra components
  n   tail clusters, len(cutoffs)

Clusters: `cutoffs` c_1 < ... < c_n split [0, V) into the head [0, c_1) and
tails [c_i, c_{i+1}) (c_{n+1} = V). With div_val == 1 every cluster has width
E = d_embed (one table [V, E, D]); with div_val > 1 cluster i has width
d_embed // div_val**i, so rare words get cheaper embeddings.

Projections: a cluster of width E_i != C is mapped to the model width by an
algebra linear map P_i: [E_i, D] -> [C, D] (`ann.Linear`, no bias). As in the
reference, projections exist iff div_val > 1 or d_embed != d_proj; with
div_val == 1 one projection serves all clusters.

How logits leave the algebra: the logit of token v is the *real* dot product
of its embedding e_v [E_i, D] with the hidden state brought to width E_i,

    logit_v = <e_v, g_i(h)> + b_v,     <a, b> = Σ_{c,d} a_cd b_cd,

over all E_i·D real components. g_i is the identity without projections; a
tied projection uses the real transpose of the input projection,
g_i = P_i^T (so <e_v, P_i^T h> = <P_i e_v, h>: the output compares h with the
very vector the input layer feeds in); an untied one is its own algebra
linear map [C, D] -> [E_i, D]. P^T is the transpose of P as a real linear map
of the C·D components (`dense_transpose`); it is an algebra product again for
C, H and M_n(R) (multiplication by the conjugate / transposed matrix) but not
for every algebra (dual numbers), so it is computed by `jax.linear_transpose`
of `ops.dense`, which reuses the fast paths.

The head's softmax covers the V_0 head tokens and one logit per tail cluster
(cluster_weight [n, E_0, D], cluster_bias [n]); a tail token's
log-probability is log p(cluster) + log p(token | cluster). (The reference
reads cluster i's log-probability from head column -i, i.e. the cluster
logits in reverse order; with i.i.d. initialised rows that is a relabelling
of parameters, not a different model.)

Precision: logits are real dot products computed by an einsum that
accumulates into and returns float32 even for bfloat16 inputs
(`preferred_element_type`), and the log-softmax and the loss are float32.

Loss with targets (`AdaptiveSoftmax.nll`) never builds [N, V]: the head is
computed for all N positions, and a tail cluster only for the positions whose
target falls in it. To keep shapes static those positions are gathered into a
buffer of `ceil(tail_capacity·N)` rows; when a batch has more, a `lax.cond`
falls back to computing that cluster for all N positions, so the result is
always exact and only the cost changes. (On WikiText-103 about 6% of tokens lie
beyond the first cutoff, so the default capacity of 1/8 per cluster almost
never overflows.)
"""

from __future__ import annotations

import math
from typing import Optional, Sequence, Union

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from algebranets import algebras as algebras_lib
from algebranets import nn as ann
from algebranets import ops
from algebranets.nn._checks import positive_int

__all__ = ["AdaptiveEmbedding", "AdaptiveSoftmax", "cluster_bounds", "check_clusters",
           "dense_transpose"]


# ------------------------------------------------------------------- helpers
def cluster_bounds(vocab_size: int, cutoffs: Sequence[int]) -> tuple[tuple[int, int], ...]:
  """[(0, c_1), (c_1, c_2), ..., (c_n, V)]; ValueError unless 0 < c_1 < ... < c_n < V."""
  vocab_size = positive_int(vocab_size, "vocab_size")
  try:
    cuts = [int(c) for c in cutoffs]
  except (TypeError, ValueError):
    raise ValueError(f"cutoffs must be a sequence of ints, got {cutoffs!r}.") from None
  ends = [0] + cuts + [vocab_size]
  if any(a >= b for a, b in zip(ends[:-1], ends[1:])):
    raise ValueError(f"cutoffs must increase strictly within (0, vocab_size={vocab_size}); "
                     f"got {tuple(cutoffs)!r}.")
  return tuple(zip(ends[:-1], ends[1:]))


def check_clusters(vocab_size: int, cutoffs: Sequence[int], d_embed: int,
                   div_val: int) -> tuple[int, ...]:
  """Validates the adaptive settings; returns the embedding width E_i per cluster."""
  bounds = cluster_bounds(vocab_size, cutoffs)
  d_embed = positive_int(d_embed, "d_embed")
  div_val = positive_int(div_val, "div_val")
  if div_val == 1:
    return (d_embed,) * len(bounds)
  dims = tuple(d_embed // div_val ** i for i in range(len(bounds)))
  if dims[-1] < 1:
    raise ValueError(f"d_embed={d_embed} with div_val={div_val} leaves cluster "
                     f"{len(bounds) - 1} of {len(bounds)} without embedding width "
                     f"(d_embed // div_val**i must be >= 1); widths {dims}.")
  return dims


def dense_transpose(y, w, algebra, structure=None):
  """P^T y for the real linear map P: x -> ops.dense(x, w, algebra).

  Args:
    y: [..., Cout, D].
    w: dense weight [Cin, Cout, D].
    algebra: an Algebra or a registered name.
    structure: T of a learned algebra (`ops.dense`), else None.

  Returns:
    [..., Cin, D] with <P x, y> == <x, P^T y> over all real components.
  """
  alg = algebras_lib.get(algebra)
  x_spec = jax.ShapeDtypeStruct(y.shape[:-2] + (w.shape[0], alg.dim), y.dtype)
  (x,) = jax.linear_transpose(lambda x: ops.dense(x, w, alg, structure=structure), x_spec)(y)
  return x                                                           # [..., Cin, D]


class _Projection(ann.Linear):
  """An `ann.Linear` without bias whose weight can also be read outside its call."""

  def __init__(self, input_size: int, output_size: int, *, algebra, name: str,
               w_init: Optional[hk.initializers.Initializer] = None):
    super().__init__(output_size, algebra=algebra, with_bias=False, w_init=w_init, name=name)
    self.input_size = input_size

  def weight(self):
    """w [input_size, output_size, D] (the parameter `__call__` uses)."""
    return hk.get_parameter(
        "w", [self.input_size, self.output_size, self.algebra.dim],
        init=self.w_init or ann.initializers.lecun_normal(self.algebra))

  def structure(self):
    """T [D, D, D] of a learned algebra (the one `__call__` uses), None otherwise."""
    return ann.learned.structure(self.algebra) if self.algebra.learned else None


def _normal(std):
  return hk.initializers.RandomNormal(stddev=std)


# ------------------------------------------------------------ adaptive input
class AdaptiveEmbedding(hk.Module):
  """Token ids [...] -> algebra embeddings [..., C, D], scaled by sqrt(C·D).

  Parameters: tables [V, E, D] ("table", div_val == 1) or [V_i, E_i, D]
  ("table_i"), initialised N(0, init_std²) as in the reference; projections
  w [E_i, C, D] ("proj" / "proj_i"; `proj_init`, default `ann.Linear`'s) where
  needed (see the module docstring). The output is multiplied by sqrt(C·D),
  the real width, as the reference multiplies by sqrt(d_model).
  """

  def __init__(self, vocab_size: int, d_embed: int, d_proj: int,
               cutoffs: Sequence[int] = (), div_val: int = 1, *, algebra,
               init_std: float = 0.02,
               proj_init: Optional[hk.initializers.Initializer] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    self.algebra = algebras_lib.get(algebra)
    self.vocab_size = positive_int(vocab_size, "vocab_size")
    self.d_proj = positive_int(d_proj, "d_proj")
    self.dims = check_clusters(vocab_size, cutoffs, d_embed, div_val)
    self.bounds = cluster_bounds(vocab_size, cutoffs)
    self.d_embed, self.div_val = int(d_embed), int(div_val)
    alg = self.algebra
    # Submodules are built here, once, because the tied softmax reads them too.
    if div_val == 1:
      self._tables = [ann.Embed(vocab_size, d_embed, algebra=alg, w_init=_normal(init_std),
                                name="table")]
      self._projs = [_Projection(d_embed, d_proj, algebra=alg, w_init=proj_init, name="proj")
                     if d_embed != d_proj else None]
    else:
      self._tables = [ann.Embed(hi - lo, e, algebra=alg, w_init=_normal(init_std),
                                name=f"table_{i}")
                      for i, ((lo, hi), e) in enumerate(zip(self.bounds, self.dims))]
      self._projs = [_Projection(e, d_proj, algebra=alg, w_init=proj_init, name=f"proj_{i}")
                     for i, e in enumerate(self.dims)]

  @property
  def has_projections(self) -> bool:
    return self._projs[0] is not None

  def cluster_table(self, i: int):
    """Embeddings of cluster i, [V_i, E_i, D]."""
    if self.div_val == 1:
      lo, hi = self.bounds[i]
      return self._tables[0].embeddings[lo:hi]
    return self._tables[i].embeddings

  def cluster_projection(self, i: int) -> Optional[_Projection]:
    """The projection [E_i, D] -> [C, D] of cluster i, or None."""
    return self._projs[0 if self.div_val == 1 else i]

  def __call__(self, tokens):
    tokens = jnp.asarray(tokens)
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
      raise ValueError(f"AdaptiveEmbedding expects integer token ids, got dtype {tokens.dtype}.")
    if self.div_val == 1:
      out = self._tables[0](tokens)                                  # [..., E, D]
      if self._projs[0] is not None:
        out = self._projs[0](out)                                    # [..., C, D]
    else:
      out = 0.0
      for (lo, hi), table, proj in zip(self.bounds, self._tables, self._projs):
        inside = (tokens >= lo) & (tokens < hi)
        emb = proj(table(jnp.clip(tokens - lo, 0, hi - lo - 1)))     # [..., C, D]
        out = out + jnp.where(inside[..., None, None], emb, 0.0)
    return out * math.sqrt(self.d_proj * self.algebra.dim)


# ---------------------------------------------------------- adaptive softmax
# Up to this many hidden states, the output logits are computed table-first (`_cluster_logits`).
_FEW_ROWS = 8

def _cluster_logits(h, table, bias, proj):
  """h [N, C, D] -> logits [N, V_i]; proj = None | ("tied" | "own", w, algebra, T or None)."""
  if proj is not None:
    kind, w, alg, t = proj
    h = (dense_transpose(h, w, alg, t) if kind == "tied"
         else ops.dense(h, w, alg, structure=t))                              # [N, E_i, D]
  # Accumulated in and returned as float32 even under bfloat16 compute: a bf16 logit of
  # size 20 is off by up to 0.06 nats, and a bf16 log-sum-exp over thousands of words
  # loses ~3 significant digits of the loss.
  f32 = jnp.promote_types(h.dtype, jnp.float32)
  if h.shape[0] <= _FEW_ROWS and h.dtype == table.dtype == jnp.float32:
    # A few rows (decoding): the table is the operand read in its stored layout [V_i, E·D];
    # with it second, XLA on CPU copied the whole table into [E·D, V_i] at every step.
    # (float32 only: XLA's CPU dot has no bfloat16 x bfloat16 -> float32 in this order.)
    logits = jnp.einsum("vcd,ncd->vn", table, h, preferred_element_type=f32).T  # [N, V_i]
  else:
    logits = jnp.einsum("ncd,vcd->nv", h, table, preferred_element_type=f32)  # [N, V_i]
  return logits + bias.astype(f32)


class AdaptiveSoftmax(hk.Module):
  """Log-probabilities over V (or the loss of targets) from hidden states [..., C, D].

  Parameters: "bias" [V] (zeros); "cluster_weight" [n, E_0, D]
  (`cluster_init`, default zeros) and "cluster_bias" [n] (zeros) when there
  are tail clusters; untied output tables [V_i, E_i, D] (N(0, init_std²)) when
  `tie_weights` is False; untied output projections w [C, E_i, D]
  (`proj_init`) where projections exist and are not tied.
  """

  def __init__(self, vocab_size: int, d_embed: int, d_proj: int,
               cutoffs: Sequence[int] = (), div_val: int = 1, *, algebra,
               embedding: Optional[AdaptiveEmbedding] = None, tie_weights: bool = True,
               tie_projs: Union[None, bool, Sequence[bool]] = None,
               tail_capacity: Optional[float] = 0.125, init_std: float = 0.02,
               proj_init: Optional[hk.initializers.Initializer] = None,
               cluster_init: Optional[hk.initializers.Initializer] = None,
               name: Optional[str] = None):
    """Constructs the softmax.

    Args:
      vocab_size, d_embed, d_proj, cutoffs, div_val: as for AdaptiveEmbedding.
      algebra: an Algebra or a registered name.
      embedding: the input embedding; required to tie tables or projections.
      tie_weights: share the output tables with `embedding`'s tables.
      tie_projs: per cluster, share the projection with the input (used as
        its real transpose). None: the reference's [False, True, ..., True]
        (the head keeps its own). A bool applies to every cluster.
      tail_capacity: fraction of positions per tail cluster that `nll`
        gathers (see the module docstring); None or >= 1 computes every tail
        for all positions.
      init_std: stddev of untied output tables.
      proj_init: initialiser of untied output projections (None: `ann.Linear`'s
        LeCun default; the reference: N(0, proj_init_std²)).
      cluster_init: initialiser of cluster_weight (None: zeros; the reference
        overwrites its zeros with N(0, init_std²)).
      name: module name.
    """
    super().__init__(name=name)
    self.algebra = alg = algebras_lib.get(algebra)
    self.vocab_size = positive_int(vocab_size, "vocab_size")
    self.dims = check_clusters(vocab_size, cutoffs, d_embed, div_val)
    self.bounds = cluster_bounds(vocab_size, cutoffs)
    self.d_embed, self.div_val = int(d_embed), int(div_val)
    self.d_proj = positive_int(d_proj, "d_proj")
    n = len(self.bounds)
    if tie_projs is None:
      tie_projs = (False,) + (True,) * (n - 1)
    elif isinstance(tie_projs, (bool, np.bool_)):
      tie_projs = (bool(tie_projs),) * n
    else:
      tie_projs = tuple(bool(t) for t in tie_projs)
      if len(tie_projs) != n:
        raise ValueError(f"tie_projs needs one flag per cluster ({n}), got {tie_projs!r}.")
    self.has_projections = div_val > 1 or d_embed != d_proj
    if (tie_weights or (self.has_projections and any(tie_projs))) and embedding is None:
      raise ValueError("tie_weights / tie_projs need the input `embedding` to tie to.")
    if embedding is not None and (embedding.bounds != self.bounds or embedding.dims != self.dims
                                  or embedding.d_proj != self.d_proj):
      raise ValueError("the tied embedding has different clusters or widths than the softmax.")
    if tail_capacity is not None and not tail_capacity > 0:
      raise ValueError(f"tail_capacity must be positive or None, got {tail_capacity!r}.")
    self.embedding = embedding
    self.tie_weights = bool(tie_weights)
    self.tie_projs = tie_projs
    self.tail_capacity = tail_capacity
    self.cluster_init = cluster_init or jnp.zeros
    self._tables = None
    if not tie_weights:
      self._tables = [ann.Embed(hi - lo, e, algebra=alg, w_init=_normal(init_std),
                                name=f"out_table_{i}")
                      for i, ((lo, hi), e) in enumerate(zip(self.bounds, self.dims))]
    self._projs = [None] * n
    if self.has_projections:
      for i, e in enumerate(self.dims):
        if not tie_projs[i]:
          self._projs[i] = _Projection(d_proj, e, algebra=alg, w_init=proj_init,
                                       name=f"out_proj_{i}")

  # Parameters, read outside any lax.cond (Haiku state may not be touched inside).
  def _cluster_params(self):
    """Per cluster (table [V_i, E_i, D], bias [V_i], proj); head with the cluster rows."""
    alg, n = self.algebra, len(self.bounds)
    bias = hk.get_parameter("bias", [self.vocab_size], init=jnp.zeros)
    params = []
    for i, (lo, hi) in enumerate(self.bounds):
      if self.tie_weights:
        table = self.embedding.cluster_table(i)
      else:
        table = self._tables[i].embeddings
      proj = None
      if self.has_projections:
        if self.tie_projs[i]:
          tied = self.embedding.cluster_projection(i)
          proj = ("tied", tied.weight(), alg, tied.structure())
        else:
          proj = ("own", self._projs[i].weight(), alg, self._projs[i].structure())
      params.append([table, bias[lo:hi], proj])
    if n > 1:
      cw = hk.get_parameter("cluster_weight", [n - 1, self.dims[0], alg.dim],
                            init=self.cluster_init)
      cb = hk.get_parameter("cluster_bias", [n - 1], init=jnp.zeros)
      params[0][0] = jnp.concatenate([params[0][0], cw])            # [V_0 + n, E_0, D]
      params[0][1] = jnp.concatenate([params[0][1], cb])
    return params

  def _flatten(self, hidden):
    hidden = jnp.asarray(hidden)
    alg = self.algebra
    if hidden.ndim < 2 or hidden.shape[-2:] != (self.d_proj, alg.dim):
      raise ValueError(f"AdaptiveSoftmax expects hidden states [..., C={self.d_proj}, "
                       f"D={alg.dim}], got shape {tuple(hidden.shape)}.")
    return hidden.reshape((-1,) + hidden.shape[-2:]), hidden.shape[:-2]  # [N, C, D]

  def log_probs(self, hidden):
    """Normalised log-probabilities [..., V] of hidden states [..., C, D]."""
    h, lead = self._flatten(hidden)
    params = self._cluster_params()
    head = jax.nn.log_softmax(_cluster_logits(h, *params[0]), axis=-1)  # [N, V_0 + n]
    v0 = self.bounds[0][1]
    parts = [head[:, :v0]]
    for i in range(1, len(self.bounds)):
      tail = jax.nn.log_softmax(_cluster_logits(h, *params[i]), axis=-1)  # [N, V_i]
      parts.append(head[:, v0 + i - 1, None] + tail)
    return jnp.concatenate(parts, axis=-1).reshape(lead + (self.vocab_size,))

  def nll(self, hidden, targets):
    """-log p(targets) [...] from hidden [..., C, D] and int targets [...], without [N, V]."""
    h, lead = self._flatten(hidden)
    targets = jnp.asarray(targets)
    if targets.shape != lead or not jnp.issubdtype(targets.dtype, jnp.integer):
      raise ValueError(f"targets must be integers of shape {tuple(lead)} (the hidden states' "
                       f"leading axes); got {targets.dtype} {tuple(targets.shape)}.")
    t = targets.reshape(-1)                                          # [N]
    params = self._cluster_params()
    head = jax.nn.log_softmax(_cluster_logits(h, *params[0]), axis=-1)  # [N, V_0 + n]
    v0 = self.bounds[0][1]
    nll = -jnp.take_along_axis(head, jnp.clip(t, 0, v0 - 1)[:, None], axis=1)[:, 0]
    for i in range(1, len(self.bounds)):
      lo, hi = self.bounds[i]
      inside = (t >= lo) & (t < hi)
      tail = _tail_nll(h, jnp.clip(t - lo, 0, hi - lo - 1), inside, params[i],
                       self.tail_capacity)
      nll = jnp.where(inside, tail - head[:, v0 + i - 1], nll)
    return nll.reshape(lead)


def _tail_nll(h, t, inside, params, capacity):
  """-log p(t | cluster) [N] for positions `inside` (0 elsewhere)."""
  n = h.shape[0]

  def every_position(_):
    lp = jax.nn.log_softmax(_cluster_logits(h, *params), axis=-1)    # [N, V_i]
    return jnp.where(inside, -jnp.take_along_axis(lp, t[:, None], axis=1)[:, 0], 0.0)

  k = n if capacity is None else min(n, math.ceil(capacity * n))
  if k >= n:
    return every_position(None)

  def gathered(_):
    (idx,) = jnp.nonzero(inside, size=k, fill_value=0)               # [K]
    valid = jnp.arange(k) < jnp.sum(inside)
    lp = jax.nn.log_softmax(_cluster_logits(h[idx], *params), axis=-1)  # [K, V_i]
    picked = -jnp.take_along_axis(lp, t[idx][:, None], axis=1)[:, 0]
    return jnp.zeros((n,), lp.dtype).at[idx].add(jnp.where(valid, picked, 0.0))

  return jax.lax.cond(jnp.sum(inside) <= k, gathered, every_position, None)
