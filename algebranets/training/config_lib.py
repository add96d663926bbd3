"""What every experiment config shares: the argument syntax and the blocks the trainer reads.

An experiment is one file `configs/<experiment>.py` with `get_config(arg)`; the CLI loads it as
`--config=configs/<experiment>.py:<arg>` and `--config.a.b=value` overrides any field. The
argument is

    <algebra>[,debug][,match=none|params|macs|flops][,width=W][,<key>=<value>...]

  algebra   a registered algebra name (algebras.names(): r, c, h, m2r, ...) or a member of a
            family (algebras.FAMILIES: cl_1_1, cl_0_0_1, learned:4, learned:h:network, ...);
            first, required
  debug     the CPU-sized variant: a tiny model and a few steps, for smoke tests
  match     size the algebra model like the real model of the config: "params" (equal real
            parameters), "macs" (equal multiply-adds of the weight layers) or "flops" (equal
            multiply-adds of the whole forward pass: also attention scores and values and the
            logits, see algebranets.costs); "none" (default) keeps the config's width. Image
            models change their width; Transformer-XL its d_model/d_inner/d_head ("width"
            there: the real activation width of the reference; LM_MATCH_KINDS)
  width     width multiplier of an image model (before matching: the reference's width)
  folder    image experiments: train on the image folder PATH/<split>/<label>/*.jpg|png
            (split "train", the other splits evaluated) instead of the TFDS dataset
  others    per experiment (e.g. `depth=56` for CIFAR ResNets), listed in its docstring

Unknown algebras, flags and keys raise ValueError naming the valid choices.

The blocks (`base_config`), read by `training.train` and nowhere else:

  experiment, algebra, match, match_tolerance, seed
  task       name (a key of training.tasks.TASKS) + the task's options
  model_name the model's key in the registry (models.MODELS / tasks.LM_MODELS)
  model      the model's constructor arguments, nothing else: the task builds
             MODELS[model_name](algebra=..., **model)
  data       name (data.DATASETS) + the dataset builder's keyword arguments ("" = the
             builder's default, e.g. data_dir="" lets TFDS use ~/tensorflow_datasets)
  train      batch_size (global), num_steps or num_epochs, log_every, eval_every (0: at the
             end only), checkpoint_every, preempt_at_step (testing: act as if SIGTERM came
             after that step), partitionable_rng, and the batch's split on the devices:
             microbatches       k: gradient accumulation inside the jitted step; the batch
                                is computed as k micro-batches (rows j, j+k, ... of every
                                device's rows) and one optimiser update follows. Loss,
                                gradients and metrics are those of the whole batch (the mean
                                over all its examples/tokens) and the memory is one
                                micro-batch's; Transformer-XL memories stay with their rows.
                                Batch norm uses each micro-batch's statistics (like per-device
                                statistics) and updates its running averages once per step
                                with their mean over the micro-batches. Dropout masks differ
                                from the k = 1 run's (micro-batch j draws from fold_in(step
                                key, j)). See training.step.make_train_step.
             device_batch_size  instead of microbatches (0: unused): the most rows a device
                                computes at once; k is derived (the fewest micro-batches that
                                fit), so one config fits any device count.
             A language-model batch that does not split over devices x micro-batches (60 on 8
             devices) is padded, per host, with zero-weight rows (exactly the loss of the real
             rows; a checkpoint then resumes on the same devices and k). Classification pads
             nothing (padding rows would enter the batch-norm statistics): batch_size must be
             a multiple of devices x k, and the error says which values fit.
  eval       batch_size (global; any value: each host pads its rows with masked ones), splits
             (evaluated during training, () for all of the dataset's; --mode=eval does every
             split of the dataset), checkpoint ("latest" or "best", for --mode=eval)
  optimizer  see training.optim (name, lr, lr_batch_scale, schedule, warmup_steps or
             warmup_epochs, weight decay by name patterns, grad_clip_norm, ...)
  checkpoint keep (the latest K), keep_best, best_metric ("<split>/<metric>",
             default the task's main metric on the first eval split), best_mode, async_save
  mixed_precision  compute_dtype: "float32" or "bfloat16" (parameters stay float32)
  sparsity   magnitude pruning during training (algebranets.sparsity; off while target is 0):
             target       final sparsity s_f in [0, 1): the fraction of pruned units
             kind         "element" (whole algebra elements; plain unstructured for r),
                          "unstructured" (every real component), "block" (real networks: a
                          block of one algebra element's size in the [Cin, Cout] weight)
             block        block shape of kind "block": "1xd", "dx1" or "nxn" ...
             block_algebra   ... with d (n = sqrt d) the element size of this algebra (m2r:
                          1x4, 4x1, 2x2)
             schedule     "gradual" (Zhu & Gupta: s_t = s_f + (s_i - s_f)(1 - (t-t0)/(t1-t0))^3)
                          or "one_shot" (all of s_f at the begin step)
             initial      s_i, the sparsity of the first gradual step
             begin_fraction, end_fraction   t0, t1 as fractions of train.num_steps ...
             begin_step, end_step           ... or as steps (used when > 0)
             frequency    steps between mask updates (gradual)
             scope        "layer" (uniform: each pruned weight exactly s_t), "global" (one
                          threshold over all pruned weights) or "erk" (Erdős-Rényi-Kernel
                          allocation over the element grid of each weight, algebra axis left out)
             nm           "N:M" (e.g. "2:4"): keep N of every M consecutive elements along Cin
                          (kind "element", scope "layer"; target 0 or 1 - N/M); "" off
             norm         unit score: "l2", "l1" or "linf" of its components
             include, exclude   regexes on the parameter path "module/.../name" ("" include:
                          the default rule, conv and linear weights without the stem conv,
                          classifier, Transformer-XL embedding/softmax and depthwise convs)
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Optional, Sequence

import ml_collections

from algebranets import algebras
from algebranets import common
from algebranets.training import optim

MODES = ("train", "eval", "train_and_eval")
COMPUTE_DTYPES = ("float32", "bfloat16")


def _bool(v: str) -> bool:
  if v.lower() in ("1", "true", "yes"):
    return True
  if v.lower() in ("0", "false", "no"):
    return False
  raise ValueError(f"expected a boolean (true/false), got {v!r}")


COMMON_KEYS: dict[str, Callable[[str], Any]] = {"match": str, "width": float}
# Accepted values of `match` (training.tasks checks them again when it sizes the model).
MATCH_KINDS = ("none", "params", "macs", "flops")
LM_MATCH_KINDS = MATCH_KINDS + ("width",)
# Image experiments also take folder=PATH: train on an image folder PATH/<split>/<label>/*.jpg
# (split "train"; every other split directory is evaluated) instead of the TFDS dataset.
IMAGE_KEYS: dict[str, Callable[[str], Any]] = {"folder": str}


def image_data(args: Mapping[str, Any], *, tfds_name: str, tfds_eval_split: str,
               image_size: int, recipe: str, **tfds_kwargs) -> tuple:
  """(config.data, config.eval.splits) of an image experiment: TFDS, or args["folder"].

  An image folder's eval splits are its directories other than "train" (eval.splits () means
  every eval split of the dataset).
  """
  if args.get("folder"):
    return dict(name="image_folder", root=args["folder"], image_size=image_size,
                recipe=recipe, skip_corrupt=False,  # True: leave undecodable images out
                **{k: v for k, v in tfds_kwargs.items() if k in ("mean", "std")}), ()
  return dict(name=tfds_name, data_dir="", image_size=image_size, recipe=recipe,
              **tfds_kwargs), (tfds_eval_split,)


def parse_arg(arg: Optional[str], *, keys: Optional[Mapping[str, Callable[[str], Any]]] = None,
              match_kinds: Sequence[str] = MATCH_KINDS,
              defaults: Optional[Mapping[str, Any]] = None) -> dict[str, Any]:
  """Parses '<algebra>[,debug][,key=value...]' (see the module docstring).

  Args:
    arg: the text after ':' in --config=file.py:<arg>.
    keys: extra key -> converter accepted by this experiment (besides match and width).
    match_kinds: accepted values of match.
    defaults: values of keys that are not given.

  Returns:
    {"algebra": name, "debug": bool, "match": str, **keys given or defaulted}.
  """
  allowed = dict(COMMON_KEYS, **(keys or {}))
  parts = [p.strip() for p in (arg or "").split(",")]
  if not parts[0]:
    raise ValueError("the config argument must start with an algebra, e.g. "
                     f"--config=configs/<experiment>.py:m2r; algebras: {list(algebras.names())}")
  out: dict[str, Any] = {"match": "none", **(defaults or {})}
  out["algebra"] = algebras.get(parts[0]).name  # ValueError naming the algebras
  out["debug"] = False
  for part in parts[1:]:
    if part == "debug":
      out["debug"] = True
      continue
    if "=" not in part:
      raise ValueError(f"unknown config argument {part!r}: expected 'debug' or key=value with "
                       f"key in {sorted(allowed)}")
    key, value = (s.strip() for s in part.split("=", 1))
    if key not in allowed:
      raise ValueError(f"unknown config argument key {key!r}; valid keys: {sorted(allowed)} "
                       "(and the flag 'debug')")
    try:
      out[key] = allowed[key](value)
    except ValueError as e:
      raise ValueError(f"bad value for config argument {key}={value!r}: {e}") from e
  common.check_choice(out["match"], match_kinds, "match")
  return out


def base_config(*, experiment: str, args: Mapping[str, Any], task: Mapping[str, Any],
                model_name: str, model: Mapping[str, Any], data: Mapping[str, Any]
                ) -> ml_collections.ConfigDict:
  """Every block with its defaults; experiments then set what their recipe says."""
  if "name" in model:  # it would reach the constructor as the Haiku module name
    raise ValueError(f"model holds the constructor arguments only; pass the registry key as "
                     f"model_name={model['name']!r}, not model['name']")
  c = ml_collections.ConfigDict()
  c.experiment = experiment
  c.algebra = args["algebra"]
  c.match = args.get("match", "none")
  # Largest accepted |size / reference - 1| of a matched image model (small CIFAR ResNets cannot
  # always get within 2%: one channel of a 16-channel stage is worth more).
  c.match_tolerance = 0.02
  c.seed = 0
  c.task = ml_collections.ConfigDict(dict(task))
  c.model_name = model_name
  c.model = ml_collections.ConfigDict(dict(model))
  c.data = ml_collections.ConfigDict(dict(data))
  c.train = ml_collections.ConfigDict(dict(
      batch_size=256, num_steps=0, num_epochs=0.0, log_every=100, eval_every=0,
      checkpoint_every=1000, preempt_at_step=0, partitionable_rng=True, microbatches=1,
      device_batch_size=0))
  c.eval = ml_collections.ConfigDict(dict(batch_size=256, splits=("valid",),
                                          checkpoint="latest"))
  c.optimizer = ml_collections.ConfigDict(dict(optim.DEFAULTS))
  c.checkpoint = ml_collections.ConfigDict(dict(
      keep=3, keep_best=1, best_metric="", best_mode="", async_save=True))
  c.mixed_precision = ml_collections.ConfigDict(dict(compute_dtype="float32"))
  c.sparsity = ml_collections.ConfigDict(dict(
      target=0.0, kind="element", block="1xd", block_algebra="m2r", schedule="gradual",
      initial=0.0, begin_fraction=0.1, end_fraction=0.6, begin_step=0, end_step=0,
      frequency=100, scope="layer", norm="l2", include="", exclude="", nm=""))
  return c


def validate(config) -> None:
  """ValueError naming the first field of `config` whose value no run accepts, before any data
  is read or model built (what depends on the data is checked by `train.resolve_config`)."""
  from algebranets import algebras  # pylint: disable=g-import-not-at-top
  algebras.get(config.algebra)
  common.check_choice(config.mixed_precision.compute_dtype, COMPUTE_DTYPES,
                      "mixed_precision.compute_dtype")
  common.check_choice(config.eval.checkpoint, ("latest", "best"), "eval.checkpoint")
  if config.checkpoint.best_mode:
    common.check_choice(config.checkpoint.best_mode, ("min", "max"), "checkpoint.best_mode")
  for field, value, low in (("train.batch_size", config.train.batch_size, 1),
                            ("eval.batch_size", config.eval.batch_size, 1),
                            ("train.log_every", config.train.log_every, 1),
                            ("train.eval_every", config.train.eval_every, 0),
                            ("train.checkpoint_every", config.train.checkpoint_every, 1),
                            ("train.microbatches", config.train.microbatches, 1),
                            ("train.device_batch_size", config.train.device_batch_size, 0),
                            ("checkpoint.keep", config.checkpoint.keep, 1),
                            ("checkpoint.keep_best", config.checkpoint.keep_best, 0)):
    if int(value) != value or value < low:
      raise ValueError(f"{field}={value!r} must be an integer >= {low}")
  if config.train.num_steps <= 0 and config.train.num_epochs <= 0:
    raise ValueError("set train.num_steps or train.num_epochs (> 0)")
