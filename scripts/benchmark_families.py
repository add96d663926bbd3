"""Clifford algebras on the isomorphic path, and learned algebras, against the expanded path.

For each case, forward+backward (gradients of x and w, what training runs) of one layer, timed
round-robin with its comparison paths so machine noise hits them alike, minimum over repeats
(the least disturbed run on a shared machine):

  iso       a Clifford algebra isomorphic to M_n(B) (Cl(1,1), Cl(2,0) ≅ M2(R); Cl(3,0) ≅ M2(C))
            on its default path `isomorphic`: basis change, M_n(B)'s folded layer, basis change
  expanded  the same layer on the `expanded` path (each weight element as its D×D real matrix,
            D² MACs per product: what a PHM / Clifford library does); bar: iso >= 1.5x faster
  target    the layer of the target algebra M_n(B) itself (its folded path): what the basis
            changes add on top of it ("Cl(1,1) costs what M2(R) costs")
  learned   a learned algebra of the same D (`learned:D`, T a parameter: its expanded weight is
            rebuilt from w and T in every call, and T gets a gradient); vs the fixed-T expanded
            path of the same D

Usage:
  python scripts/benchmark_families.py [--width 256] [--batch 256] [--conv_width 64]
      [--spatial 16] [--repeats 15] [--write BENCHMARKS.md --section families]

--write replaces the block between `<!-- SECTION:begin -->` and `<!-- SECTION:end -->` of that
file (appending it if missing) with the table, the command line, the date and the machine.
"""

from __future__ import annotations

import argparse
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_ops import _best_times, _timer, markdown_header, write_section  # noqa: E402

from algebranets import algebras, ops  # noqa: E402


def _grad_fn(layer, argnums=(0, 1)):
  def loss(*args):
    *inputs, ct = args
    return jnp.vdot(layer(*inputs), ct)
  return jax.jit(jax.grad(loss, argnums=argnums))


def _layer(kind, alg, path, structure=False):
  if kind == "dense":
    if structure:
      return lambda x, w, t: ops.dense(x, w, alg, path=path, structure=t)
    return lambda x, w: ops.dense(x, w, alg, path=path)
  if structure:
    return lambda x, w, t: ops.conv2d(x, w, alg, path=path, structure=t)
  return lambda x, w: ops.conv2d(x, w, alg, path=path)


def _shapes(kind, d, args):
  if kind == "dense":
    c = args.width
    return (args.batch, c, d), (c, c, d), (args.batch, c, d)
  c, s = args.conv_width, args.spatial
  return (args.conv_batch, s, s, c, d), (3, 3, c, c, d), (args.conv_batch, s, s, c, d)


def bench(kind, name, args, rng):
  """Times of one Clifford algebra's layer (iso, expanded, target) for one kind."""
  alg = algebras.get(name)
  target = alg.isomorphism[1]
  xs, ws, ys = _shapes(kind, alg.dim, args)
  x, w, ct = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in (xs, ws, ys))
  runners = {
      "iso": _timer(_grad_fn(_layer(kind, alg, "isomorphic")), x, w, ct),
      "expanded": _timer(_grad_fn(_layer(kind, alg, "expanded")), x, w, ct),
      "target": _timer(_grad_fn(_layer(kind, target, None)), x, w, ct),
  }
  t = _best_times(runners, args.repeats)
  return {"kind": kind, "algebra": name, "target": target.name, "ms": t,
          "vs_expanded": t["expanded"] / t["iso"], "vs_target": t["iso"] / t["target"]}


def bench_learned(kind, d, args, rng):
  """Times of a learned layer (T a parameter, gradient to T too) vs the fixed expanded path."""
  xs, ws, ys = _shapes(kind, d, args)
  x, w, ct = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in (xs, ws, ys))
  fixed = algebras.get({4: "h", 8: "m2c", 16: "m4r"}[d])
  t = jnp.asarray(rng.normal(size=(d, d, d)) / np.sqrt(d), jnp.float32)
  learned = algebras.get(f"learned:{d}")
  runners = {
      "learned": _timer(_grad_fn(_layer(kind, learned, "expanded", True), (0, 1, 2)), x, w, t, ct),
      "expanded": _timer(_grad_fn(_layer(kind, fixed, "expanded")), x, w, ct),
  }
  times = _best_times(runners, args.repeats)
  return {"kind": kind, "algebra": f"learned:{d}", "target": f"{fixed.name} expanded",
          "ms": times, "vs_fixed": times["learned"] / times["expanded"]}


def markdown(rows, learned_rows, argv):
  lines = [markdown_header(argv), "",
           "| op | algebra | ≅ | iso ms | expanded ms | target ms | iso speed-up vs expanded "
           "| iso time / target time |",
           "|---|---|---|---:|---:|---:|---:|---:|"]
  for r in rows:
    t = r["ms"]
    lines.append(f"| {r['kind']} | {r['algebra']} | {r['target']} | {1e3 * t['iso']:.2f} "
                 f"| {1e3 * t['expanded']:.2f} | {1e3 * t['target']:.2f} "
                 f"| {r['vs_expanded']:.2f}x | {r['vs_target']:.2f} |")
  if learned_rows:
    lines += ["", "| op | algebra | compared with | learned ms | fixed-T ms | learned time / "
              "fixed-T time |", "|---|---|---|---:|---:|---:|"]
    for r in learned_rows:
      t = r["ms"]
      lines.append(f"| {r['kind']} | {r['algebra']} | {r['target']} | {1e3 * t['learned']:.2f} "
                   f"| {1e3 * t['expanded']:.2f} | {r['vs_fixed']:.2f} |")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--algebras", default="cl_1_1,cl_2_0,cl_3_0")
  p.add_argument("--kind", default="dense,conv")
  p.add_argument("--width", type=int, default=256, help="dense Cin = Cout (elements)")
  p.add_argument("--batch", type=int, default=256, help="dense batch")
  p.add_argument("--conv_width", type=int, default=64, help="conv Cin = Cout (elements)")
  p.add_argument("--conv_batch", type=int, default=8)
  p.add_argument("--spatial", type=int, default=16)
  p.add_argument("--learned", default="4", help="learned algebra sizes D ('' for none)")
  p.add_argument("--repeats", type=int, default=15)
  p.add_argument("--write", default=None, help="markdown file to write the table into")
  p.add_argument("--section", default="families")
  args = p.parse_args(argv)
  rng = np.random.default_rng(0)
  rows, learned_rows = [], []
  for kind in args.kind.split(","):
    for name in args.algebras.split(","):
      rows.append(bench(kind, name, args, rng))
      r = rows[-1]
      print(f"{kind} {name}: iso {1e3 * r['ms']['iso']:.2f} ms, expanded "
            f"{1e3 * r['ms']['expanded']:.2f} ms ({r['vs_expanded']:.2f}x), {r['target']} "
            f"{1e3 * r['ms']['target']:.2f} ms", flush=True)
    for d in filter(None, args.learned.split(",")):
      learned_rows.append(bench_learned(kind, int(d), args, rng))
      r = learned_rows[-1]
      print(f"{kind} {r['algebra']}: {1e3 * r['ms']['learned']:.2f} ms vs {r['target']} "
            f"{1e3 * r['ms']['expanded']:.2f} ms", flush=True)
  text = markdown(rows, learned_rows, argv)
  print(text)
  if args.write:
    write_section(args.write, args.section, text)


if __name__ == "__main__":
  main()
