"""Throughput of algebra dense and conv layers against real layers, measured in one run.

For every algebra, three timings are interleaved round-robin (so machine noise
hits them alike) and the median is kept:
  alg    the algebra layer on its default (fastest) path
  real   a real layer with the same multiply-accumulates (MACs) as the
         algebra's naive product count: input width Cin·D, output width
         Cout·m/D (m = real multiplies per product), same batch
  exp    the same algebra layer on the `expanded` path: each weight element as
         its D×D real matrix, the form PHM / hypercomplex libraries use
  kept   M_n(B) only: the layer on activations already in the folded layout
         (`ops.fold`), i.e. what a network that keeps that layout between
         layers pays per layer (no activation transposes)
  gauss  C only: the 3-multiply path

Printed ratios (timings are the minimum over repeats: the least disturbed run
on a shared machine):
  flops/real  (alg MACs / alg time) / (real MACs / real time); bar >= 0.9
  x vs exp    exp time / alg time; bars for M_n(R): 1.5 (n=2), 2 (n=3), 3 (n=4)
  kept/alg    alg time / kept time: > 1 means keeping the folded layout pays

Usage:
  python scripts/benchmark_ops.py [--kind dense,conv] [--algebras r,c,...]
      [--width 512] [--batch 256] [--repeats 15] [--markdown]
      [--write BENCHMARKS.md --section ops-512]

--write replaces the block between `<!-- SECTION:begin -->` and
`<!-- SECTION:end -->` in that file (appending it if missing) with the
markdown table, the command line, the date and the machine.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import sys
import time

import numpy as np
import jax
import jax.numpy as jnp

from algebranets import algebras, ops


def _timer(fn, *args):
  out = fn(*args)
  jax.block_until_ready(out)  # compile + warm up

  def run():
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0
  return run


def _fwd_bwd(layer):
  def loss(x, w, ct):
    return jnp.vdot(layer(x, w), ct)
  return jax.jit(jax.grad(loss, argnums=(0, 1)))


def _best_times(runners, repeats):
  times = {k: [] for k in runners}
  for _ in range(repeats):
    for k, run in runners.items():
      times[k].append(run())
  return {k: min(v) for k, v in times.items()}


def _widths(alg, width):
  """Element widths for the algebra layer and the MAC-matched real layer."""
  d, m = alg.dim, alg.mults_per_product
  c = max(1, round(width / d))
  real_in, real_out = c * d, max(1, round(c * m / d))
  return c, real_in, real_out


def bench_case(kind, alg, args, rng):
  d, m = alg.dim, alg.mults_per_product
  c, rin, rout = _widths(alg, args.width)
  if kind == "dense":
    xs, ws = (args.batch, c, d), (c, c, d)
    rxs, rws = (args.batch, rin, 1), (rin, rout, 1)
    positions = args.batch
    layer = lambda path, a: (lambda x, w: ops.dense(x, w, a, path=path))
  else:
    hw = args.image
    xs, ws = (args.conv_batch, hw, hw, c, d), (3, 3, c, c, d)
    rxs, rws = (args.conv_batch, hw, hw, rin, 1), (3, 3, rin, rout, 1)
    positions = args.conv_batch * hw * hw * 9
    layer = lambda path, a: (lambda x, w: ops.conv2d(x, w, a, path=path))
  macs = positions * c * c * m
  real_macs = positions * rin * rout
  f32 = lambda s: jnp.asarray(rng.normal(size=s), jnp.float32)
  x, w, rx, rw = f32(xs), f32(ws), f32(rxs), f32(rws)
  default = ops.default_path(alg, kind)
  fns = {"alg": layer(default, alg), "real": layer("expanded", algebras.REAL),
         "exp": layer("expanded", alg)}
  inputs = {"alg": (x, w), "real": (rx, rw), "exp": (x, w)}
  if alg.matrix_base is not None:
    base = alg.matrix_base[1]
    base_layer = layer(None, base)
    fns["kept"] = lambda xf, w: base_layer(xf, ops.fold_weight(w, alg))
    inputs["kept"] = (ops.fold(x, alg), w)
  if alg.name == "c":
    fns["gauss"] = layer("gauss", alg)
    inputs["gauss"] = (x, w)
  result = {"algebra": alg.name, "kind": kind, "path": default, "c": c, "macs": macs}
  for mode in ("fwd", "fwd+bwd"):
    runners = {}
    for k, fn in fns.items():
      xi, wi = inputs[k]
      if mode == "fwd":
        runners[k] = _timer(jax.jit(fn), xi, wi)
      else:
        ct = jnp.ones(jax.eval_shape(fn, xi, wi).shape, jnp.float32)
        runners[k] = _timer(_fwd_bwd(fn), xi, wi, ct)
    t = _best_times(runners, args.repeats)
    result[mode] = {
        "flops_vs_real": (macs / t["alg"]) / (real_macs / t["real"]),
        "speedup_vs_expanded": t["exp"] / t["alg"],
        "gmacs_per_s": macs / t["alg"] / 1e9,
        "ms": t["alg"] * 1e3,
        "kept_speedup": t["alg"] / t["kept"] if "kept" in t else None,
        "kept_flops_vs_real": (macs / t["kept"]) / (real_macs / t["real"]) if "kept" in t else None,
        "gauss_speedup": t["alg"] / t["gauss"] if "gauss" in t else None,
    }
  return result


def _machine():
  cpu = platform.processor() or platform.machine()
  try:
    with open("/proc/cpuinfo") as f:
      cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
  except (OSError, StopIteration):
    pass
  return (f"{cpu}, {os.cpu_count()} cores; jax {jax.__version__} on {jax.devices()[0].platform}, "
          f"{jax.device_count()} device(s); python {sys.version.split()[0]}")


def markdown_header(argv):
  """Command line, date and machine of this run, as markdown lines."""
  script = os.path.relpath(sys.argv[0]) if sys.argv[0] else "scripts/benchmark_ops.py"
  cmd = f"python {script} " + " ".join(argv if argv is not None else sys.argv[1:])
  return "\n".join([f"Command: `{cmd.strip()}`  ",
                    f"Date: {datetime.date.today().isoformat()}  ",
                    f"Machine: {_machine()}"])


def markdown_table(rows, argv):
  return markdown_header(argv) + "\n\n" + markdown_rows(rows)


def markdown_rows(rows):
  """The table of `bench_case` results, without the header lines."""
  opt = lambda v: "" if v is None else f"{v:.2f}"
  lines = [
      "| op | algebra | path | C | fwd FLOP/s vs real | fwd+bwd FLOP/s vs real "
      "| fwd speed vs expanded | fwd+bwd speed vs expanded | fwd+bwd GMAC/s "
      "| fwd+bwd kept-folded speed-up | fwd+bwd kept-folded FLOP/s vs real "
      "| fwd+bwd gauss speed-up |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    f, b = r["fwd"], r["fwd+bwd"]
    lines.append(
        f"| {r['kind']} | {r['algebra']} | {r['path']} | {r['c']} | {f['flops_vs_real']:.2f} "
        f"| {b['flops_vs_real']:.2f} | {f['speedup_vs_expanded']:.2f} "
        f"| {b['speedup_vs_expanded']:.2f} | {b['gmacs_per_s']:.1f} "
        f"| {opt(b['kept_speedup'])} | {opt(b['kept_flops_vs_real'])} "
        f"| {opt(b['gauss_speedup'])} |")
  return "\n".join(lines)


def write_section(path, section, text):
  begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
  block = f"{begin}\n{text}\n{end}"
  old = open(path).read() if os.path.exists(path) else ""
  pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
  if pattern.search(old):
    new = pattern.sub(lambda _: block, old)
  else:
    new = old.rstrip() + "\n\n" + block + "\n"
  with open(path, "w") as f:
    f.write(new)


def run_case(kind, name, args, rng):
  """bench_case for one layer kind ("dense" or "conv") and algebra name, printed as a line.

  `args` holds main's options (the conv layers use args.conv_width).
  """
  alg = algebras.get(name)
  sub = argparse.Namespace(**vars(args))
  if kind == "conv":
    sub.width = args.conv_width
  r = bench_case(kind, alg, sub, rng)
  print(f"{kind:5s} {alg.name:6s} path={r['path']:8s} C={r['c']:4d} | " + " | ".join(
      f"{mode}: {r[mode]['flops_vs_real']:.2f}x real FLOP/s, "
      f"{r[mode]['speedup_vs_expanded']:.2f}x vs expanded, {r[mode]['gmacs_per_s']:.1f} GMAC/s"
      + (f", kept layout {r[mode]['kept_speedup']:.2f}x" if r[mode]["kept_speedup"] else "")
      + (f", gauss {r[mode]['gauss_speedup']:.2f}x" if r[mode]["gauss_speedup"] else "")
      for mode in ("fwd", "fwd+bwd")), flush=True)
  return r


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--kind", default="dense,conv")
  p.add_argument("--algebras", default=",".join(algebras.names()))
  p.add_argument("--width", type=int, default=512,
                 help="real activation width (C·D) of dense layers")
  p.add_argument("--conv_width", type=int, default=128, help="real activation width of conv layers")
  p.add_argument("--batch", type=int, default=256)
  p.add_argument("--conv_batch", type=int, default=16)
  p.add_argument("--image", type=int, default=16)
  p.add_argument("--repeats", type=int, default=15)
  p.add_argument("--markdown", action="store_true")
  p.add_argument("--write", default=None, help="markdown file to write the table into")
  p.add_argument("--section", default="ops", help="name of the marked block in --write")
  args = p.parse_args(argv)
  rng = np.random.default_rng(0)
  rows = [run_case(kind, name, args, rng)
          for kind in args.kind.split(",") for name in args.algebras.split(",")]
  table = markdown_table(rows, argv)
  if args.markdown:
    print()
    print(table)
  if args.write:
    write_section(args.write, args.section, table)
  return rows


if __name__ == "__main__":
  main()
