r"""The sections of the accelerator check (scripts/accelerator_check.py runs each in a process).

A section is a function of a `Context` (the options, the `Profile` of sizes, a deadline) that
appends its rows to `ctx.data` and saves it after each, so a section killed at its time cap
leaves what it measured. Every section reuses the code users and the other benchmarks run:

  devices         what JAX sees (device kind and count, platform, versions) and the TFLOP/s of
                  one large bf16 matmul, the ceiling the training rows are read against. Fails
                  (and the check stops) if an accelerator run finds only CPU devices.
  multidevice     the check of tests/training/test_multidevice.py on the real devices (that
                  test itself needs 8 simulated CPU devices): a few steps of the
                  enwik8 debug Transformer-XL (dropout on, memories carried and sharded) through
                  `train.train_and_evaluate` on a mesh of every device and on a mesh of one;
                  losses, validation bpc, parameters and memories compared, matmuls at
                  "highest" precision. With one device there is nothing to compare; it says so.
  ops             the layer benchmark: scripts/benchmark_ops.py `run_case` for dense and conv
                  layers of every algebra (against MAC-matched real layers and the expanded
                  form), until the cap.
  resnet50        training-step throughput of configs/imagenet_resnet50.py (bf16 compute, 128
                  images of 224×224 per device) for r, then each algebra at equal parameters
                  and at equal compute, in that order, until the cap.
  transformer_xl  the same for configs/enwik8_transformer_xl.py (12 layers, d_model 512, bf16,
                  global batch 22, tgt_len = mem_len = 512).
  decode          batch-1 decoding tokens/s of a 55 M-parameter Transformer-XL at equal
                  parameters: scripts/benchmark_models.py `decode_results`.

Training throughput is what users run: the config file's `get_config`, `train.resolve_config`
(the matching), the trainer's task, optimiser and shardings (`train._Run`) and its jitted
`step.make_train_step`, on synthetic batches already on the devices (no input pipeline: the
accelerator machine has neither TensorFlow nor data). Compilation (init and step) is timed
apart and excluded; each model is timed over `train_steps` steps per call, the models
round-robin (`benchmark_ops._best_times`), the minimum kept. The "equal compute" arm matches by
"flops" (every multiply-add of a step) where `models.matching.MATCH_KINDS` has it, else by
"macs" (weight layers only); --compute_match chooses.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import sys
import time
import traceback
from typing import Any, Optional

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))
import benchmark_ops  # noqa: E402  (house benchmark helpers: timing)

SECTION_NAMES = ("devices", "multidevice", "ops", "resnet50", "transformer_xl", "decode")
# Versions recorded by `devices` (the device image brings its own, see accelerator_check.sh).
PACKAGES = ("jax", "jaxlib", "dm-haiku", "optax", "orbax-checkpoint", "ml-collections", "numpy")


@dataclasses.dataclass(frozen=True)
class Profile:
  """The sizes of one mode. `accelerator` is the real check; `reduced` runs on a CPU."""
  budget_s: float
  shares: dict               # section -> relative time (the driver's caps)
  algebras: tuple
  xla_flags: str             # added to the sections' XLA_FLAGS
  peak_size: int             # N of the N×N×N bf16 matmul of `devices`
  md_batch_per_device: int
  md_steps: int
  ops: dict                  # benchmark_ops options
  config_variant: str        # appended to the config argument ("" or ",debug")
  images_per_device: int
  image_size: int            # 0: the config's
  lm_batch: int              # global; rounded up to a multiple of the devices
  match_tolerance: float     # 0: the config's
  train_steps: int           # steps per timed call
  train_repeats: int
  decode: dict               # benchmark_models decode options


PROFILES = {
    "accelerator": Profile(
        budget_s=450.0, algebras=("r", "c", "h", "m2r", "m4r"), xla_flags="",
        # Guessed, not measured (no accelerator yet): ~10 s to start a section, compiles of
        # ~20 s (ResNet-50) and ~10 s (Transformer-XL) per model, 9 models each.
        shares=dict(devices=25, multidevice=25, ops=50, resnet50=200, transformer_xl=140,
                    decode=40),
        peak_size=8192, md_batch_per_device=2, md_steps=5,
        ops=dict(width=4096, batch=4096, conv_width=256, conv_batch=32, image=28, repeats=5),
        config_variant="", images_per_device=128, image_size=0, lm_batch=22,
        match_tolerance=0.0, train_steps=5, train_repeats=3,
        decode=dict(decode_width=1024, decode_layers=4, decode_mem=128, decode_tokens=128,
                    repeats=5)),
    "reduced": Profile(
        budget_s=1200.0, algebras=("r", "m2r"), peak_size=256,
        # 2 simulated CPU devices; XLA:CPU's LLVM optimisations and its MLIR fusion emitters
        # off, which takes about half off the compile times that make up most of this mode (its
        # timings mean nothing anyway).
        xla_flags="--xla_force_host_platform_device_count=2 --xla_backend_optimization_level=0 "
                  "--xla_cpu_use_fusion_emitters=false",
        # A safety net: XLA:CPU compiles dominate (about 8 s of CPU per ResNet-18 model, 6-8 s
        # per Transformer-XL with these flags; the whole mode about 2 minutes on two cores).
        shares=dict(devices=30, multidevice=150, ops=60, resnet50=400, transformer_xl=250,
                    decode=100),
        md_batch_per_device=2, md_steps=2,
        ops=dict(width=32, batch=8, conv_width=16, conv_batch=2, image=6, repeats=2),
        config_variant=",debug", images_per_device=2, image_size=0, lm_batch=4,
        match_tolerance=0.1, train_steps=2, train_repeats=2,
        decode=dict(decode_width=32, decode_layers=1, decode_mem=4, decode_tokens=4,
                    repeats=2)),
}


def profile_of(args) -> Profile:
  """The profile of args.reduced, with args.budget and args.algebras."""
  base = PROFILES["reduced" if args.reduced else "accelerator"]
  return dataclasses.replace(base, budget_s=args.budget or base.budget_s,
                             algebras=tuple(args.algebras))


class CheckFailed(RuntimeError):
  """A section ran but its check did not pass (the message says what differed)."""


class Context:
  """What a section function gets: its options, a deadline, and a result written as it goes."""

  def __init__(self, args, profile: Profile, result_path: str, deadline: float):
    self.args, self.profile, self.deadline = args, profile, deadline
    self.path = pathlib.Path(result_path)
    # Scratch space (workdirs, a corpus) beside the result, removed by the driver at the end.
    self.workdir = self.path.with_name(self.path.stem + "_work")
    self.workdir.mkdir(parents=True, exist_ok=True)
    self.data: dict[str, Any] = {"status": "running", "rows": [], "notes": [], "info": {},
                                 "not_run": [], "error": None}
    self.save()

  def save(self) -> None:
    tmp = self.path.with_suffix(".tmp")
    tmp.write_text(json.dumps(self.data, default=json_default))
    tmp.replace(self.path)

  def left(self) -> float:
    return self.deadline - time.time()

  def note(self, text: str) -> None:
    print(text, flush=True)
    self.data["notes"].append(text)
    self.save()


def json_default(o):
  if hasattr(o, "item"):
    return o.item()
  if isinstance(o, (tuple, set)):
    return list(o)
  return str(o)


def section_devices(ctx: Context) -> None:
  """Devices, versions, and the bf16 matmul rate (the training rows' ceiling)."""
  import importlib.metadata
  import jax
  import jax.numpy as jnp
  devices = jax.devices()
  info = ctx.data["info"]
  info.update(platform=devices[0].platform, device_kind=devices[0].device_kind,
              count=len(devices), processes=jax.process_count(), jax=jax.__version__,
              python=sys.version.split()[0], machine=benchmark_ops._machine())
  packages = {}
  for name in PACKAGES:
    try:
      packages[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      packages[name] = "missing"
  info["packages"] = packages
  ctx.save()
  if info["platform"] == "cpu" and not (ctx.args.reduced or ctx.args.allow_cpu):
    raise CheckFailed("JAX sees only CPU devices: no accelerator (is the CUDA or TPU plugin of "
                      "jax installed? `python3 -m pip list | grep jax`); use --reduced for a CPU "
                      "run, or --allow_cpu to time the full sizes on the CPU anyway")
  n = ctx.profile.peak_size
  a, b = (jax.random.normal(jax.random.PRNGKey(i), (n, n), jnp.bfloat16) for i in range(2))
  run = benchmark_ops._timer(jax.jit(lambda a, b: a @ b), a, b)
  t = benchmark_ops._best_times({"matmul": run}, 10)["matmul"]
  info.update(peak_size=n, peak_tflops=2 * n ** 3 / t / 1e12)
  ctx.note(f"devices: {len(devices)} × {info['device_kind']} ({info['platform']}), jax "
           f"{jax.__version__}; bf16 matmul {n}³: {info['peak_tflops']:.1f} TFLOP/s")


def _corpus(path: pathlib.Path, size: int = 24_000) -> pathlib.Path:
  """`size` bytes of real text (this repository's docs, repeated) for the debug LM config."""
  text = b"".join(p.read_bytes() for p in (ROOT / "README.md", ROOT / "BENCHMARKS.md")
                  if p.exists()) or b"algebra network weight matrix element product layer. "
  path.write_bytes((text * (size // len(text) + 1))[:size])
  return path


def section_multidevice(ctx: Context) -> None:
  """tests/training/test_multidevice.py's check on the real devices (see the module docstring)."""
  import jax
  import numpy as np
  from algebranets import train as train_cli
  from algebranets.training import distributed, metrics, train
  jax.config.update("jax_default_matmul_precision", "highest")
  devices = jax.devices()
  n = len(devices)
  tmp = ctx.workdir
  config = train_cli._load_config(str(ROOT / "configs/enwik8_transformer_xl.py") + ":r,debug")
  config.data.path = str(_corpus(tmp / "corpus.txt"))
  batch = ctx.profile.md_batch_per_device * n
  steps = ctx.profile.md_steps
  config.train.update(batch_size=batch, num_steps=steps, log_every=1, eval_every=steps)
  config.eval.batch_size = batch
  meshes = [("all", devices)] + ([("one", devices[:1])] if n > 1 else [])
  if n == 1:
    ctx.data["info"]["single_device"] = True
    ctx.note("One device: the model trained on it, but there is no second mesh to compare "
             "with, so this is not a multi-device check (that needs a machine with several "
             "devices).")
  out = {}
  for name, devs in meshes:
    workdir = tmp / name
    mesh = distributed.make_mesh(devs)
    result = train.train_and_evaluate(config, workdir, mesh=mesh)
    state = train.restore_state(config, workdir, mesh=mesh)
    carry_devices = {d.id for leaf in jax.tree.leaves(state.carry)
                     for d in leaf.sharding.device_set}
    out[name] = dict(losses=[r["loss"] for r in metrics.read_jsonl(workdir, "train")],
                     bpc=result["eval"]["valid"]["bpc"],
                     params=[np.asarray(x) for x in jax.tree.leaves(state.params)],
                     carry=[np.asarray(x) for x in jax.tree.leaves(state.carry)])
    ctx.data["rows"].append(dict(mesh=name, devices=len(devs), batch=batch, steps=steps,
                                 losses=out[name]["losses"], valid_bpc=out[name]["bpc"],
                                 carry_devices=len(carry_devices)))
    ctx.save()
    if len(carry_devices) != len(devs):
      raise CheckFailed(f"the memories of the {len(devs)}-device run live on "
                        f"{len(carry_devices)} device(s); they should be sharded over all")
  if n == 1:
    return
  a, b = out["all"], out["one"]
  rel = lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y))
                                  / np.maximum(np.abs(np.asarray(y)), 1e-30)))
  diff = dict(losses_rel=rel(a["losses"], b["losses"]), bpc_rel=rel(a["bpc"], b["bpc"]),
              params_abs=max(float(np.max(np.abs(x - y))) for x, y in zip(a["params"],
                                                                           b["params"])),
              carry_abs=max(float(np.max(np.abs(x - y))) for x, y in zip(a["carry"],
                                                                          b["carry"])))
  ctx.data["info"]["differences"] = diff
  ctx.save()
  bad = []
  if diff["losses_rel"] > 1e-5 or diff["bpc_rel"] > 1e-5:
    bad.append(f"losses/bpc differ by {max(diff['losses_rel'], diff['bpc_rel']):.2e} (rel.)")
  for key, what in (("params", "parameters"), ("carry", "memories")):
    if not all(np.allclose(x, y, rtol=1e-4, atol=1e-5) for x, y in zip(a[key], b[key])):
      bad.append(f"{what} differ by up to {diff[key + '_abs']:.2e}")
  if bad:
    raise CheckFailed(f"{n} devices do not train like 1: " + "; ".join(bad))


def section_ops(ctx: Context) -> None:
  """benchmark_ops.run_case for dense and conv layers of every algebra, until the cap."""
  import numpy as np
  opts = argparse.Namespace(**ctx.profile.ops)
  rng = np.random.default_rng(0)
  longest = 0.0
  for kind in ("dense", "conv"):
    for name in ctx.args.algebras:
      if ctx.data["rows"] and ctx.left() < 1.5 * longest:
        ctx.data["not_run"].append(f"{kind} {name}")
        continue
      t0 = time.time()
      ctx.data["rows"].append(benchmark_ops.run_case(kind, name, opts, rng))
      longest = max(longest, time.time() - t0)
      ctx.save()


# Training throughput --------------------------------------------------------------------------
TRAIN_MODELS = {
    # section: (config file, examples unit)
    "resnet50": ("imagenet_resnet50.py", "images"),
    "transformer_xl": ("enwik8_transformer_xl.py", "tokens"),
}


def compute_match_kind(requested: str) -> str:
  """The match kind of the "equal compute" arm: flops if the library has it (auto), or asked."""
  from algebranets.models import matching
  kinds = tuple(matching.MATCH_KINDS)
  if requested == "auto":
    return "flops" if "flops" in kinds else "macs"
  if requested not in kinds:
    raise ValueError(f"--compute_match={requested}: this version of the library matches by "
                     f"{list(kinds)}; choose one of those or auto")
  return requested


def _synthetic_dataset(config):
  """What `train.resolve_config` and the tasks read from a dataset, for synthetic batches."""
  meta = argparse.Namespace(name="synthetic", description="synthetic batches",
                            train_split="train", eval_splits=tuple(config.eval.splits) or
                            ("valid",))
  if config.task.name == "classification":
    meta.num_classes, meta.image_size = 1000, int(config.data.image_size)
    meta.int_range = meta.num_classes
  else:
    meta.vocab_size, meta.vocab = 256, None
    meta.seq_len, meta.eval_seq_len = int(config.data.seq_len), int(config.data.eval_seq_len)
    meta.int_range = meta.vocab_size
  return meta


def _xla_flops(compiled) -> Optional[float]:
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except  (not every backend implements it)
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  flops = (cost or {}).get("flops")
  return float(flops) if flops and flops > 0 else None


def train_config(section: str, algebra: str, match: str, profile: Profile, devices: int):
  """(config, synthetic dataset) of one throughput case: the config file's, with the profile's
  batch and bf16 compute, resolved (matched) by `train.resolve_config`."""
  from algebranets import train as train_cli
  from algebranets.training import train
  file, _ = TRAIN_MODELS[section]
  arg = algebra + ("" if match == "none" else f",match={match}") + profile.config_variant
  config = train_cli._load_config(f"{ROOT / 'configs' / file}:{arg}")
  if section == "resnet50":
    batch = profile.images_per_device * devices
    if profile.image_size:
      config.data.image_size = profile.image_size
  else:
    batch = -(-profile.lm_batch // devices) * devices  # the global batch, split evenly
  config.train.update(batch_size=batch, num_steps=1000, num_epochs=0.0)
  config.eval.batch_size = batch
  config.optimizer.update(warmup_epochs=0.0, warmup_steps=10)
  config.mixed_precision.compute_dtype = "bfloat16"
  if profile.match_tolerance:
    config.match_tolerance = profile.match_tolerance
  dataset = _synthetic_dataset(config)
  return train.resolve_config(config, dataset), dataset


def _build_train_case(section: str, algebra: str, match: str, ctx: Context, mesh, workdir):
  """(row, runner) of one model: its config resolved and its train step compiled."""
  import jax
  import numpy as np
  from algebranets.training import train
  profile = ctx.profile
  t0 = time.time()
  config, dataset = train_config(section, algebra, match, profile, int(mesh.devices.size))
  batch = int(config.train.batch_size)
  match_s = time.time() - t0
  run = train._Run(config, workdir, mesh, dataset)  # the trainer's task, optimiser, shardings
  try:
    # The trainer's own step and batch layout: micro-batches and, for a language-model batch
    # that does not split over the devices (22 on 8), zero-weight padding rows.
    step = run.make_train_step()
    t0 = time.time()
    state = run.init_state(jax.random.PRNGKey(config.seed))
    rng = np.random.default_rng(0)
    local = {}
    for key, spec in run.task.batch_spec(batch, train=True).items():
      if np.issubdtype(spec.dtype, np.floating):
        local[key] = rng.normal(size=spec.shape).astype(spec.dtype)
      else:
        local[key] = rng.integers(0, dataset.int_range, size=spec.shape).astype(spec.dtype)
    batch_arrays = run.train_batch(local)
    compiled = step.lower(state, batch_arrays).compile()
    compile_s = time.time() - t0
    t0 = time.time()
    state, metrics = compiled(state, batch_arrays)
    jax.block_until_ready(state)
    first_step_s = time.time() - t0
  finally:
    run.checkpointer.close()
  costs = run.task.costs()
  units = run.task.units(run.task.batch_spec(batch, train=True))
  macs_key = next(k for k in costs if k.startswith("macs_per_"))
  model = config.model
  size = (f"width {model.width:.3f}" if section == "resnet50" else
          f"d_model {model.d_model}, d_inner {model.d_inner}")
  row = dict(algebra=algebra, match=match, size=size, params=int(costs["params"]),
             macs_per_unit=float(costs[macs_key]), batch=batch, units_per_step=units,
             match_s=match_s, compile_s=compile_s, first_step_s=first_step_s,
             xla_flops_per_step=_xla_flops(compiled))
  return row, _TrainRunner(compiled, state, metrics, batch_arrays, profile.train_steps)


class _TrainRunner:
  """Calling it runs `steps` train steps on its state (donated and replaced); seconds per step."""

  def __init__(self, compiled, state, metrics, batch, steps: int):
    self.compiled, self.state, self.metrics, self.batch, self.steps = (
        compiled, state, metrics, batch, steps)

  def __call__(self) -> float:
    import jax
    t = time.perf_counter()
    for _ in range(self.steps):
      self.state, self.metrics = self.compiled(self.state, self.batch)
    jax.block_until_ready(self.state)
    return (time.perf_counter() - t) / self.steps

  def loss(self) -> float:
    return float(self.metrics["loss"])


def train_cases(algebras, compute_kind: str):
  """(algebra, match) in the order they run: r first, then each algebra's two arms."""
  cases = [("r", "none")]
  for name in algebras:
    if name != "r":
      cases += [(name, "params"), (name, compute_kind)]
  return cases


def _section_train(ctx: Context, section: str) -> None:
  import jax
  from algebranets.training import distributed
  compute_kind = compute_match_kind(ctx.args.compute_match)
  mesh = distributed.make_mesh()
  info = ctx.data["info"]
  info.update(compute_match=compute_kind, devices=int(mesh.devices.size),
              unit=TRAIN_MODELS[section][1], steps_per_call=ctx.profile.train_steps)
  rows, runners = ctx.data["rows"], {}
  longest, step_sum = 0.0, 0.0
  for algebra, match in train_cases(ctx.args.algebras, compute_kind):
    key = f"{algebra}/{match}"
    # Keep time for two timed rounds of every model built so far.
    reserve = 2 * ctx.profile.train_steps * step_sum + 2.0
    if runners and ctx.left() < longest + reserve:
      ctx.data["not_run"].append(key)
      rows.append(dict(algebra=algebra, match=match, status="not run: time cap"))
      ctx.save()
      continue
    t0 = time.time()
    try:
      row, runner = _build_train_case(section, algebra, match, ctx, mesh,
                                      ctx.workdir / f"{algebra}_{match}")
    except Exception as e:  # pylint: disable=broad-except  (one model's failure, recorded)
      if algebra == "r":
        raise
      traceback.print_exc()
      rows.append(dict(algebra=algebra, match=match, status=f"failed: {one_line(e)}"))
      ctx.save()
      continue
    row["status"] = "compiled"
    rows.append(row)
    runners[key] = runner
    longest = max(longest, time.time() - t0)
    step_sum += row["first_step_s"]
    print(f"{section} {key}: {row['size']}, compile {row['compile_s']:.1f} s", flush=True)
    ctx.save()
  # One untimed round (caches warm, first-call allocations done) gives the time of a round;
  # then as many timed rounds as fit (at most train_repeats), every model in turn.
  round_s = ctx.profile.train_steps * sum(run() for run in runners.values())
  repeats = int(max(1, min(ctx.profile.train_repeats, (ctx.left() - 1.0) // max(round_s, 1e-9))))
  times = benchmark_ops._best_times(runners, repeats)
  info["repeats"] = repeats
  by_key = {f"{r['algebra']}/{r['match']}": r for r in rows}
  for key, t in times.items():
    row = by_key[key]
    loss = runners[key].loss()
    row.update(status="ok" if math.isfinite(loss) else f"non-finite loss {loss}", step_s=t,
               units_per_s=row["units_per_step"] / t, loss=loss)
  stats = jax.devices()[0].memory_stats() or {}
  if stats.get("peak_bytes_in_use"):
    info["peak_memory_gib"] = stats["peak_bytes_in_use"] / 2 ** 30
  ctx.save()
  failed = [f"{r['algebra']}/{r['match']}: {r['status']}" for r in rows
            if r["status"] not in ("ok", "not run: time cap")]
  if failed:
    raise CheckFailed("; ".join(failed))


def section_resnet50(ctx: Context) -> None:
  """ResNet-50 training-step throughput (see the module docstring)."""
  _section_train(ctx, "resnet50")


def section_transformer_xl(ctx: Context) -> None:
  """Transformer-XL enwik8 base training-step throughput (see the module docstring)."""
  _section_train(ctx, "transformer_xl")


def section_decode(ctx: Context) -> None:
  """benchmark_models.decode_results at the profile's sizes."""
  import numpy as np
  import benchmark_models
  opts = argparse.Namespace(**ctx.profile.decode)
  rows = benchmark_models.decode_results(opts, np.random.default_rng(0), ctx.args.algebras)
  ctx.data["rows"].extend(rows)
  ctx.save()


SECTIONS: dict[str, Any] = {  # name -> function of a Context
    "devices": section_devices,
    "multidevice": section_multidevice,
    "ops": section_ops,
    "resnet50": section_resnet50,
    "transformer_xl": section_transformer_xl,
    "decode": section_decode,
}


def one_line(e: BaseException) -> str:
  text = " ".join(str(e).split())
  return f"{type(e).__name__}: {text[:300]}"


def child_main(args) -> int:
  """Runs section args.run_section, writing its result to args.result; the exit status."""
  ctx = Context(args, profile_of(args), args.result, args.deadline)
  injected = dict(item.split(":", 1) if ":" in item else (item, "raise")
                  for item in args.inject_failure)
  try:
    if args.run_section in injected:
      if injected[args.run_section] == "hang":
        time.sleep(3600)
      raise CheckFailed(f"failure injected into {args.run_section} (--inject_failure)")
    SECTIONS[args.run_section](ctx)
  except Exception as e:  # pylint: disable=broad-except  (reported to the parent)
    traceback.print_exc()
    ctx.data.update(status="failed", error=one_line(e))
    ctx.save()
    return 1
  ctx.data["status"] = "partial" if ctx.data["not_run"] else "ok"
  ctx.save()
  return 0
