"""Gradient accumulation: memory and step time of 1 vs K micro-batches of the same global batch.

The library's own jitted train step (`training.step.make_train_step`, SGD with momentum) of

  resnet           a CIFAR ResNet-20 (batch norm), 32x32 images
  transformer_xl   a 4-layer Transformer-XL (d_model 256, 4 heads, d_inner 1024) on segments of
                   128 tokens with a memory of 128 (the memories carried by the step)

at one global batch, computed as 1 and as K micro-batches (`--microbatches`, default 4).
Memory: the compiled step's `memory_analysis()` -- temp bytes (XLA's scratch: activations,
gradients in flight; what micro-batching divides) and the peak estimate arguments + outputs -
donated + temp -- and, with --rss, the max RSS of a fresh process that compiles and runs that
step alone (VmHWM; it includes the Python process, JAX and the compiler). Time: seconds per
step, the variants timed round-robin in one process, minimum over --repeats. Ratios are K / 1.

Usage:
  python scripts/benchmark_microbatch.py [--models resnet,transformer_xl] [--microbatches 4]
      [--repeats 5] [--rss] [--write BENCHMARKS.md --section microbatch]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import time
import types

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from benchmark_ops import markdown_header, write_section  # noqa: E402

from algebranets.training import distributed, optim, step as step_lib, tasks  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load_config(name: str, arg: str):
  spec = importlib.util.spec_from_file_location(f"config_{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _setup(model: str, batch: int, microbatches: int):
  """(train_step, state, batch) of `model` on every local device, at `microbatches`."""
  if model == "resnet":
    config = _load_config("cifar10_resnet", "r,depth=20")
    dataset = types.SimpleNamespace(num_classes=10, image_size=32)
  elif model == "transformer_xl":
    config = _load_config("enwik8_transformer_xl", "r")
    config.model.update(n_layers=4, d_model=256, n_heads=4, d_head=64, d_inner=1024,
                        mem_len=128, dropout=0.0)
    dataset = types.SimpleNamespace(vocab_size=256, seq_len=128, eval_seq_len=128, vocab=None)
  else:
    raise ValueError(f"unknown model {model!r}; models: ['resnet', 'transformer_xl']")
  tasks.get(config.task.name).resolve(config, dataset)
  config.optimizer.update(name="sgd", lr=0.01, lr_batch_scale=0, momentum=0.9,
                          schedule="constant", warmup_steps=0, warmup_epochs=0.0,
                          grad_clip_norm=0.0, weight_decay=0.0)
  task = tasks.build(config, dataset)
  mesh = distributed.make_mesh()
  layout = distributed.batch_layout(batch, mesh, microbatches=microbatches,
                                    can_pad=task.can_pad_train)
  tx, schedule = optim.build(config.optimizer, 1000, batch)
  init, _, shardings = step_lib.make_init(task, tx, mesh, layout.padded_size,
                                          init_rows=layout.microbatch_rows)
  train_step = step_lib.make_train_step(task, tx, schedule, shardings, mesh,
                                        partitionable_rng=False, microbatches=microbatches)
  rng = np.random.default_rng(0)
  data = {}
  for name, spec in task.batch_spec(batch, train=True).items():
    if name == "image":
      data[name] = rng.normal(size=spec.shape).astype(np.float32)
    else:
      data[name] = rng.integers(0, 10, spec.shape).astype(np.int32)
  data = distributed.global_batch(layout.pad(data, mask_like=task.target_key), mesh)
  return train_step, init(jax.random.PRNGKey(0)), data


def _memory(train_step, state, batch) -> dict:
  stats = train_step.lower(state, batch).compile().memory_analysis()
  # XLA:CPU reports no peak (peak_memory_in_bytes is the arguments' size there): the estimate
  # is what is live at once at worst, arguments + outputs - donated (aliased) + temp.
  return {"temp": int(stats.temp_size_in_bytes),
          "peak": int(stats.argument_size_in_bytes + stats.output_size_in_bytes
                      - stats.alias_size_in_bytes + stats.temp_size_in_bytes)}


def _child(model: str, batch: int, k: int) -> None:
  """In a fresh process: compile and run two steps, print the max RSS."""
  train_step, state, data = _setup(model, batch, k)
  for _ in range(2):
    state, m = train_step(state, data)
  jax.block_until_ready(m)
  # VmHWM, this process's RSS high-water mark (ru_maxrss would carry over the parent's across
  # fork + exec on Linux).
  with open("/proc/self/status") as f:
    hwm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
  print("RSS" + json.dumps(hwm))


def _rss(model: str, batch: int, k: int) -> int:
  proc = subprocess.run([sys.executable, __file__, "--child", f"{model},{batch},{k}"],
                        capture_output=True, text=True, timeout=1200, cwd=ROOT)
  if proc.returncode:
    raise RuntimeError(proc.stderr[-3000:])
  return int(json.loads(proc.stdout.split("RSS", 1)[1]))


def bench(model: str, batch: int, k: int, repeats: int, rss: bool) -> dict:
  variants = {}
  for kk in (1, k):
    train_step, state, data = _setup(model, batch, kk)
    memory = _memory(train_step, state, data)
    state, m = train_step(state, data)  # compile
    jax.block_until_ready(m)
    variants[kk] = {"step": train_step, "state": state, "data": data, "memory": memory,
                    "times": []}
  for _ in range(repeats):  # round-robin
    for v in variants.values():
      t0 = time.perf_counter()
      v["state"], m = v["step"](v["state"], v["data"])
      jax.block_until_ready(m)
      v["times"].append(time.perf_counter() - t0)
  out = {}
  for kk, v in variants.items():
    out[kk] = dict(v["memory"], seconds=min(v["times"]),
                   rss=_rss(model, batch, kk) if rss else None)
  return out


def markdown(results, args, argv) -> str:
  mib = lambda b: f"{b / 2**20:,.1f}"
  lines = [markdown_header(argv), "",
           "| model | global batch | micro-batches | rows / device / micro-batch | temp MiB "
           "| peak est. MiB | max RSS MiB | s / step | temp vs 1 | peak vs 1 | RSS vs 1 "
           "| time vs 1 |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  devices = jax.device_count()
  for model, (batch, variants) in results.items():
    base = variants[1]
    for k, r in variants.items():
      ratio = lambda key, r=r, base=base: (f"{r[key] / base[key]:.2f}"
                                           if r.get(key) and base.get(key) else "")
      lines.append(
          f"| {model} | {batch} | {k} | {-(-batch // (devices * k))} | {mib(r['temp'])} "
          f"| {mib(r['peak']) if r['peak'] else ''} | {mib(r['rss']) if r['rss'] else ''} "
          f"| {r['seconds']:.3f} | {ratio('temp')} | {ratio('peak')} | {ratio('rss')} "
          f"| {ratio('seconds')} |")
  return "\n".join(lines)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--models", default="resnet,transformer_xl")
  p.add_argument("--resnet_batch", type=int, default=64)
  p.add_argument("--transformer_batch", type=int, default=16)
  p.add_argument("--microbatches", type=int, default=4)
  p.add_argument("--repeats", type=int, default=5)
  p.add_argument("--rss", action="store_true", help="also the max RSS of one process per variant")
  p.add_argument("--write", default=None, help="markdown file to write the table into")
  p.add_argument("--section", default="microbatch", help="name of the marked block in --write")
  p.add_argument("--child", default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  if args.child:
    model, batch, k = args.child.split(",")
    _child(model, int(batch), int(k))
    return
  results = {}
  for model in args.models.split(","):
    batch = args.resnet_batch if model == "resnet" else args.transformer_batch
    results[model] = (batch, bench(model, batch, args.microbatches, args.repeats, args.rss))
    for k, r in results[model][1].items():
      print(f"{model} batch {batch} k={k}: temp {r['temp'] / 2**20:.1f} MiB, peak "
            f"{r['peak'] / 2**20:.1f} MiB, rss {(r['rss'] or 0) / 2**20:.0f} MiB, "
            f"{r['seconds']:.3f} s/step", flush=True)
  text = markdown(results, args, argv)
  print(text)
  if args.write:
    write_section(args.write, args.section, text)


if __name__ == "__main__":
  main()
