"""Whole-model speed per algebra at matched sizes, as ratios to the real model in the same run.

Two benchmarks (issue 3):

  train   examples/s of one SGD training step (forward, backward, update) of a
          CIFAR ResNet and of a small Transformer-XL, for every algebra at equal
          parameter count and at equal multiply-adds with the real model.
  decode  batch-1 autoregressive decoding tokens/s of a Transformer-XL at equal
          parameter count: real vs C vs H vs M2(R) vs M4(R). This is the
          paper's compute-density argument: at batch 1 a layer is limited by
          loading its weights, so an M_n(R) model with the real model's
          parameters does about n× its multiply-adds per token in about the
          same time. Each model's dense weights run on XLA's matmul and on the rows
          kernel (`sparse_ops.rows_matmul`, the default on CPU), weights prepared once.
  decode_sparse
          the same decoding for a `--sparsity` element-sparse M2(R) model (random
          whole elements of every weight layer zeroed) on the sparse path vs the
          dense path (issue 12: bar >= 2x).
  txl_base
          one training step of Transformer-XL layers of the enwik8 base model's shapes at
          equal multiply-adds for r, c, h, m2r, m4r (issue 12, section 3).
  stage3  forward+backward of ResNet-50 stage-3 bottleneck blocks (14×14, real width
          256 -> 1024) at equal multiply-adds for r, c, h, m2r, m4r; M_n(R) also with
          the activations kept folded through the blocks (`folded=True`).
  stage3_parts
          the same blocks with all layers, without BatchNorm, and with convolutions and
          residual adds only: each variant's speed vs the real blocks of the same variant,
          as medians of paired per-round ratios (where the gap to the real model is).

Timings are the minimum over repeats, the models of one table timed
round-robin so machine noise hits them alike.

Usage:
  python scripts/benchmark_models.py [--bench train,decode,decode_sparse,stage3,stage3_parts,
      txl_base,dot]
      [--repeats 5] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import haiku as hk
import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(__file__))
from benchmark_ops import markdown_header, write_section  # noqa: E402

from algebranets import algebras as algebras_lib
from algebranets import costs, sparse_ops
from algebranets.models import MODELS, matching, resnet
from algebranets.models import transformer_xl as txl
from algebranets.models.decoding import Decoder

TRAIN_ALGEBRAS = ("r", "c", "h", "m2r", "m3r", "m4r", "m2c", "dual", "cross3")
DECODE_ALGEBRAS = ("r", "c", "h", "m2r", "m4r")


def _round_robin(runners, repeats):
  """Seconds of each call, {key: [round 0, round 1, ...]}: every runner once per round, in turn."""
  times = {k: [] for k in runners}
  for _ in range(repeats):
    for k, run in runners.items():
      t0 = time.perf_counter()
      jax.block_until_ready(run())
      times[k].append(time.perf_counter() - t0)
  return times


ROUNDS_NOTE = ("ms/step and speed vs real: the fastest of the round-robin rounds; \"per "
               "round\": the median (lowest-highest) of the rounds' speeds vs real, each from "
               "one round's two calls, neighbours in time.")


def _best_of_round_robin(runners, repeats):
  return {k: min(v) for k, v in _round_robin(runners, repeats).items()}


def round_speeds(times, ref, key):
  """(lowest, median, highest) speed of `key` vs `ref` over the rounds of `_round_robin` times,
  each round's ratio from that round's two calls (neighbours in time, so they share its load).

  The spread is what the minimum over rounds hides on a noisy machine; the median of these
  paired ratios is the steadier estimate there: in two 15-round runs of the stage-3 case on the
  shared 2-core VM of BENCHMARKS.md (2026-12-03), M4(R)'s fastest-round speed vs real was 0.74
  and 0.64 (kept folded 0.72 and 0.59), its median per-round speed 0.71 and 0.70 (both)."""
  ratios = [a / b for a, b in zip(times[ref], times[key])]
  return min(ratios), float(np.median(ratios)), max(ratios)


def _sgd_step(loss_fn):
  opt = optax.sgd(0.01, momentum=0.9)

  @jax.jit
  def step(params, state, opt_state, batch):
    (loss, state), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, state, batch)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), state, opt_state, loss
  return opt, step


# ------------------------------------------------------------------ train
def _resnet_case(algebra, width, args, rng):
  ctor = MODELS[args.resnet]
  f = hk.transform_with_state(
      lambda x, is_training: ctor(num_classes=10, algebra=algebra, width=width)(x, is_training))
  images = jnp.asarray(rng.normal(size=(args.batch, 32, 32, 3)), jnp.float32)
  labels = jnp.asarray(rng.integers(0, 10, size=(args.batch,)), jnp.int32)
  params, state = jax.jit(f.init, static_argnums=2)(jax.random.PRNGKey(0), images, True)

  def loss_fn(params, state, batch):
    logits, state = f.apply(params, state, None, batch[0], True)
    return optax.softmax_cross_entropy_with_integer_labels(logits, batch[1]).mean(), state
  opt, step = _sgd_step(loss_fn)
  carry = [params, state, opt.init(params)]

  def run():
    carry[0], carry[1], carry[2], loss = step(*carry, (images, labels))
    return loss
  report = costs.model_costs(lambda x: ctor(num_classes=10, algebra=algebra, width=width)(x, False),
                             jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
  return run, report.total_params, report.macs, args.batch


def _txl_case(config, algebra, args, rng):
  f = hk.transform(lambda tokens, targets: txl.TransformerXL(**config, algebra=algebra)(
      tokens, None, True, targets=targets)[0].mean())
  tokens = jnp.asarray(rng.integers(0, config["vocab_size"], size=(args.lm_batch, args.seq_len)),
                       jnp.int32)
  params = jax.jit(f.init)(jax.random.PRNGKey(0), tokens, tokens)

  def loss_fn(params, state, batch):
    return f.apply(params, jax.random.PRNGKey(1), *batch), state
  opt, step = _sgd_step(loss_fn)
  carry = [params, None, opt.init(params)]

  def run():
    carry[0], _, carry[2], loss = step(carry[0], None, carry[2], (tokens, tokens))
    return loss
  report = txl.model_costs(config, algebra, seq_len=args.seq_len)
  return run, report.total_params, report.macs // args.seq_len, args.lm_batch * args.seq_len


def _match_resnet(model, algebra, match):
  # A CIFAR ResNet has 16 channels in its first stage, where one channel can
  # be worth more than 2%: fall back to 5% there (the table shows the ratio).
  for tolerance in (0.02, 0.05, 0.1):
    try:
      return matching.match_image_model(MODELS[model], algebra, match=match, image_size=32,
                                        num_classes=10, tolerance=tolerance).width
    except ValueError:
      continue
  raise ValueError(f"could not match {model} in {algebra} by {match} within 10%.")


def lm_reference(args):
  """The real Transformer-XL of the train bench (also scripts/benchmark_ab.py's)."""
  return dict(vocab_size=256, d_model=args.lm_width, n_layers=2, n_heads=4,
              d_head=args.lm_width // 4, d_inner=4 * args.lm_width, mem_len=0)


def txl_base_reference(args):
  """The real enwik8 base layers of the txl_base bench (also scripts/benchmark_ab.py's)."""
  return dict(txl.PRESETS["enwik8_base"], n_layers=args.txl_layers, mem_len=0)


def bench_train(args, rng):
  lines = []
  lm_ref = lm_reference(args)
  for model in ("resnet", "transformer_xl"):
    for match in ("params", "macs"):
      cases = {}
      for name in TRAIN_ALGEBRAS:
        if model == "resnet":
          width = 1.0 if name == "r" else _match_resnet(args.resnet, name, match)
          cases[name] = _resnet_case(name, width, args, rng) + (f"width {width:.3f}",)
        else:
          config = lm_ref if name == "r" else txl.matched_config(lm_ref, name, match=match,
                                                                 seq_len=args.seq_len)
          cases[name] = _txl_case(config, name, args, rng) + (
              f"d_model {config['d_model']}, d_inner {config['d_inner']}",)
      t = _best_of_round_robin({k: v[0] for k, v in cases.items()}, args.repeats)
      real = cases["r"]
      unit = "images" if model == "resnet" else "tokens"
      lines += [f"**{model}, equal {match}** ({unit}/s; MACs per {unit[:-1]})", "",
                f"| algebra | size | params | MACs | {unit}/s | speed vs real | params vs real "
                f"| MACs vs real |", "|---|---|---|---|---|---|---|---|"]
      for name, (_, params, macs, n, size) in cases.items():
        lines.append(f"| {name} | {size} | {params:,} | {macs:,} | {n / t[name]:.1f} "
                     f"| {t['r'] / t[name]:.2f} | {params / real[1]:.3f} | {macs / real[2]:.3f} |")
        print(model, match, name, size, f"{n / t[name]:.1f} {unit}/s", flush=True)
      lines.append("")
  return "\n".join(lines)


# ----------------------------------------------------------------- decode
def _decode_ref(args):
  return dict(vocab_size=256, d_model=args.decode_width, n_layers=args.decode_layers, n_heads=8,
              d_head=args.decode_width // 8, d_inner=4 * args.decode_width,
              mem_len=args.decode_mem)


def _decode_run(decoder, params, prompt, args, batch_size=1):
  """A generation of args.decode_tokens tokens on weights prepared once (as a server would)."""
  prepared = decoder.prepare(params, batch_size)
  rng = jax.random.PRNGKey(0)
  return lambda: decoder.sample(prepared, rng, prompt, num_tokens=args.decode_tokens)


def decode_results(args, rng, algebra_names=DECODE_ALGEBRAS):
  """Batch-1 decoding of `algebra_names` (with "r") at the real model's parameters, timed
  round-robin, each with its dense weights on XLA's matmul ("xla") and on the rows kernel
  (`sparse_ops.rows_matmul`, "kernel", where it builds).

  Returns one dict per algebra: algebra, d_model, d_inner, params, macs_per_token,
  tokens_per_s {route: tokens/s}, vs_real {route: tokens/s / the real model's on that route},
  macs_vs_real.
  """
  ref = _decode_ref(args)
  if "r" not in algebra_names:
    raise ValueError(f"decoding compares with the real model: algebras {list(algebra_names)} "
                     "must include 'r'")
  routes = {"xla": False}
  if sparse_ops.rows_kernel_default():
    routes["kernel"] = True
  runs, rows = {}, {}
  prompt = jnp.asarray(rng.integers(0, 256, size=(1, 1)), jnp.int32)
  for name in algebra_names:
    config = ref if name == "r" else txl.matched_config(ref, name, match="params")
    model_fn = lambda config=config, name=name: txl.TransformerXL(**config, algebra=name)
    init = hk.transform(lambda t, fn=model_fn: fn()(t, None, False))
    params = jax.jit(init.init)(jax.random.PRNGKey(0), prompt)  # one compile, not op by op
    for route, kernel in routes.items():
      runs[name, route] = _decode_run(Decoder(model_fn, rows_kernel=kernel), params, prompt, args)
      jax.block_until_ready(runs[name, route]())  # compile
    # Per generated token with cached keys/values: the weight layers on one
    # position (memory K/V are not recomputed when decoding).
    per_token = txl.model_costs(config, name, seq_len=1, with_mems=False)
    rows[name] = (config, per_token.total_params, per_token.macs)
  t = _best_of_round_robin(runs, args.repeats)
  out = []
  for name, (config, params, macs) in rows.items():
    tps = {route: args.decode_tokens / t[name, route] for route in routes}
    out.append(dict(algebra=name, d_model=config["d_model"], d_inner=config["d_inner"],
                    params=params, macs_per_token=macs, tokens_per_s=tps,
                    vs_real={route: t["r", route] / t[name, route] for route in routes},
                    vs_best_real=min(t["r", r] for r in routes) / t[name, list(routes)[-1]],
                    macs_vs_real=macs / rows["r"][2]))
    print("decode", name, {r: f"{v:.1f} tokens/s" for r, v in tps.items()}, flush=True)
  return out


def decode_table(results):
  routes = list(results[0]["tokens_per_s"])
  head = " | ".join(f"tokens/s ({r}) | vs real ({r})" for r in routes)
  lines = [f"| algebra | d_model / d_inner | params | MACs/token | {head} | last vs fastest real "
           "| MACs/token vs real |", "|---|---|---|---|" + "---|---|" * len(routes) + "---|---|"]
  for r in results:
    cells = " | ".join(f"{r['tokens_per_s'][k]:.1f} | {r['vs_real'][k]:.2f}" for k in routes)
    lines.append(f"| {r['algebra']} | {r['d_model']} / {r['d_inner']} | {r['params']:,} "
                 f"| {r['macs_per_token']:,} | {cells} | {r['vs_best_real']:.2f} "
                 f"| {r['macs_vs_real']:.2f} |")
  return "\n".join(lines)


def bench_decode(args, rng):
  return decode_table(decode_results(args, rng))


def _prune_elements(params, sparsity, rng):
  """Params with `sparsity` of the elements of every Linear weight "w" [Cin, Cout, D] zeroed."""
  out = {}
  for module, bundle in params.items():
    out[module] = dict(bundle)
    w = bundle.get("w")
    if w is not None and w.ndim == 3 and "embed" not in module:
      keep = rng.random(w.shape[:2]) >= sparsity                          # [Cin, Cout]
      out[module]["w"] = w * jnp.asarray(keep[..., None], w.dtype)
  return out


def bench_decode_sparse(args, rng):
  """A `--sparsity` element-sparse M2(R) model at equal parameters decoding on the sparse path
  (`Decoder(sparse=True)`, weights prepared once) vs the same weights on the dense path."""
  ref = _decode_ref(args)
  prompt = jnp.asarray(rng.integers(0, 256, size=(1, 1)), jnp.int32)
  runs, info = {}, {}
  for name in args.sparse_algebras.split(","):
    config = txl.matched_config(ref, name, match="params")
    model_fn = lambda config=config, name=name: txl.TransformerXL(**config, algebra=name)
    init = hk.transform(lambda t, fn=model_fn: fn()(t, None, False))
    params = _prune_elements(jax.jit(init.init)(jax.random.PRNGKey(0), prompt), args.sparsity, rng)
    for mode, sparse in (("dense", False), ("sparse", True)):
      runs[name, mode] = _decode_run(Decoder(model_fn, sparse=sparse), params, prompt, args)
      jax.block_until_ready(runs[name, mode]())
    info[name] = config
  t = _best_of_round_robin(runs, args.repeats)
  lines = ["| algebra | d_model / d_inner | element sparsity | dense tokens/s | sparse tokens/s "
           "| speed-up |", "|---|---|---|---|---|---|"]
  for name, config in info.items():
    dense, sparse = (args.decode_tokens / t[name, m] for m in ("dense", "sparse"))
    lines.append(f"| {name} | {config['d_model']} / {config['d_inner']} | {args.sparsity:.0%} "
                 f"| {dense:.1f} | {sparse:.1f} | {sparse / dense:.2f} |")
    print("decode sparse", name, f"dense {dense:.1f}, sparse {sparse:.1f} tokens/s", flush=True)
  return "\n".join(lines)


# ----------------------------------------------------------------- txl_base
def bench_txl_base(args, rng):
  """One training step (forward, backward, SGD update) of Transformer-XL layers with the enwik8
  base model's shapes (`txl.PRESETS["enwik8_base"]`: d_model 512, 8 heads of 64, d_inner 2048,
  dropout 0.1), `--txl_layers` of them, batch `--lm_batch` x `--seq_len` tokens, no memory, per
  algebra at the real layers' multiply-adds (`txl.matched_config(..., match="macs")`)."""
  ref = txl_base_reference(args)
  cases, info = {}, {}
  for name in args.stage3_algebras.split(","):
    config = ref if name == "r" else txl.matched_config(ref, name, match="macs",
                                                        seq_len=args.seq_len)
    run, params, macs, _ = _txl_case(config, name, args, rng)
    jax.block_until_ready(run())
    cases[name] = run
    info[name] = (config, params, macs)
  rounds = _round_robin(cases, args.repeats)
  t = {k: min(v) for k, v in rounds.items()}
  real_macs = info["r"][2]
  lines = [f"{args.txl_layers} layers of the enwik8 base shapes, batch {args.lm_batch} x "
           f"{args.seq_len} tokens, no memory, forward+backward+SGD update. {ROUNDS_NOTE}", "",
           "| algebra | d_model / d_inner (elements) | params | MACs/token vs real | ms/step "
           "| speed vs real | per round | MAC/s vs real |", "|---|---|---|---|---|---|---|---|"]
  for name, (config, params, macs) in info.items():
    lo, med, hi = round_speeds(rounds, "r", name)
    lines.append(f"| {name} | {config['d_model']} / {config['d_inner']} | {params:,} "
                 f"| {macs / real_macs:.3f} | {t[name] * 1e3:.1f} | {t['r'] / t[name]:.2f} "
                 f"| {med:.2f} ({lo:.2f}-{hi:.2f}) | {t['r'] / t[name] * macs / real_macs:.2f} |")
    print("txl_base", name, f"{t[name] * 1e3:.1f} ms", flush=True)
  return "\n".join(lines)


# ----------------------------------------------------------------- stage3
STAGE3_ALGEBRAS = ("r", "c", "h", "m2r", "m4r")


class _PartLayers(resnet.LayerChoices):
  """The blocks' layer choices with BatchNorm and/or the activation taken out (identities),
  for the `stage3_parts` bench: what each part costs inside the compiled step."""

  def __init__(self, *a, parts, **k):
    super().__init__(*a, **k)
    assert parts in STAGE3_PARTS, parts
    self.keep_bn = parts == "all"
    if parts == "convs":
      self.activation = lambda x: x

  def bn(self, name, zero_scale=False):
    if self.keep_bn:
      return super().bn(name, zero_scale)
    return lambda x, *args, **kwargs: x


STAGE3_PARTS = {"all": "all layers", "no_bn": "without BatchNorm",
                "convs": "convolutions and residual adds only (no BatchNorm, no ReLU)"}


def _stage3_layouts(args):
  """(algebra name, kept folded, table row key) of the stage-3 benches: every algebra of
  --stage3_algebras, and M_n(R) once more kept folded."""
  for name in args.stage3_algebras.split(","):
    layouts = (False, True) if algebras_lib.get(name).matrix_base is not None else (False,)
    for folded in layouts:
      yield name, folded, name + (" (kept folded)" if folded else "")


def _stage3_case(name, args, rng, folded, parts="all"):
  """Forward+backward of `args.stage3_blocks` ResNet-50 stage-3 bottleneck blocks (identity
  shortcut, 14×14) for algebra `name` at the real blocks' multiply-adds; `parts` (a key of
  STAGE3_PARTS) takes BatchNorm and the ReLUs out."""
  alg = algebras_lib.get(name)
  # Equal MACs: width w elements with mults_per_product · w² = 256² (the real bottleneck).
  width = max(1, round(args.stage3_width / np.sqrt(alg.mults_per_product)))
  layers = _PartLayers(alg, resnet.check_bn_config(None), "relu", None, None, folded=folded,
                       parts=parts)

  def forward(x):
    # Kept folded, the blocks take and return the folded layout, as they do inside a
    # `folded=True` network, which folds once after its lift and unfolds its pooled features.
    for i in range(args.stage3_blocks):
      x = resnet.Block(width, 1, bottleneck=True, shortcut="projection",
                       zero_init_last_bn=False, layers=layers, name=f"block_{i}")(x, True)
    return x                                      # [B, 14, 14, 4·w, D] or its folded layout

  f = hk.transform_with_state(forward)
  x = jnp.asarray(rng.normal(size=(args.stage3_batch, 14, 14, 4 * width, alg.dim)), jnp.float32)
  x = layers.fold(x)
  params, state = jax.jit(f.init)(jax.random.PRNGKey(0), x)

  @jax.jit
  def step(params, state, x):
    def loss(params):
      y, new_state = f.apply(params, state, None, x)
      return jnp.mean(jnp.square(y)), new_state
    (l, new_state), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return l, grads, new_state

  run = lambda: step(params, state, x)[1]
  # Per image: 3 convs of 14·14 positions, 4w·w + 9w·w + w·4w element products each block.
  macs = args.stage3_blocks * 14 * 14 * 17 * width * width * alg.mults_per_product
  return run, width, macs


def bench_stage3(args, rng):
  cases, info = {}, {}
  for name, folded, key in _stage3_layouts(args):
    run, width, macs = _stage3_case(name, args, rng, folded)
    cases[key] = run
    info[key] = (width, macs)
    jax.block_until_ready(run())
  rounds = _round_robin(cases, args.repeats)
  t = {k: min(v) for k, v in rounds.items()}
  real_t, real_macs = t["r"], info["r"][1]
  lines = [f"{args.stage3_blocks} bottleneck blocks, 14×14, batch {args.stage3_batch}, "
           "forward+backward (gradients of all parameters), BatchNorm in training mode; kept "
           "folded, the blocks take and return the folded layout (no fold or unfold). "
           f"{ROUNDS_NOTE}", "",
           "| algebra | bottleneck width (elements) | MACs vs real | ms/step | speed vs real "
           "| per round | MAC/s vs real |", "|---|---|---|---|---|---|---|"]
  for key, (width, macs) in info.items():
    lo, med, hi = round_speeds(rounds, "r", key)
    lines.append(f"| {key} | {width} | {macs / real_macs:.3f} | {t[key] * 1e3:.1f} "
                 f"| {real_t / t[key]:.2f} | {med:.2f} ({lo:.2f}-{hi:.2f}) "
                 f"| {real_t / t[key] * macs / real_macs:.2f} |")
    print("stage3", key, f"{t[key] * 1e3:.1f} ms", flush=True)
  return "\n".join(lines)


def bench_stage3_parts(args, rng):
  """The stage-3 blocks of `bench_stage3` with all layers, without BatchNorm, and as
  convolutions and residual adds only, each variant's speed vs the real blocks of the same
  variant (median of the per-round ratios): how much of the gap to the real model each part
  holds."""
  cases, keys = {}, []
  for name, folded, key in _stage3_layouts(args):
    keys.append(key)
    for parts in STAGE3_PARTS:
      cases[(key, parts)] = _stage3_case(name, args, rng, folded, parts)[0]
      jax.block_until_ready(cases[(key, parts)]())
  rounds = _round_robin(cases, args.repeats)
  ms = lambda key, parts: [t * 1e3 for t in rounds[(key, parts)]]
  lines = [f"{args.stage3_blocks} bottleneck blocks as in the table above (batch "
           f"{args.stage3_batch}, forward+backward), with parts of the blocks taken out: "
           + "; ".join(f"\"{k}\": {v}" for k, v in STAGE3_PARTS.items()) + ". Each speed is "
           "vs the real blocks of the same variant: the median (lowest-highest) of "
           f"{args.repeats} round-robin rounds' paired ratios. \"BatchNorm ms\": the step "
           "time with it minus without it, median over the rounds.", "",
           "| algebra | " + " | ".join(f"{k}: speed vs real" for k in STAGE3_PARTS)
           + " | BatchNorm ms | all layers ms |", "|---|" + "---|" * (len(STAGE3_PARTS) + 2)]
  for key in keys:
    cells = []
    for parts in STAGE3_PARTS:
      lo, med, hi = round_speeds({"r": rounds[("r", parts)], key: rounds[(key, parts)]},
                                 "r", key)
      cells.append(f"{med:.2f} ({lo:.2f}-{hi:.2f})")
    bn_ms = np.median(np.subtract(ms(key, "all"), ms(key, "no_bn")))
    lines.append(f"| {key} | " + " | ".join(cells)
                 + f" | {bn_ms:.1f} | {np.median(ms(key, 'all')):.1f} |")
    print("stage3_parts", key, " ".join(cells), flush=True)
  return "\n".join(lines)


# ------------------------------------------------------------------- dot
def bench_dot(args, rng):
  """XLA's CPU matmul with M = 1, 2, 4, 16 rows against one K×K weight, and the rows
  kernel (`sparse_ops.rows_matmul`, weight stored transposed) where it builds.

  An M_n(R) layer at batch 1 is a matmul with n rows (the folded columns);
  the compute-density argument needs it to cost about what M = 1 costs when
  reading the weight dominates.
  """
  k = args.dot_size
  ws = [jnp.asarray(rng.normal(size=(k, k)) / np.sqrt(k), jnp.float32) for _ in range(4)]
  wts = [jnp.asarray(np.asarray(w).T) for w in ws]

  def chain(x, ws):
    for w in ws:
      x = jnp.tanh(x @ w)
    return x

  def chain_rows(x, wts):
    for wt in wts:
      x = jnp.tanh(sparse_ops.rows_matmul(x, wt))
    return x
  kernel = sparse_ops.rows_kernel_default()
  runs = {}
  for m in (1, 2, 4, 16):
    x = jnp.asarray(rng.normal(size=(m, k)), jnp.float32)
    f, g = jax.jit(chain), jax.jit(chain_rows)
    runs["xla", m] = lambda f=f, x=x: f(x, ws)
    if kernel:
      runs["kernel", m] = lambda g=g, x=x: g(x, wts)
  for run in runs.values():
    jax.block_until_ready(run())
  t = _best_of_round_robin(runs, args.repeats)
  head = " | rows kernel (ms) | kernel vs XLA M = 1" if kernel else ""
  lines = [f"Four {k}×{k} float32 weights ({4 * k * k * 4 / 2**20:.0f} MiB) applied in a chain. "
           "Rows kernel: `sparse_ops.rows_matmul` (weight stored transposed; XLA's dot past "
           f"{sparse_ops.ROWS_KERNEL_MAX} rows).", "",
           f"| rows M | XLA time (ms) | XLA time vs M = 1 | MACs vs M = 1{head} |",
           "|---|---|---|---|" + ("---|---|" if kernel else "")]
  for m in (1, 2, 4, 16):
    extra = (f" | {t['kernel', m] * 1e3:.2f} | {t['kernel', m] / t['xla', 1]:.2f}"
             if kernel else "")
    lines.append(f"| {m} | {t['xla', m] * 1e3:.2f} | {t['xla', m] / t['xla', 1]:.2f} | "
                 f"{m}{extra} |")
    print("dot", m, {r: f"{t[r, m] * 1e3:.2f} ms" for r, mm in t if mm == m}, flush=True)
  return "\n".join(lines)


def parser(description=__doc__):
  """The options of every bench (also read by scripts/benchmark_ab.py)."""
  p = argparse.ArgumentParser(description=description,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--bench", default="train,decode,dot")
  p.add_argument("--resnet", default="cifar_resnet20")
  p.add_argument("--batch", type=int, default=32, help="images per ResNet step")
  p.add_argument("--lm_width", type=int, default=256, help="real d_model of the training LM")
  p.add_argument("--lm_batch", type=int, default=8)
  p.add_argument("--seq_len", type=int, default=128)
  p.add_argument("--decode_width", type=int, default=512)
  p.add_argument("--decode_layers", type=int, default=4)
  p.add_argument("--decode_mem", type=int, default=128)
  p.add_argument("--decode_tokens", type=int, default=128)
  p.add_argument("--sparsity", type=float, default=0.9, help="element sparsity, decode_sparse")
  p.add_argument("--sparse_algebras", default="m2r", help="algebras of decode_sparse")
  p.add_argument("--dot_size", type=int, default=4096)
  p.add_argument("--txl_layers", type=int, default=2, help="layers of the txl_base bench")
  p.add_argument("--stage3_blocks", type=int, default=2)
  p.add_argument("--stage3_batch", type=int, default=8)
  p.add_argument("--stage3_width", type=int, default=256, help="real bottleneck width")
  p.add_argument("--stage3_algebras", default=",".join(STAGE3_ALGEBRAS),
                 help="algebras of the stage3, stage3_parts and txl_base benches")
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--write", default=None, help="markdown file to write the tables into")
  return p


def main(argv=None):
  args = parser().parse_args(argv)
  rng = np.random.default_rng(0)
  header = markdown_header(argv)
  benches = {"train": (bench_train, "models-train"), "dot": (bench_dot, "models-dot"),
             "decode": (bench_decode, "models-decode"),
             "stage3": (bench_stage3, "models-stage3"),
             "stage3_parts": (bench_stage3_parts, "models-stage3-parts"),
             "txl_base": (bench_txl_base, "models-txl-base"),
             "decode_sparse": (bench_decode_sparse, "models-decode-sparse")}
  for name, (bench, section) in benches.items():  # in this order, each if asked for
    if name in args.bench.split(","):
      table = bench(args, rng)
      print(table)
      if args.write:
        write_section(args.write, section, header + "\n\n" + table)

if __name__ == "__main__":
  main()
