"""The library at an earlier commit against the working tree, in one process, round-robin.

Two benchmark runs minutes apart on a shared machine differ by more than most changes they
are meant to show (BENCHMARKS.md: the real model's rate moved by 1.4x between runs of the same
code). This script times the same cases with both libraries in one process instead, each
"before" case next to its "after" case in the same round-robin, and prints the speed-up
(before time / after time; > 1: the working tree is faster).

The earlier library comes from `git archive <rev> algebranets` in a temporary directory,
renamed `algebranets_before` (its absolute imports rewritten to match). The cases are the ones
of this tree's scripts/benchmark_models.py and benchmark_ops.py, built once per library (the
script's source loaded a second time against `algebranets_before`), so both sides run the same
benchmark code and differ only in the library. The rev must share the library API the cases
call (it does across issue 12's commits).

Benches:
  stage3    ResNet-50 stage-3 bottleneck blocks at equal MACs (benchmark_models --bench stage3)
  txl_base  Transformer-XL enwik8 base-shape layers at equal MACs (--bench txl_base)
  train     the CIFAR ResNet and small Transformer-XL training steps, equal params and equal
            MACs, every algebra (--bench train)
  conv      one 3x3 conv layer forward+backward per algebra, default path (benchmark_ops
            --kind conv; --conv_width, --conv_batch, --image)

Usage:
  python scripts/benchmark_ab.py --before 159dea1 --ab stage3,txl_base --lm_batch 4
      [benchmark_models options] [--write BENCHMARKS.md --section ab-issue12]
"""

from __future__ import annotations

import importlib.util
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(__file__))
import benchmark_models  # noqa: E402
import benchmark_ops  # noqa: E402
from benchmark_ops import markdown_header, write_section  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEFORE = "algebranets_before"


def extract_library(rev, dest):
  """`algebranets` at git rev `rev`, as package BEFORE under dest (imports rewritten)."""
  try:
    blob = subprocess.run(["git", "-C", ROOT, "archive", "--format=tar", rev, "algebranets"],
                          check=True, capture_output=True).stdout
  except subprocess.CalledProcessError as e:
    sys.exit(f"benchmark_ab: git archive {rev} failed: {e.stderr.decode().strip()}; "
             "--before takes a commit of this repository.")
  with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
    tar.extractall(dest, filter="data")
  pkg = os.path.join(dest, BEFORE)
  os.rename(os.path.join(dest, "algebranets"), pkg)
  for base, _, files in os.walk(pkg):
    for name in files:
      if name.endswith(".py"):
        path = os.path.join(base, name)
        src = open(path).read()
        with open(path, "w") as f:
          f.write(re.sub(r"\balgebranets\b", BEFORE, src))
  sys.path.insert(0, dest)


def load_against_before(module):
  """A second copy of benchmark module `module` whose `algebranets` imports are BEFORE."""
  src = open(module.__file__).read()
  name = module.__name__ + "_before"
  spec = importlib.util.spec_from_loader(name, loader=None)
  mod = importlib.util.module_from_spec(spec)
  mod.__file__ = module.__file__
  sys.modules[name] = mod
  exec(compile(re.sub(r"\balgebranets\b", BEFORE, src), module.__file__, "exec"), mod.__dict__)
  return mod


# Each bench: {row: builder(bm, bo, args, rng) -> run}, bm a benchmark_models module, bo a
# benchmark_ops module, both of one library.
def stage3_cases(args):
  cases = {}
  for name in args.stage3_algebras.split(","):
    folded_too = benchmark_models.algebras_lib.get(name).matrix_base is not None
    for folded in (False, True) if folded_too else (False,):
      key = name + (" (kept folded)" if folded else "")
      cases[key] = lambda bm, bo, a, rng, name=name, folded=folded: bm._stage3_case(
          name, a, rng, folded)[0]
  return {"stage3": cases}


def txl_base_cases(args):
  ref = benchmark_models.txl_base_reference(args)
  cases = {}
  for name in args.stage3_algebras.split(","):
    config = ref if name == "r" else benchmark_models.txl.matched_config(
        ref, name, match="macs", seq_len=args.seq_len)
    cases[name] = lambda bm, bo, a, rng, name=name, config=config: bm._txl_case(
        config, name, a, rng)[0]
  return {"txl_base": cases}


def _algebras(args):
  names = args.algebras.split(",")
  return ["r"] + [n for n in names if n != "r"]   # the real row first, always there


def train_cases(args):
  lm_ref = benchmark_models.lm_reference(args)
  groups = {}
  for match in args.match.split(","):
    resnet, lm = {}, {}
    for name in _algebras(args):
      width = 1.0 if name == "r" else benchmark_models._match_resnet(args.resnet, name, match)
      resnet[name] = lambda bm, bo, a, rng, name=name, width=width: bm._resnet_case(
          name, width, a, rng)[0]
      config = lm_ref if name == "r" else benchmark_models.txl.matched_config(
          lm_ref, name, match=match, seq_len=args.seq_len)
      lm[name] = lambda bm, bo, a, rng, name=name, config=config: bm._txl_case(
          config, name, a, rng)[0]
    for model, cases in (("resnet", resnet), ("transformer_xl", lm)):
      if model in args.models.split(","):
        groups[f"train {model}, equal {match}"] = cases
  return groups


def conv_cases(args):
  hw = args.image
  cases = {}
  for name in _algebras(args):
    def build(bm, bo, a, rng, name=name):
      alg = bo.algebras.get(name)
      c = max(1, round(a.conv_width / alg.dim))
      f32 = lambda s: jnp.asarray(rng.normal(size=s), jnp.float32)
      x, w = f32((a.conv_batch, hw, hw, c, alg.dim)), f32((3, 3, c, c, alg.dim))
      path = bo.ops.default_path(alg, "conv")
      fn = bo._fwd_bwd(lambda x, w: bo.ops.conv2d(x, w, alg, path=path))
      ct = jnp.ones((a.conv_batch, hw, hw, c, alg.dim), jnp.float32)
      return lambda: fn(x, w, ct)
    cases[name] = build
  return {f"conv 3×3, width {args.conv_width}, batch {args.conv_batch}, {hw}×{hw}": cases}


BENCHES = {"stage3": stage3_cases, "txl_base": txl_base_cases, "train": train_cases,
           "conv": conv_cases}


def run_group(cases, libs, args):
  """{row: (before s, after s)}: both libraries' runs of every row in one round-robin."""
  runners = {}
  for row, build in cases.items():
    for side, (bm, bo) in libs.items():
      rng = np.random.default_rng(0)          # both sides get the same data
      run = build(bm, bo, args, rng)
      jax.block_until_ready(run())            # compile and warm up
      runners[row, side] = run
  t = benchmark_models._best_of_round_robin(runners, args.repeats)
  return {row: (t[row, "before"], t[row, "after"]) for row in cases}


def main(argv=None):
  p = benchmark_models.parser(__doc__)
  p.add_argument("--before", required=True, help="git commit of the library to compare with")
  p.add_argument("--ab", default="stage3,txl_base", help=f"benches, of {', '.join(BENCHES)}")
  p.add_argument("--conv_width", type=int, default=256)
  p.add_argument("--conv_batch", type=int, default=8)
  p.add_argument("--image", type=int, default=14)
  p.add_argument("--algebras", default=",".join(benchmark_models.TRAIN_ALGEBRAS),
                 help="algebras of the train and conv benches (r is always timed)")
  p.add_argument("--match", default="params,macs", help="train: sizes matched by these")
  p.add_argument("--models", default="resnet,transformer_xl", help="train: these models")
  p.add_argument("--section", default="ab", help="name of the marked block in --write")
  args = p.parse_args(argv)
  unknown = [b for b in args.ab.split(",") if b not in BENCHES]
  if unknown:
    p.error(f"--ab: unknown bench(es) {', '.join(unknown)}; choose from {', '.join(BENCHES)}")
  rev = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", args.before],
                       capture_output=True, text=True).stdout.strip() or args.before
  with tempfile.TemporaryDirectory() as tmp:
    extract_library(args.before, tmp)
    libs = {"before": (load_against_before(benchmark_models), load_against_before(benchmark_ops)),
            "after": (benchmark_models, benchmark_ops)}
    lines = [f"Before: the library at {rev}; after: this tree. Minimum of {args.repeats} "
             "round-robin repeats, both in one process; speed-up = before / after.", "",
             "| bench | row | before ms | after ms | speed-up |", "|---|---|---|---|---|"]
    for bench in args.ab.split(","):
      for group, cases in BENCHES[bench](args).items():
        for row, (tb, ta) in run_group(cases, libs, args).items():
          lines.append(f"| {group} | {row} | {tb * 1e3:.1f} | {ta * 1e3:.1f} | {tb / ta:.2f} |")
          print(lines[-1], flush=True)
  table = "\n".join(lines)
  print(table)
  if args.write:
    write_section(args.write, args.section, markdown_header(argv) + "\n\n" + table)


if __name__ == "__main__":
  main()
