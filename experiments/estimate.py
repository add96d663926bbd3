r"""Expected compute of the paper sweeps' runs, from their multiply-adds.

  python -m experiments.sweeps --estimate [--tflops=100] [--sweep=imagenet_resnet50]

For every dense run (sparse runs train the dense weights under a mask: the same compute as the
dense run of their algebra) this takes ALL the model's multiply-adds per example (images) or per
token (Transformer-XL: one training segment with a full memory and the training loss, divided by
its length), `costs.ModelCost.all_macs`: the weight layers and also the attention scores, the
attention-weighted values and the (adaptive) softmax logits, at the size its `match` gives, and
the examples or tokens of the config's recipe, and reports

  training FLOPs = 2 (FLOPs per MAC) x 3 (forward + backward: twice the forward's MACs)
                   x all MACs per example (token) x examples (tokens) seen in training,
  hours          = training FLOPs / assumed sustained FLOP/s.

The weight-layer MACs (the paper's count, `match=macs`) are listed beside them. Element-wise work
(norms, softmax, activations) is not counted: O(activations), a few percent at these widths.

The assumed throughput (--tflops, default 100 TFLOP/s per run) is about a third of an NVIDIA
A100's dense bf16 peak (312) or a quarter of a TPU v3-8's (420): typical of well-tuned real
networks. Algebra layers in this code often run below it (BENCHMARKS.md: the expanded and folded
paths do more work than the naive MACs count, and small per-layer matmuls use accelerators less
well), so read the hours of the algebra runs as lower bounds.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
from typing import Dict, List, Sequence

from experiments import sweeps as sweeps_lib

# sweep -> (model name in costs.model_report, training examples per epoch (images) or None)
MODELS = {
    "imagenet_resnet50": ("resnet50", 1_281_167),
    "imagenet_mobilenet_v1": ("mobilenet_v1", 1_281_167),
    "enwik8_transformer_xl": ("enwik8_base", None),
    "wikitext103_transformer_xl": ("wt103_base", None),
}
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


def _config(run: sweeps_lib.Run):
  spec = importlib.util.spec_from_file_location("estimate_config",
                                                sweeps_lib.ROOT / run.config)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(run.arg.format_map(_AnyPath()))


class _AnyPath(dict):
  def __missing__(self, key):
    return f"<{key}>"


@functools.lru_cache(maxsize=None)
def _costs(model: str, algebra: str, match: str):
  from algebranets import costs  # pylint: disable=g-import-not-at-top
  report, size = costs.model_report(model, algebra, match)
  return int(report.total_params), float(report.macs), float(report.all_macs), size


def estimate(sweep_name: str) -> List[Estimate]:
  """One Estimate per dense run of a paper sweep (see the module docstring)."""
  if sweep_name not in MODELS:
    raise ValueError(f"no compute estimate for sweep {sweep_name!r}; estimated: {sorted(MODELS)}")
  model, epoch_size = MODELS[sweep_name]
  out = []
  for run in sweeps_lib.get(sweep_name).runs:
    if run.sparsity:
      continue
    config = _config(run)
    params, macs, all_macs, size = _costs(model, run.algebra, config.match)
    if epoch_size:
      unit = "image"
      units = (config.train.num_epochs * epoch_size if config.train.num_epochs else
               config.train.num_steps * config.train.batch_size)
    else:
      unit = "token"
      seq_len = config.data.seq_len
      # model_report: one segment of seq_len (= mem_len) tokens
      macs, all_macs = macs / seq_len, all_macs / seq_len
      units = config.train.num_steps * config.train.batch_size * seq_len
    out.append(Estimate(sweep_name, run.name, size, params, macs, all_macs, unit, float(units),
                        FLOPS_PER_TRAINING_MAC * all_macs * units))
  return out


def markdown(estimates: Sequence[Estimate], tflops: float = DEFAULT_TFLOPS) -> str:
  """Tables per sweep, with the arithmetic spelled out once per sweep."""
  by_sweep: Dict[str, List[Estimate]] = {}
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
