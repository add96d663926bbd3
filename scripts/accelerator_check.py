r"""One check of the library on a GPU or TPU machine, in a fixed time budget (issue 10 §5).

Runs, each in its own process with its own time cap (scripts/accelerator_sections.py says what
each does and how): `devices` (what JAX sees, a bf16 matmul's TFLOP/s), `multidevice` (the
multi-device training test on the real devices), `ops` (the layer benchmark), `resnet50` and
`transformer_xl` (training-step throughput of the paper configs, bf16, for r, c, h, m2r, m4r at
equal parameters and at equal compute), and `decode` (batch-1 decoding tokens/s).

  python scripts/accelerator_check.py [--sections devices,multidevice,ops,...]
      [--algebras r,c,h,m2r,m4r] [--compute_match auto|macs|flops] [--budget 450]
      [--cap SECTION=SECONDS,...] [--write BENCHMARKS.md] [--out DIR]

Time. --budget seconds (default 450, so that the check with its start-up fits 8 minutes of the
machine) cover every section; a section gets the budget left × its share (`Profile.shares`) /
the shares of the sections left, so time a fast section leaves flows on, and is killed at that
cap (--cap fixes a section's cap instead).
Inside a section a case that would not finish before the cap is not started. Rows are written
as they come: a slow section returns partial results, marked as such, and never eats the next
section's time.

Output, rewritten after every section: a block `<!-- accelerator-<device kind>-x<count>:begin
-->` ... `end -->` in BENCHMARKS.md (a rerun on the same kind and number of devices replaces
it), headed by the command, date, machine and devices, and a summary on stdout. With $OUT set
(or --out DIR) the directory also gets accelerator_check.md (the block), accelerator_check.json
(every number, each section's status and output tail) and BENCHMARKS.md (the updated file).
Exit status: 0 if every section ran (a time-capped one counts, marked partial), 1 if one failed,
was killed or was not run, 2 for bad arguments.

Reduced mode (--reduced): the same sections through the same functions at CPU sizes (the
configs' debug variants, tiny layers, 2 simulated CPU devices, algebras r and m2r), writing to
a temporary file unless --write says otherwise, never to BENCHMARKS.md by default. About three
minutes on two CPU cores, nearly all of it XLA compiling; tests/test_accelerator_check.py runs
it in CI.

On an accelerator machine, run it through scripts/accelerator_check.sh, which installs the
wheels carried in .whl/ if there are any. On this workplace's device machine (no network; its
image lacks dm-haiku, ml-collections, tensorboardX, jmp): here, once,

  bash scripts/accelerator_check.sh --prepare-wheels

then the device tool's `run` with command `bash scripts/accelerator_check.sh`, carry [".whl"]
and timeout_s 540; and here, to bring the block home,

  python scripts/accelerator_check.py --merge <files_at>/accelerator_check.md
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Optional

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))
import accelerator_sections as sections_lib  # noqa: E402
import benchmark_ops  # noqa: E402  (write_section: the house's marked blocks)
from accelerator_sections import PROFILES, SECTION_NAMES  # noqa: E402

MIN_CAP_S = 5.0
OUT_FILES = ("accelerator_check.md", "accelerator_check.json", "BENCHMARKS.md")


# ----------------------------------------------------------------------------- rendering
def _fmt(v, spec=".2f"):
  """v formatted, or "" for a missing or non-finite number."""
  if v is None or (isinstance(v, float) and not math.isfinite(v)):
    return ""
  return format(v, spec)


def render_devices(res, report) -> list[str]:
  i = res["info"]
  if "peak_tflops" not in i:
    return []
  return [f"bf16 matmul {i['peak_size']}×{i['peak_size']}×{i['peak_size']}: "
          f"{i['peak_tflops']:.1f} TFLOP/s (min of 10 runs): the ceiling of the training rows."]


def render_multidevice(res, report) -> list[str]:
  lines = ["| mesh | devices | batch | steps | training losses | valid bpc | memories on |",
           "|---|---|---|---|---|---|---|"]
  for r in res["rows"]:
    losses = ", ".join(f"{x:.5f}" for x in r["losses"])
    lines.append(f"| {r['mesh']} | {r['devices']} | {r['batch']} | {r['steps']} | {losses} "
                 f"| {r['valid_bpc']:.6f} | {r['carry_devices']} device(s) |")
  d = res["info"].get("differences")
  if d:
    lines += ["", f"All devices vs one: losses differ by {d['losses_rel']:.1e} (relative), "
              f"valid bpc by {d['bpc_rel']:.1e}, parameters by {d['params_abs']:.1e} and "
              f"memories by {d['carry_abs']:.1e} (absolute, max); bars: 1e-5 relative for "
              "losses, rtol 1e-4 / atol 1e-5 for parameters and memories."]
  return lines


def render_ops(res, report) -> list[str]:
  if not res["rows"]:
    return []
  o = report["profile"]["ops"]
  return [f"Dense: batch {o['batch']}, width {o['width']} reals; conv 3×3: batch "
          f"{o['conv_batch']}, {o['image']}×{o['image']}, width {o['conv_width']} reals; float32 "
          f"inputs; min of {o['repeats']} (columns as in \"Algebra layers vs real layers\").", "",
          benchmark_ops.markdown_rows(res["rows"])]


def render_train(res, report) -> list[str]:
  info, rows = res["info"], res["rows"]
  if not rows:
    return []
  unit = info["unit"]
  peak = report["sections"].get("devices", {}).get("info", {}).get("peak_tflops")
  ref = next((r for r in rows if r["algebra"] == "r" and "step_s" in r), None)
  lines = [f"{info['devices']} device(s), global batch {rows[0].get('batch', '?')}, bf16 "
           f"compute; each step timed over {info['steps_per_call']} steps per call, "
           f"{info.get('repeats', '?')} round(s) round-robin, min kept; compile excluded."
           + (f" Peak device memory of the section: {info['peak_memory_gib']:.1f} GiB."
              if info.get("peak_memory_gib") else "")]
  for arm in ("params", info["compute_match"]):
    lines += ["", f"**Equal {arm}** ({unit}/s; MACs per {unit[:-1]}, weight layers)", "",
              f"| algebra | size | params | MACs | {unit}/s | step ms | speed vs r "
              "| 6·MACs TFLOP/s | XLA TFLOP/s | 6·MACs / bf16 peak | compile s | status |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
      if r["match"] not in ("none", arm):
        continue
      if "params" not in r:
        lines.append(f"| {r['algebra']} | | | | | | | | | | | {r['status']} |")
        continue
      t = r.get("step_s")
      model_tflops = 6 * r["macs_per_unit"] * r["units_per_s"] / 1e12 if t else None
      xla = r["xla_flops_per_step"] / t / 1e12 if t and r.get("xla_flops_per_step") else None
      lines.append(
          f"| {r['algebra']} | {r['size']} | {r['params']:,} | {r['macs_per_unit']:,.0f} "
          f"| {_fmt(r.get('units_per_s'), ',.0f')} | {_fmt(t and t * 1e3, '.3g')} "
          f"| {_fmt(ref and t and ref['step_s'] / t)} | {_fmt(model_tflops, '.3g')} "
          f"| {_fmt(xla, '.3g')} | {_fmt(model_tflops and peak and model_tflops / peak, '.0%')} "
          f"| {r['compile_s']:.1f} | {r['status']} |")
  return lines


def render_decode(res, report) -> list[str]:
  if not res["rows"]:
    return []
  import benchmark_models
  d = report["profile"]["decode"]
  return [f"Transformer-XL, {d['decode_layers']} layers, real d_model {d['decode_width']}, "
          f"memory {d['decode_mem']}, {d['decode_tokens']} tokens per timing, batch 1, float32 "
          f"weights, min of {d['repeats']}.", "", benchmark_models.decode_table(res["rows"])]


RENDER = {"devices": render_devices, "multidevice": render_multidevice, "ops": render_ops,
          "resnet50": render_train, "transformer_xl": render_train, "decode": render_decode}
TITLES = {"devices": "Devices", "multidevice": "Multi-device training (all devices vs one)",
          "ops": "Layer benchmark (scripts/benchmark_ops.py)",
          "resnet50": "ResNet-50 training step (configs/imagenet_resnet50.py)",
          "transformer_xl": "Transformer-XL enwik8 base training step "
                            "(configs/enwik8_transformer_xl.py)",
          "decode": "Batch-1 decoding (scripts/benchmark_models.py)"}


def status_text(res) -> str:
  s = res["status"]
  if s == "partial":
    return f"partial: time cap, not run: {', '.join(res['not_run'])}"
  if s in ("failed", "killed", "not run"):
    return f"{s.upper()}: {res.get('error') or ''}".rstrip(": ")
  if res.get("info", {}).get("single_device"):
    return f"{s} (one device: nothing to compare)"
  return s


def device_label(report) -> str:
  info = report["sections"].get("devices", {}).get("info", {})
  kind = re.sub(r"[^a-z0-9]+", "-", str(info.get("device_kind", "unknown")).lower()).strip("-")
  label = f"accelerator-{kind}-x{info.get('count', 0)}"
  return label + ("-reduced" if report["reduced"] else "")


def render_block(report) -> str:
  info = report["sections"].get("devices", {}).get("info", {})
  lines = [f"### {info.get('count', '?')} × {info.get('device_kind', 'unknown device')}"
           + (" (reduced CPU mode)" if report["reduced"] else ""), "",
           f"Command: `{report['command']}`  ",
           f"Date: {report['date']}  ",
           f"Machine: {info.get('machine', 'unknown (the devices section did not run)')}  ",
           "Packages: " + ", ".join(f"{k} {v}" for k, v in info.get("packages", {}).items())
           + "  ",
           f"Budget: {report['budget_s']:.0f} s; wall time {report['wall_s']:.0f} s; "
           f"algebras {', '.join(report['algebras'])}"]
  for name, res in report["sections"].items():
    lines += ["", f"#### {TITLES[name]}: {status_text(res)}", ""]
    lines += [n for n in res["notes"] if name != "devices"]
    if res["notes"] and name != "devices":
      lines.append("")
    try:
      lines += RENDER[name](res, report)
    except Exception as e:  # pylint: disable=broad-except  (a partial result renders partly)
      lines.append(f"(could not render the results: {sections_lib.one_line(e)})")
  return "\n".join(lines).rstrip() + "\n"


def summary_lines(report) -> list[str]:
  out = [f"accelerator check: {device_label(report)}, {report['wall_s']:.0f} s of "
         f"{report['budget_s']:.0f} s"]
  for name, res in report["sections"].items():
    out.append(f"  {name:15s} {status_text(res)} ({res.get('wall_s', 0):.0f} s)")
    for r in res["rows"]:
      if name in ("resnet50", "transformer_xl") and "units_per_s" in r:
        out.append(f"      {r['algebra']:4s} {r['match']:6s} {r['units_per_s']:12,.0f} "
                   f"{report['sections'][name]['info']['unit']}/s  step "
                   f"{r['step_s'] * 1e3:.1f} ms")
      elif name == "decode":
        # One entry per decode route (xla, and the rows kernel where it applies).
        routes = ", ".join(f"{route} {tps:.1f} tokens/s ({r['vs_real'][route]:.2f}x real)"
                           for route, tps in r["tokens_per_s"].items())
        out.append(f"      {r['algebra']:4s} {routes}")
  return out


# ----------------------------------------------------------------------------- parent side
def section_cap(sections_left: list[str], left: float, shares: dict[str, float],
                fixed: dict[str, float]) -> float:
  """Seconds for sections_left[0], with `left` seconds for all of sections_left.

  A section with a fixed cap gets it (if the later fixed caps leave that much); the others
  share what the fixed caps leave, in proportion to `shares`.
  """
  name, later = sections_left[0], sections_left[1:]
  free = left - sum(fixed[s] for s in later if s in fixed)
  if name in fixed:
    return min(fixed[name], free)
  flexible = [s for s in sections_left if s not in fixed]
  return free * shares[name] / sum(shares[s] for s in flexible)


def _run_child(name: str, argv: list[str], cap: float, tmp: pathlib.Path, env) -> dict:
  """Runs one section in a subprocess killed at `cap` seconds; its result dict."""
  path = tmp / f"{name}.json"
  margin = min(10.0, 0.1 * cap)
  cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), *argv, "--run_section", name,
         "--result", str(path), "--deadline", str(time.time() + cap - margin)]
  t0 = time.time()
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, cwd=ROOT, start_new_session=True)
  tail: list[str] = []

  def pump():
    for line in proc.stdout:
      print(f"[{name}] {line}", end="", flush=True)
      tail.append(line.rstrip())
      del tail[:-40]
  reader = threading.Thread(target=pump, daemon=True)
  reader.start()
  killed = False
  try:
    proc.wait(timeout=cap)
  except subprocess.TimeoutExpired:
    killed = True
    os.killpg(proc.pid, signal.SIGKILL)  # the section's own process group, started above
    proc.wait()
  reader.join(timeout=5)
  try:
    res = json.loads(path.read_text())
  except (OSError, json.JSONDecodeError):
    res = {"status": "running", "rows": [], "notes": [], "info": {}, "not_run": [],
           "error": None}
  res["wall_s"] = time.time() - t0
  res["returncode"] = None if killed else proc.returncode
  res["output_tail"] = tail[-20:]
  if killed and res["status"] in ("ok", "partial"):
    res["notes"].append(f"(its process was killed at the cap of {cap:.0f} s, after it finished)")
  elif killed:
    res.update(status="killed", error=f"killed at its time cap of {cap:.0f} s"
               + (f"; {len(res['rows'])} row(s) done before" if res["rows"] else ""))
  elif proc.returncode != 0 and res["status"] != "failed":
    res.update(status="failed", error=f"exited with status {proc.returncode}: "
               + (tail[-1] if tail else "no output"))
  elif proc.returncode == 0 and res["status"] == "running":
    res.update(status="failed", error="exited without a result")
  return res


def write_outputs(report, write_path: Optional[str], out_dir: Optional[str]) -> str:
  block = render_block(report)
  label = device_label(report)
  if write_path:
    benchmark_ops.write_section(write_path, label, block.rstrip("\n"))
  if out_dir:
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / OUT_FILES[0]).write_text(f"<!-- {label}:begin -->\n{block}<!-- {label}:end -->\n")
    (out / OUT_FILES[1]).write_text(json.dumps(report, indent=1,
                                               default=sections_lib.json_default))
    if write_path and os.path.exists(write_path):
      (out / OUT_FILES[2]).write_text(pathlib.Path(write_path).read_text())
  return block


def merge(path: str, write_path: str) -> None:
  """Writes the block of an accelerator_check.md into `write_path` (BENCHMARKS.md)."""
  text = pathlib.Path(path).read_text()
  m = re.search(r"<!-- (accelerator-[\w-]+):begin -->\n(.*?)\n<!-- \1:end -->", text, re.S)
  if not m:
    raise ValueError(f"{path} holds no accelerator block (<!-- accelerator-...:begin --> ... "
                     "end -->); give the accelerator_check.md the check wrote under $OUT")
  benchmark_ops.write_section(write_path, m.group(1), m.group(2))
  print(f"wrote {m.group(1)} into {write_path}")


def parent_main(args) -> int:
  """Runs the sections one by one in child processes; writes and prints the results."""
  import jax
  # This process only schedules and renders. Keep it off the accelerator: a backend initialised
  # here would hold device memory that the sections need.
  jax.config.update("jax_platforms", "cpu")
  profile = sections_lib.profile_of(args)
  sections = ["devices"] + [s for s in args.sections if s != "devices"]
  write_path = args.write
  if write_path is None:
    write_path = (str(pathlib.Path(tempfile.gettempdir()) / "BENCHMARKS.reduced.md")
                  if args.reduced else str(ROOT / "BENCHMARKS.md"))
  out_dir = args.out if args.out is not None else os.environ.get("OUT") or None
  child_argv = list(args.argv)  # the children get the options given here
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  if profile.xla_flags:
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {profile.xla_flags}".strip()
  command = os.environ.get("ACCELERATOR_CHECK_COMMAND") or (
      "python scripts/accelerator_check.py " + " ".join(args.argv)).strip()
  report = {"command": command, "reduced": args.reduced,
            "date": datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
            "budget_s": profile.budget_s, "wall_s": 0.0, "algebras": list(profile.algebras),
            "profile": dataclasses.asdict(profile), "sections": {}}
  tmp = pathlib.Path(tempfile.mkdtemp(prefix="accelerator_check_"))
  start = time.time()
  print(f"accelerator check: sections {', '.join(sections)}; budget {profile.budget_s:.0f} s; "
        f"writing {write_path}" + (f" and {out_dir}" if out_dir else ""), flush=True)
  for i, name in enumerate(sections):
    left = profile.budget_s - (time.time() - start)
    cap = section_cap(sections[i:], left, profile.shares, args.cap)
    if cap < MIN_CAP_S:
      res = {"status": "not run", "error": f"the budget was spent ({left:.0f} s left)",
             "rows": [], "notes": [], "info": {}, "not_run": [], "wall_s": 0.0}
    else:
      print(f"--- {name}: cap {cap:.0f} s", flush=True)
      res = _run_child(name, child_argv, cap, tmp, env)
    report["sections"][name] = res
    report["wall_s"] = time.time() - start
    write_outputs(report, write_path, out_dir)
    print(f"--- {name}: {status_text(res)} ({res['wall_s']:.0f} s)", flush=True)
    if name == "devices" and res["status"] != "ok":
      print("the devices section failed; nothing else is run", flush=True)
      for rest in sections[1:]:
        report["sections"][rest] = {"status": "not run", "error": "the devices section failed",
                                    "rows": [], "notes": [], "info": {}, "not_run": [],
                                    "wall_s": 0.0}
      write_outputs(report, write_path, out_dir)
      break
  block = write_outputs(report, write_path, out_dir)
  shutil.rmtree(tmp, ignore_errors=True)
  print()
  print(block)
  print("\n".join(summary_lines(report)))
  print(f"written: {write_path}" + (f"; {out_dir}/{{{','.join(OUT_FILES)}}}" if out_dir else ""))
  ok = all(r["status"] in ("ok", "partial") for r in report["sections"].values())
  return 0 if ok else 1


def _caps(text: str) -> dict[str, float]:
  out = {}
  for item in filter(None, text.split(",")):
    name, _, value = item.partition("=")
    if name not in SECTION_NAMES:
      raise ValueError(f"--cap {item!r}: unknown section {name!r}; sections: "
                       f"{list(SECTION_NAMES)}")
    try:
      out[name] = float(value)
    except ValueError as e:
      raise ValueError(f"--cap {item!r}: expected SECTION=SECONDS") from e
  return out


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--reduced", action="store_true",
                 help="CPU sizes, 2 simulated devices, a temporary output file")
  p.add_argument("--sections", default=",".join(SECTION_NAMES),
                 help="comma-separated subset of: " + ", ".join(SECTION_NAMES))
  p.add_argument("--algebras", default=None,
                 help="comma-separated, with r (default r,c,h,m2r,m4r; reduced r,m2r)")
  p.add_argument("--compute_match", default="auto",
                 help="match kind of the equal-compute arm: auto (flops if the library has "
                      "it, else macs), macs or flops")
  p.add_argument("--budget", type=float, default=None,
                 help="seconds for all sections (default 450; reduced 1200, a safety net)")
  p.add_argument("--cap", default="", help="SECTION=SECONDS,...: fixed caps for these sections")
  p.add_argument("--write", default=None,
                 help="markdown file for the block (default BENCHMARKS.md; reduced: a file in "
                      "the temporary directory)")
  p.add_argument("--out", default=None, help="directory for the result files (default $OUT)")
  p.add_argument("--allow_cpu", action="store_true",
                 help="run the accelerator sizes even if JAX sees only CPUs")
  p.add_argument("--merge", default=None, metavar="ACCELERATOR_CHECK_MD",
                 help="write the block of this file into --write (default BENCHMARKS.md); "
                      "nothing is run")
  p.add_argument("--inject_failure", action="append", default=[], metavar="SECTION[:hang]",
                 help="make SECTION fail (or hang until killed): tests the failure path")
  # Internal: the parent runs each section as `--run_section NAME --result PATH --deadline T`.
  p.add_argument("--run_section", default=None, help=argparse.SUPPRESS)
  p.add_argument("--result", default=None, help=argparse.SUPPRESS)
  p.add_argument("--deadline", type=float, default=None, help=argparse.SUPPRESS)
  args = p.parse_args(argv)
  args.argv = [a for a in (sys.argv[1:] if argv is None else argv)]
  args.sections = [s.strip() for s in args.sections.split(",") if s.strip()]
  for s in args.sections:
    if s not in SECTION_NAMES:
      raise ValueError(f"--sections: unknown section {s!r}; sections: {list(SECTION_NAMES)}")
  default = PROFILES["reduced" if args.reduced else "accelerator"].algebras
  args.algebras = tuple(a.strip() for a in args.algebras.split(",")) if args.algebras else default
  if "r" not in args.algebras:
    raise ValueError(f"--algebras {','.join(args.algebras)}: the real model 'r' is every "
                     "table's reference; include it")
  from algebranets import algebras as algebras_lib
  for a in args.algebras:
    algebras_lib.get(a)  # ValueError naming the algebras
  if args.compute_match not in ("auto", "macs", "flops"):
    raise ValueError(f"--compute_match={args.compute_match}; choices: auto, macs, flops")
  args.cap = _caps(args.cap)
  for item in args.inject_failure:
    name, _, how = item.partition(":")
    if name not in SECTION_NAMES or how not in ("", "hang"):
      raise ValueError(f"--inject_failure {item!r}: expected SECTION or SECTION:hang with "
                       f"SECTION in {list(SECTION_NAMES)}")
  return args


def main(argv=None) -> int:
  try:
    args = parse_args(argv)
    if args.merge:
      merge(args.merge, args.write or str(ROOT / "BENCHMARKS.md"))
      return 0
  except ValueError as e:
    print(f"accelerator_check: {e}", file=sys.stderr)
    return 2
  if args.run_section:
    return sections_lib.child_main(args)
  return parent_main(args)


if __name__ == "__main__":
  sys.exit(main())
