"""The main job for now: what an algebra layer costs and how fast it runs, per algebra.

For every registered algebra, a dense layer and a 3×3 conv layer whose
activations are `width` reals wide (C = width / D elements): real parameters,
multiply-accumulates (naive; and with the fastest known product), and the
measured forward+backward throughput, as a ratio to a real layer with the same
multiply-accumulates measured in the same run.

  python -m algebranets.demo [--width 256] [--batch 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import functools
import time

import numpy as np
import jax
import jax.numpy as jnp

from algebranets import algebras, costs, ops


def _time_fwd_bwd(layer, x, w, repeats):
  grad = jax.jit(jax.grad(lambda x, w: jnp.sum(layer(x, w) ** 2), argnums=(0, 1)))
  jax.block_until_ready(grad(x, w))
  times = []
  for _ in range(repeats):
    t0 = time.perf_counter()
    jax.block_until_ready(grad(x, w))
    times.append(time.perf_counter() - t0)
  return min(times)


def run(width: int = 256, batch: int = 128, image: int = 8, repeats: int = 5):
  rng = np.random.default_rng(0)
  rows = []
  for name in algebras.names():
    alg = algebras.get(name)
    d, m = alg.dim, alg.mults_per_product
    c = max(1, round(width / d))
    rout = max(1, round(c * m / d))  # real layer with the same MACs: width c·D -> c·m/D
    for kind in ("dense", "conv"):
      if kind == "dense":
        xs, ws, rxs, rws = (batch, c, d), (c, c, d), (batch, c * d, 1), (c * d, rout, 1)
        count = functools.partial(costs.dense_macs, batch, c, c)  # count(algebra, fast=...)
        params = costs.dense_params(c, c, alg, with_bias=False)
        real_macs = costs.dense_macs(batch, c * d, rout, "r")
        layer = lambda a, p: (lambda x, w: ops.dense(x, w, a, path=p))
      else:
        n = max(1, batch // 16)
        xs, ws = (n, image, image, c, d), (3, 3, c, c, d)
        rxs, rws = (n, image, image, c * d, 1), (3, 3, c * d, rout, 1)
        count = functools.partial(costs.conv_macs, n * image * image, 3, c, c, 1)
        params = costs.conv_params(3, c, c, 1, alg, with_bias=False)
        real_macs = costs.conv_macs(n * image * image, 3, c * d, rout, 1, "r")
        layer = lambda a, p: (lambda x, w: ops.conv2d(x, w, a, path=p))
      f32 = lambda s: jnp.asarray(rng.normal(size=s), jnp.float32)
      path = ops.default_path(alg, kind)
      t_alg = _time_fwd_bwd(layer(alg, path), f32(xs), f32(ws), repeats)
      t_real = _time_fwd_bwd(layer(algebras.REAL, "expanded"), f32(rxs), f32(rws), repeats)
      macs = count(alg)
      rows.append(dict(
          algebra=name, layer=kind, path=path, elements=c, params=params,
          macs=macs, fast_macs=count(alg, fast=True),
          gmacs_per_s=3 * macs / t_alg / 1e9,  # forward + two backward matmuls
          vs_real=(macs / t_alg) / (real_macs / t_real)))
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(
      description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--width", type=int, default=256, help="activation width in reals (C·D)")
  p.add_argument("--batch", type=int, default=128)
  p.add_argument("--repeats", type=int, default=5)
  args = p.parse_args(argv)
  print(f"jax {jax.__version__} on {jax.devices()[0].platform}; "
        f"activation width {args.width} reals, batch {args.batch}; "
        f"fwd+bwd timing, best of {args.repeats}")
  header = ("algebra", "layer", "path", "C", "params", "MACs", "fast MACs", "GMAC/s",
            "FLOP/s vs real")
  print(" ".join(f"{h:>14s}" for h in header))
  for r in run(args.width, args.batch, repeats=args.repeats):
    print(f"{r['algebra']:>14s} {r['layer']:>14s} {r['path']:>14s} {r['elements']:>14d} "
          f"{r['params']:>14,d} {r['macs']:>14,d} {r['fast_macs']:>14,d} "
          f"{r['gmacs_per_s']:>14.1f} {r['vs_real']:>14.2f}", flush=True)


if __name__ == "__main__":
  main()
