"""Incremental decoding against the full forward pass, and sampling."""

import numpy as np
import pytest
import jax
import jax.numpy as jnp
import haiku as hk

from algebranets import algebras
from algebranets.models import decoding
from algebranets.models import transformer_xl as txl

CFG = dict(vocab_size=30, d_model=8, n_layers=2, n_heads=2, d_head=4, d_inner=16)


def _setup(cfg, algebra, tokens):
  """model_fn, the forward transform and numpy-drawn parameters (fast to make)."""
  model_fn = lambda: txl.TransformerXL(**cfg, algebra=algebra)
  f = hk.transform(lambda t, mems=None: model_fn()(t, mems))
  shapes = jax.eval_shape(f.init, jax.random.PRNGKey(0), tokens)
  rng = np.random.default_rng(0)
  params = jax.tree_util.tree_map(
      lambda s: jnp.asarray(rng.normal(0.0, 0.3, s.shape), s.dtype), shapes)
  return model_fn, f, params


def _tokens(shape, seed=1):
  return jnp.asarray(np.random.default_rng(seed).integers(0, 30, shape), jnp.int32)


@pytest.mark.parametrize("algebra,extra", [
    ("c", {}),
    ("m2r", dict(cutoffs=(10, 20), div_val=2, pre_lnorm=True, clamp_len=3)),
])
def test_each_step_equals_the_full_forward_pass(algebra, extra):
  cfg = dict(CFG, mem_len=8, **extra)           # cache W = 9 covers all 6 positions
  tokens = _tokens((2, 6))
  model_fn, f, params = _setup(cfg, algebra, tokens)
  full, _ = jax.jit(f.apply)(params, None, tokens)                  # [B, T, V]
  decoder = decoding.Decoder(model_fn)
  cache = decoder.init_cache(params, 2)
  d = algebras.get(algebra).dim
  assert cache.keys[0].shape == cache.values[0].shape == (2 * 2, 4 * d, 9)  # [B·H, Ch·D, W]
  for t in range(6):
    log_probs, cache = decoder.step(params, cache, tokens[:, t])
    np.testing.assert_allclose(log_probs, full[:, t], atol=1e-5, err_msg=f"step {t}")
  assert int(cache.step) == 6
  # The prompt path (a scan of the same step) ends in the same state.
  log_probs, cache2 = decoder.prefill(params, decoder.init_cache(params, 2), tokens)
  np.testing.assert_allclose(log_probs, full[:, -1], atol=1e-5)
  np.testing.assert_allclose(cache2.keys[1], cache.keys[1], atol=1e-6)


@pytest.mark.parametrize("algebra,same_length", [("r", False), ("dual", True)])
def test_ring_buffer_equals_one_token_segments_with_memory(algebra, same_length):
  # Past the cache length a step is Transformer-XL evaluation with tgt_len = 1 and
  # mem_len = W - 1: feed the model one token at a time, carrying its memory.
  cfg = dict(CFG, mem_len=2, same_length=same_length, clamp_len=1)
  tokens = _tokens((1, 6), seed=2)
  model_fn, f, params = _setup(cfg, algebra, tokens[:, :1])
  decoder = decoding.Decoder(model_fn)                              # W = 3
  cache = decoder.init_cache(params, 1)
  mems = None
  apply = jax.jit(f.apply)  # compiled once per memory length: op by op took 2x as long
  for t in range(6):
    want, mems = apply(params, None, tokens[:, t:t + 1], mems)
    got, cache = decoder.step(params, cache, tokens[:, t])
    np.testing.assert_allclose(got, want[:, 0], atol=1e-5, err_msg=f"step {t}")


def test_sampling_greedy_and_top_k_agree_with_the_full_forward_pass():
  cfg = dict(CFG, mem_len=16)
  prompt = _tokens((2, 3))
  model_fn, f, params = _setup(cfg, "h", prompt)
  decoder = decoding.Decoder(model_fn)
  # Greedy, batch 1: each token is the argmax of the full pass over the sequence so far.
  out = decoder.sample(params, jax.random.PRNGKey(0), prompt[:1], 5, temperature=0.0)
  assert out.shape == (1, 5) and out.dtype == jnp.int32
  full, _ = f.apply(params, None, jnp.concatenate([prompt[:1], out], axis=1))
  np.testing.assert_array_equal(out[0], np.argmax(full[0, 2:-1], axis=-1))
  # Top-2 at a high temperature: always one of the two most likely tokens; reproducible.
  out = decoder.sample(params, jax.random.PRNGKey(3), prompt, 6, temperature=1.5, top_k=2)
  again = decoder.sample(params, jax.random.PRNGKey(3), prompt, 6, temperature=1.5, top_k=2)
  np.testing.assert_array_equal(out, again)
  full, _ = f.apply(params, None, jnp.concatenate([prompt, out], axis=1))
  top2 = np.argsort(-np.asarray(full[:, 2:-1]), axis=-1)[..., :2]   # [B, N, 2]
  assert np.all((top2 == np.asarray(out)[..., None]).any(-1))
  assert not np.all(top2[..., 0] == np.asarray(out))               # not just greedy


def test_pick_tokens():
  log_probs = jnp.log(jnp.asarray([[0.1, 0.5, 0.15, 0.25]] * 2000))
  keys = jax.random.PRNGKey(0)
  greedy = decoding.pick_tokens(keys, log_probs, temperature=0.0)
  assert np.all(np.asarray(greedy) == 1)
  top1 = decoding.pick_tokens(keys, log_probs, temperature=1.0, top_k=1)
  assert np.all(np.asarray(top1) == 1)
  top2 = np.asarray(decoding.pick_tokens(keys, log_probs, temperature=1.0, top_k=2))
  assert set(np.unique(top2)) == {1, 3}
  np.testing.assert_allclose(np.mean(top2 == 1), 0.5 / 0.75, atol=0.04)
  drawn = np.asarray(decoding.pick_tokens(keys, log_probs, temperature=1.0))
  np.testing.assert_allclose(np.bincount(drawn, minlength=4) / 2000, [0.1, 0.5, 0.15, 0.25],
                             atol=0.04)
  with pytest.raises(ValueError, match="top_k"):
    decoding.pick_tokens(keys, log_probs, top_k=5)


def test_sample_rejects_bad_arguments():
  decoder = decoding.Decoder(lambda: txl.TransformerXL(**CFG, mem_len=2, algebra="r"))
  with pytest.raises(ValueError, match="prompt"):
    decoder.sample({}, jax.random.PRNGKey(0), jnp.zeros((1, 0), jnp.int32), 3)
  with pytest.raises(ValueError, match="num_tokens"):
    decoder.sample({}, jax.random.PRNGKey(0), jnp.zeros((1, 2), jnp.int32), 0)


def test_prepare_computes_the_relative_keys_once_and_generates_the_same_tokens():
  # The cache's relative-position keys W_r R depend only on the parameters: `prepare` keeps them
  # with the prepared weights, so a generation from the result does no weight work but its
  # steps. Checked against numpy for the real model: R_j = [sin(j f), cos(j f)], f_k =
  # 10000^(-2k/C), for the distances j = 0..W-1, times layer l's "r" weight.
  cfg = dict(CFG, mem_len=4)                                         # W = 5
  prompt = _tokens((1, 2))
  model_fn, _, params = _setup(cfg, "r", prompt)
  decoder = decoding.Decoder(model_fn)
  prepared = decoder.prepare(params)
  stored = prepared[decoding.REL_KEYS]
  j = np.arange(5)[:, None]
  f = 1.0 / 10000.0 ** (np.arange(0, 8, 2) / 8)                     # C = 8
  r = np.concatenate([np.sin(j * f), np.cos(j * f)], axis=1)         # [W, C]
  for l in range(2):
    w = np.asarray(params[f"transformer_xl/layer_{l}/r"]["w"])[..., 0]  # [C, H·Ch]
    want = (r @ w).reshape(5, 2, 4).transpose(1, 0, 2)               # [H, W, Ch]
    np.testing.assert_allclose(stored[f"layer_{l}"], want, rtol=1e-5, atol=1e-6)
  assert decoder.prepare(prepared) is prepared
  key = jax.random.PRNGKey(4)
  np.testing.assert_array_equal(decoder.sample(prepared, key, prompt, 6, temperature=0.7),
                                decoder.sample(params, key, prompt, 6, temperature=0.7))
  log_probs, _ = decoder.prefill(prepared, decoder.init_cache(prepared, 1), prompt)
  want, _ = decoder.prefill(params, decoder.init_cache(params, 1), prompt)
  np.testing.assert_allclose(log_probs, want, atol=1e-5)
  # Keys computed for another cache length are refused, not used at the wrong distances.
  other = decoding.Decoder(model_fn, cache_len=3)
  with pytest.raises(ValueError, match="another model or cache length"):
    other.sample(prepared, key, prompt, 2)
