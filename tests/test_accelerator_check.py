"""scripts/accelerator_check.py in its reduced CPU mode, end to end, so that it is known to work
before an accelerator machine is lent (issue 10 §5).

The reduced mode runs every section through the same functions as on the accelerator, at CPU
sizes; these tests check what it writes (every section, with numbers that agree with each other
and with the models' sizes), and that a failing or hanging section is reported as such and
makes the script exit non-zero rather than disappearing from the output.
"""

import json
import math
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "accelerator_check.py"
TITLES = {
    "devices": "Devices",
    "multidevice": "Multi-device training (all devices vs one)",
    "ops": "Layer benchmark (scripts/benchmark_ops.py)",
    "resnet50": "ResNet-50 training step (configs/imagenet_resnet50.py)",
    "transformer_xl": "Transformer-XL enwik8 base training step "
                      "(configs/enwik8_transformer_xl.py)",
    "decode": "Batch-1 decoding (scripts/benchmark_models.py)",
}
LABEL = "accelerator-cpu-x2-reduced"  # 2 simulated CPU devices in reduced mode
PREFACE = "# Benchmarks\n\nWritten by hand; the check must keep it.\n"


def _run(tmp_path, *args, timeout):
  """Runs the reduced check writing into tmp_path; (process, markdown file, out directory)."""
  md, out = tmp_path / "BENCHMARKS.md", tmp_path / "out"
  md.write_text(PREFACE)
  proc = subprocess.run([sys.executable, str(SCRIPT), "--reduced", "--write", str(md),
                         "--out", str(out), *args], cwd=ROOT, capture_output=True, text=True,
                        timeout=timeout)
  return proc, md, out


def _block(md: pathlib.Path) -> str:
  text = md.read_text()
  assert text.startswith(PREFACE)
  m = re.search(rf"<!-- {LABEL}:begin -->\n(.*)\n<!-- {LABEL}:end -->", text, re.S)
  assert m, text
  return m.group(1)


def _section(block: str, name: str) -> str:
  """The text of one section of the block (up to the next section heading)."""
  m = re.search(rf"#### {re.escape(TITLES[name])}: (.*?)(?=\n#### |\Z)", block, re.S)
  assert m, (name, block)
  return m.group(1)


def _table_rows(text: str, first_column: str):
  """Cells of the markdown table rows of `text` whose first cell is `first_column`."""
  return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
          if line.startswith(f"| {first_column} |")]


@pytest.mark.slow  # compiles about 15 XLA:CPU programs of real models: minutes on two cores
def test_reduced_mode_writes_every_section_with_numbers(tmp_path):
  proc, md, out = _run(tmp_path, timeout=1500)
  assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
  block = _block(md)
  report = json.loads((out / "accelerator_check.json").read_text())
  sections = report["sections"]
  assert list(sections) == list(TITLES)
  for name in TITLES:
    assert sections[name]["status"] == "ok", (name, sections[name])
    assert _section(block, name).startswith("ok\n"), name
  # The results under $OUT are the block written into the markdown file, and that file.
  assert _block(out / "BENCHMARKS.md") == block
  assert f"<!-- {LABEL}:begin -->\n{block}\n<!-- {LABEL}:end -->" in (
      out / "accelerator_check.md").read_text()
  assert "Command: `python " in block and "Date: " in block and "Machine: " in block

  devices = sections["devices"]["info"]
  assert devices["platform"] == "cpu" and devices["count"] == 2
  assert devices["peak_tflops"] > 0

  # Multi-device: the 2-device and the 1-device runs, memories sharded, same losses.
  md_rows = {r["mesh"]: r for r in sections["multidevice"]["rows"]}
  assert (md_rows["all"]["devices"], md_rows["all"]["carry_devices"]) == (2, 2)
  assert (md_rows["one"]["devices"], md_rows["one"]["carry_devices"]) == (1, 1)
  np.testing.assert_allclose(md_rows["all"]["losses"], md_rows["one"]["losses"], rtol=1e-5)
  assert len(md_rows["all"]["losses"]) == 2 and all(math.isfinite(x) and x > 0
                                                   for x in md_rows["all"]["losses"])

  # Layer benchmark: dense and conv for r and m2r, with positive rates in the table.
  ops = sections["ops"]["rows"]
  assert [(r["kind"], r["algebra"]) for r in ops] == [
      ("dense", "r"), ("dense", "m2r"), ("conv", "r"), ("conv", "m2r")]
  for cells in _table_rows(_section(block, "ops"), "dense") + _table_rows(
      _section(block, "ops"), "conv"):
    assert float(cells[8]) >= 0 and float(cells[4]) > 0  # GMAC/s, FLOP/s vs real

  # Training throughput: r, m2r at equal params, m2r at equal compute, all timed.
  compute = report["sections"]["resnet50"]["info"]["compute_match"]
  assert compute in ("macs", "flops")
  for name, unit in (("resnet50", "images"), ("transformer_xl", "tokens")):
    rows = {(r["algebra"], r["match"]): r for r in sections[name]["rows"]}
    assert set(rows) == {("r", "none"), ("m2r", "params"), ("m2r", compute)}, rows
    real = rows[("r", "none")]
    for (_algebra, match), r in rows.items():
      assert r["status"] == "ok" and r["step_s"] > 0 and math.isfinite(r["loss"])
      # Units per second are the batch's units over the step time, and the batch is the
      # global one (2 devices).
      assert r["units_per_s"] == pytest.approx(r["units_per_step"] / r["step_s"])
      assert r["batch"] % 2 == 0
      if match == "params":  # matched to the real model's size (reduced: 10% tolerance)
        assert r["params"] == pytest.approx(real["params"], rel=0.1)
      if match == "macs":
        assert r["macs_per_unit"] == pytest.approx(real["macs_per_unit"], rel=0.1)
    text = _section(block, name)
    assert f"**Equal params** ({unit}/s" in text and f"**Equal {compute}** ({unit}/s" in text
    r_cells = _table_rows(text, "r")
    assert len(r_cells) == 2  # the reference heads both tables
    for cells in r_cells + _table_rows(text, "m2r"):
      assert float(cells[4].replace(",", "")) > 0 and float(cells[5]) > 0, cells  # rate, ms
      assert cells[-1] == "ok"
    assert [c[6] for c in r_cells] == ["1.00", "1.00"]  # speed vs r

  # Decoding: tokens/s of r and m2r.
  decode = {r["algebra"]: r for r in sections["decode"]["rows"]}
  assert set(decode) == {"r", "m2r"}
  for r in decode.values():  # one rate per route: xla, and the rows kernel where it applies
    assert "xla" in r["tokens_per_s"] and all(v > 0 for v in r["tokens_per_s"].values()), r
  assert set(decode["r"]["vs_real"].values()) == {1.0}
  assert re.search(r"\n +m2r +xla [\d.]+ tokens/s \([\d.]+x real\)", proc.stdout), proc.stdout

  # The summary is printed, and --merge brings the block into another file.
  assert "accelerator check: " + LABEL in proc.stdout
  other = tmp_path / "other.md"
  other.write_text(PREFACE)
  merged = subprocess.run([sys.executable, str(SCRIPT), "--merge",
                           str(out / "accelerator_check.md"), "--write", str(other)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert merged.returncode == 0, merged.stderr
  assert _block(other) == block


@pytest.mark.slow  # three short sections, one waiting for its cap: about 20 s
def test_failed_and_hung_sections_are_reported_and_the_exit_status_is_not_zero(tmp_path):
  proc, md, out = _run(tmp_path, "--sections", "ops,decode", "--inject_failure", "ops",
                       "--inject_failure", "decode:hang", "--cap", "decode=10", timeout=600)
  assert proc.returncode == 1, proc.stdout[-4000:]
  block = _block(md)
  sections = json.loads((out / "accelerator_check.json").read_text())["sections"]
  assert {k: v["status"] for k, v in sections.items()} == {
      "devices": "ok", "ops": "failed", "decode": "killed"}
  assert _section(block, "devices").startswith("ok\n")
  assert _section(block, "ops").startswith(
      "FAILED: CheckFailed: failure injected into ops (--inject_failure)")
  assert _section(block, "decode").startswith("KILLED: killed at its time cap of 10 s")
  summary = proc.stdout[proc.stdout.index("accelerator check: " + LABEL):]
  assert "FAILED" in summary and "KILLED" in summary


def test_bad_arguments_name_the_choices():
  proc = subprocess.run([sys.executable, str(SCRIPT), "--reduced", "--sections", "ops,nope"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert "unknown section 'nope'" in proc.stderr and "transformer_xl" in proc.stderr
  proc = subprocess.run([sys.executable, str(SCRIPT), "--reduced", "--algebras", "m2r"],
                        cwd=ROOT, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and "include it" in proc.stderr


def _driver():
  sys.path.insert(0, str(ROOT / "scripts"))
  import accelerator_check  # pylint: disable=g-import-not-at-top
  return accelerator_check


def test_caps_share_the_budget_left_and_respect_fixed_caps():
  cap = _driver().section_cap
  shares = {"a": 1.0, "b": 3.0, "c": 4.0}
  assert cap(["a", "b", "c"], 80.0, shares, {}) == pytest.approx(10.0)
  assert cap(["b", "c"], 70.0, shares, {}) == pytest.approx(30.0)  # a's unused time flows on
  # A fixed cap comes off the top; the others share the rest.
  assert cap(["a", "b", "c"], 80.0, shares, {"c": 20.0}) == pytest.approx(15.0)
  assert cap(["c"], 20.0, shares, {"c": 25.0}) == pytest.approx(20.0)  # never beyond the budget


def test_rows_that_failed_or_did_not_run_are_in_the_tables():
  driver = _driver()
  row = dict(size="width 1", params=100, macs_per_unit=1e9, batch=8, units_per_step=8,
             compile_s=2.0, xla_flops_per_step=6e10, status="ok")
  rows = [dict(row, algebra="r", match="none", step_s=0.01, units_per_s=800.0),
          dict(row, algebra="m2r", match="params", step_s=0.04, units_per_s=200.0),
          dict(algebra="m2r", match="macs", status="not run: time cap"),
          dict(algebra="h", match="params", status="failed: ValueError: no width")]
  res = {"status": "failed", "error": "h/params: failed", "not_run": ["m2r/macs"], "notes": [],
         "rows": rows, "info": dict(unit="images", devices=1, steps_per_call=5, repeats=3,
                                    compute_match="macs")}
  report = {"sections": {"devices": {"info": {"peak_tflops": 100.0}}}}
  text = "\n".join(driver.render_train(res, report))
  params_table, macs_table = text.split("**Equal macs**")
  m2r = _table_rows(params_table, "m2r")[0]
  assert m2r[4] == "200" and m2r[5] == "40"          # images/s, step ms
  assert m2r[6] == "0.25"                            # speed vs r: 10 ms / 40 ms
  assert m2r[7] == "1.2" and m2r[8] == "1.5"         # 6·1e9·200 and 6e10 / 0.04 s, in TFLOP/s
  assert m2r[9] == "1%"                              # 1.2 of a 100 TFLOP/s matmul
  assert _table_rows(params_table, "h")[0][-1] == "failed: ValueError: no width"
  assert _table_rows(macs_table, "m2r")[0][-1] == "not run: time cap"
  assert driver.status_text(res) == "FAILED: h/params: failed"


def test_the_summary_prints_every_decode_route():
  # The decode rows as scripts/benchmark_models.py returns them: one rate per route.
  rows = [dict(algebra="r", tokens_per_s={"xla": 2000.0, "kernel": 2500.0},
               vs_real={"xla": 1.0, "kernel": 1.0}),
          dict(algebra="m2r", tokens_per_s={"xla": 1600.0, "kernel": 1500.0},
               vs_real={"xla": 0.8, "kernel": 0.6})]
  report = {"wall_s": 10.0, "budget_s": 100.0, "reduced": True,
            "sections": {"decode": {"status": "ok", "rows": rows, "notes": [], "wall_s": 5.0}}}
  lines = _driver().summary_lines(report)
  assert "      m2r  xla 1600.0 tokens/s (0.80x real), kernel 1500.0 tokens/s (0.60x real)" \
      in lines, lines


def test_the_accelerator_run_stops_at_once_when_jax_sees_only_cpus(tmp_path):
  # A broken accelerator plugin makes JAX fall back to the CPU: the check must not then spend
  # the device machine's minutes timing accelerator sizes on its CPU.
  md = tmp_path / "BENCHMARKS.md"
  proc = subprocess.run([sys.executable, str(SCRIPT), "--sections", "ops,decode", "--write",
                         str(md), "--out", str(tmp_path / "out")], cwd=ROOT, capture_output=True,
                        text=True, timeout=300)
  assert proc.returncode == 1, proc.stdout[-4000:]
  sections = json.loads((tmp_path / "out" / "accelerator_check.json").read_text())["sections"]
  assert sections["devices"]["status"] == "failed"
  assert "JAX sees only CPU devices" in sections["devices"]["error"]
  assert sections["ops"]["status"] == sections["decode"]["status"] == "not run"
  assert re.search(r"<!-- accelerator-cpu-x\d+:begin -->", md.read_text())


def test_a_rerun_on_the_same_devices_replaces_its_block(tmp_path):
  driver = _driver()
  md = tmp_path / "BENCHMARKS.md"
  md.write_text(PREFACE)
  devices = {"status": "ok", "rows": [], "notes": [], "not_run": [], "wall_s": 1.0,
             "info": dict(device_kind="NVIDIA H200", count=1, machine="m", peak_size=8,
                          peak_tflops=700.0)}
  for date in ("2026-12-01", "2026-12-02"):
    report = dict(command="c", reduced=False, date=date, budget_s=450.0, wall_s=1.0,
                  algebras=["r"], sections={"devices": devices})
    driver.write_outputs(report, str(md), None)
  text = md.read_text()
  assert text.startswith(PREFACE)
  assert text.count("<!-- accelerator-nvidia-h200-x1:begin -->") == 1
  assert "Date: 2026-12-02" in text and "2026-12-01" not in text
  assert "700.0 TFLOP/s" in text
