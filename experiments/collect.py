r"""Collects a sweep's workdirs into a markdown table, a JSON file and the paper's plots.

  python -m experiments.collect --root=runs/cifar10_small --out=docs/results/cifar10

Every folder under --root with a config.json (or a launch.json) is a run. From it this reads
config.json (algebra, match, model width or d_model, sparsity target), model.json (real
parameters, weight-layer MACs and all MACs per example or token; for pruned runs the non-zero
ones too), metrics.jsonl
(the final eval record: the reported metric and the step) and the launcher's launch.json (wall
time of the run, the metric the sweep reports, git commit, machine, command). Runs without a
final eval record (still running, failed) are listed below the table, not in it.

Writes to --out:
  results.md             header (date, git commit(s), machine, the commands), then one row per run:
                         run, algebra, match, variant, width / d_model, params, MACs, all MACs,
                         sparsity, metric, steps, wall time; and, when some runs differ only in
                         their seed (config.json "seed"), a table over seeds (`seed_groups`):
                         one row per setting with the metric's mean ± standard deviation over
                         its seeds, its difference to the real algebra's setting (same match,
                         variant and sparsity) and to the best setting, each marked "within
                         noise" or not (`compare`: a two-sided Welch t-test at the 5% level)
  results.json           the same rows, for programs
  seeds.json             the groups over seeds (only when there are some)
  metric_vs_params.png   the metric against real parameters (non-zero ones for sparse runs),
  metric_vs_macs.png     against weight-layer multiply-adds per example / token,
  metric_vs_all_macs.png and against all multiply-adds per example / token (only when the
                         workdirs record them): one series per algebra (and variant), sparse
                         runs their own series, log-scaled x

The two compute columns (algebranets.costs): "MACs" counts the weight layers (the paper's
multiply-adds, `match=macs`), "all MACs" every multiply-add of the forward pass: also the
attention scores, attention-weighted values and logits of a Transformer-XL (`match=flops`;
flops = 2 x MACs). For the image models they are equal. Workdirs written before all MACs were
recorded show "n/a" there.

Nothing in the outputs is typed by hand: every number comes from the workdirs.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import pathlib
import shlex
import sys
from typing import Optional, Sequence

import numpy as np

from algebranets import errors

from experiments import launch as launch_lib
from experiments import sweeps as sweeps_lib

# Metrics where lower is better (the others, e.g. top1, are higher-is-better).
LOWER_IS_BETTER = ("bpc", "nll", "ppl", "loss")
_ALGEBRA_ORDER = {a: i for i, a in enumerate(sweeps_lib.LM_ALGEBRAS)}


@dataclasses.dataclass
class Row:
  """One finished run, as the table shows it."""
  run: str
  algebra: str
  match: str
  variant: str
  size: str          # "width 0.354" (image models) or "d_model 48" (Transformer-XL)
  params: int
  macs: float        # weight-layer MACs per example (images) or per token (language models)
  all_macs: float    # every multiply-add per example or token (NaN if model.json lacks it)
  sparsity: float    # configured target (0: dense)
  nonzero_params: Optional[int]
  nonzero_macs: Optional[float]
  metric: str        # "<split>/<name>"
  value: float
  step: int
  wall_s: Optional[float]
  macs_unit: str     # "example" or "token"
  seed: Optional[int] = None   # config.json "seed"

  @property
  def series(self) -> str:
    label = self.algebra + (f" ({self.variant})" if self.variant else "")
    return label + (f" sparse {self.sparsity:.0%}" if self.sparsity else "")

  @property
  def effective_params(self) -> float:
    return self.nonzero_params if self.sparsity and self.nonzero_params else self.params

  @property
  def effective_macs(self) -> float:
    return self.nonzero_macs if self.sparsity and self.nonzero_macs else self.macs

  @property
  def effective_all_macs(self) -> float:
    """All MACs, less the weight-layer MACs that pruning removed (sparse runs)."""
    return self.all_macs - self.macs + self.effective_macs


def _variant(config: dict) -> str:
  """Model settings beyond algebra and size (BN kind, initialiser): their own plot series."""
  parts = []
  model = config.get("model", {})
  if (model.get("bn_config") or {}).get("whitening"):
    parts.append("whitening BN")
  if model.get("w_init"):
    parts.append(f"{model['w_init']} init")
  return ", ".join(parts)


def read_run(workdir: pathlib.Path, metric: Optional[str] = None) -> tuple[Optional[Row], str]:
  """(the run's Row, "") if it finished with an eval of its metric, else (None, why not)."""
  config = json.loads((workdir / "config.json").read_text())
  record_path = workdir / launch_lib.RUN_FILE
  record = json.loads(record_path.read_text()) if record_path.exists() else {}
  metric = metric or record.get("metric") or config.get("checkpoint", {}).get("best_metric")
  if not metric or "/" not in metric:
    return None, "no metric (give --metric=<split>/<name>)"
  split, name = metric.split("/", 1)
  evals = [r for r in launch_lib.read_jsonl(workdir / "metrics.jsonl")
           if r.get("split") == split and name in r]
  num_steps = int(config.get("train", {}).get("num_steps", 0))
  if not evals or evals[-1]["step"] < num_steps:
    status = record.get("status", "no launch record")
    return None, f"no {metric} at its last step {num_steps} (launcher status: {status})"
  last = evals[-1]
  model_path = workdir / "model.json"
  sizes = json.loads(model_path.read_text()) if model_path.exists() else {}
  macs_key = next((k for k in ("macs_per_example", "macs_per_token") if k in sizes), None)
  model = config.get("model", {})
  size = (f"width {model['width']:.3g}" if "width" in model else
          f"d_model {model.get('d_model')}")
  sparsity = float(config.get("sparsity", {}).get("target", 0.0) or 0.0)
  nan = float("nan")
  row = Row(run=workdir.name, algebra=config["algebra"], match=config.get("match", "none"),
            variant=_variant(config), size=size, params=int(sizes.get("params", 0)),
            macs=float(sizes.get(macs_key, nan)) if macs_key else nan,
            all_macs=float(sizes.get(f"all_{macs_key}", nan)) if macs_key else nan,
            sparsity=sparsity, nonzero_params=sizes.get("nonzero_params"),
            nonzero_macs=sizes.get(f"nonzero_{macs_key}") if macs_key else None,
            metric=metric, value=float(last[name]), step=int(last["step"]),
            wall_s=record.get("wall_s") if record.get("status") == "done" else None,
            macs_unit=(macs_key or "macs_per_example").split("_")[-1],
            seed=config.get("seed"))
  return row, ""


def collect(root, metric: Optional[str] = None) -> tuple[list[Row], dict[str, str], list[dict]]:
  """(rows, {run: why it is not in the table}, launch records) of every run under `root`."""
  root = pathlib.Path(root)
  if not root.is_dir():
    raise FileNotFoundError(f"no run folder {root}")
  rows, skipped, records = [], {}, []
  workdirs = {p.parent for pattern in ("**/config.json", f"**/{launch_lib.RUN_FILE}")
              for p in root.glob(pattern)}
  for workdir in sorted(workdirs):
    record = workdir / launch_lib.RUN_FILE
    record = json.loads(record.read_text()) if record.exists() else {}
    if record:
      records.append(record)
    if not (workdir / "config.json").exists():
      row, why = None, (f"no config.json (launcher status: {record.get('status')}, exit "
                        f"{record.get('returncode')})")
    else:
      row, why = read_run(workdir, metric)
    if row is None:
      skipped[str(workdir.relative_to(root))] = why
    else:
      rows.append(row)
  rows.sort(key=lambda r: (r.sparsity, _ALGEBRA_ORDER.get(r.algebra, len(_ALGEBRA_ORDER)),
                           r.algebra, r.variant, r.params, r.run))
  return rows, skipped, records


def _fmt_value(metric: str, value: float) -> str:
  if metric.endswith("top1") or metric.endswith("top5"):
    return f"{100 * value:.2f}%"
  return f"{value:.4g}"


def _fmt_wall(seconds: Optional[float]) -> str:
  if seconds is None:
    return "n/a"
  return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def table(rows: Sequence[Row]) -> str:
  """The markdown table of `rows`."""
  unit = rows[0].macs_unit if rows else "example"
  metric = rows[0].metric if rows else "metric"
  header = ["run", "algebra", "match", "variant", "width / d_model", "params",
            f"MACs/{unit}", f"all MACs/{unit}", "sparsity", "non-zero params", metric, "steps",
            "wall time"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for r in rows:
    nonzero = f"{r.nonzero_params:,}" if r.sparsity and r.nonzero_params else ""
    lines.append("| " + " | ".join([
        f"`{r.run}`", r.algebra, r.match, r.variant or "-", r.size, f"{r.params:,}",
        f"{r.macs:,.0f}", "n/a" if math.isnan(r.all_macs) else f"{r.all_macs:,.0f}",
        f"{r.sparsity:.0%}" if r.sparsity else "0", nonzero or "-",
        _fmt_value(r.metric, r.value), f"{r.step:,}", _fmt_wall(r.wall_s)]) + " |")
  return "\n".join(lines)


# ----------------------------------------------------------------------------- seeds
# Significance level of "within noise": a difference is within noise when a two-sided Welch
# t-test cannot reject equal means at this level (with 3 seeds per setting a difference must be
# several standard errors to count).
NOISE_LEVEL = 0.05


@dataclasses.dataclass
class SeedGroup:
  """The runs of one setting that differ only in their seed."""
  algebra: str
  match: str
  variant: str
  size: str
  sparsity: float
  metric: str
  runs: list[Row]

  @property
  def label(self) -> str:
    return self.runs[0].series

  @property
  def values(self) -> np.ndarray:
    return np.array([r.value for r in self.runs], np.float64)

  @property
  def n(self) -> int:
    return len(self.runs)

  @property
  def mean(self) -> float:
    return float(np.mean(self.values))

  @property
  def std(self) -> float:
    """Sample standard deviation over the seeds (ddof 1; NaN for one run)."""
    return float(np.std(self.values, ddof=1)) if self.n > 1 else float("nan")

  def to_dict(self) -> dict:
    return dict(setting=self.label, algebra=self.algebra, match=self.match, variant=self.variant,
                size=self.size, sparsity=self.sparsity, metric=self.metric, n=self.n,
                seeds=[r.seed for r in self.runs], values=self.values.tolist(), mean=self.mean,
                std=self.std, params=self.runs[0].params, macs=self.runs[0].macs,
                runs=[r.run for r in self.runs])


def seed_groups(rows: Sequence[Row]) -> list[SeedGroup]:
  """Rows grouped by setting (algebra, match, variant, size, sparsity, metric), in row order."""
  groups: dict[tuple, SeedGroup] = {}
  for r in rows:
    key = (r.algebra, r.match, r.variant, r.size, r.sparsity, r.metric)
    if key not in groups:
      groups[key] = SeedGroup(*key, runs=[])
    groups[key].runs.append(r)
  return list(groups.values())


def compare(a: SeedGroup, b: SeedGroup) -> dict[str, float]:
  """Difference of means a - b, its standard error, Welch's t, degrees of freedom and p.

  p is the two-sided p-value of Welch's t-test (unequal variances); NaN with fewer than two
  runs on either side. "within noise" is p >= NOISE_LEVEL.
  """
  from scipy import stats  # pylint: disable=g-import-not-at-top  (jax depends on scipy)
  diff = a.mean - b.mean
  nan = float("nan")
  if a.n < 2 or b.n < 2:
    return dict(diff=diff, se=nan, t=nan, df=nan, p=nan)
  va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
  se = math.sqrt(va + vb)
  if se == 0:
    return dict(diff=diff, se=0.0, t=nan, df=nan, p=1.0 if diff == 0 else 0.0)
  t = diff / se
  df = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
  return dict(diff=diff, se=se, t=t, df=df, p=float(2 * stats.t.sf(abs(t), df)))


def _verdict(metric: str, c: dict[str, float]) -> str:
  if math.isnan(c["p"]):
    return "n/a (one run)"
  if c["p"] >= NOISE_LEVEL:
    return f"within noise (p={c['p']:.2f})"
  lower = metric.split("/")[-1] in LOWER_IS_BETTER
  better = (c["diff"] < 0) == lower
  return f"{'better' if better else 'worse'} (p={c['p']:.3f})"


def seed_table(groups: Sequence[SeedGroup]) -> str:
  """Markdown: per setting the mean ± std over seeds and its comparisons (see module doc)."""
  if not groups:
    return ""
  metric = groups[0].metric
  lower = metric.split("/")[-1] in LOWER_IS_BETTER
  best = (min if lower else max)(groups, key=lambda g: g.mean)
  fmt = lambda v: _fmt_value(metric, v)
  header = ["setting", "params", f"MACs/{groups[0].runs[0].macs_unit}", "seeds",
            f"{metric} mean ± std", "vs r (same match)", "vs best"]
  lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
  for g in groups:
    ref = next((h for h in groups if h.algebra == "r" and h.variant == g.variant
                and h.sparsity == g.sparsity), None)
    if ref is None or ref is g:
      vs_r = "-"
    else:
      c = compare(g, ref)
      vs_r = f"{c['diff']:+.4f}: {_verdict(metric, c)}"
    vs_best = "best" if g is best else _verdict(metric, compare(g, best))
    spread = "n/a" if math.isnan(g.std) else fmt(g.std)
    lines.append("| " + " | ".join([
        g.label, f"{g.runs[0].params:,}", f"{g.runs[0].macs:,.0f}",
        ", ".join(str(r.seed) for r in g.runs), f"{fmt(g.mean)} ± {spread}", vs_r,
        vs_best]) + " |")
  return "\n".join(lines)


def header(root, records: Sequence[dict], command: str) -> str:
  """Date, commit(s), machine(s) and commands of the runs, and the collector's command."""
  now = datetime.datetime.now().isoformat(timespec="minutes")
  commits = sorted({r.get("git_commit", "unknown") for r in records}) or ["unknown"]
  machines = (sorted({r.get("machine", "unknown") for r in records}) or
              ["unknown (no launch records)"])
  sweeps = sorted({r.get("sweep") for r in records if r.get("sweep")})
  started = sorted(r["started"] for r in records if r.get("started"))
  finished = sorted(r["finished"] for r in records if r.get("finished"))
  total = sum(r.get("wall_s") or 0 for r in records)
  lines = [f"Collected: {now} from `{root}`  ",
           f"Git commit of the runs: {', '.join(commits)}  ",
           f"Machine: {'; '.join(machines)}  "]
  if started:
    lines.append(f"Runs: {started[0]} to {finished[-1] if finished else '?'}, "
                 f"{_fmt_wall(total)} of run wall time in all  ")
  if sweeps:
    lines.append("Launched with: " + "; ".join(
        f"`python -m experiments.launch --sweep={s} ...`" for s in sweeps) + "  ")
  lines.append(f"Table and plots: `{command}`")
  return "\n".join(lines)


def plot(rows: Sequence[Row], out: pathlib.Path, title: str = "") -> list[pathlib.Path]:
  """metric_vs_params.png, metric_vs_macs.png and (if recorded) metric_vs_all_macs.png;
  returns their paths."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top

  if not rows:
    return []
  metric = rows[0].metric
  series: dict[str, list[Row]] = {}
  for r in rows:
    series.setdefault(r.series, []).append(r)
  scale = 100.0 if metric.endswith(("top1", "top5")) else 1.0
  palette = plt.get_cmap("tab10" if len({r.algebra for r in rows}) <= 10 else "tab20")
  colours = {a: palette(i % palette.N)
             for i, a in enumerate(dict.fromkeys(r.algebra for r in rows))}
  variants = [v for v in dict.fromkeys(r.variant for r in rows) if v]
  variant_markers = {v: "^v<>Dph*"[i % 8] for i, v in enumerate(variants)}
  paths = []
  plots = [("params", lambda r: r.effective_params, "real parameters (non-zero for sparse runs)"),
           ("macs", lambda r: r.effective_macs,
            f"weight-layer multiply-adds per {rows[0].macs_unit} (non-zero for sparse runs)")]
  if not any(math.isnan(r.all_macs) for r in rows):
    plots.append(("all_macs", lambda r: r.effective_all_macs,
                  f"all multiply-adds per {rows[0].macs_unit} (non-zero for sparse runs)"))
  for what, xs, label in plots:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, points in series.items():
      points = sorted(points, key=xs)
      sparse = any(p.sparsity for p in points)
      # One colour per algebra (its variants and sparse runs share it); the marker tells
      # the default (o), a variant (triangles) and a sparse run (square) apart.
      ax.plot([xs(p) for p in points], [scale * p.value for p in points],
              marker="s" if sparse else variant_markers.get(points[0].variant, "o"),
              linestyle="--" if sparse else "-", color=colours[points[0].algebra],
              markersize=7, label=name)
    ax.set_xscale("log")
    # "20k", "5M" labels at 1, 2 and 5 of each decade (matplotlib's minor labels overlap).
    ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))
    ax.xaxis.set_minor_locator(ticker.LogLocator(subs=(2.0, 5.0)))
    ax.xaxis.set_minor_formatter(ticker.EngFormatter(sep=""))
    ax.set_xlabel(label)
    ax.set_ylabel(metric + (" (%)" if scale != 1 else ""))
    better = "lower" if metric.split("/")[-1] in LOWER_IS_BETTER else "higher"
    ax.set_title(f"{title + ': ' if title else ''}{metric} vs {what} ({better} is better)",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path = out / f"metric_vs_{what}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    paths.append(path)
  return paths


def write(root, out, *, metric: Optional[str] = None, title: str = "",
          command: Optional[str] = None) -> list[Row]:
  """Collects `root` and writes results.md, results.json and the plots to `out`."""
  rows, skipped, records = collect(root, metric)
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  command = command or "python -m experiments.collect " + shlex.join(
      [f"--root={root}", f"--out={out}"])
  text = [f"# {title or 'Results'}", "", header(root, records, command), "", table(rows)]
  if rows and any(r.sparsity for r in rows):
    text += ["", "Sparse runs: MACs and parameters in the table are those of the dense model; "
             "the plots place sparse runs at their non-zero parameters and MACs."]
  if rows:
    text += ["", "MACs: multiply-adds of the weight layers (the paper's count); all MACs: every "
             "multiply-add of the forward pass, also attention scores and values and the "
             "logits (algebranets.costs; flops = 2 x MACs)."]
  groups = seed_groups(rows)
  if any(g.n > 1 for g in groups):
    text += ["", "## Over seeds", "",
             f"Runs that differ only in their seed, as mean ± standard deviation (ddof 1) of "
             f"{rows[0].metric}; a difference is \"within noise\" when a two-sided Welch t-test "
             f"cannot reject equal means at the {NOISE_LEVEL:.0%} level (p is shown).", "",
             seed_table(groups)]
    (out / "seeds.json").write_text(json.dumps([g.to_dict() for g in groups], indent=2))
  if skipped:
    text += ["", "Not in the table (unfinished or failed):", ""]
    text += [f"- `{name}`: {why}" for name, why in sorted(skipped.items())]
  (out / "results.md").write_text("\n".join(text) + "\n")
  (out / "results.json").write_text(json.dumps(
      [dict(dataclasses.asdict(r), series=r.series) for r in rows], indent=2))
  plot(rows, out, title)
  return rows


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.collect",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--root", required=True, help="folder holding the runs' workdirs")
  parser.add_argument("--out", help="where results.md and the plots go (default: --root)")
  parser.add_argument("--metric", help="<split>/<name> to report (default: the sweep's, from "
                      "launch.json, else the config's best_metric)")
  parser.add_argument("--title", default="", help="heading of results.md and the plots")
  parser.add_argument("--verbose", action="store_true",
                      help="print the traceback of an error too")
  args = parser.parse_args(argv)
  command = "python -m experiments.collect " + shlex.join(
      (argv if argv is not None else sys.argv[1:]))
  try:
    rows = write(args.root, args.out or args.root, metric=args.metric, title=args.title,
                 command=command)
  except FileNotFoundError as e:
    parser.exit(2, f"error: {errors.message(e)}\n")
  print(f"{len(rows)} run(s) -> {pathlib.Path(args.out or args.root) / 'results.md'}")
  return 0


if __name__ == "__main__":
  sys.exit(errors.run_cli(main))
