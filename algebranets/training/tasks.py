"""Training tasks: a model, its loss, its carried state and its evaluation metrics.

`TASKS` maps `config.task.name` to a class; `build(config, dataset)` makes one. A task holds
only pure functions of arrays (the jitted steps in `step` call them) and the model's resolved
sizes; it reads the config once, in its constructor. `Task` declares what the trainer, the
steps and the cost report call (tests/training/test_tasks.py checks every registered task
against it).

  classification   image models of `models.MODELS` (ResNet, MobileNet): softmax cross-entropy
                   with label smoothing; batch-norm statistics as Haiku state; metrics top-1
                   and top-5 accuracy. Batches {"image" [B, S, S, 3], "label" [B], "mask"}.
  language_model   Transformer-XL: mean negative log-likelihood per token; the memories are
                   carried from each training batch to the next (train state `carry`, rows
                   sharded with the data rows, so each host keeps the memories of the streams
                   it reads); evaluation runs a second copy of the model with the longer eval
                   memory (`eval_mem_len`, `eval_clamp_len`, `eval_same_length`, as the
                   reference eval scripts) over each split from a fresh memory. Metrics: nll
                   (nats per token), bpc = nll / ln 2 (bits per character for byte corpora),
                   ppl = exp(nll) (word-level perplexity). Batches {"inputs", "targets" [B, T],
                   "mask"}.

Memories start as zeros of their full length, as in the TF reference (train_gpu.py): the step
then has one shape from the first batch on (one compilation, and a state that checkpoints the
same at every step).

Width matching (`config.match`: "none", "params", "macs", "flops"; for Transformer-XL also
"width"): the model in config.model, built in the real numbers, is the reference; the algebra
model gets the width (image models) or the d_model/d_inner/d_head (Transformer-XL) that matches
its real parameters, weight-layer multiply-adds ("macs") or all multiply-adds of the forward pass
("flops": attention scores and values and the logits too; see algebranets.costs)
(`models.match_image_model`, `transformer_xl.matched_config`). `resolve` writes the result into
the config, so the saved config says what was trained.

Sizes (`costs()`, written to the workdir's model.json): real parameters, weight-layer MACs and
all MACs per example (image) or per token (a training segment with a full memory, divided by
its length): "params", "macs_per_example" / "macs_per_token", "all_macs_per_example" /
"all_macs_per_token" (flops = 2 × MACs).
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar, Protocol, runtime_checkable

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import optax

from algebranets import algebras
from algebranets import common
from algebranets import costs as costs_lib
from algebranets import models
from algebranets.data import text as text_data
from algebranets.models import transformer_xl
from algebranets.training import config_lib

MATCH_KINDS = config_lib.MATCH_KINDS          # "none", "params", "macs", "flops"
LM_MATCH_KINDS = config_lib.LM_MATCH_KINDS    # ... and "width"

# Language models by config.model_name (models.LANGUAGE_MODELS: "transformer_xl").
LM_MODELS: dict[str, Callable[..., hk.Module]] = models.LANGUAGE_MODELS


# ----------------------------------------------------------------------------- the contract
@runtime_checkable
class Task(Protocol):
  """What a task is to the trainer (`training.train`), the steps (`training.step`) and the
  cost report: a class built as `cls(config, dataset)` from the resolved config. B is the
  batch's rows; `carry` a pytree of [B, ...] arrays carried from batch to batch."""

  name: ClassVar[str]           # the key in TASKS (config.task.name)
  unit: ClassVar[str]           # what a batch row counts for throughput: "examples", "tokens"
  target_key: ClassVar[str]     # the batch array whose shape a training row mask takes
  can_pad_train: ClassVar[bool]  # whether training batches may carry zero-weight padding rows

  @staticmethod
  def best_metric(dataset) -> tuple[str, str]:
    """(eval metric, "min" or "max") that ranks checkpoints on this dataset."""

  @staticmethod
  def resolve(config, dataset) -> None:
    """Writes the dataset-dependent model sizes (classes, vocabulary, matched width) into config."""

  def batch_spec(self, batch_size: int, train: bool) -> dict[str, jax.ShapeDtypeStruct]:
    """The batch's arrays as ShapeDtypeStructs, each [batch_size, ...]; eval adds a "mask"."""

  def units(self, batch: dict) -> int:
    """Examples or tokens in a batch (a batch of arrays or of batch_spec's structs)."""

  def init(self, rng: jax.Array, batch: dict) -> tuple[hk.Params, hk.State]:
    """(params, model_state) of the model, initialised on a training batch."""

  def init_carry(self, batch_size: int, train: bool) -> Any:
    """The carry before the first batch of batch_size rows: a pytree of [B, ...], or ()."""

  def loss(self, params: hk.Params, model_state: hk.State, carry: Any, batch: dict,
           rng: jax.Array) -> tuple[jax.Array, tuple[dict[str, jax.Array], hk.State, Any]]:
    """(mean training loss [], (scalar metrics, new model_state, new carry)) of a batch."""

  def eval_sums(self, params: hk.Params, model_state: hk.State, carry: Any,
                batch: dict) -> tuple[dict[str, jax.Array], Any]:
    """(sums [] over the batch's unmasked rows, new carry) of an eval batch; summed over batches."""

  def summarize(self, sums: dict[str, float]) -> dict[str, float]:
    """The eval metrics of a split from its summed eval_sums."""

  def cost_report(self) -> costs_lib.ModelCost:
    """The model's per-layer parameters and multiply-adds (one example or one segment)."""

  def costs(self) -> dict[str, float]:
    """Real parameters and multiply-adds per unit, written to the workdir's model.json."""



# ----------------------------------------------------------------------------- classification
class ClassificationTask:
  """Image classification (see the module docstring)."""
  name = "classification"
  unit = "examples"
  # The batch array whose shape a training row mask takes (distributed.BatchLayout.pad); the
  # trainer pads no classification batch (the padding rows would enter the batch-norm
  # statistics), so training batches here never have one.
  target_key = "label"
  can_pad_train = False

  @staticmethod
  def best_metric(dataset) -> tuple[str, str]:
    """(metric, "min" or "max") that ranks checkpoints."""
    del dataset
    return "top1", "max"

  def __init__(self, config, dataset):
    self.algebra = algebras.get(config.algebra)
    self.constructor = models.MODELS[
        common.check_choice(config.model_name, sorted(models.MODELS), "image model")]
    self.model_kwargs = config.model.to_dict()
    self.num_classes = int(dataset.num_classes)
    self.image_size = int(dataset.image_size)
    self.label_smoothing = float(config.task.get("label_smoothing", 0.0))
    self.compute_dtype = jnp.dtype(config.mixed_precision.compute_dtype)
    self.net = hk.transform_with_state(self._forward)

  @staticmethod
  def resolve(config, dataset) -> None:
    """Fills in num_classes and (with config.match) the matched width, in place."""
    config.model.num_classes = int(dataset.num_classes)
    match = common.check_choice(config.get("match", "none"), MATCH_KINDS, "match")
    if match == "none" or algebras.get(config.algebra).dim == 1:
      return
    kwargs = config.model.to_dict()
    width = kwargs.pop("width", 1.0)
    kwargs.pop("num_classes")
    result = models.match_image_model(
        models.MODELS[config.model_name], config.algebra, match=match, reference_width=width,
        image_size=int(dataset.image_size), num_classes=int(dataset.num_classes),
        tolerance=float(config.get("match_tolerance", 0.02)), **kwargs)
    config.model.width = float(result.width)

  def _forward(self, images, is_training):
    model = self.constructor(algebra=self.algebra, **self.model_kwargs)
    return model(images, is_training)

  def batch_spec(self, batch_size: int, train: bool) -> dict:
    s = self.image_size
    spec = {"image": jax.ShapeDtypeStruct((batch_size, s, s, 3), jnp.float32),
            "label": jax.ShapeDtypeStruct((batch_size,), jnp.int32)}
    if not train:
      spec["mask"] = jax.ShapeDtypeStruct((batch_size,), jnp.bool_)
    return spec

  def units(self, batch: dict) -> int:
    return int(batch["image"].shape[0])

  def init(self, rng, batch) -> tuple[Any, Any]:
    return self.net.init(rng, batch["image"], True)

  def init_carry(self, batch_size: int, train: bool) -> Any:
    del batch_size, train
    return ()

  def loss(self, params, model_state, carry, batch, rng):
    """Label-smoothed cross-entropy on a training batch (mean over its examples)."""
    images = batch["image"].astype(self.compute_dtype)
    logits, model_state = self.net.apply(params, model_state, rng, images, True)
    logits = logits.astype(jnp.float32)                              # [B, K]
    labels = optax.smooth_labels(jax.nn.one_hot(batch["label"], self.num_classes),
                                 self.label_smoothing)
    loss = jnp.mean(optax.softmax_cross_entropy(logits, labels))
    top1 = jnp.mean((jnp.argmax(logits, -1) == batch["label"]).astype(jnp.float32))
    return loss, ({"top1": top1}, model_state, carry)

  def eval_sums(self, params, model_state, carry, batch):
    """Sums over the unmasked examples: cross-entropy (unsmoothed), top-1/top-5 hits, count."""
    images = batch["image"].astype(self.compute_dtype)
    logits, _ = self.net.apply(params, model_state, None, images, False)
    logits = logits.astype(jnp.float32)
    labels = batch["label"]
    mask = batch["mask"].astype(jnp.float32)
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    k = min(5, self.num_classes)
    # Rank of the true class: how many logits beat it (ties count against it).
    true = jnp.take_along_axis(logits, labels[:, None], axis=-1)
    rank = jnp.sum(logits > true, axis=-1)
    sums = {"loss": jnp.sum(ce * mask), "top1": jnp.sum((rank < 1) * mask),
            "top5": jnp.sum((rank < k) * mask), "count": jnp.sum(mask)}
    return sums, carry

  @staticmethod
  def summarize(sums: dict[str, float]) -> dict[str, float]:
    n = max(float(sums["count"]), 1.0)
    return {"loss": float(sums["loss"]) / n, "top1": float(sums["top1"]) / n,
            "top5": float(sums["top5"]) / n, "examples": float(sums["count"])}

  def cost_report(self) -> costs_lib.ModelCost:
    """The per-layer costs of the model on one image."""
    images = jax.ShapeDtypeStruct((1, self.image_size, self.image_size, 3), jnp.float32)
    return costs_lib.model_costs(lambda x: self._forward(x, False), images)

  def costs(self) -> dict[str, float]:
    """Real parameters, weight-layer and all multiply-adds per image."""
    report = self.cost_report()
    return {"params": int(report.total_params), "macs_per_example": int(report.macs),
            "all_macs_per_example": int(report.all_macs)}


# ----------------------------------------------------------------------------- language model
class LanguageModelTask:
  """Transformer-XL language modelling (see the module docstring)."""
  name = "language_model"
  unit = "tokens"
  # Rows are independent streams: a padded training batch (a global batch that does not
  # split over the devices, distributed.BatchLayout) gets a "mask" [B, T] like the targets.
  target_key = "targets"
  can_pad_train = True

  def __init__(self, config, dataset):
    self.algebra = algebras.get(config.algebra)
    self.constructor = LM_MODELS[
        common.check_choice(config.model_name, sorted(LM_MODELS), "language model")]
    self.model_kwargs = config.model.to_dict()
    self.seq_len = int(dataset.seq_len)
    self.eval_seq_len = int(dataset.eval_seq_len)
    task = config.task
    self.mem_len = int(self.model_kwargs.get("mem_len", 0))
    self.eval_kwargs = dict(self.model_kwargs)
    self.eval_kwargs.update(
        mem_len=int(task.get("eval_mem_len", 0) or self.mem_len),
        clamp_len=int(task.get("eval_clamp_len", self.model_kwargs.get("clamp_len", -1))),
        same_length=bool(task.get("eval_same_length", False)))
    self.eval_mem_len = self.eval_kwargs["mem_len"]
    self.compute_dtype = jnp.dtype(config.mixed_precision.compute_dtype)
    self.net = hk.transform_with_state(self._forward(self.model_kwargs))
    self.eval_net = hk.transform_with_state(self._forward(self.eval_kwargs))

  @staticmethod
  def best_metric(dataset) -> tuple[str, str]:
    """bpc for byte corpora, perplexity for word-level ones."""
    return ("bpc", "min") if dataset.vocab is None else ("ppl", "min")

  @staticmethod
  def resolve(config, dataset) -> None:
    """Fills in vocab_size and (with config.match) the matched sizes, in place; first checks
    that the training split fills a batch (a DataError naming the file, before any model)."""
    if isinstance(dataset, text_data.TextDataset):
      dataset.check_batch_size(int(config.train.batch_size))
    config.model.vocab_size = int(dataset.vocab_size)
    match = common.check_choice(config.get("match", "none"), LM_MATCH_KINDS, "match")
    if match == "none" or algebras.get(config.algebra).dim == 1:
      return
    reference = config.model.to_dict()
    matched = transformer_xl.matched_config(reference, config.algebra, match,
                                            seq_len=int(dataset.seq_len))
    for key in ("d_model", "d_inner", "d_head", "d_embed"):
      if key in matched and matched[key] is not None:
        config.model[key] = int(matched[key])

  def _forward(self, kwargs):
    def forward(inputs, mems, is_training, targets):
      model = self.constructor(algebra=self.algebra, **kwargs)
      return model(inputs, mems, is_training, targets=targets)
    return forward

  def batch_spec(self, batch_size: int, train: bool) -> dict:
    t = self.seq_len if train else self.eval_seq_len
    spec = {"inputs": jax.ShapeDtypeStruct((batch_size, t), jnp.int32),
            "targets": jax.ShapeDtypeStruct((batch_size, t), jnp.int32)}
    if not train:
      spec["mask"] = jax.ShapeDtypeStruct((batch_size, t), jnp.bool_)
    return spec

  def units(self, batch: dict) -> int:
    return int(np.prod(batch["inputs"].shape))

  def init(self, rng, batch) -> tuple[Any, Any]:
    mems = self._mems_or_none(self.init_carry(batch["inputs"].shape[0], True))
    return self.net.init(rng, batch["inputs"], mems, False, batch["targets"])

  def init_carry(self, batch_size: int, train: bool) -> Any:
    """Zero memories: one [B, M, C, D] per layer (M = mem_len or eval_mem_len); () if M = 0."""
    m = self.mem_len if train else self.eval_mem_len
    if not m:
      return ()
    kw = self.model_kwargs
    shape = (batch_size, m, int(kw["d_model"]), self.algebra.dim)
    return tuple(jnp.zeros(shape, self.compute_dtype) for _ in range(int(kw["n_layers"])))

  @staticmethod
  def _mems_or_none(carry):
    return carry if carry else None

  def loss(self, params, model_state, carry, batch, rng):
    """Mean nll per token of a training segment; the new memories are the next carry.

    With a batch "mask" [B, T] (padding rows), the mean over the unmasked tokens.
    """
    (nll, mems), model_state = self.net.apply(
        params, model_state, rng, batch["inputs"], self._mems_or_none(carry), True,
        batch["targets"])
    nll = nll.astype(jnp.float32)                                    # [B, T]
    if "mask" in batch:
      mask = batch["mask"].astype(jnp.float32)
      loss = jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)
    else:
      loss = jnp.mean(nll)
    return loss, ({"bpc": loss / math.log(2)}, model_state, tuple(mems) if mems else ())

  def eval_sums(self, params, model_state, carry, batch):
    """Sums over the unmasked tokens: nll (nats) and count; the eval memories carried on."""
    (nll, mems), _ = self.eval_net.apply(
        params, model_state, None, batch["inputs"], self._mems_or_none(carry), False,
        batch["targets"])
    mask = batch["mask"].astype(jnp.float32)
    sums = {"nll": jnp.sum(nll.astype(jnp.float32) * mask), "count": jnp.sum(mask)}
    return sums, (tuple(mems) if mems else ())

  @staticmethod
  def summarize(sums: dict[str, float]) -> dict[str, float]:
    n = max(float(sums["count"]), 1.0)
    nll = float(sums["nll"]) / n
    return {"nll": nll, "bpc": nll / math.log(2), "ppl": math.exp(min(nll, 700.0)),
            "tokens": float(sums["count"])}

  def cost_report(self) -> costs_lib.ModelCost:
    """The per-layer costs of the model on one training segment of seq_len tokens."""
    return transformer_xl.model_costs(self.model_kwargs, self.algebra, seq_len=self.seq_len)

  def costs(self) -> dict[str, float]:
    """Real parameters, weight-layer and all multiply-adds per token (training segment, full
    memory, training loss)."""
    report = self.cost_report()
    return {"params": int(report.total_params),
            "macs_per_token": report.macs / float(self.seq_len),
            "all_macs_per_token": report.all_macs / float(self.seq_len)}


TASKS: dict[str, type[Task]] = {
    "classification": ClassificationTask,
    "language_model": LanguageModelTask,
}


def get(name: str):
  """The task class registered under `name`."""
  return TASKS[common.check_choice(name, sorted(TASKS), "task")]


def build(config, dataset):
  """The task of `config.task.name` for the resolved config and its dataset."""
  return get(config.task.name)(config, dataset)
