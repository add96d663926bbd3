"""The main job: a real Transformer-XL and an equally sized M2(R) one on the embedded corpus.

    python -m algebranets.quickstart [--algebras r,m2r] [--steps 1000] [--workdir runs/quickstart]

Trains each model with configs/quickstart.py (the `stdlib` corpus: this Python's standard
library sources, no download; the M2(R) model matched to the real one's parameter count), then
prints a table -- algebra, real parameters, weight-layer multiply-adds per token, valid bits per
byte (character), training tokens/s (compilation, evaluation and saving excluded) -- and writes
a plot of the training curves beside it. Uniform guessing is 8 bits per byte. The whole job
(two models of 1,000 steps each) takes several minutes on two CPU cores: 6 min 38 s measured
(`time python -m algebranets.quickstart`, 2026-12-02, two AMD EPYC cores shared with other jobs,
load average 1.3 to 7.7; 4.7 min of CPU time): r 1 min 45 s, the matched m2r 4 min 48 s.

The log (stderr, and <run folder>/quickstart.log) has the trainer's format; an error in the
input (a bad --algebras entry, ...) ends it with one `error:` line (--verbose: the traceback).

Each invocation writes a fresh folder <workdir>/<timestamp>/ with one training workdir per
algebra (config.json, metrics.jsonl, tensorboard/, checkpoints/), results.json, results.md and
quickstart.png.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import pathlib
import shlex
import sys
import time

from algebranets import errors
from algebranets import logs

logs.quiet_startup()  # before anything loads TensorFlow or libtpu

CONFIG = pathlib.Path(__file__).resolve().parent.parent / "configs" / "quickstart.py"
LOG_FILE = "quickstart.log"  # in the run folder: the log, and the traceback of any error


def load_config(arg: str):
  """configs/quickstart.py's get_config(arg)."""
  if not CONFIG.is_file():
    raise FileNotFoundError(f"expected the quickstart config at {CONFIG} (run from a clone of "
                            "the repository)")
  spec = importlib.util.spec_from_file_location("quickstart_config", CONFIG)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def table(rows) -> str:
  header = ("algebra", "params", "MACs/token", "valid bpc", "tokens/s")
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in rows:
    lines.append(f"| {r['algebra']} | {r['params']:,} | {r['macs_per_token']:,.0f} | "
                 f"{r['valid_bpc']:.3f} | {r['tokens_per_s']:,.0f} |")
  return "\n".join(lines)


def plot(rows, workdirs, path: pathlib.Path) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from algebranets.training import metrics  # pylint: disable=g-import-not-at-top

  fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4))
  for i, (r, wd) in enumerate(zip(rows, workdirs)):
    train = metrics.read_jsonl(wd, "train")
    tokens = [rec["step"] * r["tokens_per_step"] / 1e6 for rec in train]
    label = f"{r['algebra']} ({r['params']:,} params)"
    line, = ax.plot(tokens, [rec["bpc"] for rec in train], label=label)
    ax.scatter([tokens[-1]], [r["valid_bpc"]], color=line.get_color(), marker="*o^s"[i % 4],
               s=120 if i == 0 else 50, zorder=3 + i)
  ax.axhline(8.0, color="grey", linestyle=":", label="uniform (8 bits)")
  ax.set(xlabel="training tokens (millions)", ylabel="bits per byte",
         title="training (lines) and final valid (markers) bpc", ylim=(0, 8.5))
  ax.legend()
  names = [r["algebra"] for r in rows]
  bars = bx.bar(names, [r["valid_bpc"] for r in rows], color=["C0", "C1", "C2", "C3"][:len(rows)])
  for bar, r in zip(bars, rows):
    bx.annotate(f"{r['valid_bpc']:.3f} bpc\n{r['tokens_per_s']:,.0f} tok/s\n"
                f"{r['macs_per_token'] / 1e3:,.0f}k MACs/tok",
                (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center",
                va="bottom", fontsize=8)
  bx.set(ylabel="valid bits per byte", title="equal parameters: valid bpc",
         ylim=(0, max(r["valid_bpc"] for r in rows) * 1.4))
  fig.suptitle("AlgebraNets quickstart: Transformer-XL on the Python standard library")
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--algebras", default="r,m2r",
                      help="comma-separated algebras; each after the first is matched to the "
                           "first's size (default r,m2r)")
  parser.add_argument("--steps", type=int, default=None, help="training steps per model")
  parser.add_argument("--match", default="params", help="none, params, macs or width")
  parser.add_argument("--workdir", default="runs/quickstart", help="parent of the run folder")
  parser.add_argument("--debug", action="store_true", help="tiny models, a few steps")
  parser.add_argument("--verbose", action="store_true",
                      help="print the traceback of an error too (it is always in the run "
                           f"folder's {LOG_FILE})")
  args = parser.parse_args(argv)

  log = logs.setup()  # the trainer's format; libraries (orbax, jax) only for warnings
  start = time.time()
  root = pathlib.Path(args.workdir) / datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  algebras = [a.strip() for a in args.algebras.split(",") if a.strip()]
  configs = {}
  for algebra in algebras:  # every config checked before the first model trains
    arg = f"{algebra},match={args.match}"
    if args.steps:
      arg += f",steps={args.steps}"
    if args.debug:
      arg += ",debug"
    configs[algebra] = load_config(arg)
  logs.add_file(root / LOG_FILE, header=shlex.join(
      ["python", "-m", "algebranets.quickstart", *(sys.argv[1:] if argv is None else argv)]))
  from algebranets.training import train  # pylint: disable=g-import-not-at-top
  rows, workdirs = [], []
  for algebra, config in configs.items():
    workdir = root / algebra
    log.info("=== %s: training in %s", algebra, workdir)
    result = train.train_and_evaluate(config, workdir)
    spec = result["config"]
    rows.append({
        "algebra": algebra, "params": int(result["model"]["params"]),
        "macs_per_token": float(result["model"]["macs_per_token"]),
        "valid_bpc": float(result["eval"]["valid"]["bpc"]),
        "tokens_per_s": float(result["throughput"]["tokens_per_s"]),
        "tokens_per_step": int(spec.train.batch_size * spec.data.seq_len),
        "steps": int(result["step"]), "model": result["model"]["model"]})
    workdirs.append(workdir)
  text = table(rows)
  (root / "results.md").write_text(text + "\n")
  (root / "results.json").write_text(json.dumps(rows, indent=2))
  plot(rows, workdirs, root / "quickstart.png")
  print()
  print(f"Transformer-XL on the Python {sys.version.split()[0]} standard library "
        f"({rows[0]['steps']} steps of {rows[0]['tokens_per_step']} bytes each; "
        f"uniform = 8 bits per byte):")
  print(text)
  print(f"\nplot: {root / 'quickstart.png'}   results: {root / 'results.md'}   "
        f"({time.time() - start:.0f} s)")
  return 0


if __name__ == "__main__":
  sys.exit(errors.run_cli(main))
