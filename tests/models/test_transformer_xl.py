"""Transformer-XL: shapes, published sizes, relative attention, memory, adaptive softmax."""

import math

import numpy as np
import pytest
import jax
import jax.numpy as jnp
import haiku as hk

from algebranets import algebras, ops
from algebranets.models import adaptive
from algebranets.models import transformer_xl as txl

TINY = dict(vocab_size=30, d_model=8, n_layers=2, n_heads=2, d_head=4, d_inner=16, mem_len=4)


def _forward(cfg, algebra, is_training=False):
  return hk.transform(
      lambda tokens, mems=None, targets=None: txl.TransformerXL(
          **cfg, algebra=algebra)(tokens, mems, is_training, targets=targets))


def _random_params(f, *args, std=0.3, seed=0):
  """Parameters of the right shapes drawn with numpy (jax's own initialisers compile slowly)."""
  shapes = jax.eval_shape(f.init, jax.random.PRNGKey(0), *args)
  rng = np.random.default_rng(seed)
  return jax.tree_util.tree_map(
      lambda s: jnp.asarray(rng.normal(0.0, std, s.shape), s.dtype), shapes)


def _tokens(shape, vocab, seed=1):
  return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, shape), jnp.int32)


def _leaf_count(tree):
  return sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(tree))


# ------------------------------------------------------------------ shapes
@pytest.mark.parametrize("algebra", ["r", "c", "h", "m2r", "dual"])
def test_output_shapes(algebra):
  d = algebras.get(algebra).dim
  cfg = dict(TINY, cutoffs=(10, 20), div_val=2)
  f = _forward(cfg, algebra)
  tokens = jax.ShapeDtypeStruct((2, 5), jnp.int32)
  params = jax.eval_shape(f.init, jax.random.PRNGKey(0), tokens)
  log_probs, mems = jax.eval_shape(f.apply, params, None, tokens)
  assert log_probs.shape == (2, 5, 30)
  assert len(mems) == 2 and all(m.shape == (2, 4, 8, d) for m in mems)  # mem_len < T: cut
  mems_in = [jax.ShapeDtypeStruct((2, 3, 8, d), jnp.float32)] * 2
  nll, mems = jax.eval_shape(f.apply, params, None, tokens, mems_in, tokens)
  assert nll.shape == (2, 5) and all(m.shape == (2, 4, 8, d) for m in mems)
  empty = jax.eval_shape(lambda: txl.initial_mems(2, 2, 8, algebra))
  _, mems = jax.eval_shape(f.apply, params, None, tokens, empty)
  assert all(m.shape == (2, 4, 8, d) for m in mems)
  assert params["transformer_xl/layer_0/kv"]["w"].shape == (8, 16, d)


def test_no_memory_when_mem_len_is_zero():
  f = _forward(dict(TINY, mem_len=0), "c")
  tokens = jax.ShapeDtypeStruct((1, 3), jnp.int32)
  params = jax.eval_shape(f.init, jax.random.PRNGKey(0), tokens)
  _, mems = jax.eval_shape(f.apply, params, None, tokens)
  assert mems is None


# ---------------------------------------------------------- published sizes
def _reference_params(vocab, d_model, n_layers, n_heads, d_head, d_inner, n_clusters=0):
  """The PyTorch reference's count (kimiyoung/transformer-xl, MemTransformerLM, tied
  embedding, d_embed == d_model, div_val 1): per layer qkv/o/r projections without bias,
  two LayerNorms, FFN with biases; shared r_w_bias/r_r_bias; output bias; cluster head."""
  hd = n_heads * d_head
  layer = 5 * d_model * hd + 2 * d_model * d_inner + d_inner + d_model + 4 * d_model
  return (n_layers * layer + 2 * hd + vocab * d_model + vocab
          + n_clusters * (d_model + 1))


def test_published_enwik8_base_size():
  report = txl.model_costs(txl.PRESETS["enwik8_base"], "r", seq_len=8)
  assert report.params_consistent
  # 41,082,112 with our 256-byte vocabulary (41,055,436 with the reference's 204
  # symbols); the paper's "41M" is this rounded.
  assert report.total_params == _reference_params(256, 512, 12, 8, 64, 2048) == 41_082_112
  assert abs(report.total_params / 41e6 - 1) < 0.01


def test_published_wt103_base_size():
  report = txl.model_costs(txl.PRESETS["wt103_base"], "r", seq_len=8)
  assert report.params_consistent
  # 109.8M tied embedding + 41.1M layers + output bias + cluster head; the paper's "151M".
  expected = _reference_params(267_735, 410, 16, 10, 41, 2100, n_clusters=3)
  assert report.total_params == expected == 151_107_538
  assert abs(report.total_params / 151e6 - 1) < 0.01


@pytest.mark.parametrize("algebra", algebras.names())
def test_costs_params_equal_leaf_sum(algebra):
  # Adaptive input with per-cluster projections, untied output tables, untied r biases,
  # pre-norm with a final norm: every kind of parameter the model can have.
  cfg = dict(TINY, cutoffs=(10, 20), div_val=2, tie_weights=False, tie_projs=(False, True, False),
             untie_r=True, pre_lnorm=True)
  report = txl.model_costs(cfg, algebra, seq_len=5)
  f = _forward(cfg, algebra)
  params = jax.eval_shape(f.init, jax.random.PRNGKey(0), jax.ShapeDtypeStruct((1, 5), jnp.int32))
  assert report.total_params == _leaf_count(params)
  assert report.params_consistent
  # Weight layers of the stack: q, kv, r, o, ff_in, ff_out per layer, plus 3 input projections.
  dense = [l for l in report.layers if l.kind == "dense"]
  assert len(dense) == 2 * 6 + 3


# ----------------------------------------------------- relative attention
def test_rel_shift_matches_naive_relative_attention():
  rng = np.random.default_rng(0)
  b, t, m, h, ch, d = 2, 4, 3, 2, 3, 2
  k = m + t
  q, keys = rng.normal(size=(b, t, h, ch, d)), rng.normal(size=(b, k, h, ch, d))
  rel_k = rng.normal(size=(k, h, ch, d))           # row r: distance k - 1 - r
  u, v = rng.normal(size=(h, ch, d)), rng.normal(size=(h, ch, d))
  got = np.asarray(txl.relative_attention_logits(*(jnp.asarray(a, jnp.float32)
                                                   for a in (q, keys, rel_k, u, v))))
  visible = np.asarray(txl.attention_mask(t, k))
  for bi in range(b):
    for hi in range(h):
      for i in range(t):
        for j in range(k):
          assert visible[i, j] == (j <= m + i)
          if not visible[i, j]:
            continue
          dist = m + i - j
          want = (np.sum((q[bi, i, hi] + u[hi]) * keys[bi, j, hi])
                  + np.sum((q[bi, i, hi] + v[hi]) * rel_k[k - 1 - dist, hi])) / np.sqrt(ch * d)
          np.testing.assert_allclose(got[bi, hi, i, j], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("t,m,mem_len", [(4, 0, 4), (4, 3, 3), (3, 5, 5), (5, 2, 4)])
def test_same_length_mask_matches_reference_formula(t, m, mem_len):
  # The reference: masked = triu(ones, 1 + mlen) + tril(ones, -mask_shift_len).
  k = m + t
  ones = np.ones((t, k))
  mask_len = k - mem_len
  shift = t - mask_len if mask_len > 0 else t
  masked = (np.triu(ones, 1 + m) + np.tril(ones, -shift)) > 0
  np.testing.assert_array_equal(np.asarray(txl.attention_mask(t, k, mem_len, True)), ~masked)


def test_sinusoid_encoding_reference_layout():
  r = np.asarray(txl.sinusoid_encoding(np.array([0.0, 3.0]), 6))
  inv = 1 / 10000 ** (np.arange(0, 6, 2) / 6)
  np.testing.assert_allclose(r[1], np.concatenate([np.sin(3 * inv), np.cos(3 * inv)]),
                             rtol=1e-6)
  assert txl.sinusoid_encoding(np.arange(3.0), 5).shape == (3, 5)


# ------------------------------------------------- against a numpy reference
def _layer_norm(x, p):
  mu = x.mean(-1, keepdims=True)
  var = ((x - mu) ** 2).mean(-1, keepdims=True)
  return (x - mu) / np.sqrt(var + 1e-5) * p["scale"][:, 0] + p["offset"][:, 0]


def _numpy_transformer_xl(params, tokens, mems, cfg):
  """Real post-norm Transformer-XL written from the paper/reference, float64, no algebra."""
  p = {name: {k: np.asarray(v, np.float64) for k, v in leaves.items()}
       for name, leaves in params.items()}
  top = "transformer_xl"
  c, n_heads, dh = cfg["d_model"], cfg["n_heads"], cfg["d_head"]
  emb = p[f"{top}/embed/~/table"]["embeddings"][..., 0]             # [V, C]
  x = emb[np.asarray(tokens)] * np.sqrt(c)
  b, t = tokens.shape
  m = 0 if mems is None else mems[0].shape[1]
  k = m + t
  dist = np.arange(k - 1, -1, -1.0)
  if cfg.get("clamp_len", -1) > 0:
    dist = np.minimum(dist, cfg["clamp_len"])
  inv = 1 / 10000 ** (np.arange(0, c, 2) / c)
  pos = np.concatenate([np.sin(dist[:, None] * inv), np.cos(dist[:, None] * inv)], -1)
  u, v = p[top]["r_w_bias"][..., 0], p[top]["r_r_bias"][..., 0]       # [H, Ch]
  for l in range(cfg["n_layers"]):
    w = {n: p[f"{top}/layer_{l}/{n}"] for n in ("q", "kv", "r", "o", "ff_in", "ff_out",
                                               "attn_norm", "ff_norm")}
    cat = x if mems is None else np.concatenate([np.asarray(mems[l], np.float64)[..., 0], x], 1)
    q = (x @ w["q"]["w"][..., 0]).reshape(b, t, n_heads, dh)
    kv = (cat @ w["kv"]["w"][..., 0]).reshape(b, k, 2, n_heads, dh)
    r = (pos @ w["r"]["w"][..., 0]).reshape(k, n_heads, dh)
    scores = np.full((b, n_heads, t, k), -np.inf)
    for i in range(t):
      for j in range(m + i + 1):
        d_ij = m + i - j
        scores[:, :, i, j] = (np.einsum("bhc,bhc->bh", q[:, i] + u, kv[:, j, 0])
                              + np.einsum("bhc,hc->bh", q[:, i] + v, r[k - 1 - d_ij])
                              ) / np.sqrt(dh)
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    att = np.einsum("bhij,bjhc->bihc", probs, kv[:, :, 1]).reshape(b, t, n_heads * dh)
    x = _layer_norm(x + att @ w["o"]["w"][..., 0], w["attn_norm"])
    hid = np.maximum(x @ w["ff_in"]["w"][..., 0] + w["ff_in"]["b"][:, 0], 0)
    x = _layer_norm(x + hid @ w["ff_out"]["w"][..., 0] + w["ff_out"]["b"][:, 0], w["ff_norm"])
  logits = x @ emb.T + p[f"{top}/softmax"]["bias"]
  return logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) \
      - logits.max(-1, keepdims=True)


def test_real_model_matches_numpy_reference_with_memory():
  cfg = dict(TINY, clamp_len=2)
  f = _forward(cfg, "r")
  seg1, seg2 = _tokens((2, 3), 30, seed=1), _tokens((2, 3), 30, seed=2)
  params = _random_params(f, seg1)
  apply = jax.jit(f.apply)
  lp1, mems = apply(params, None, seg1)
  lp2, _ = apply(params, None, seg2, mems)
  np.testing.assert_allclose(lp1, _numpy_transformer_xl(params, seg1, None, cfg), atol=2e-4)
  want2 = _numpy_transformer_xl(params, seg2, mems, cfg)
  np.testing.assert_allclose(lp2, want2, atol=2e-4)
  # With targets the model returns the per-token loss: the gather of the log-probs.
  targets = _tokens((2, 3), 30, seed=3)
  nll, _ = apply(params, None, seg2, mems, targets)
  np.testing.assert_allclose(
      nll, -np.take_along_axis(want2, np.asarray(targets)[..., None], -1)[..., 0], atol=2e-4)


# ------------------------------------------------------------------ memory
def test_memory_recurrence_equals_concatenated_sequence():
  # mem_len = T: segment 2 sees all of segment 1, as the 2T-token pass does.
  cfg = dict(TINY, mem_len=4, cutoffs=(12,), div_val=2, clamp_len=5)
  f = _forward(cfg, "h")
  tokens = _tokens((2, 8), 30)
  params = _random_params(f, tokens)
  apply = jax.jit(f.apply)
  full, full_mems = apply(params, None, tokens)
  lp1, mems1 = apply(params, None, tokens[:, :4])
  lp2, mems2 = apply(params, None, tokens[:, 4:], mems1)
  np.testing.assert_allclose(lp1, full[:, :4], atol=1e-5)
  np.testing.assert_allclose(lp2, full[:, 4:], atol=1e-5)
  for a, b in zip(mems2, full_mems):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_memories_are_stop_gradient():
  f = _forward(dict(TINY, n_layers=1), "r")
  tokens = _tokens((1, 3), 30)
  params = _random_params(f, tokens)

  def loss(params):
    _, mems = f.apply(params, None, tokens)
    return sum(jnp.sum(m) for m in mems)

  grads = jax.jit(jax.grad(loss))(params)
  assert all(float(jnp.abs(g).max()) == 0 for g in jax.tree_util.tree_leaves(grads))


def test_dropout_only_in_training():
  cfg = dict(TINY, n_layers=1, dropout=0.3, dropatt=0.3)
  f, f0 = _forward(cfg, "c"), _forward(dict(TINY, n_layers=1), "c")
  tokens = _tokens((2, 4), 30)
  params = _random_params(f, tokens)
  evaluate = jax.jit(f.apply)
  eval_a, _ = evaluate(params, jax.random.PRNGKey(1), tokens)
  eval_b, _ = evaluate(params, jax.random.PRNGKey(2), tokens)
  no_dropout, _ = f0.apply(params, None, tokens)
  np.testing.assert_array_equal(eval_a, eval_b)
  np.testing.assert_allclose(eval_a, no_dropout, atol=1e-6)
  train = jax.jit(_forward(cfg, "c", is_training=True).apply)
  train_a, _ = train(params, jax.random.PRNGKey(1), tokens)
  train_b, _ = train(params, jax.random.PRNGKey(2), tokens)
  assert not np.allclose(train_a, eval_a, atol=1e-3)
  assert not np.allclose(train_a, train_b, atol=1e-3)


# -------------------------------------------------------- adaptive softmax
@pytest.mark.parametrize("algebra", ["r", "c", "h", "m2r", "dual"])
def test_dense_transpose_is_the_real_adjoint(algebra):
  alg = algebras.get(algebra)
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(3, 5, alg.dim)), jnp.float32)
  y = jnp.asarray(rng.normal(size=(3, 4, alg.dim)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(5, 4, alg.dim)), jnp.float32)
  lhs = jnp.sum(ops.dense(x, w, alg) * y)
  rhs = jnp.sum(x * adaptive.dense_transpose(y, w, alg))
  np.testing.assert_allclose(lhs, rhs, rtol=1e-4)


@pytest.mark.parametrize("div_val,d_embed,tie,capacity", [
    (1, 8, True, 0.125),    # WikiText-103 layout: one table, no projections
    (2, 8, True, 0.5),      # per-cluster widths, tied projections (transposed)
    (1, 6, False, None),    # one projection, untied tables, all positions
])
def test_adaptive_softmax_normalises_and_nll_is_the_gather(div_val, d_embed, tie, capacity):
  cutoffs, vocab = (10, 20, 25), 40

  def fn(h, targets):
    emb = adaptive.AdaptiveEmbedding(vocab, d_embed, 8, cutoffs, div_val, algebra="c")
    emb(targets)  # creates the input parameters
    sm = adaptive.AdaptiveSoftmax(vocab, d_embed, 8, cutoffs, div_val, algebra="c",
                                  embedding=emb, tie_weights=tie, tail_capacity=capacity)
    return sm.log_probs(h), sm.nll(h, targets)

  f = hk.transform(fn)
  rng = np.random.default_rng(0)
  h = jnp.asarray(rng.normal(size=(2, 8, 8, 2)), jnp.float32)
  # Mostly head targets (the gathered path) in row 0, all-tail targets (overflow) in row 1.
  targets = jnp.asarray(np.stack([[1, 2, 3, 4, 5, 6, 33, 12], rng.integers(10, 40, 8)]),
                        jnp.int32)
  params = _random_params(f, h, targets, std=0.5)
  log_probs, nll = jax.jit(f.apply)(params, None, h, targets)  # op by op: 3x as long
  assert log_probs.shape == (2, 8, vocab)
  np.testing.assert_allclose(jax.nn.logsumexp(log_probs, -1), 0.0, atol=1e-5)
  np.testing.assert_allclose(
      nll, -np.take_along_axis(np.asarray(log_probs), np.asarray(targets)[..., None], -1)[..., 0],
      rtol=1e-5, atol=1e-5)


def test_adaptive_nll_gradient_equals_gather_gradient():
  # Through the lax.cond of the capacity buffer and the transposed tied projection.
  def fn(h, targets):
    emb = adaptive.AdaptiveEmbedding(20, 4, 6, (8,), 2, algebra="m2r")
    emb(targets)
    sm = adaptive.AdaptiveSoftmax(20, 4, 6, (8,), 2, algebra="m2r", embedding=emb,
                                  tie_projs=True, tail_capacity=0.25)
    lp, nll = sm.log_probs(h), sm.nll(h, targets)
    return nll.sum(), -jnp.take_along_axis(lp, targets[..., None], -1).sum()

  f = hk.transform(fn)
  rng = np.random.default_rng(0)
  h = jnp.asarray(rng.normal(size=(8, 6, 4)), jnp.float32)
  targets = jnp.asarray([1, 9, 2, 3, 4, 5, 6, 7], jnp.int32)      # one tail target: gathered
  params = _random_params(f, h, targets, std=0.5)
  grads = jax.jit(lambda p, h: (jax.grad(lambda p, h: f.apply(p, None, h, targets)[0],
                                         argnums=(0, 1))(p, h),
                                jax.grad(lambda p, h: f.apply(p, None, h, targets)[1],
                                         argnums=(0, 1))(p, h)))(params, h)
  for a, b in zip(*(jax.tree_util.tree_leaves(g) for g in grads)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
  assert float(jnp.abs(grads[0][1]).max()) > 0


def test_tied_logits_are_real_dot_products_with_input_embeddings():
  # No clusters, no projection: logits = <h, e_v> over C·D reals + bias.
  f = hk.transform(lambda h, ids: (
      lambda emb: (emb(ids), adaptive.AdaptiveSoftmax(12, 4, 4, algebra="h", embedding=emb)
                   .log_probs(h)))(adaptive.AdaptiveEmbedding(12, 4, 4, algebra="h")))
  h = jnp.asarray(np.random.default_rng(0).normal(size=(3, 4, 4)), jnp.float32)
  ids = jnp.arange(12)
  params = _random_params(f, h, ids)
  (scaled_emb, log_probs) = f.apply(params, None, h, ids)
  table = np.asarray(scaled_emb) / np.sqrt(4 * 4)                  # [V, C, D]
  logits = np.einsum("ncd,vcd->nv", np.asarray(h), table) + np.asarray(
      params["adaptive_softmax"]["bias"])
  want = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  np.testing.assert_allclose(log_probs, want, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------- matched sizes
REFERENCE = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=4, d_head=8, d_inner=128,
                 mem_len=8)


@pytest.mark.parametrize("algebra,match", [("m2r", "params"), ("h", "macs"), ("dual", "macs")])
def test_matched_sizes_within_two_percent(algebra, match):
  cfg = txl.matched_config(REFERENCE, algebra, match)
  assert abs(cfg["d_head"] * cfg["n_heads"] - cfg["d_model"]) <= cfg["n_heads"] / 2
  got, ref = (txl.model_costs(c, a, seq_len=8) for c, a in ((cfg, algebra), (REFERENCE, "r")))
  key = "total_params" if match == "params" else "macs"
  assert abs(getattr(got, key) / getattr(ref, key) - 1) <= 0.02
  # Not trivially the reference: at equal element width an algebra model is much bigger.
  assert cfg["d_model"] < REFERENCE["d_model"]


def test_width_matched_config():
  cfg = txl.matched_config(txl.PRESETS["enwik8_base"], "m2r", "width")
  assert (cfg["d_model"], cfg["d_inner"], cfg["d_head"]) == (128, 512, 16)
  assert cfg["n_layers"] == 12 and cfg["vocab_size"] == 256


# ------------------------------------------------------------- validation
def test_bad_arguments_raise_value_errors():
  def build(**kw):
    hk.transform(lambda: txl.TransformerXL(**dict(TINY, **kw), algebra="c")).init(None)

  with pytest.raises(ValueError, match="cutoffs"):
    build(cutoffs=(20, 10))
  with pytest.raises(ValueError, match="div_val"):
    build(cutoffs=(5, 10, 20), div_val=4, d_embed=8)
  with pytest.raises(ValueError, match="mem_len"):
    build(mem_len=-1)
  with pytest.raises(ValueError, match="dropout"):
    build(dropout=1.0)
  with pytest.raises(ValueError, match="activation"):
    build(activation="nope")
  with pytest.raises(ValueError, match="match"):
    txl.matched_config(REFERENCE, "c", "joules")
  f = _forward(TINY, "c")
  tokens = jax.ShapeDtypeStruct((1, 3), jnp.int32)
  params = jax.eval_shape(f.init, jax.random.PRNGKey(0), tokens)
  with pytest.raises(ValueError, match="mems"):
    wrong_width = jax.ShapeDtypeStruct((1, 2, 8, 1), jnp.float32)   # D = 1, not 2
    jax.eval_shape(f.apply, params, None, tokens, [wrong_width] * 2)
  with pytest.raises(ValueError, match="tokens"):
    jax.eval_shape(f.apply, params, None, jax.ShapeDtypeStruct((3,), jnp.int32))


# ------------------------------------------------------------ initialisation
# The reference (kimiyoung/transformer-xl pytorch/train.py weights_init, init_std 0.02,
# proj_init_std 0.01): Linear weights N(0, 0.02), biases 0; embedding tables N(0, 0.02);
# projections N(0, 0.01); LayerNorm weight N(1, 0.02), bias 0; r_w_bias, r_r_bias N(0, 0.02);
# cluster_weight N(0, 0.02), cluster_bias 0.
INIT_CFG = dict(vocab_size=512, d_model=128, n_layers=2, n_heads=4, d_head=32, d_inner=256,
                mem_len=4, cutoffs=(256,), d_embed=64)


def _init_params(cfg, algebra, seed=0):
  f = _forward(cfg, algebra)
  params = jax.jit(f.init)(jax.random.key(seed, impl="rbg"), _tokens((1, 3), cfg["vocab_size"]))
  return {f"{m}/{n}": np.asarray(v, np.float64) for m, leaves in params.items()
          for n, v in leaves.items()}


def _assert_normal(x, mean, std, what):
  """Sample mean and std within 4 standard errors of N(mean, std²) (n = x.size draws)."""
  x = np.ravel(x)
  n = x.size
  assert abs(x.mean() - mean) <= 4 * std / np.sqrt(n), (what, x.mean(), mean)
  assert abs(x.std() - std) <= 4 * std / np.sqrt(2 * n), (what, x.std(), std)


def test_reference_init_real_model_matches_the_pytorch_reference():
  p = _init_params(INIT_CFG, "r")
  top = "transformer_xl"
  weights = [k for k in p if k.startswith(f"{top}/layer_") and k.endswith("/w")]
  assert len(weights) == 2 * 6
  for k in weights:
    _assert_normal(p[k], 0.0, 0.02, k)
  for k in (f"{top}/embed/~/table/embeddings", f"{top}/softmax/cluster_weight"):
    _assert_normal(p[k], 0.0, 0.02, k)
  for k in (f"{top}/embed/~/proj/w", f"{top}/softmax/~/out_proj_0/w"):
    _assert_normal(p[k], 0.0, 0.01, k)
  _assert_normal(np.concatenate([p[f"{top}/r_w_bias"], p[f"{top}/r_r_bias"]]), 0.0, 0.02, "u, v")
  scales = np.concatenate([v for k, v in p.items() if k.endswith("norm/scale")])
  assert scales.size == 2 * 2 * 128
  _assert_normal(scales, 1.0, 0.02, "LayerNorm scales")
  zeros = [k for k in p if k.endswith(("/b", "/offset", "/bias", "cluster_bias"))
           and not k.endswith(("r_w_bias", "r_r_bias"))]
  assert len(zeros) == 2 * 4 + 2
  for k in zeros:
    assert not p[k].any(), k


def test_reference_init_of_an_algebra_model_is_the_real_equivalent_normal():
  # M2(R): D = 4, g = 2: weight components N(0, 0.02² · 2); non-product parameters as real.
  p = _init_params(INIT_CFG, "m2r")
  top = "transformer_xl"
  for k in (f"{top}/layer_0/q/w", f"{top}/layer_1/ff_out/w"):
    _assert_normal(p[k], 0.0, 0.02 * np.sqrt(2), k)
  _assert_normal(p[f"{top}/embed/~/proj/w"], 0.0, 0.01 * np.sqrt(2), "proj")
  _assert_normal(p[f"{top}/embed/~/table/embeddings"], 0.0, 0.02, "table")
  _assert_normal(p[f"{top}/layer_0/attn_norm/scale"], 1.0, 0.02, "LayerNorm scale")


def test_lecun_init_is_the_earlier_scheme():
  p = _init_params(INIT_CFG, "m2r")
  q = _init_params(dict(INIT_CFG, init="lecun"), "m2r")
  top = "transformer_xl"
  # Algebra LeCun: variance 1 / (Cin · g), g = 2 for M2(R): q is [128, 128, 4].
  _assert_normal(q[f"{top}/layer_0/q/w"], 0.0, np.sqrt(1 / (128 * 2)), "q")
  _assert_normal(q[f"{top}/layer_0/ff_out/w"], 0.0, np.sqrt(1 / (256 * 2)), "ff_out")
  _assert_normal(q[f"{top}/embed/~/proj/w"], 0.0, np.sqrt(1 / (64 * 2)), "proj")
  assert all((v == 1).all() for k, v in q.items() if k.endswith("norm/scale"))
  assert not q[f"{top}/softmax/cluster_weight"].any()
  # Embeddings and u, v are N(0, init_std²) in both schemes: the same draws.
  for k in (f"{top}/embed/~/table/embeddings", f"{top}/r_w_bias"):
    np.testing.assert_array_equal(q[k], p[k])
  with pytest.raises(ValueError, match=r"init 'xavier'.*reference, lecun"):
    _init_params(dict(TINY, init="xavier"), "r")


# ------------------------------------------------------------ mixed precision
def _bf16(x):
  return jnp.asarray(x, jnp.float32).astype(jnp.bfloat16)


def test_attention_scores_are_computed_in_float32_under_bfloat16():
  # bf16 inputs (so both computations see the same values). Products of two bf16 numbers are
  # exact in float32 and 64 of them sum with a relative error ~64·2^-24: the float32 scores
  # agree with float64 to ~1e-4 at |score| ~ 40. Rounded to bfloat16 (2^-9 relative) they
  # would be off by up to 0.06 at that size, a 6% change in the probability (the computation
  # before preferred_element_type misses this bound by 0.095).
  rng = np.random.default_rng(0)
  b, t, m, h, ch, d = 2, 4, 3, 2, 16, 4
  k = m + t
  q = _bf16(3 * rng.normal(size=(b, t, h, ch, d)))
  keys = _bf16(3 * rng.normal(size=(b, k, h, ch, d)))
  rel_k = _bf16(3 * rng.normal(size=(k, h, ch, d)))
  u, v = _bf16(rng.normal(size=(h, ch, d))), _bf16(rng.normal(size=(h, ch, d)))
  got = txl.relative_attention_logits(q, keys, rel_k, u, v)
  qu, qv = (np.asarray(q + bias, np.float64) for bias in (u, v))    # the bf16 sums the model uses
  keys64, rel64 = np.asarray(keys, np.float64), np.asarray(rel_k, np.float64)
  want = np.zeros((b, h, t, k))
  for i in range(t):
    for j in range(m + i + 1):
      want[:, :, i, j] = (np.einsum("bhcd,bhcd->bh", qu[:, i], keys64[:, j])
                          + np.einsum("bhcd,hcd->bh", qv[:, i], rel64[k - 1 - (m + i - j)])
                          ) / np.sqrt(ch * d)
  visible = np.asarray(txl.attention_mask(t, k))
  assert np.abs(want[:, :, visible]).max() > 20
  np.testing.assert_allclose(np.asarray(got, np.float64)[:, :, visible], want[:, :, visible],
                             rtol=0, atol=1e-4)
  assert got.dtype == jnp.float32


def _adaptive_numpy(h, table, bias, cluster_w, cluster_b, cutoffs, targets):
  """float64 log-probs and nll of a tied adaptive softmax without projections."""
  def log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))

  ends = [0, *cutoffs, table.shape[0]]
  head = log_softmax(np.einsum("ncd,vcd->nv", h, np.concatenate([table[:ends[1]], cluster_w]))
                     + np.concatenate([bias[:ends[1]], cluster_b]))
  parts = [head[:, :ends[1]]]
  for i in range(1, len(ends) - 1):
    lo, hi = ends[i], ends[i + 1]
    tail = log_softmax(np.einsum("ncd,vcd->nv", h, table[lo:hi]) + bias[lo:hi])
    parts.append(head[:, ends[1] + i - 1, None] + tail)
  log_probs = np.concatenate(parts, -1)
  return log_probs, -np.take_along_axis(log_probs, targets[:, None], -1)[:, 0]


def test_adaptive_softmax_under_bfloat16_computes_logits_and_loss_in_float32():
  # Parameters and hidden states are bf16 values, the reference is float64 on the same values:
  # only the precision of the computation differs. Logits are sums of 32 exact products
  # accumulated in float32 (relative error ~32·2^-24), log-softmax and loss float32: 1e-4 is
  # generous at these |logit| (up to ~100). Logits rounded to bfloat16 (the computation before
  # preferred_element_type) are off by up to |logit|·2^-9, and so are the log-probabilities and
  # the loss: that computation misses this bound by 0.34.
  cutoffs, vocab = (10, 20), 300

  def fn(h, targets):
    emb = adaptive.AdaptiveEmbedding(vocab, 8, 8, cutoffs, 1, algebra="m2r")
    emb(targets)
    sm = adaptive.AdaptiveSoftmax(vocab, 8, 8, cutoffs, 1, algebra="m2r", embedding=emb)
    return sm.log_probs(h), sm.nll(h, targets)

  f = hk.transform(fn)
  rng = np.random.default_rng(1)
  h = _bf16(3 * rng.normal(size=(16, 8, 4)))
  targets = jnp.asarray(rng.integers(0, vocab, 16), jnp.int32)
  params = jax.tree.map(_bf16, _random_params(f, h, targets, std=1.0))
  log_probs, nll = f.apply(params, None, h, targets)
  assert log_probs.dtype == jnp.float32 and nll.dtype == jnp.float32
  p64 = jax.tree.map(lambda x: np.asarray(x, np.float64), params)
  sm = p64["adaptive_softmax"]
  want_lp, want_nll = _adaptive_numpy(
      np.asarray(h, np.float64), p64["adaptive_embedding/~/table"]["embeddings"], sm["bias"],
      sm["cluster_weight"], sm["cluster_bias"], cutoffs, np.asarray(targets))
  assert np.abs(want_lp).max() > 30
  np.testing.assert_allclose(log_probs, want_lp, rtol=0, atol=1e-4)
  np.testing.assert_allclose(nll, want_nll, rtol=0, atol=1e-4)
  np.testing.assert_allclose(jax.nn.logsumexp(log_probs, -1), 0.0, atol=1e-5)


@pytest.mark.parametrize("algebra", ["r", "m2r"])
def test_bfloat16_loss_is_within_bfloat16_rounding_of_the_float32_loss(algebra):
  # The whole model at its reference initialisation (what training starts from), with
  # parameters that are bf16 values so both runs use the same ones. What is left in bf16 are
  # the activations between weight layers: roundings of 2^-9 relative that LayerNorm keeps
  # from compounding. The per-token nll (~ln 64) must agree within 2^-6, one bf16 ulp of the
  # loss at that size: bf16 compute costs less than storing the loss itself in bf16 would.
  # (Measured: max 1.3e-3 for r, 2.4e-3 for m2r.)
  cfg = dict(vocab_size=64, d_model=32, n_layers=2, n_heads=2, d_head=16, d_inner=64,
             mem_len=8)
  f = _forward(cfg, algebra)
  tokens, targets = _tokens((8, 16), 64, seed=1), _tokens((8, 16), 64, seed=2)
  params = jax.tree.map(lambda x: _bf16(x).astype(jnp.float32),
                        jax.jit(f.init)(jax.random.key(0, impl="rbg"), tokens))
  bf16 = jax.tree.map(lambda x: x.astype(jnp.bfloat16), params)
  apply = jax.jit(f.apply)
  d = algebras.get(algebra).dim
  # Zero memories of full length first (as training starts), then the carried memories.
  mems32 = mems16 = [jnp.zeros((8, 8, 32, d))] * 2
  for _ in range(2):
    nll32, mems32 = apply(params, None, tokens, mems32, targets)
    nll16, mems16 = apply(bf16, None, tokens, [m.astype(jnp.bfloat16) for m in mems16], targets)
    assert nll16.dtype == jnp.float32 and mems16[0].dtype == jnp.bfloat16
    np.testing.assert_allclose(nll16, nll32, rtol=0, atol=2 ** -6)
