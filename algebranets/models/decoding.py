"""Fast autoregressive decoding and sampling for `TransformerXL`.

Generating N tokens costs N single-token steps, not N full forward passes:
`TransformerXL.decode_step` keeps, per layer, the keys and values of the last
W positions in a fixed-size ring buffer (`transformer_xl.DecodeCache`), with
a slot-position table and a step counter, so every array keeps its shape and
one jitted step serves the whole generation. A step is exactly the model's
`__call__` on a one-token segment with a memory of W - 1 positions (the
Transformer-XL evaluation mode; W = mem_len + 1 by default), and for the
first W positions exactly the full forward pass over the sequence so far.

The relative-position keys W_r R of the W distances depend only on the
parameters: `decoder.prepare(params)` computes them once, with the weights'
batch-1 layouts, and keeps them in the returned params (under the module name
`REL_KEYS`, which Haiku ignores); a generation from raw params computes them
in `init_cache`, once per generation.

Shapes: B batch, P prompt length, N generated tokens, V vocabulary.

Usage (batch 1 works like any other):

    model_fn = lambda: TransformerXL(**config, algebra="m2r")   # as in training
    decoder = Decoder(model_fn)
    tokens = decoder.sample(params, rng, prompt, num_tokens=100, temperature=0.8, top_k=40)

`model_fn` must build the model exactly as the training code did (same
arguments and module name) so the parameter names match.

Pruned models: `Decoder(model_fn, sparse=True)` runs every layer whose weight
has enough zero algebra elements to pay (`sparse_ops.should_use_sparse` at the
prompt's batch) on the element-sparse path. That form is built on the host
from the weights' values; `decoder.prepare(params, batch_size)` does it once
for many `sample` calls (otherwise each call does it).
"""

from __future__ import annotations

from typing import Callable, Optional

import haiku as hk
import jax
import jax.numpy as jnp

from algebranets import ops
from algebranets.models.transformer_xl import DecodeCache, TransformerXL
from algebranets.nn.inference import make_preparer

__all__ = ["Decoder", "sample", "pick_tokens", "REL_KEYS"]

# Where `Decoder.prepare` keeps the cache's relative-position keys in the params it returns:
# {REL_KEYS: {"layer_<l>": W_r R [H, W, Ch·D]}}. Haiku ignores a module name no module has.
REL_KEYS = "decoder/rel_keys"


def pick_tokens(rng, log_probs, temperature=1.0, top_k: Optional[int] = None):
  """Draws one token per row of log_probs [B, V]; returns int32 [B].

  temperature <= 0 is greedy (argmax); top_k keeps the k most likely tokens
  (ties at the k-th value are kept too) before sampling.
  """
  logits = log_probs.astype(jnp.float32)
  if top_k is not None:
    if not 1 <= top_k <= logits.shape[-1]:
      raise ValueError(f"top_k must be in [1, V={logits.shape[-1]}], got {top_k!r}.")
    kth = jax.lax.top_k(logits, top_k)[0][..., -1:]                  # [B, 1]
    logits = jnp.where(logits >= kth, logits, -jnp.inf)
  greedy = temperature <= 0
  scaled = logits / jnp.where(greedy, 1.0, temperature)
  drawn = jax.random.categorical(rng, scaled, axis=-1)
  return jnp.where(greedy, jnp.argmax(logits, axis=-1), drawn).astype(jnp.int32)


class Decoder:
  """Jitted incremental decoding of the TransformerXL built by `model_fn`."""

  def __init__(self, model_fn: Callable[[], TransformerXL], cache_len: Optional[int] = None,
               sparse: bool = False, rows_kernel: Optional[bool] = None):
    """Constructs the decoder.

    Args:
      model_fn: builds the model (inside hk.transform), as the training code did.
      cache_len: W, positions kept in the cache; default the model's mem_len + 1.
      sparse: run pruned layers on the element-sparse path where it pays.
      rows_kernel: prepare dense weights for `sparse_ops.rows_matmul`, which reads
        each weight once for the few rows of a batch-1 step (`ops.prepare_dense`);
        None: where that kernel runs (CPU, float32).
    """
    self._model_fn = model_fn
    self._sparse = sparse
    self._rows_kernel = rows_kernel
    self._preparer = None
    self._init = hk.transform(lambda b, rel_keys: model_fn().init_cache(b, cache_len,
                                                                         rel_keys=rel_keys))
    self._rel_keys = jax.jit(hk.transform(
        lambda: model_fn().decode_rel_keys(cache_len)).apply)
    self._step = hk.transform(lambda tokens, cache: model_fn().decode_step(tokens, cache))
    self.init_cache = jax.jit(self._init_cache, static_argnums=1)
    self.step = jax.jit(self._step_fn)
    self.prefill = jax.jit(self._prefill)
    self._generate = jax.jit(self._generate_impl, static_argnames=("num_tokens", "top_k"))

  def _prepare(self, params):
    """Params with every algebra weight prepared once for batch-1 steps.

    At batch 1 a step's time is the time to read the weights; without this,
    every step would first rebuild each layer's execution layout (e.g. the
    D×D expanded blocks of H, the folded copy of M_n). See nn.inference.
    """
    if self._preparer is None:
      self._preparer = self._make_preparer(params)
    return self._preparer(params)

  def _make_preparer(self, params, sparse_batch=None):
    tokens = jnp.zeros((1, 1), jnp.int32)
    return make_preparer(lambda t: self._model_fn()(t, None, False), params, tokens,
                         sparse_batch=sparse_batch, rows_kernel=self._rows_kernel)

  def prepare(self, params, batch_size: int = 1):
    """Params with every weight prepared once, on the host, for `sample` at batch_size.

    Also computes the cache's relative-position keys once (kept under `REL_KEYS`),
    so a generation from the result does no weight work but its steps. With
    `sparse=True` pruned layers get the element-sparse form where it is faster at
    this batch. Pass the result to `sample`, `init_cache`, `step` or `prefill` in
    place of params; it is stale once the params change.
    """
    if REL_KEYS in params:
      return params
    if not _is_prepared(params):
      params = self._make_preparer(params, batch_size if self._sparse else None)(params)
    rel_keys = self._rel_keys(params, None)
    return {**params, REL_KEYS: {f"layer_{l}": r for l, r in enumerate(rel_keys)}}

  def _init_cache(self, params, batch_size: int) -> DecodeCache:
    stored = params.get(REL_KEYS)
    rel_keys = None if stored is None else [stored[f"layer_{l}"] for l in range(len(stored))]
    return self._init.apply(params, None, batch_size, rel_keys)

  def _step_fn(self, params, cache: DecodeCache, tokens):
    """(log_probs [B, V] after `tokens` [B], the updated cache)."""
    return self._step.apply(params, None, tokens, cache)

  def _empty_log_probs(self, params, cache, batch_size):
    spec = jax.eval_shape(self._step_fn, params, cache, jnp.zeros((batch_size,), jnp.int32))[0]
    return jnp.zeros(spec.shape, spec.dtype)                         # [B, V]

  def _prefill(self, params, cache: DecodeCache, prompt):
    """Feeds prompt [B, P] step by step; (log_probs [B, V] after it, cache)."""
    prompt = jnp.asarray(prompt)
    params = self._prepare(params)

    def body(carry, tokens):
      _, cache = carry
      return self._step_fn(params, cache, tokens), None

    start = self._empty_log_probs(params, cache, prompt.shape[0])
    (log_probs, cache), _ = jax.lax.scan(body, (start, cache), prompt.T)
    return log_probs, cache

  def _generate_impl(self, params, rng, prompt, temperature, num_tokens, top_k):
    # One scan over P + N - 1 steps (one copy of the step in the compiled program):
    # step i feeds prompt token i while i < P, else a token drawn from the last output.
    b, p = prompt.shape
    cache = self._init_cache(params, b)
    params = self._prepare(params)   # once, outside the loop
    fed = jnp.concatenate([prompt, jnp.zeros((b, num_tokens - 1), prompt.dtype)], axis=1).T
    keys = jax.random.split(rng, p + num_tokens)

    def body(carry, inputs):
      log_probs, cache = carry
      i, tokens, key = inputs
      tokens = jnp.where(i < p, tokens, pick_tokens(key, log_probs, temperature, top_k))
      return self._step_fn(params, cache, tokens.astype(jnp.int32)), tokens

    start = self._empty_log_probs(params, cache, b)
    (log_probs, _), tokens = jax.lax.scan(
        body, (start, cache), (jnp.arange(p + num_tokens - 1), fed, keys[:-1]))
    last = pick_tokens(keys[-1], log_probs, temperature, top_k)        # [B]
    return jnp.concatenate([tokens[p:].T, last[:, None]], axis=1).astype(jnp.int32)  # [B, N]

  def sample(self, params, rng, prompt, num_tokens: int, temperature: float = 1.0,
             top_k: Optional[int] = None):
    """Continues prompt [B, P] (P >= 1) by num_tokens tokens; returns int32 [B, N].

    Args:
      params: the model's parameters.
      rng: a PRNG key.
      prompt: int [B, P].
      num_tokens: N >= 1.
      temperature: divides the log-probabilities; <= 0 means greedy.
      top_k: sample among the k most likely tokens only (None: all).
    """
    prompt = jnp.asarray(prompt)
    if prompt.ndim != 2 or prompt.shape[1] < 1 or not jnp.issubdtype(prompt.dtype, jnp.integer):
      raise ValueError(f"prompt must be integers [B, P] with P >= 1, got {prompt.dtype} "
                       f"{tuple(prompt.shape)}.")
    if isinstance(num_tokens, bool) or not isinstance(num_tokens, int) or num_tokens < 1:
      raise ValueError(f"num_tokens must be a positive int, got {num_tokens!r}.")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                              or top_k < 1):
      raise ValueError(f"top_k must be None or a positive int, got {top_k!r}.")
    if self._sparse:
      params = self.prepare(params, prompt.shape[0])   # host side: reads the weights
    return self._generate(params, rng, prompt, jnp.float32(temperature),
                          num_tokens=num_tokens, top_k=top_k)


def _is_prepared(params) -> bool:
  leaves = jax.tree.leaves(params, is_leaf=lambda a: isinstance(a, ops.PreparedWeight))
  return any(isinstance(a, ops.PreparedWeight) for a in leaves)


def sample(model_fn: Callable[[], TransformerXL], params, rng, prompt, num_tokens: int,
           temperature: float = 1.0, top_k: Optional[int] = None,
           cache_len: Optional[int] = None):
  """One-off `Decoder(model_fn, cache_len).sample(...)`; keep a Decoder to reuse compiles."""
  return Decoder(model_fn, cache_len).sample(params, rng, prompt, num_tokens, temperature,
                                             top_k)
