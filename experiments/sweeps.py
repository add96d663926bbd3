r"""The paper's comparisons as data: sweeps of training runs, by name.

  python -m experiments.sweeps                     (every sweep: its runs and the data it needs)
  python -m experiments.sweeps --sweep=cifar10_small
  python -m experiments.sweeps --estimate          (compute per run from MACs, see `estimate`;
                                                    the paper sweeps, or --sweep=NAME)

A `Sweep` is a list of `Run`s plus what its runs need from the user: data paths (`data`, named
placeholders such as "{cifar10}" that runs use in their config argument or overrides and that
`python -m experiments.launch --data=cifar10=DIR` fills in) and the metric its table reports.
A `Run` is one `python -m algebranets.train` invocation: a config file, its argument
("m2r,match=params") and `--config.*` overrides ({"sparsity.target": 0.9}). Its name, the
workdir's name under the sweep's root, is derived from the settings that differ between runs
(algebra, the argument's keys, sparsity, an optional variant label), e.g.
"m2r_match-params_sparsity-0.9".

SWEEPS (name -> Sweep):
  imagenet_resnet50, imagenet_mobilenet_v1    the paper's ImageNet families: every algebra the
      paper trains (r, c, h, m2r, m2c, m3r, m4r, dual) x match in {params, macs}, dense, then
      r and m2r at 50%, 75% and 90% element sparsity (equal params only). Full recipes
      (90 / 120 epochs): one accelerator slice per run. Equal compute is match=macs: in these
      networks every multiply-add is in a weight layer, so it equals match=flops.
  enwik8_transformer_xl, wikitext103_transformer_xl    the same grid for Transformer-XL base
      (cross3 included: it has no identity element, which only image models' lifts need), the
      equal-compute arm at match=flops: all multiply-adds of a training segment, attention
      scores and values and the (adaptive) softmax logits included, which weight-layer MACs
      leave out (algebranets.costs).
  cifar10_small, cifar10_small_sparse    real small runs for 2 CPU cores: ResNet-20 at width 0.5
      on a 10,000-image subset of CIFAR-10, every algebra at equal params, the whitening-BN and
      polar-init variants of c and h; then r and m2r at 90% sparsity (a separate sweep, run last).
  char_lm_small    real small runs: configs/char_transformer_xl.py on a text file, every
      algebra at equal params.
  char_lm_seeds    char_lm_small's runs for r, c, h, m2r, m4r, the Clifford algebra Cl(0,2) and a
      learned 4-component algebra, 3 seeds each (`--config.seed`, in the run names): the
      collector reports mean ± std over seeds and marks differences within noise.
  debug_image, debug_lm    tiny sweeps (2 algebras x 2 sizes) of the debug configs, for tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import re
from typing import Any, Mapping, Optional, Sequence

from algebranets import common
from algebranets import errors

ROOT = pathlib.Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"

# Config-argument keys that say where data is or are shared by a whole sweep: not in run names.
_UNNAMED_KEYS = ("folder", "path", "preset", "steps")
# Sparsity overrides (config.sparsity, algebranets.sparsity) and how a run's name shows them.
SPARSITY_TARGET = "sparsity.target"

PAPER_ALGEBRAS = ("r", "c", "h", "m2r", "m2c", "m3r", "m4r", "dual")
LM_ALGEBRAS = PAPER_ALGEBRAS + ("cross3",)
MATCHES = ("params", "macs")        # image sweeps: equal params, equal (weight-layer = all) MACs
LM_MATCHES = ("params", "flops")    # Transformer-XL: equal params, equal all multiply-adds
SPARSITIES = (0.5, 0.75, 0.9)
SPARSE_ALGEBRAS = ("r", "m2r")


@dataclasses.dataclass(frozen=True)
class Run:
  """One training run: `python -m algebranets.train --config=<config>:<arg> --config.k=v ...`.

  Attributes:
    config: the config file, relative to the repository root ("configs/cifar10_resnet.py").
    arg: the config argument, algebra first ("m2r,match=params,folder={cifar10}"); "{name}"
      placeholders are the sweep's data paths.
    overrides: dotted config key -> value, passed as --config.<key>=<value>.
    variant: an extra label for the run's name (when the settings alone do not tell runs apart).
  """
  config: str
  arg: str
  overrides: tuple[tuple[str, Any], ...] = ()
  variant: str = ""

  @property
  def algebra(self) -> str:
    return self.arg.split(",")[0].strip()

  @property
  def arg_keys(self) -> dict[str, str]:
    """The argument's key=value pairs ("debug" as debug=true), in order."""
    out = {}
    for part in self.arg.split(",")[1:]:
      key, _, value = part.strip().partition("=")
      out[key] = value if value else "true"
    return out

  @property
  def sparsity(self) -> float:
    return float(dict(self.overrides).get(SPARSITY_TARGET, 0.0))

  @property
  def name(self) -> str:
    """The workdir name: algebra, argument keys (not data paths), sparsity, variant."""
    parts = [self.algebra]
    parts += [f"{k}-{v}" for k, v in self.arg_keys.items()
              if k not in _UNNAMED_KEYS and k != "debug"]
    if self.sparsity:
      parts.append(f"sparsity-{self.sparsity:g}")
    if self.variant:
      parts.append(self.variant)
    return re.sub(r"[^A-Za-z0-9._-]", "_", "_".join(parts))

  def command(self, workdir, data: Optional[Mapping[str, str]] = None,
              python: str = "python") -> list:
    """The argv of this run (data placeholders filled in from `data`)."""
    data = dict(data or {})
    fill = lambda text: str(text).format(**data)
    argv = [python, "-m", "algebranets.train", f"--config={self.config}:{fill(self.arg)}",
            f"--workdir={workdir}"]
    argv += [f"--config.{k}={fill(_flag_value(v))}" for k, v in self.overrides]
    return argv

  def placeholders(self) -> set:
    texts = [self.arg] + [str(v) for _, v in self.overrides]
    return {m for t in texts for m in re.findall(r"\{(\w+)\}", t)}


def _flag_value(value) -> str:
  if isinstance(value, bool):
    return "true" if value else "false"
  if isinstance(value, (tuple, list)):
    return "(" + ",".join(_flag_value(v) for v in value) + ("," if len(value) == 1 else "") + ")"
  return str(value)


@dataclasses.dataclass(frozen=True)
class Sweep:
  """Runs that answer one of the paper's questions, and how to read their results.

  Attributes:
    name: registry key; also the default root folder's name.
    description: what it compares, at what size.
    runs: the runs, in launch order (dense first, sparse last).
    metric: "<split>/<metric>" of the final eval record its table reports, e.g. "test/top1".
    data: placeholder name -> what path the user gives (`--data=name=PATH`).
  """
  name: str
  description: str
  runs: tuple[Run, ...]
  metric: str
  data: tuple[tuple[str, str], ...] = ()

  def __post_init__(self):
    names = [r.name for r in self.runs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
      raise ValueError(f"sweep {self.name!r} has several runs named {duplicates}")
    needed = set().union(*(r.placeholders() for r in self.runs)) if self.runs else set()
    missing = needed - dict(self.data).keys()
    if missing:
      raise ValueError(f"sweep {self.name!r}: runs use data placeholders {sorted(missing)} that "
                       "its `data` does not describe")

  def run(self, name: str) -> Run:
    for r in self.runs:
      if r.name == name:
        return r
    raise ValueError(f"sweep {self.name!r} has no run {name!r}; runs: "
                     f"{[r.name for r in self.runs]}")


def _grid(config: str, algebras: Sequence[str], matches: Sequence[str], extra: str = "",
          overrides: Mapping[str, Any] = (), sparsities: Sequence[float] = (),
          sparse_algebras: Sequence[str] = SPARSE_ALGEBRAS) -> tuple[Run, ...]:
  """algebras x matches (dense; r once, it is its own match), then sparse_algebras x sparsities."""
  overrides = tuple(dict(overrides).items())
  runs = []
  for alg in algebras:
    for match in (matches if alg != "r" else matches[:1]):
      runs.append(Run(config, f"{alg},match={match}{extra}", overrides))
  for s in sparsities:
    for alg in sparse_algebras:
      runs.append(Run(config, f"{alg},match={matches[0]}{extra}",
                      overrides + ((SPARSITY_TARGET, s),)))
  return tuple(runs)


# ----------------------------------------------------------------------------- small real runs
# Sized on this project's development machines (2 CPU cores, see docs/results/README.md):
# ~2.5 minutes per CIFAR run and 2-4 per character-LM run (one epoch) on an idle machine,
# compilation and evaluation included; the same steps for every algebra (equal data).
CIFAR_SMALL_STEPS = 300
CHAR_LM_STEPS = 1000
CIFAR_SMALL_ARG = ",match=params,folder={cifar10},preset=small,steps=%d" % CIFAR_SMALL_STEPS
# Pruning on a short schedule: masks every 10 steps from 10% to 60% of training.
SMALL_SPARSITY = (("sparsity.frequency", 10),)


def _cifar_small() -> tuple[Run, ...]:
  config = "configs/cifar10_resnet.py"
  runs = [Run(config, alg + CIFAR_SMALL_ARG) for alg in PAPER_ALGEBRAS]
  for alg in ("c", "h"):
    runs.append(Run(config, alg + CIFAR_SMALL_ARG + ",bn=whitening"))
    runs.append(Run(config, alg + CIFAR_SMALL_ARG + ",init=polar"))
  return tuple(runs)


def _cifar_small_sparse() -> tuple[Run, ...]:
  return tuple(Run("configs/cifar10_resnet.py", alg + CIFAR_SMALL_ARG,
                   SMALL_SPARSITY + ((SPARSITY_TARGET, 0.9),)) for alg in SPARSE_ALGEBRAS)


_CIFAR_DATA = (("cifar10", "CIFAR-10 image folder DIR/{train,test}/<label>/*.jpg|png "
                           "(the CIFAR-10 images written out as image files)"),)
_TEXT_DATA = (("text", "a plain text file (e.g. tinyshakespeare's input.txt from "
                       "karpathy/char-rnn)"),)
_IMAGENET_DATA = (("imagenet", "TFDS data_dir holding (or to prepare) imagenet2012, see "
                               "scripts/prepare_imagenet.md"),)

SWEEPS: dict[str, Sweep] = {}


def _register(sweep: Sweep) -> None:
  SWEEPS[sweep.name] = sweep


_register(Sweep(
    "imagenet_resnet50", "ResNet-50 on ImageNet, 90 epochs: algebras x {equal params, equal "
    "MACs}, then r and m2r at 50/75/90% element sparsity",
    _grid("configs/imagenet_resnet50.py", PAPER_ALGEBRAS, MATCHES,
          overrides={"data.data_dir": "{imagenet}"}, sparsities=SPARSITIES),
    metric="validation/top1", data=_IMAGENET_DATA))
_register(Sweep(
    "imagenet_mobilenet_v1", "MobileNet-v1 on ImageNet: algebras x {equal params, equal MACs}, "
    "then r and m2r at 50/75/90% element sparsity",
    _grid("configs/imagenet_mobilenet_v1.py", PAPER_ALGEBRAS, MATCHES,
          overrides={"data.data_dir": "{imagenet}"}, sparsities=SPARSITIES),
    metric="validation/top1", data=_IMAGENET_DATA))
_register(Sweep(
    "enwik8_transformer_xl", "Transformer-XL base (12 layers, d_model 512) on enwik8: algebras x "
    "{equal params, equal FLOPs (all multiply-adds)}, then r and m2r at 50/75/90% element "
    "sparsity",
    # The reference's token stream (newlines dropped, 204 symbols): bpc as published (1.06).
    _grid("configs/enwik8_transformer_xl.py", LM_ALGEBRAS, LM_MATCHES,
          overrides={"data.path": "{enwik8}", "data.reference_tokens": True},
          sparsities=SPARSITIES),
    metric="valid/bpc", data=(("enwik8", "enwik8.zip or the raw enwik8 file "
                                         "(scripts/download_enwik8.sh)"),)))
_register(Sweep(
    "wikitext103_transformer_xl", "Transformer-XL base (16 layers, d_model 410, adaptive softmax) "
    "on WikiText-103: algebras x {equal params, equal FLOPs (all multiply-adds)}, then r and "
    "m2r at 50/75/90% element sparsity",
    _grid("configs/wikitext103_transformer_xl.py", LM_ALGEBRAS, LM_MATCHES,
          overrides={"data.path": "{wikitext103}"}, sparsities=SPARSITIES),
    metric="valid/ppl", data=(("wikitext103", "wikitext-103-v1.zip or its extracted "
                                              "wikitext-103/ (scripts/download_wikitext103.sh)"),)))
_register(Sweep(
    "cifar10_small", f"ResNet-20 at width 0.5 on 10,000 CIFAR-10 training images, "
    f"{CIFAR_SMALL_STEPS} steps of 32 images, tested on 2,000 test images: every algebra at equal "
    "params, and whitening BN / polar init for c and h",
    _cifar_small(), metric="test/top1", data=_CIFAR_DATA))
_register(Sweep(
    "cifar10_small_sparse", "cifar10_small's r and m2r at 90% element sparsity (gradual pruning "
    "from 10% to 60% of the steps)",
    _cifar_small_sparse(), metric="test/top1", data=_CIFAR_DATA))
_register(Sweep(
    "char_lm_small", f"Transformer-XL (2 layers, real d_model 96) on a text file, "
    f"{CHAR_LM_STEPS} steps of 16 x 64 bytes: every algebra at equal params, bpc on the test "
    "split",
    tuple(Run("configs/char_transformer_xl.py",
              f"{alg},match=params,path={{text}},steps={CHAR_LM_STEPS}") for alg in LM_ALGEBRAS),
    metric="test/bpc", data=_TEXT_DATA))
# Three seeds of the character LM (about an hour on 2 idle CPU cores: ~48 min of runs, see
# docs/reproducing.md); seed-major order, so a partial sweep has every algebra once.
SEEDS = (0, 1, 2)
SEED_ALGEBRAS = ("r", "c", "h", "m2r", "m4r", "cl_0_2", "learned:4")
_register(Sweep(
    "char_lm_seeds", f"char_lm_small ({CHAR_LM_STEPS} steps, equal params) for "
    f"{', '.join(SEED_ALGEBRAS)}, seeds {', '.join(map(str, SEEDS))}: mean ± std over seeds",
    tuple(Run("configs/char_transformer_xl.py",
              f"{alg},match=params,path={{text}},steps={CHAR_LM_STEPS}", (("seed", seed),),
              variant=f"seed-{seed}") for seed in SEEDS for alg in SEED_ALGEBRAS),
    metric="test/bpc", data=_TEXT_DATA))
_register(Sweep(
    "debug_image", "debug CIFAR ResNet-20: r and m2r at widths 0.25 and 0.5 (no matching), on an "
    "image folder",
    tuple(Run("configs/cifar10_resnet.py", f"{alg},debug,width={w},folder={{images}}")
          for alg in ("r", "m2r") for w in (0.25, 0.5)),
    metric="test/top1", data=(("images", "an image folder DIR/{train,test}/<label>/*.png"),)))
_register(Sweep(
    "debug_lm", "debug character Transformer-XL: r and m2r at d_model 32 and 48 (no matching)",
    tuple(Run("configs/char_transformer_xl.py", f"{alg},debug,match=none,path={{text}}",
              (("model.d_model", d), ("model.d_inner", 2 * d)), variant=f"d{d}")
          for alg in ("r", "m2r") for d in (32, 48)),
    metric="test/bpc", data=_TEXT_DATA))


# The paper's comparisons: the sweeps `--estimate` covers by default.
PAPER_SWEEPS = ("imagenet_resnet50", "imagenet_mobilenet_v1", "enwik8_transformer_xl",
                "wikitext103_transformer_xl")


def get(name: str) -> Sweep:
  """SWEEPS[name]; ValueError naming the sweeps for an unknown name."""
  return SWEEPS[common.check_choice(name, sorted(SWEEPS), "sweep")]


def select(sweep: Sweep, only: Optional[str]) -> list[Run]:
  """The sweep's runs whose name matches the regex `only` (all if None)."""
  if not only:
    return list(sweep.runs)
  pattern = re.compile(only)
  runs = [r for r in sweep.runs if pattern.search(r.name)]
  if not runs:
    raise ValueError(f"--only={only!r} matches no run of {sweep.name!r}; runs: "
                     f"{[r.name for r in sweep.runs]}")
  return runs


def describe(sweep: Sweep) -> str:
  """The sweep's description, the data it needs and its runs' names, as text."""
  lines = [f"{sweep.name}: {sweep.description}", f"  metric: {sweep.metric}"]
  lines += [f"  --data={name}=PATH   {what}" for name, what in sweep.data]
  lines += [f"  {run.name}" for run in sweep.runs]
  return "\n".join(lines)


def _estimate(names: Sequence[str], tflops: Optional[float]) -> int:
  """Prints the compute estimate of sweeps `names` (default the paper's), progress on stderr."""
  import sys  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  start = time.monotonic()
  names = list(names) or sorted(PAPER_SWEEPS)
  runs = sum(1 for n in names for r in SWEEPS[n].runs if not r.sparsity)
  say = lambda line: print(line, file=sys.stderr, flush=True)
  say(f"estimating the training compute of {runs} dense runs in {len(names)} sweep(s) "
      "(closed-form counts of each run's config; the table goes to stdout) ...")
  from experiments import estimate  # pylint: disable=g-import-not-at-top
  rows = []
  for name in names:
    say(f"{name}:")
    rows += estimate.estimate(SWEEPS[name], log=say)
  print(estimate.markdown(rows, tflops or estimate.DEFAULT_TFLOPS))
  say(f"done in {time.monotonic() - start:.1f} s")
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(prog="python -m experiments.sweeps",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--sweep", action="append", help="sweep(s) to show (default: all)")
  parser.add_argument("--estimate", action="store_true",
                      help="print the expected compute of the dense runs of the paper sweeps "
                           "(or of --sweep) as markdown; progress on stderr")
  parser.add_argument("--tflops", type=float, default=None,
                      help="assumed sustained TFLOP/s per run for --estimate")
  parser.add_argument("--verbose", action="store_true",
                      help="print the traceback of an error too")
  args = parser.parse_args(argv)
  try:
    names = [get(n).name for n in (args.sweep or [])]
    if args.estimate:
      return _estimate(names, args.tflops)
  except ValueError as e:
    if not errors.is_user_error(e):  # raised inside a library: a bug, with its traceback
      raise
    parser.exit(2, f"error: {errors.message(e)}\n")
  for name in names or SWEEPS:
    print(describe(SWEEPS[name]) + "\n")
  return 0


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  sys.exit(errors.run_cli(main))
