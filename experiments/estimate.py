r"""Expected compute of the paper sweeps' runs, from their multiply-adds.

  python -m experiments.sweeps --estimate [--tflops=100] [--sweep=imagenet_resnet50]

For every dense run of a sweep (sparse runs train the dense weights under a mask: the same
compute as the dense run of their algebra) this takes the model that run's config trains -- its
config file and argument with the run's overrides, resolved as the trainer resolves it, matched
width included (`algebranets.cost_report.config_costs`; e.g. enwik8 with the reference tokens has
a vocabulary of 204, not 256) -- and ALL its multiply-adds per example (images) or per token
(Transformer-XL: one training segment with a full memory and the training loss, divided by its
length), `costs.ModelCost.all_macs`: the weight layers and also the attention scores, the
attention-weighted values and the (adaptive) softmax logits; and the examples or tokens of the
config's recipe. It reports

  training FLOPs = 2 (FLOPs per MAC) x 3 (forward + backward: twice the forward's MACs)
                   x all MACs per example (token) x examples (tokens) seen in training,
  hours          = training FLOPs / assumed sustained FLOP/s.

The weight-layer MACs (the paper's count, `match=macs`) are listed beside them. Element-wise work
(norms, softmax, activations) is not counted: O(activations), a few percent at these widths.
Counts are the closed forms of `algebranets.analytic_costs` (the traced counts, tested equal), so
the whole estimate takes seconds.

The assumed throughput (--tflops, default 100 TFLOP/s per run) is about a third of an NVIDIA
A100's dense bf16 peak (312) or a quarter of a TPU v3-8's (420): typical of well-tuned real
networks. Algebra layers in this code often run below it (BENCHMARKS.md: the expanded and folded
paths do more work than the naive MACs count, and small per-layer matmuls use accelerators less
well), so read the hours of the algebra runs as lower bounds.

This module takes `experiments.sweeps.Sweep` objects and does not import `sweeps` (which imports
this module for its --estimate flag).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
from typing import Any, Sequence

from algebranets import cost_report

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_TFLOPS = 100.0
FLOPS_PER_TRAINING_MAC = 2 * 3


@dataclasses.dataclass(frozen=True)
class Estimate:
  sweep: str
  run: str
  size: str
  params: int
  macs: float      # weight-layer MACs per example or token
  all_macs: float  # every multiply-add per example or token
  unit: str        # "image" or "token"
  units: float     # examples or tokens of training
  flops: float     # training FLOPs, from all_macs

  def hours(self, tflops: float) -> float:
    return self.flops / (tflops * 1e12) / 3600


class _AnyPath(dict):
  """Fills a data placeholder "{name}" with "<name>": sizes come from the config, not the data."""

  def __missing__(self, key):
    return f"<{key}>"


def run_config(run) -> Any:
  """The config a sweep run trains: its config file and argument, then its overrides."""
  spec = importlib.util.spec_from_file_location("estimate_config", ROOT / run.config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  config = module.get_config(run.arg.format_map(_AnyPath()))
  for key, value in run.overrides:
    if isinstance(value, str):
      value = value.format_map(_AnyPath())
    cost_report.apply_override(config, key, value)
  return config


def estimate(sweep, log=None) -> list[Estimate]:
  """One Estimate per dense run of `sweep` (an `experiments.sweeps.Sweep`; module docstring).

  `log`, if given, is called with one line per run as it is counted.
  """
  out = []
  for run in sweep.runs:
    if run.sparsity:
      continue
    config = run_config(run)
    try:
      cost = cost_report.config_costs(config)
    except FileNotFoundError as e:
      raise ValueError(f"no compute estimate for sweep {sweep.name!r}: {e}") from e
    per = cost.per_unit()
    if cost.unit == "example":
      unit = "image"
      macs, all_macs = per["macs_per_example"], per["all_macs_per_example"]
      train = config.train
      units = (train.num_epochs * cost.info.train_examples if train.num_epochs else
               train.num_steps * train.batch_size)
    else:
      unit = "token"
      macs, all_macs = per["macs_per_token"], per["all_macs_per_token"]
      units = config.train.num_steps * config.train.batch_size * cost.info.seq_len
    out.append(Estimate(sweep.name, run.name, cost.size, per["params"], float(macs),
                        float(all_macs), unit, float(units),
                        FLOPS_PER_TRAINING_MAC * float(all_macs) * units))
    if log:
      log(f"  {run.name}: {out[-1].size}, {out[-1].params:,} params")
  return out


def markdown(estimates: Sequence[Estimate], tflops: float = DEFAULT_TFLOPS) -> str:
  """Tables per sweep, with the arithmetic spelled out once per sweep."""
  by_sweep: dict[str, list[Estimate]] = {}
  for e in estimates:
    by_sweep.setdefault(e.sweep, []).append(e)
  text = []
  for sweep, rows in by_sweep.items():
    unit = rows[0].unit
    ref = rows[0]
    text += [f"**{sweep}** ({ref.units:,.0f} training {unit}s per run; "
             f"{tflops:g} TFLOP/s sustained assumed)", "",
             f"e.g. {ref.run}: {FLOPS_PER_TRAINING_MAC} x {ref.all_macs:,.0f} all MACs/{unit} x "
             f"{ref.units:.4g} {unit}s = {ref.flops:.3g} FLOPs; / {tflops:g}e12 FLOP/s = "
             f"{ref.hours(tflops):,.1f} h", "",
             f"| run | size | params | MACs/{unit} (weight layers) | all MACs/{unit} | "
             "training FLOPs | hours |",
             "|---|---|---|---|---|---|---|"]
    for e in rows:
      text.append(f"| `{e.run}` | {e.size} | {e.params:,} | {e.macs:,.0f} | {e.all_macs:,.0f} | "
                  f"{e.flops:.3g} | {e.hours(tflops):,.1f} |")
    total = sum(e.hours(tflops) for e in rows)
    text += ["", f"Dense runs: {total:,.0f} h in all; each sparse run costs about what its "
             "algebra's equal-params dense run does.", ""]
  return "\n".join(text)
