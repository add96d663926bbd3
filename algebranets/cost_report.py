r"""What a model costs: the `python -m algebranets.costs` command and the cost of a config's model.

  python -m algebranets.costs --config=configs/<experiment>.py:<arg> [--config.a.b=value ...]
      [--algebras=r,c,h,...] [--load_data] [--json]
  python -m algebranets.costs --model=resnet50|cifar_resnet20|mobilenet_v1|enwik8_base|...
      [--algebras=...] [--match=none|params|macs|flops] [--image_size=S] [--seq_len=T]
      [--per_block] [--json]
  python -m algebranets.costs [--c_in=64 --c_out=64 ...]     (one dense and one conv layer)

--config: the real parameters, weight-layer multiply-adds ("macs", the paper's MACs) and all
multiply-adds ("all_macs": also attention scores and values and the logits; flops = 2 x MACs)
of exactly the model that config trains, per example (image models, one image in inference) or
per token (Transformer-XL: one training segment of data.seq_len tokens with a full memory and
the training loss, divided by its length) -- the numbers the trainer writes to the workdir's
model.json. The config is resolved as the trainer resolves it (`training.train.resolve_config`
fills in the dataset's classes or vocabulary, then `tasks.*.resolve` matches the algebra model's
width to the real one's params / MACs / FLOPs with the same search on the same counts), with
one difference: the dataset's sizes are not read from the data (`dataset_info`):

  classes      imagenet2012 1000, cifar10 10, cifar100 100 (their TFDS builders' numbers); an
               image_folder's label directories are listed (its images are not read)
  vocabulary   stdlib, byte_file and enwik8 bytes: 256; enwik8 with data.reference_tokens: 204
               (the real enwik8's distinct non-newline bytes); wikitext103: 267,735 (the real
               WikiText-103's training vocabulary)
  image size, segment length   from the config's data block (or the builder's default)

so a config pointed at other data (a debug run on a small file) may differ; --load_data builds
the dataset exactly as the trainer does (and reads or prepares its data) instead. --algebras
loads the config with each algebra in its argument's first place ("m2r,match=params" becomes
"h,match=params" for h).

--model: a registered image model (`models.MODELS`; one 224x224 image, 1000 classes, CIFAR
models 32x32 and 10) or a Transformer-XL preset (`models.TRANSFORMER_XL_PRESETS`: one segment
of mem_len tokens), per algebra, at the preset's widths (an algebra element counts as one
channel: `enwik8_base` in m2r is 4x wider in reals than the real model, 164 M parameters) or,
with --match, at the width whose params / MACs / all MACs match the real model's.

Counts come from the closed forms of `analytic_costs` (microseconds; held equal to the traced
counts by the tests), so matching takes no time; models they do not cover, and --per_block,
are traced with `costs.model_costs` (~0.3-1 s per evaluation). This module sits above the
models and the trainer; the counting it uses (`algebranets.costs`) sits below the models.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import json
import pathlib
import sys
from typing import Any, Mapping, Optional, Sequence

import jax
import ml_collections
import numpy as np

from algebranets import algebras
from algebranets import analytic_costs
from algebranets import common
from algebranets import costs
from algebranets import errors
from algebranets import models
from algebranets.models import transformer_xl
from algebranets.training import tasks as tasks_lib

__all__ = ["DatasetInfo", "ConfigCost", "dataset_info", "load_config", "apply_override",
           "resolve_model", "config_costs", "model_sizes", "model_cost_report", "main"]

# Dataset sizes known without reading the data (module docstring).
ENWIK8_REFERENCE_VOCAB = 204       # the real enwik8's distinct non-newline bytes
WIKITEXT103_VOCAB = 267_735        # the real WikiText-103's training vocabulary (with <eos>)
_BYTE_CORPORA = ("stdlib", "byte_file", "enwik8")
_TFDS_IMAGES = {  # name -> (classes, training examples, default image size)
    "imagenet2012": (1000, 1_281_167, 224),
    "cifar10": (10, 50_000, 32),
    "cifar100": (100, 50_000, 32),
}
_TEXT_SEQ_LEN = {"stdlib": 512, "byte_file": 512, "enwik8": 512, "wikitext103": 150}


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What the model's size depends on, as the dataset would say it (no data read).

  Has the attributes the tasks read from a dataset (`tasks.*.resolve` and constructors).
  """
  name: str
  description: str
  num_classes: Optional[int] = None
  image_size: Optional[int] = None
  train_examples: Optional[int] = None
  vocab_size: Optional[int] = None
  seq_len: Optional[int] = None
  eval_seq_len: Optional[int] = None
  vocab: Optional[Sequence[str]] = None


def _data_kwargs(config) -> tuple[str, dict[str, Any]]:
  kwargs = {k: v for k, v in config.data.to_dict().items() if v != ""}
  return kwargs.pop("name"), kwargs


def _from_dataset(dataset, description: str) -> DatasetInfo:
  if hasattr(dataset, "num_classes"):
    return DatasetInfo(dataset.name, description, num_classes=int(dataset.num_classes),
                       image_size=int(dataset.image_size),
                       train_examples=int(dataset.num_examples(dataset.train_split)))
  return DatasetInfo(dataset.name, description, vocab_size=int(dataset.vocab_size),
                     seq_len=int(dataset.seq_len), eval_seq_len=int(dataset.eval_seq_len),
                     vocab=dataset.vocab)


def dataset_info(config, load_data: bool = False) -> DatasetInfo:
  """The dataset sizes a config's model depends on (see the module docstring).

  Args:
    config: an experiment config (its `data` block).
    load_data: build the dataset as the trainer does (reads, or prepares, the data).
  """
  name, kwargs = _data_kwargs(config)
  if load_data or name == "image_folder":
    # Imported here: the trainer (orbax, the input pipelines) is needed only to build data.
    from algebranets.training import train  # pylint: disable=g-import-not-at-top
    try:
      dataset = train.build_dataset(config)
    except FileNotFoundError as e:
      why = ("its label directories give the number of classes" if name == "image_folder"
             else "--load_data reads the data")
      raise FileNotFoundError(f"{e} ({why}: set the config's data path to where the data is)"
                              ) from e
    return _from_dataset(dataset, f"{dataset.description} (read)")
  if name in _TFDS_IMAGES:
    classes, examples, default_size = _TFDS_IMAGES[name]
    size = int(kwargs.get("image_size", default_size))
    return DatasetInfo(name, f"{name}: {classes} classes, {examples:,} training images, "
                             f"{size}x{size} (known sizes; data not read)",
                       num_classes=classes, image_size=size, train_examples=examples)
  if name in _BYTE_CORPORA or name == "wikitext103":
    seq_len = int(kwargs.get("seq_len", _TEXT_SEQ_LEN[name]))
    eval_seq_len = int(kwargs.get("eval_seq_len") or seq_len)
    if name == "wikitext103":
      vocab, what = WIKITEXT103_VOCAB, "words of the real WikiText-103"
    elif name == "enwik8" and kwargs.get("reference_tokens"):
      vocab, what = ENWIK8_REFERENCE_VOCAB, "reference tokens of the real enwik8"
    else:
      vocab, what = 256, "bytes"
    return DatasetInfo(name, f"{name}: vocabulary {vocab:,} ({what}; data not read, "
                             "--load_data reads it)",
                       vocab_size=vocab, seq_len=seq_len, eval_seq_len=eval_seq_len)
  raise ValueError(f"no known sizes for dataset {name!r}; known: "
                   f"{sorted(set(_TFDS_IMAGES) | set(_TEXT_SEQ_LEN) | {'image_folder'})} "
                   "(--load_data builds any dataset)")


# ----------------------------------------------------------------------------- configs
def load_config(spec: str) -> ml_collections.ConfigDict:
  """get_config(arg) of 'configs/<experiment>.py[:arg]', loaded as the training CLI loads it."""
  path, _, arg = spec.partition(":")
  if not pathlib.Path(path).is_file():
    raise FileNotFoundError(f"--config={spec}: no config file {path}")
  module_spec = importlib.util.spec_from_file_location("_algebranets_cost_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def with_algebra(spec: str, algebra: str) -> str:
  """The config spec with `algebra` first in its argument ('f.py:m2r,debug' -> 'f.py:h,debug')."""
  path, _, arg = spec.partition(":")
  rest = arg.split(",", 1)[1] if "," in arg else ""
  return f"{path}:{algebra}" + (f",{rest}" if rest else "")


def _parse_value(text: str, current):
  """`text` as the type of the field's current value (literal syntax for tuples and None)."""
  if isinstance(current, bool):
    if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
      raise ValueError(f"expected a boolean (true/false), got {text!r}")
    return text.lower() in ("true", "1", "yes")
  if isinstance(current, int):
    return int(text)
  if isinstance(current, float):
    return float(text)
  if isinstance(current, str):
    return text
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


def apply_override(config, dotted: str, value) -> None:
  """config.<dotted> = value (a string is parsed as the field's type); ValueError naming the
  valid keys for an unknown field."""
  node, keys = config, dotted.split(".")
  for i, key in enumerate(keys):
    valid = sorted(node.keys()) if hasattr(node, "keys") else []
    if key not in valid:
      where = "config" + "".join(f".{k}" for k in keys[:i])
      raise ValueError(f"--config.{dotted}: {where} has no key {key!r}; valid keys: {valid}")
    if i < len(keys) - 1:
      node = node[key]
  current = node[keys[-1]]
  if isinstance(value, str):
    try:
      value = _parse_value(value, current)
    except ValueError as e:
      raise ValueError(f"--config.{dotted}={value}: {e}") from e
  node[keys[-1]] = value


def resolve_model(config, info: DatasetInfo) -> None:
  """Fills in the dataset's sizes and the matched width, in place, as the trainer's task does.

  `tasks.ClassificationTask.resolve` / `tasks.LanguageModelTask.resolve` with the closed-form
  counts of `analytic_costs` (the same search on the same sizes, so the same widths; traced
  where they do not cover the model).
  """
  task = tasks_lib.get(config.task.name)
  match = config.get("match", "none")
  plain = algebras.get(config.algebra).dim == 1
  if task is tasks_lib.ClassificationTask:
    config.model.num_classes = int(info.num_classes)
    common.check_choice(match, tasks_lib.MATCH_KINDS, "match")
    if match == "none" or plain:
      return
    kwargs = config.model.to_dict()
    width = kwargs.pop("width", 1.0)
    kwargs.pop("num_classes")
    result = analytic_costs.match_image_model(
        config.model_name, config.algebra, match=match, reference_width=width,
        image_size=int(info.image_size), num_classes=int(info.num_classes),
        tolerance=float(config.get("match_tolerance", 0.02)), **kwargs)
    config.model.width = float(result.width)
  elif task is tasks_lib.LanguageModelTask:
    config.model.vocab_size = int(info.vocab_size)
    common.check_choice(match, tasks_lib.LM_MATCH_KINDS, "match")
    if match == "none" or plain:
      return
    matched = analytic_costs.matched_config(config.model.to_dict(), config.algebra, match,
                                            seq_len=int(info.seq_len))
    for key in ("d_model", "d_inner", "d_head", "d_embed"):
      if key in matched and matched[key] is not None:
        config.model[key] = int(matched[key])
  else:
    raise ValueError(f"no cost report for task {config.task.name!r}")


@dataclasses.dataclass(frozen=True)
class ConfigCost:
  """The cost of the model a config trains.

  Attributes:
    config: the config with the model resolved (sizes, matched width) as the trainer would.
    info: the dataset sizes used.
    unit: "example" (an image, inference) or "token" (a training segment / its length).
    sizes: the model's counts for one image or one training segment (`analytic_costs.Sizes`).
    size: the resolved width, in words.
    traced: the counts were traced (not covered by the closed forms).
  """
  config: Any
  info: DatasetInfo
  unit: str
  sizes: analytic_costs.Sizes
  size: str
  traced: bool

  def per_unit(self) -> dict[str, Any]:
    """The trainer's model.json numbers: params, (all_/fast_)macs_per_<unit>."""
    s, unit = self.sizes, self.unit
    if unit == "example":
      return {"params": s.params, "macs_per_example": s.macs,
              "all_macs_per_example": s.all_macs, "fast_macs_per_example": s.fast_macs}
    t = float(self.info.seq_len)
    return {"params": s.params, "macs_per_token": s.macs / t, "all_macs_per_token": s.all_macs / t,
            "fast_macs_per_token": s.fast_macs / t}

  def to_dict(self) -> dict[str, Any]:
    return dict(algebra=self.config.algebra, match=self.config.get("match", "none"),
                size=self.size, **self.per_unit(), model_name=self.config.model_name,
                model=self.config.model.to_dict(),
                data=self.info.description, traced=self.traced)


def config_costs(config, *, info: Optional[DatasetInfo] = None,
                 load_data: bool = False) -> ConfigCost:
  """The cost of the model `config` trains (see the module docstring); `config` is not changed."""
  config = ml_collections.ConfigDict(config.to_dict())
  info = info or dataset_info(config, load_data)
  resolve_model(config, info)
  kwargs = config.model.to_dict()
  if config.task.name == "classification":
    unit = "example"
    kwargs.pop("num_classes")
    sizes = analytic_costs.image_model(config.model_name, algebra=config.algebra,
                                       num_classes=int(info.num_classes),
                                       image_size=int(info.image_size), **kwargs)
    size = f"width {float(config.model.get('width', 1.0)):.4g}"
  else:
    unit = "token"
    sizes = analytic_costs.transformer_xl_model(kwargs, config.algebra,
                                                seq_len=int(info.seq_len))
    m = config.model
    size = f"d_model {m.d_model}, d_head {m.d_head}, d_inner {m.d_inner}"
  traced = sizes is None
  if traced:
    sizes = analytic_costs.Sizes.of(tasks_lib.build(config, info).cost_report())
  return ConfigCost(config, info, unit, sizes, size, traced)


# ----------------------------------------------------------------------------- models
def _model_defaults(model: str, image_size: Optional[int]) -> tuple[int, int]:
  if model not in models.MODELS:
    raise ValueError(f"Unknown model {model!r}; valid: "
                     f"{', '.join(sorted(models.MODELS) + sorted(transformer_xl.PRESETS))}.")
  cifar = model.startswith("cifar")
  return (10, image_size or 32) if cifar else (1000, image_size or 224)


def _preset(model: str, alg, match: str, seq_len: Optional[int], tolerance: float):
  preset = transformer_xl.PRESETS[model]
  matched = match != "none" and alg.dim != 1
  config = (analytic_costs.matched_config(preset, alg, match, tol=tolerance) if matched else
            dict(preset))
  return config, seq_len or config["mem_len"]


def model_sizes(model: str, algebra, match: str = "none", image_size: Optional[int] = None,
                seq_len: Optional[int] = None, tolerance: float = 0.02
                ) -> tuple[analytic_costs.Sizes, str]:
  """(counts, size in words) of a registered model in `algebra`; with `match` ("params",
  "macs" or "flops") at the size that matches the real model's.

  Image models: one image, inference. Transformer-XL presets: one training segment of
  `seq_len` tokens (default mem_len) with a full memory and the training loss. `tolerance`:
  the largest accepted |size / real size - 1| of a match.
  """
  alg = algebras.get(algebra)
  if model in transformer_xl.PRESETS:
    config, seq_len = _preset(model, alg, match, seq_len, tolerance)
    size = f"d_model {config['d_model']}, d_head {config['d_head']}, d_inner {config['d_inner']}"
    sizes = analytic_costs.transformer_xl_model(config, alg, seq_len=seq_len)
    if sizes is None:
      sizes = analytic_costs.Sizes.of(transformer_xl.model_costs(config, alg, seq_len=seq_len))
    return sizes, size
  num_classes, image_size = _model_defaults(model, image_size)
  width = 1.0
  if match != "none" and alg.dim != 1:
    width = analytic_costs.match_image_model(model, alg, match=match, image_size=image_size,
                                             num_classes=num_classes, tolerance=tolerance).width
  sizes = analytic_costs.image_model(model, algebra=alg, num_classes=num_classes,
                                     image_size=image_size, width=width)
  if sizes is None:
    sizes = analytic_costs.Sizes.of(_traced_image_model(model, alg, num_classes, image_size,
                                                        width))
  return sizes, f"width {width:.4g}"


def _traced_image_model(model, alg, num_classes, image_size, width) -> costs.ModelCost:
  ctor = models.MODELS[model]
  fn = lambda x: ctor(num_classes=num_classes, algebra=alg, width=width)(x, is_training=False)
  return costs.model_costs(fn, jax.ShapeDtypeStruct((1, image_size, image_size, 3), np.float32))


def model_cost_report(model: str, algebra, match: str = "none",
                      image_size: Optional[int] = None, seq_len: Optional[int] = None,
                      tolerance: float = 0.02) -> tuple[costs.ModelCost, str]:
  """`model_sizes` as a traced per-layer `costs.ModelCost` (for --per_block tables)."""
  alg = algebras.get(algebra)
  if model in transformer_xl.PRESETS:
    config, seq_len = _preset(model, alg, match, seq_len, tolerance)
    size = f"d_model {config['d_model']}, d_head {config['d_head']}, d_inner {config['d_inner']}"
    return transformer_xl.model_costs(config, alg, seq_len=seq_len), size
  num_classes, image_size = _model_defaults(model, image_size)
  width = 1.0
  if match != "none" and alg.dim != 1:
    width = analytic_costs.match_image_model(model, alg, match=match, image_size=image_size,
                                             num_classes=num_classes, tolerance=tolerance).width
  return _traced_image_model(model, alg, num_classes, image_size, width), f"width {width:.4g}"


# ----------------------------------------------------------------------------- command line
def _fmt(v):
  if isinstance(v, bool):
    return str(v).lower()
  if isinstance(v, int):
    return f"{v:,}"
  if isinstance(v, float):
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.4g}"
  return str(v)


def _table(rows: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> str:
  return common.markdown(list(keys), [[_fmt(r[k]) for k in keys] for r in rows])


def _config_command(flags, overrides: Sequence[tuple[str, str]]) -> int:
  base = load_config(flags.config)
  names = flags.algebras.split(",") if flags.algebras else [base.algebra]
  results = []
  for name in names:
    name = algebras.get(name.strip()).name
    spec = with_algebra(flags.config, name)
    config = load_config(spec) if name != base.algebra else base
    for dotted, value in overrides:
      apply_override(config, dotted, value)
    results.append(config_costs(config, load_data=flags.load_data))
    if results[-1].traced:
      print(f"(algebra {name}: counted by tracing the model; the closed forms do not cover it)",
            file=sys.stderr, flush=True)
  first = results[0]
  unit = first.unit
  if flags.json:
    print(json.dumps({"config": flags.config, "overrides": dict(overrides),
                      "experiment": first.config.experiment, "unit": unit,
                      "data": first.info.description,
                      "rows": [r.to_dict() for r in results]}, indent=1))
    return 0
  what = ("one image, inference" if unit == "example" else
          f"one training segment of {first.info.seq_len} tokens with a full memory and the "
          "training loss, per token")
  print(f"{flags.config} ({first.config.experiment}): the model the trainer builds, "
        f"match={first.config.get('match', 'none')}; per {unit} ({what}).\n"
        f"data: {first.info.description}\n")
  keys = ["algebra", "size", "params", f"macs_per_{unit}", f"all_macs_per_{unit}",
          f"fast_macs_per_{unit}"]
  print(_table([r.to_dict() for r in results], keys))
  print("\nmacs: weight layers (naive algebra products); all_macs: every multiply-add of the "
        "forward pass (flops = 2 x MACs); fast: Gauss-type products (algebranets.costs)")
  return 0


def _model_command(flags) -> int:
  names = (flags.algebras or ",".join(algebras.names())).split(",")
  rows, blocks = [], {}
  for name in names:
    alg = algebras.get(name.strip())
    if flags.per_block:
      report, size = model_cost_report(flags.model, alg, flags.match, flags.image_size,
                                       flags.seq_len, flags.tolerance)
      sizes = analytic_costs.Sizes.of(report)
      blocks[alg.name] = costs.block_costs(report)
    else:
      sizes, size = model_sizes(flags.model, alg, flags.match, flags.image_size, flags.seq_len,
                                flags.tolerance)
    rows.append({"algebra": alg.name, "size": size, "params": sizes.params, "macs": sizes.macs,
                 "all_macs": sizes.all_macs, "fast_macs": sizes.fast_macs})
  if flags.json:
    print(json.dumps({"model": flags.model, "match": flags.match, "rows": rows,
                      "blocks": blocks if flags.per_block else None}, indent=1))
    return 0
  print(f"{flags.model}, match={flags.match} (per image, or per training segment of "
        f"seq_len tokens for Transformer-XL; macs: weight layers, naive products; all_macs: "
        f"every multiply-add of the forward pass, flops = 2 x all_macs; see "
        f"algebranets.costs)\n")
  print(_table(rows, list(rows[0])))
  for name, bl in blocks.items():
    print(f"\n{name}:\n" + _table(bl, list(bl[0])))
  return 0


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog="python -m algebranets.costs",
      description="Real parameters and multiply-adds: of the model a config trains (--config), "
                  "of a registered model per algebra (--model), or of one dense and one conv "
                  "layer per algebra.",
      epilog="--config.a.b=value overrides a field of the --config config, as for "
             "python -m algebranets.train.")
  parser.add_argument("--config", default=None,
                      help="configs/<experiment>.py:<algebra>[,debug][,key=value...]")
  parser.add_argument("--load_data", action="store_true",
                      help="--config: build the dataset (read the data) for its sizes instead "
                           "of the known sizes of the named dataset")
  parser.add_argument("--model", default=None,
                      help="a registered model (models.MODELS, e.g. resnet50, cifar_resnet20, "
                           "mobilenet_v1) or a Transformer-XL preset (enwik8_base, wt103_base)")
  parser.add_argument("--algebras", default=None,
                      help="comma-separated algebras (default: the config's algebra; all "
                           "registered ones for --model and the layer table)")
  parser.add_argument("--match", default="none", choices=("none", "params", "macs", "flops"),
                      help="--model: size each algebra's model to match the real one (flops: "
                           "all multiply-adds, weight layers and other contractions)")
  parser.add_argument("--tolerance", type=float, default=0.02,
                      help="--model --match: the largest accepted |size / real size - 1| "
                           "(small models cannot always get within 2%%)")
  parser.add_argument("--image_size", type=int, default=None)
  parser.add_argument("--seq_len", type=int, default=None, help="Transformer-XL segment length")
  parser.add_argument("--per_block", action="store_true",
                      help="--model: also per-block costs (traces the model)")
  parser.add_argument("--c_in", type=int, default=64, help="input channels")
  parser.add_argument("--c_out", type=int, default=64, help="output channels")
  parser.add_argument("--batch", type=int, default=1, help="batch size (dense positions)")
  parser.add_argument("--spatial", type=int, default=8, help="conv output height = width")
  parser.add_argument("--kernel", type=int, default=3, help="conv kernel height = width")
  parser.add_argument("--with_bias", action=argparse.BooleanOptionalAction, default=True)
  parser.add_argument("--real_width", action="store_true",
                      help="c_in/c_out count real components (each algebra gets c // D)")
  parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
  parser.add_argument("--verbose", action="store_true",
                      help="print the traceback of an error too")
  return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command line (module docstring); raises ValueError / FileNotFoundError on bad input."""
  parser = _parser()
  flags, rest = parser.parse_known_args(argv)
  overrides = []
  for arg in rest:
    if not (flags.config and arg.startswith("--config.") and "=" in arg):
      parser.error(f"unrecognized argument {arg!r}" + (
          "" if flags.config else " (--config.a.b=value needs --config)"))
    dotted, value = arg[len("--config."):].split("=", 1)
    overrides.append((dotted, value))
  if flags.config and flags.model:
    parser.error("give --config or --model, not both")
  for name in ("c_in", "c_out", "batch", "spatial", "kernel"):
    if vars(flags)[name] < 1:
      parser.error(f"--{name} must be a positive integer, got {vars(flags)[name]}.")
  if flags.config:
    return _config_command(flags, overrides)
  if flags.model:
    return _model_command(flags)
  names = flags.algebras.split(",") if flags.algebras else None
  rows = costs.algebra_table(flags.c_in, flags.c_out, flags.batch, flags.spatial, flags.kernel,
                             flags.with_bias, flags.real_width, names=names)
  if flags.json:
    print(json.dumps(rows, indent=1))
    return 0
  print(_table(rows, list(rows[0])))
  return 0


if __name__ == "__main__":
  sys.exit(errors.run_cli(main, sys.argv[1:]))
