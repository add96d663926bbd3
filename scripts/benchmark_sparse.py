"""Sparse vs dense layer time: element-sparse algebra layers against real sparse baselines.

Every layer has the same number of dense real parameters, width² (default a real
1024×1024 layer): R at width, M2(R) and H at width/2 elements, M4(R) at width/4.
At a given sparsity they therefore also keep the same number of non-zero real
parameters. Pruning is uniform random over the pruned unit (what magnitude
pruning gives on unstructured weights):
  r            R, unstructured (CSR: 1×1 blocks)
  r-1x4 ...    R, block-sparse with 1×4 / 4×1 / 2×2 blocks of the [Cin, Cout] weight
  m2r, h, m4r  element-sparse: whole algebra elements pruned

For every (batch, sparsity) all timings are interleaved round-robin and the
minimum over repeats kept (the least disturbed run on a shared machine):
  dense   the layer's dense form, weights prepared once (`ops.prepare_dense`:
          the batch-1 decode path at batch 1, the default path otherwise)
  sparse  `sparse_ops` with the CPU kernel (block-CSR through XLA's FFI)
  xla     `sparse_ops` on its XLA path (gather + block products + segment_sum)
Ratios: `speed-up` = dense / sparse; `vs r` = time of the unstructured real
layer with the same non-zeros / this layer's sparse time.

Issue 5's bars (not asserted): at 90% element sparsity and batch 1, M2(R) and
M4(R) >= 3× faster than dense and faster than the unstructured real layer.

Usage:
  python scripts/benchmark_sparse.py [--width 1024] [--batches 1,64]
      [--sparsities 0.5,0.7,0.8,0.9,0.95] [--repeats 20] [--impls kernel,xla]
      [--write BENCHMARKS.md --section sparse]
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_ops import _best_times, _timer, markdown_header, write_section  # noqa: E402

from algebranets import algebras, ops, sparse_ops  # noqa: E402

# name -> (algebra or None for real, block of the real weight (inputs, outputs))
LAYERS = {
    "r": (None, (1, 1)), "r-1x4": (None, (1, 4)), "r-4x1": (None, (4, 1)),
    "r-2x2": (None, (2, 2)), "m2r": ("m2r", None), "h": ("h", None), "m4r": ("m4r", None),
}


def _pruned_real(rng, width, block, sparsity):
  bi, bo = block
  blocks = (width // bi) * (width // bo)
  keep = rng.permutation(blocks) >= round(sparsity * blocks)
  mask = np.kron(keep.reshape(width // bi, width // bo), np.ones((bi, bo)))
  return (rng.normal(size=(width, width)) * mask).astype(np.float32)


def _pruned_algebra(rng, alg, width, sparsity):
  c = width // int(np.sqrt(alg.dim))       # equal dense params: c² · D = width²
  keep = rng.permutation(c * c) >= round(sparsity * c * c)
  w = rng.normal(size=(c, c, alg.dim)) * keep.reshape(c, c, 1)
  return w.astype(np.float32), c


def _case(name, batch, sparsity, width, impls, rng):
  """{mode: (fn, args)} for one layer at one batch and sparsity, plus its nnz params."""
  alg_name, block = LAYERS[name]
  fns = {}
  if alg_name is None:
    w = _pruned_real(rng, width, block, sparsity)
    x = jnp.asarray(rng.normal(size=(batch, width)), jnp.float32)
    fns["dense"] = (jax.jit(lambda x, w: x @ w), (x, jnp.asarray(w)))
    for impl in impls:
      bs = sparse_ops.prepare_real(w, block, impl)
      fns[impl] = (jax.jit(sparse_ops.real_dense), (x, bs))
    return fns, int(np.count_nonzero(w))
  alg = algebras.get(alg_name)
  w, c = _pruned_algebra(rng, alg, width, sparsity)
  x = jnp.asarray(rng.normal(size=(batch, c, alg.dim)), jnp.float32)
  path = None if batch == 1 else ops.default_path(alg, "dense")
  pw = ops.prepare_dense(jnp.asarray(w), alg, path)
  layer = jax.jit(lambda x, pw: ops.dense(x, pw, alg))
  fns["dense"] = (layer, (x, pw))
  for impl in impls:
    fns[impl] = (layer, (x, ops.prepare_dense(w, alg, ops.ELEMENT_SPARSE)
                         if impl == "kernel" else
                         ops.PreparedWeight(sparse_ops.prepare_element(w, alg, "xla"), w.shape,
                                            w.dtype, ops.ELEMENT_SPARSE)))
  return fns, int(np.count_nonzero(w))


def run(args):
  rng = np.random.default_rng(0)
  impls = [i for i in args.impls.split(",") if i]
  if "kernel" in impls and not sparse_ops.kernel_available():
    raise SystemExit("the CPU sparse kernel is not available (no C++ compiler?)")
  rows = []
  for batch in (int(b) for b in args.batches.split(",")):
    for sparsity in (float(s) for s in args.sparsities.split(",")):
      runners, nnz = {}, {}
      for name in args.layers.split(","):
        fns, nnz[name] = _case(name, batch, sparsity, args.width, impls, rng)
        for mode, (fn, fargs) in fns.items():
          runners[(name, mode)] = _timer(fn, *fargs)
      t = _best_times(runners, args.repeats)
      for name in args.layers.split(","):
        r = {"layer": name, "batch": batch, "sparsity": sparsity, "nnz": nnz[name],
             "dense_us": t[(name, "dense")] * 1e6}
        for impl in impls:
          r[f"{impl}_us"] = t[(name, impl)] * 1e6
        main = impls[0]
        r["speedup"] = t[(name, "dense")] / t[(name, main)]
        r["vs_r"] = t[("r", main)] / t[(name, main)] if ("r", main) in t else None
        rows.append(r)
        print(f"batch {batch:3d} sparsity {sparsity:.2f} {name:6s} nnz {r['nnz']:8d} "
              f"dense {r['dense_us']:8.1f} us | " +
              " | ".join(f"{i} {r[f'{i}_us']:8.1f} us" for i in impls) +
              f" | speed-up {r['speedup']:5.2f}x" +
              (f" | vs r {r['vs_r']:5.2f}x" if r["vs_r"] is not None else ""), flush=True)
  return rows, impls


def bars(rows, main):
  out = []
  for name in ("m2r", "m4r"):
    r = next((r for r in rows if r["layer"] == name and r["batch"] == 1
              and abs(r["sparsity"] - 0.9) < 1e-9), None)
    if r is None:
      continue
    ok = r["speedup"] >= 3 and (r["vs_r"] or 0) > 1
    out.append(f"{name} at 90%, batch 1: {r['speedup']:.2f}x vs dense (bar 3x), "
               f"{r['vs_r']:.2f}x vs unstructured r (bar > 1) with {main}: "
               f"{'met' if ok else 'MISSED'}")
  return out


def markdown(rows, impls, argv):
  lines = [markdown_header(argv), "",
           "Times in µs (min over repeats); speed-up = dense / sparse; vs r = unstructured R "
           "sparse time / this sparse time (same non-zero real parameters).", "",
           "| batch | sparsity | layer | non-zeros | dense | " + " | ".join(
               f"sparse ({i})" for i in impls) + " | speed-up | vs r |",
           "|---|---|---|---|---|" + "---|" * len(impls) + "---|---|"]
  for r in rows:
    vs = "" if r["vs_r"] is None else f"{r['vs_r']:.2f}"
    lines.append(f"| {r['batch']} | {r['sparsity']:.0%} | {r['layer']} | {r['nnz']:,} "
                 f"| {r['dense_us']:.0f} | " + " | ".join(f"{r[f'{i}_us']:.0f}" for i in impls)
                 + f" | {r['speedup']:.2f} | {vs} |")
  lines += ["", "Bars: " + "; ".join(bars(rows, impls[0]))]
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--width", type=int, default=1024, help="real width: width² dense params")
  p.add_argument("--batches", default="1,64")
  p.add_argument("--sparsities", default="0.5,0.7,0.8,0.9,0.95")
  p.add_argument("--layers", default=",".join(LAYERS))
  p.add_argument("--impls", default="kernel,xla", help="sparse paths; the first gives the ratios")
  p.add_argument("--repeats", type=int, default=20)
  p.add_argument("--write", default=None, help="markdown file to write the table into")
  p.add_argument("--section", default="sparse", help="name of the marked block in --write")
  args = p.parse_args(argv)
  for name in args.layers.split(","):
    if name not in LAYERS:
      raise SystemExit(f"unknown layer {name!r}; valid: {', '.join(LAYERS)}")
  rows, impls = run(args)
  for line in bars(rows, impls[0]):
    print(line)
  if args.write:
    write_section(args.write, args.section, markdown(rows, impls, argv))
  return rows


if __name__ == "__main__":
  main()
