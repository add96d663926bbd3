r"""Export a pruned run as a compact model: `python -m algebranets.sparsity export`.

  python -m algebranets.sparsity export --workdir=RUN --out=model.npz [--step=N] [--json]
      [--data_path=PATH]

Loads RUN's checkpoint (its latest, or --step) with the run's own resolved config
(RUN/config.json; `saved_run`: on one device, the data where config.json says or at
--data_path), writes the compact model (`sparsity.compress`: block-compressed rows of every
pruned weight, the rest dense; `sparsity.load(FILE)` rebuilds the dense masked params) and
prints the non-zero parameters and multiply-adds per pruned layer, of the pruned weights and of
the whole model (`sparsity.format_costs`).

This command restores a training run, so it sits above the trainer; `algebranets.sparsity`
(masks, schedules, the compact format), below the trainer, imports neither the trainer nor the
models.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
from typing import Any, Optional, Sequence

import jax
import numpy as np

from algebranets import errors
from algebranets import saved_run
from algebranets import sparsity

__all__ = ["export_run", "main"]


def export_run(workdir, out, *, step: Optional[int] = None,
               data_path: Optional[str] = None) -> dict[str, Any]:
  """Exports the checkpoint of a pruned run (its latest, or `step`) to `out` (.npz).

  The run's resolved config (workdir/config.json) rebuilds the model (`saved_run`: its data
  must be where the config says, or at `data_path`: the task reads its sizes from the
  dataset). Returns the `sparsity.sparse_costs` of the checkpoint, with "step" and "file".
  """
  workdir = pathlib.Path(workdir)
  config = saved_run.read_config(workdir)
  if not config.sparsity.target:
    raise ValueError(f"{workdir} is not a pruned run (its config.json has sparsity.target 0); "
                     "export needs a run trained with --config.sparsity.target > 0")
  state, run = saved_run.restore(config, workdir, step=step, data_path=data_path)
  params = jax.tree.map(np.asarray, state.params)
  masks = jax.tree.map(np.asarray, state.masks)
  params = jax.tree.map(np.asarray, sparsity.apply_masks(params, masks))
  sparsity.save(out, sparsity.compress(run.pruner, params, masks))
  result = sparsity.sparse_costs(run.task.cost_report(), run.pruner, params, masks)
  return dict(result, step=int(np.asarray(state.step)), file=str(out))


def main(argv: Optional[Sequence[str]] = None) -> int:
  parser = argparse.ArgumentParser(
      prog="python -m algebranets.sparsity",
      description="Sparse models: export a pruned run's checkpoint as a compact model.")
  commands = parser.add_subparsers(dest="command", required=True)
  ex = commands.add_parser("export", help="write the compact (block-compressed rows) model of "
                                          "a pruned run and print its non-zero params and MACs")
  ex.add_argument("--workdir", required=True, help="the run's workdir (config.json, checkpoints)")
  ex.add_argument("--out", required=True, help="the .npz file to write")
  ex.add_argument("--step", type=int, default=None, help="checkpoint step (default: latest)")
  ex.add_argument("--data_path", default=None,
                  help="where the run's data is now, if not at config.json's data.path")
  ex.add_argument("--json", action="store_true", help="print JSON instead of a table")
  ex.add_argument("--verbose", action="store_true", help="print the traceback of an error too")
  flags = parser.parse_args(argv)
  result = export_run(flags.workdir, flags.out, step=flags.step, data_path=flags.data_path)
  if flags.json:
    print(json.dumps(result, indent=1))
    return 0
  print(f"step {result['step']} of {flags.workdir} -> {result['file']}\n")
  print(sparsity.format_costs(result))
  print("\nsparsity = 1 - nonzero params / params of the row; MACs: weight layers, per example "
        "(or per training segment of a language model)")
  return 0


if __name__ == "__main__":
  sys.exit(errors.run_cli(main, sys.argv[1:]))
