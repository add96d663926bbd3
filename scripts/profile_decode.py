"""Where the time of one batch-1 decoding step goes, per algebra at equal parameters (issue 12).

Runs `Decoder.sample` (one jit: a scan over the tokens, weights prepared once beforehand) of the
Transformer-XL of `benchmark_models.py --bench decode` for each algebra, traces one generation
with `jax.profiler`, and attributes every executed XLA op (thunk) to one category by the JAX
name stack and primitives of the HLO instructions it runs (from the compiled module's text):

  weight matmuls  dots / kernel calls with a weight operand (>= 64 Ki entries) inside an
                  `nn.Linear` or the output softmax
  attention       everything of the attention over the cache: score and value einsums
                  (batched dots whose JAX name XLA dropped included), the cache writes, the
                  score softmax, masking, the rel-position gather
  layout          transposes, copies, concatenations, component slices and the small
                  einsums with the structure tensor inside a Linear (fold / unfold, right path)
  norms + act     LayerNorms, the FFN nonlinearity, bias and residual adds
  other ops       embedding, output log-softmax and sampling, loop bookkeeping
  outside the token loop
                  ops run once per generation (cache and relative-position set-up, the
                  last draw); host dispatch is one call per generation, so per token it is
                  part of the wall time, not of any op

The ops of the two cores overlap and tracing slows the small ops, so the op times of one traced
generation are used for shares only: each category's share of the summed op time times the
untraced wall time per token (minimum over `--repeats` generations timed round-robin). Each
algebra runs with its dense weights on XLA's matmul ("xla") and on `sparse_ops.rows_matmul`
("kernel"), weights prepared once.

Usage:
  python scripts/profile_decode.py [--algebras r,c,h,m2r,m4r] [--decode_width 1024]
      [--decode_layers 2] [--decode_tokens 16] [--routes xla,kernel] [--repeats 3]
      [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import collections
import glob
import os
import re
import sys
import tempfile
import time
from typing import Optional

import numpy as np
import haiku as hk
import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(__file__))
from benchmark_ops import markdown_header, write_section  # noqa: E402

from algebranets import sparse_ops
from algebranets.models import transformer_xl as txl
from algebranets.models.decoding import Decoder

CATEGORIES = ("weight matmuls", "attention", "layout", "norms + act", "other ops")
_LINEARS = {"q", "kv", "o", "ff_in", "ff_out", "r"}
_NORMS = {"attn_norm", "ff_norm", "final_norm"}
_WEIGHT_MIN = 1 << 16
_DOTS = ("dot", "custom-call", "convolution")
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.+?) ([a-z][a-z\-]*)\((.*)$")
_COMP = re.compile(r"^(?:ENTRY )?%([\w.\-]+) \((.*)\) -> .* \{$")


def _num_elements(shape: str) -> int:
  """Largest array in an HLO shape string, in elements."""
  best = 0
  for dims in re.findall(r"\w+\[([\d,]*)\]", shape):
    best = max(best, int(np.prod([int(d) for d in dims.split(",") if d] or [1])))
  return best


def parse_hlo(text: str):
  """{instruction: [(opcode, op_name, reads a weight)]} over it and what it calls."""
  shapes, comps, instrs, current = {}, collections.defaultdict(list), {}, None
  for line in text.splitlines():
    m = _COMP.match(line)
    if m:
      current = m.group(1)
      for p in re.finditer(r"([\w.\-]+): (\w+\[[\d,]*\])", m.group(2)):
        shapes[p.group(1)] = p.group(2)
      continue
    m = _INSTR.match(line)
    if not m:
      continue
    name, shape, opcode, rest = m.groups()
    shapes[name] = shape
    op_name = re.search(r'op_name="([^"]*)"', rest)
    op_name = op_name.group(1) if op_name else ""
    if not op_name and opcode == "dot" and "lhs_batch_dims" in rest:
      # XLA's dot rewrites drop the JAX name; the step's only batched dots (over heads) are
      # the attention's score and value contractions.
      op_name = "layer_?/attention_dot"
    calls = re.findall(r"(?:calls|to_apply|body|condition)=%([\w.\-]+)", rest)
    operands = re.findall(r"%([\w.\-]+)", rest.split("),")[0])
    comps[current].append(name)
    instrs[name] = (opcode, op_name, operands, calls)
  # Entry parameters that are weights ("...['w']...", prepared or not): their sizes identify
  # weight operands inside the loop, where they are loop-carried tuple elements.
  weights = {_num_elements(shapes[n]) for n, (_, op_name, _, _) in instrs.items()
             if "['w']" in op_name.replace("\\'", "'")}
  weights = {w for w in weights if w >= _WEIGHT_MIN}
  out = {}

  def expand(name, seen):
    opcode, op_name, operands, calls = instrs[name]
    sizes = [_num_elements(shapes.get(o, "")) for o in operands]
    items = [(opcode, op_name, any(n in weights for n in sizes))]
    for c in calls:
      if c in seen or opcode == "while":
        continue
      seen.add(c)
      for inner in comps.get(c, []):
        items += expand(inner, seen)
    return items
  for name in instrs:
    out[name] = expand(name, set())
  return out


def _scope(op_name: str):
  """(innermost module of the name stack, its primitive) for a JAX op_name."""
  parts = op_name.split("/")
  module = next((p for p in reversed(parts[:-1])
                 if p in _LINEARS | _NORMS | {"embed", "softmax"} or p.startswith("layer_")),
                None)
  return module, parts[-1] if parts else ""


def classify(items) -> Optional[str]:
  """One category for an executed op from its HLO instructions (see the module docstring);
  None for control flow (a while loop's own event spans the ops it runs)."""
  if items and items[0][0] in ("while", "conditional", "call"):
    return None
  found = set()
  for opcode, op_name, weight in items:
    if opcode in ("parameter", "constant", "bitcast", "get-tuple-element", "tuple"):
      continue
    module, prim = _scope(op_name)
    if opcode in _DOTS and weight:
      found.add("weight matmuls")   # some dots lose their metadata in XLA's rewrites
    elif module in _LINEARS or module == "softmax":
      if module == "softmax":
        found.add("other ops")
      elif prim.startswith("add") and opcode in ("add", "fusion"):
        found.add("norms + act")
      else:
        found.add("layout")
    elif module in _NORMS:
      found.add("norms + act")
    elif module is not None and module.startswith("layer_"):
      if ("_attend_and_feed_forward" in op_name or "_project_and_feed_forward" in op_name) and (
          prim in ("max", "add") or "relu" in op_name or "gelu" in op_name):
        found.add("norms + act")
      else:
        found.add("attention")   # its reshapes and copies included
    else:
      found.add("other ops")
  for cat in CATEGORIES:
    if cat in found:
      return cat
  return "other ops"


def _setup(name, config, prompt, num_tokens, rows_kernel):
  model_fn = lambda: txl.TransformerXL(**config, algebra=name)
  params = jax.jit(hk.transform(lambda t: model_fn()(t, None, False)).init)(
      jax.random.PRNGKey(0), prompt)
  decoder = Decoder(model_fn, rows_kernel=rows_kernel)
  prepared = decoder.prepare(params)          # once: what a generation server would keep
  rng = jax.random.PRNGKey(0)
  temperature = jnp.float32(1.0)
  # The compiled generation of `Decoder.sample` (compiled once; its HLO names the traced ops).
  compiled = decoder._generate.lower(prepared, rng, prompt, temperature, num_tokens=num_tokens,
                                     top_k=None).compile()
  return (lambda: compiled(prepared, rng, prompt, temperature)), compiled.as_text()


def _trace_ops(run, module_prefix="jit__generate_impl"):
  """{hlo op: (total µs, times run)} of one traced call of run()."""
  from jax.profiler import ProfileData
  with tempfile.TemporaryDirectory() as d:
    with jax.profiler.trace(d):
      jax.block_until_ready(run())
    data = ProfileData.from_file(glob.glob(os.path.join(d, "**", "*.xplane.pb"),
                                           recursive=True)[0])
  totals, counts = collections.Counter(), collections.Counter()
  for plane in data.planes:
    for line in plane.lines:
      for e in line.events:
        stats = dict(e.stats)
        if "hlo_op" in stats and str(stats.get("hlo_module", "")).startswith(module_prefix):
          totals[stats["hlo_op"]] += e.duration_ns / 1e3
          counts[stats["hlo_op"]] += 1
  return {op: (totals[op], counts[op]) for op in totals}


def profile(args, rng):
  ref = dict(vocab_size=256, d_model=args.decode_width, n_layers=args.decode_layers, n_heads=8,
             d_head=args.decode_width // 8, d_inner=4 * args.decode_width,
             mem_len=args.decode_mem)
  prompt = jnp.asarray(rng.integers(0, 256, size=(1, 1)), jnp.int32)
  routes = {"xla": False, "kernel": True}
  routes = {r: routes[r] for r in args.routes.split(",")}
  if "kernel" in routes and not sparse_ops.rows_kernel_default():
    del routes["kernel"]
  runs, hlos, configs = {}, {}, {}
  for name in args.algebras.split(","):
    configs[name] = ref if name == "r" else txl.matched_config(ref, name, match="params")
    for route, kernel in routes.items():
      runs[name, route], hlos[name, route] = _setup(name, configs[name], prompt,
                                                    args.decode_tokens, kernel)
      jax.block_until_ready(runs[name, route]())
  walls = {k: [] for k in runs}
  for _ in range(args.repeats):
    for k, run in runs.items():
      t0 = time.perf_counter()
      jax.block_until_ready(run())
      walls[k].append(time.perf_counter() - t0)
  rows = []
  for (name, route), run in runs.items():
    ops = parse_hlo(hlos[name, route])
    per_cat = collections.Counter()
    for op, (us, count) in _trace_ops(run).items():
      cat = classify(ops.get(op, []))
      if cat is not None:
        # Ops run fewer times than there are tokens are outside the token loop (cache and
        # rel-position set-up, the last token's draw).
        per_cat[cat if count >= args.decode_tokens - 1 else "outside loop"] += us
    ops_total = sum(per_cat.values())
    wall = min(walls[name, route]) * 1e6 / args.decode_tokens
    # Ops of the two cores overlap and tracing slows small ops: each category gets its share
    # of the summed op time, applied to the untraced wall time per token.
    scale = wall / max(ops_total, 1e-9)
    rows.append(dict(algebra=name, route=route, d_model=configs[name]["d_model"], wall=wall,
                     **{c: per_cat[c] * scale for c in CATEGORIES + ("outside loop",)}))
    print(name, route, {k: round(v) if isinstance(v, float) else v for k, v in rows[-1].items()},
          flush=True)
  return rows


def table(rows):
  real = {r["route"]: r["wall"] for r in rows if r["algebra"] == "r"}
  head = " | ".join(CATEGORIES)
  lines = [f"| algebra | d_model | matmul route | {head} | outside the token loop | µs/token "
           "| tokens/s vs real (same route) |", "|---|---|---|" + "---|" * (len(CATEGORIES) + 3)]
  for r in sorted(rows, key=lambda r: r["route"] != "xla"):     # stable: algebra order kept
    cells = " | ".join(f"{r[c]:,.0f}" for c in CATEGORIES)
    vs = f"{real[r['route']] / r['wall']:.2f}" if r["route"] in real else ""
    lines.append(f"| {r['algebra']} | {r['d_model']} | {r['route']} | {cells} "
                 f"| {r['outside loop']:,.0f} "
                 f"| {r['wall']:,.0f} | {vs} |")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--algebras", default="r,c,h,m2r,m4r", help="comma-separated; first is the "
                 "reference of the last column")
  p.add_argument("--decode_width", type=int, default=1024)
  p.add_argument("--decode_layers", type=int, default=2)
  p.add_argument("--decode_mem", type=int, default=128)
  p.add_argument("--decode_tokens", type=int, default=16)
  p.add_argument("--routes", default="xla,kernel", help="dense matmul routes to profile: xla "
                 "(XLA's dot) and/or kernel (sparse_ops.rows_matmul)")
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--section", default="decode-profile")
  p.add_argument("--write", default=None, help="markdown file to write the table into")
  args = p.parse_args(argv)
  text = table(profile(args, np.random.default_rng(0)))
  print(text)
  if args.write:
    write_section(args.write, args.section, markdown_header(argv) + "\n\n" + text)


if __name__ == "__main__":
  main()
