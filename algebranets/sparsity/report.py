"""Reports of a pruned model: non-zero parameters and multiply-adds per layer, and their
markdown table (the sparse export and the trainer's final log print them)."""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp
import numpy as np

from algebranets import common
from algebranets.sparsity.masks import flat_masks, unit_mask, unit_scores
from algebranets.sparsity.pruner import Pruner

def _units_kept(pruner: Pruner, name: str, mask) -> tuple[int, int]:
  """(kept units, all units) of a weight's mask."""
  w = pruner.weights[name]
  unit = np.asarray(unit_mask(np.asarray(w.view(mask)), pruner.spec.kind, pruner.spec.block))
  return int(unit.sum()), int(unit.size)


def nonzero_counts(pruner: Pruner, params, masks) -> dict[str, dict[str, int]]:
  """{weight name: {"params", "nonzero", "units", "kept_units"}} of the pruned weights: real
  components, those of kept units that are not all zero, all units, kept units (host numpy)."""
  leaves = common.named_leaves(params)
  flat = flat_masks(masks)
  out = {}
  for name, w in pruner.weights.items():
    v = np.asarray(w.view(np.asarray(leaves[name][1])))
    m = np.asarray(w.view(np.asarray(flat[name])))
    nonzero_unit = np.asarray(unit_scores(jnp.asarray(np.abs(v)), pruner.spec.kind,
                                           pruner.spec.block, "linf")) > 0
    kept, units = _units_kept(pruner, name, flat[name])
    nonzero_unit &= np.asarray(unit_mask(m, pruner.spec.kind, pruner.spec.block))
    out[name] = {"params": int(v.size), "nonzero": int(nonzero_unit.sum()) * pruner.unit_size(name),
                 "units": units, "kept_units": kept}
  return out


def sparse_costs(report, pruner: Pruner, params, masks) -> dict[str, Any]:
  """Params and MACs counting only non-zeros, per layer and in total.

  Args:
    report: the dense model's `costs.ModelCost` (layers named by their Haiku module).
    pruner, params, masks: the pruning and the (masked) parameters.

  Returns:
    {"params", "nonzero_params" (the whole model), "macs", "nonzero_macs" (weight layers),
     "pruned_params", "pruned_nonzero_params" (the pruned weights alone), "sparsity" (pruned
     reals over the pruned weights' reals: 1 - pruned_nonzero_params / pruned_params),
     "layers": [{"name", "params", "nonzero_params", "macs", "nonzero_macs", "kept"}]}: a
    layer whose weight is pruned keeps the fraction `kept` of its weight's non-zero reals, and
    its MACs scale with it (each MAC multiplies one weight component); biases and unpruned
    arrays count in full.
  """
  counts = nonzero_counts(pruner, params, masks)
  by_module = {}
  for name, c in counts.items():
    module = "/".join(pruner.weights[name].keys[:-1])
    by_module[module] = c
  layers, macs = [], 0
  for l in report.layers:
    c = by_module.get(l.name)
    kept = c["nonzero"] / c["params"] if c else 1.0
    removed = (c["params"] - c["nonzero"]) if (c and l.call == 0) else 0
    nz_macs = int(round(l.macs * kept))
    macs += nz_macs
    layers.append({"name": l.name if l.call == 0 else f"{l.name} (call {l.call + 1})",
                   "params": int(l.params), "nonzero_params": int(l.params - removed),
                   "macs": int(l.macs), "nonzero_macs": nz_macs, "kept": kept})
  pruned_total = sum(c["params"] for c in counts.values())
  removed_total = sum(c["params"] - c["nonzero"] for c in counts.values())
  return {"params": int(report.total_params),
          "nonzero_params": int(report.total_params - removed_total),
          "macs": int(report.macs), "nonzero_macs": int(macs),
          "pruned_params": int(pruned_total),
          "pruned_nonzero_params": int(pruned_total - removed_total),
          "sparsity": removed_total / max(pruned_total, 1), "layers": layers}


def format_costs(costs: Mapping[str, Any]) -> str:
  """A markdown table of `sparse_costs`: the pruned layers, the pruned weights, the model.

  Every row's sparsity is 1 - (its nonzero params) / (its params), the two columns beside
  it: a layer's over its weight and bias, "pruned weights" over the pruned arrays alone (the
  sparsity the schedule targets), "total (model)" over every parameter of the model.
  """
  def sparsity_of(params, nonzero):
    return f"{1 - nonzero / params:.3f}" if params else ""

  rows = [[l["name"], f"{l['params']:,}", f"{l['nonzero_params']:,}", f"{l['macs']:,}",
           f"{l['nonzero_macs']:,}", sparsity_of(l["params"], l["nonzero_params"])]
          for l in costs["layers"] if l["kept"] < 1.0]
  rows.append(["pruned weights", f"{costs['pruned_params']:,}",
               f"{costs['pruned_nonzero_params']:,}", "", "",
               sparsity_of(costs["pruned_params"], costs["pruned_nonzero_params"])])
  rows.append(["total (model)", f"{costs['params']:,}", f"{costs['nonzero_params']:,}",
               f"{costs['macs']:,}", f"{costs['nonzero_macs']:,}",
               sparsity_of(costs["params"], costs["nonzero_params"])])
  header = ["layer", "params", "nonzero params", "MACs", "nonzero MACs", "sparsity"]
  return common.markdown(header, rows, align="lrrrrr")
