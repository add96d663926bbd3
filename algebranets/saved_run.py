"""A trained run, from its workdir alone: its saved config and a restored checkpoint.

The commands that use a trained run -- sampling (`algebranets.sample`) and the sparse export
(`algebranets.sparse_export`) -- need no --config: the run's resolved config,
workdir/config.json, rebuilds its model exactly (matched sizes, vocabulary, classes), and the
trainer's own `train.restore_run` restores a checkpoint into it. They sit above the trainer.

Restoring here uses one device whatever the run trained on, so a checkpoint of an 8-device run
restores on a laptop: the Transformer-XL memories in the train state have as many rows as the
saved run's padded batch (`distributed.BatchLayout`), which the checkpoint's meta records, and
the rebuilt run gets that batch on its one device. The run's dataset is rebuilt too (the trainer
reads sizes and vocabularies from it): it must be where config.json says, or at `data_path`.
"""

from __future__ import annotations

import json
import pathlib
from typing import Optional

import jax
import ml_collections

from algebranets.training import checkpoint as checkpoint_lib
from algebranets.training import distributed
from algebranets.training import train

__all__ = ["read_config", "restore"]


def read_config(workdir) -> ml_collections.ConfigDict:
  """The resolved config a run saved as workdir/config.json, ready to rebuild its model.

  `match` is set to "none": the saved config already holds the matched sizes (matching again
  would size a model like the matched one).
  """
  path = pathlib.Path(workdir) / "config.json"
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: {workdir} is not the workdir of a training run "
                            "(python -m algebranets.train --workdir=DIR writes DIR/config.json)")
  saved = json.loads(path.read_text())
  if "model_name" not in saved:  # saved before model_name left config.model: model.name
    saved["model_name"] = saved["model"].pop("name")
  config = ml_collections.ConfigDict(saved)
  config.match = "none"
  return config


def restore(config, workdir, *, step: Optional[int] = None, data_path: Optional[str] = None):
  """(state, run) of checkpoint `step` (default the latest) of the run in `workdir`, on one
  device (see the module docstring); `data_path` replaces config.data.path."""
  workdir = pathlib.Path(workdir)
  directory = workdir / train.CHECKPOINT_DIR
  ckpt = checkpoint_lib.Checkpointer(directory) if directory.is_dir() else None
  try:
    steps = ckpt.all_steps() if ckpt else ()
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {directory}: the run has saved nothing yet")
    step = max(steps) if step is None else int(step)
    if step not in steps:
      raise FileNotFoundError(f"no checkpoint of step {step} in {directory}; saved steps: "
                              f"{sorted(steps)}")
    layout = ckpt.read_meta(step).get("batch_layout")
  finally:
    if ckpt:
      ckpt.close()
  config = ml_collections.ConfigDict(config.to_dict())
  if layout:  # the memories' rows as saved, all on one device
    config.train.update(batch_size=int(layout["padded_size"]), microbatches=1,
                        device_batch_size=0)
  if data_path is not None:
    config.data.path = str(data_path)
  try:
    return train.restore_run(config, workdir, step=step,
                             mesh=distributed.make_mesh(jax.local_devices()[:1]))
  except FileNotFoundError as e:
    if data_path is None and "path" in config.data:
      raise FileNotFoundError(
          f"{e}. The run's dataset is rebuilt from its data (for the vocabulary and sizes): "
          f"config.json has data.path={config.data.path!r}; pass --data_path=PATH where the "
          "data is now") from e
    raise
