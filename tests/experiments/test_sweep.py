"""Sweeps, the launcher and the collector.

The end-to-end test trains a tiny sweep (debug character Transformer-XL, 2 algebras x 2 sizes)
through the launcher's subprocesses, reruns it (nothing runs again), and checks the collector's
table against the workdirs' own metrics.jsonl and model.json, read here independently. The other
tests use hand-written workdirs and the command printer, and train nothing.
"""

import json
import re
import shlex

import numpy as np
import pytest

from experiments import collect
from experiments import launch
from experiments import sweeps

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
  """20 kB of word-like text (a Zipf draw over a small vocabulary), deterministic."""
  rng = np.random.default_rng(0)
  words = "the of and to in a is that for it as was with be by on not he this are".split()
  text = " ".join(words[min(int(rng.zipf(1.5)) - 1, len(words) - 1)] for _ in range(6000))
  path = tmp_path_factory.mktemp("text") / "corpus.txt"
  path.write_text(text[:20_000])
  return path


def _table_rows(markdown: str):
  """{run name: [cells]} of the results.md table."""
  rows = {}
  for line in markdown.splitlines():
    m = re.match(r"\| `([^`]+)` \|(.*)\|$", line)
    if m:
      rows[m.group(1)] = [c.strip() for c in m.group(2).split("|")]
  return rows


# ----------------------------------------------------------------------------- sweeps
def test_run_names_follow_the_settings_not_the_data_paths():
  run = sweeps.Run("configs/cifar10_resnet.py", "m2r,match=params,folder={cifar10},bn=whitening",
                   (("sparsity.target", 0.9), ("sparsity.frequency", 10)))
  assert run.name == "m2r_match-params_bn-whitening_sparsity-0.9"
  assert run.algebra == "m2r" and run.sparsity == 0.9
  argv = run.command("/w/x", {"cifar10": "/data/c10"}, python="py")
  assert argv == ["py", "-m", "algebranets.train",
                  "--config=configs/cifar10_resnet.py:m2r,match=params,folder=/data/c10,"
                  "bn=whitening", "--workdir=/w/x", "--config.sparsity.target=0.9",
                  "--config.sparsity.frequency=10"]
  assert sweeps.Run("c.py", "h,debug,width=0.5", variant="v1").name == "h_width-0.5_v1"


def test_sweeps_reject_duplicate_names_and_undeclared_data():
  with pytest.raises(ValueError, match="several runs named"):
    sweeps.Sweep("s", "", (sweeps.Run("c.py", "r"), sweeps.Run("c.py", "r,folder=a")), "t/x")
  with pytest.raises(ValueError, match=r"placeholders \['text'\]"):
    sweeps.Sweep("s", "", (sweeps.Run("c.py", "r,path={text}"),), "t/x")
  with pytest.raises(ValueError, match="Unknown sweep 'nope'; valid: .*cifar10_small"):
    sweeps.get("nope")


def test_paper_sweeps_cover_every_algebra_match_and_sparsity():
  # Equal compute: weight-layer MACs for the image models (all their multiply-adds), all
  # multiply-adds ("flops": attention and logits too) for Transformer-XL.
  for name, algebras, compute in (("imagenet_resnet50", sweeps.PAPER_ALGEBRAS, "macs"),
                                  ("imagenet_mobilenet_v1", sweeps.PAPER_ALGEBRAS, "macs"),
                                  ("enwik8_transformer_xl", sweeps.LM_ALGEBRAS, "flops"),
                                  ("wikitext103_transformer_xl", sweeps.LM_ALGEBRAS, "flops")):
    runs = sweeps.get(name).runs
    dense = {(r.algebra, r.arg_keys["match"]) for r in runs if not r.sparsity}
    assert dense == {("r", "params")} | {(a, m) for a in algebras[1:] for m in ("params", compute)}
    sparse = {(r.algebra, r.sparsity) for r in runs if r.sparsity}
    assert sparse == {(a, s) for a in ("r", "m2r") for s in (0.5, 0.75, 0.9)}
    first_sparse = min(i for i, r in enumerate(runs) if r.sparsity)
    assert not any(r.sparsity for r in runs[:first_sparse])  # dense runs go first
  small = sweeps.get("cifar10_small").runs
  assert {r.algebra for r in small} == set(sweeps.PAPER_ALGEBRAS)
  assert not any(r.sparsity for r in small)
  assert {r.algebra for r in sweeps.get("cifar10_small_sparse").runs} == {"r", "m2r"}
  assert {r.algebra for r in sweeps.get("char_lm_small").runs} == set(sweeps.LM_ALGEBRAS)


def test_every_small_run_config_loads_and_takes_its_overrides():
  import importlib.util  # pylint: disable=g-import-not-at-top
  data = {"cifar10": "/d/cifar10", "text": "/d/input.txt"}
  for sweep in ("cifar10_small", "cifar10_small_sparse", "char_lm_small"):
    for run in sweeps.get(sweep).runs:
      spec = importlib.util.spec_from_file_location("cfg", sweeps.ROOT / run.config)
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      config = module.get_config(run.arg.format(**data))
      assert config.algebra == run.algebra
      assert bool(config.model.get("bn_config", {}).get("whitening")) == ("bn=whitening" in run.arg)
      assert config.model.get("w_init") == ("polar" if "init=polar" in run.arg else None)
      for key, _ in run.overrides:
        node = config
        for part in key.split("."):
          node = node[part]  # KeyError if the config lacks the override's field


def test_enwik8_paper_sweep_scores_the_reference_tokens():
  # The published 1.06 bpc is per reference token (newlines dropped, 204 symbols).
  for run in sweeps.get("enwik8_transformer_xl").runs:
    assert "--config.data.reference_tokens=true" in run.command("/w", {"enwik8": "/d/e.zip"})


def test_every_paper_run_config_loads_with_its_match():
  import importlib.util  # pylint: disable=g-import-not-at-top
  data = {"imagenet": "/d/tfds", "enwik8": "/d/enwik8.zip", "wikitext103": "/d/wt103.zip"}
  for sweep in ("imagenet_resnet50", "imagenet_mobilenet_v1", "enwik8_transformer_xl",
                "wikitext103_transformer_xl"):
    for run in sweeps.get(sweep).runs:
      spec = importlib.util.spec_from_file_location("cfg", sweeps.ROOT / run.config)
      module = importlib.util.module_from_spec(spec)
      spec.loader.exec_module(module)
      config = module.get_config(run.arg.format(**data))
      assert (config.algebra, config.match) == (run.algebra, run.arg_keys["match"])


# ----------------------------------------------------------------------------- launcher CLI
def test_print_commands_fill_data_and_pass_config_flags(capsys, tmp_path):
  rc = launch.main(["--sweep=char_lm_small", f"--root={tmp_path}", "--data=text=/x/input.txt",
                    "--only=^(r|m2r)_", "--print_commands", "--config.train.batch_size=8"])
  assert rc == 0
  lines = capsys.readouterr().out.splitlines()
  runs = [r for r in sweeps.get("char_lm_small").runs if r.algebra in ("r", "m2r")]
  assert len(lines) == len(runs) == 2
  for line, run in zip(lines, runs):
    argv = shlex.split(line)
    assert argv[:3] == ["python", "-m", "algebranets.train"]
    assert argv[3].startswith(f"--config=configs/char_transformer_xl.py:{run.algebra},"
                              "match=params,path=/x/input.txt")
    assert argv[4] == f"--workdir={tmp_path / run.name}"
    assert argv[-1] == "--config.train.batch_size=8"
  out = tmp_path / "cmds.sh"
  assert launch.main(["--sweep=char_lm_small", f"--root={tmp_path}", "--data=text=/x/i.txt",
                      f"--write_commands={out}"]) == 0
  assert len(out.read_text().splitlines()) == len(sweeps.get("char_lm_small").runs)


def test_launcher_says_which_data_a_sweep_needs(capsys):
  with pytest.raises(SystemExit):
    launch.main(["--sweep=cifar10_small", "--print_commands"])
  assert "--data=cifar10=PATH" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    launch.main(["--sweep=cifar10_small", "--data=cifar10=/x", "--only=^zzz", "--print_commands"])
  assert "matches no run" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    launch.main(["--sweep=cifar10_small", "--data=cifar10=/x", "--bogus"])
  assert "unrecognized arguments: --bogus" in capsys.readouterr().err


# ----------------------------------------------------------------------------- collector
def _fake_run(root, name, *, algebra, params, macs, value, step, num_steps, sparsity=0.0,
              nonzero=None, record=True, width=0.5, all_macs=None):
  wd = root / name
  wd.mkdir(parents=True)
  config = {"algebra": algebra, "match": "params", "train": {"num_steps": num_steps},
            "model_name": "cifar_resnet20", "model": {"width": width},
            "checkpoint": {"best_metric": "test/top1"}, "sparsity": {"target": sparsity}}
  (wd / "config.json").write_text(json.dumps(config))
  model = {"params": params, "macs_per_example": macs}
  if all_macs is not None:
    model["all_macs_per_example"] = all_macs
  if nonzero:
    model.update(nonzero_params=nonzero[0], nonzero_macs_per_example=nonzero[1])
  (wd / "model.json").write_text(json.dumps(model))
  lines = [{"step": 10, "split": "train", "loss": 2.0},
           {"step": step, "split": "test", "top1": value / 2, "loss": 1.5},
           {"step": step, "split": "test", "top1": value, "loss": 1.0}]
  (wd / "metrics.jsonl").write_text("".join(json.dumps(l) + "\n" for l in lines))
  if record:
    (wd / launch.RUN_FILE).write_text(json.dumps(
        {"status": "done", "wall_s": 150.0, "metric": "test/top1", "sweep": "cifar10_small",
         "git_commit": "abc123", "machine": "test machine", "started": "2026-01-01T00:00:00",
         "finished": "2026-01-01T00:02:30"}))
  return wd


def test_collector_tables_finished_runs_and_lists_the_others(tmp_path):
  root = tmp_path / "runs"
  _fake_run(root, "m2r_a", algebra="m2r", params=69_274, macs=2.5e7, value=0.41, step=300,
            num_steps=300, all_macs=2.6e7)
  _fake_run(root, "r_a", algebra="r", params=68_050, macs=1.0e7, value=0.385, step=300,
            num_steps=300, record=False, width=0.5)
  _fake_run(root, "r_sparse", algebra="r", params=68_050, macs=1.0e7, value=0.3, step=300,
            num_steps=300, sparsity=0.9, nonzero=(7_000, 1.2e6), all_macs=1.1e7)
  _fake_run(root, "h_unfinished", algebra="h", params=69_000, macs=4e7, value=0.2, step=100,
            num_steps=300, record=False)
  assert launch.is_finished(root / "r_a")  # from metrics.jsonl alone (no launch record)
  assert not launch.is_finished(root / "h_unfinished")
  rows = collect.write(root, tmp_path / "out", title="T")
  assert [r.run for r in rows] == ["r_a", "m2r_a", "r_sparse"]  # dense by algebra, then sparse
  md = (tmp_path / "out" / "results.md").read_text()
  table = _table_rows(md)
  assert table["m2r_a"] == ["m2r", "params", "-", "width 0.5", "69,274", "25,000,000",
                            "26,000,000", "0", "-", "41.00%", "300", "2.5 min"]
  assert table["r_a"][6] == "n/a"  # a workdir written before all MACs were recorded
  assert table["r_a"][-1] == "n/a"  # no launch record: no wall time
  assert table["r_sparse"][7:9] == ["90%", "7,000"]
  assert "h_unfinished" not in table and "`h_unfinished`: no test/top1 at its last step" in md
  assert "Git commit of the runs: abc123" in md and "Machine: test machine" in md
  data = json.loads((tmp_path / "out" / "results.json").read_text())
  assert [d["series"] for d in data] == ["r", "m2r", "r sparse 90%"]
  assert rows[2].effective_params == 7_000 and rows[2].effective_macs == 1.2e6
  # Pruning removes weight-layer MACs only: 1.1e7 - (1.0e7 - 1.2e6).
  assert rows[2].effective_all_macs == pytest.approx(2.2e6)
  for png in ("metric_vs_params.png", "metric_vs_macs.png"):
    assert (tmp_path / "out" / png).read_bytes()[:8] == PNG_MAGIC
  assert not (tmp_path / "out" / "metric_vs_all_macs.png").exists()  # r_a lacks the count


# ----------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_debug_sweep_launches_skips_when_rerun_and_collects(tmp_path, text_file):
  root = tmp_path / "runs"
  data = {"text": str(text_file)}
  messages = []
  records = launch.launch("debug_lm", root, data=data, log=messages.append)
  names = [r.name for r in sweeps.get("debug_lm").runs]
  assert [r["run"] for r in records] == names
  assert all(r["status"] == "done" and r["returncode"] == 0 and r["wall_s"] > 0
             for r in records), [(r["run"], r["status"]) for r in records]
  for name in names:
    assert launch.is_finished(root / name)
    assert json.loads((root / name / launch.RUN_FILE).read_text())["status"] == "done"

  messages.clear()
  assert launch.launch("debug_lm", root, data=data, log=messages.append) == []
  assert messages == [f"{n}: finished, skipped" for n in names]

  out = tmp_path / "out"
  rows = {r.run: r for r in collect.write(root, out, title="debug")}
  assert sorted(rows) == sorted(names)
  table = _table_rows((out / "results.md").read_text())
  for name in names:  # the table against each workdir's own files
    evals = [json.loads(l) for l in (root / name / "metrics.jsonl").read_text().splitlines()]
    final = [e for e in evals if e["split"] == "test"][-1]
    model = json.loads((root / name / "model.json").read_text())
    config = json.loads((root / name / "config.json").read_text())
    assert final["step"] == config["train"]["num_steps"] == 20
    assert table[name][4] == f"{model['params']:,}"
    assert table[name][5] == f"{model['macs_per_token']:,.0f}"
    assert table[name][6] == f"{model['all_macs_per_token']:,.0f}"
    assert model["all_macs_per_token"] > model["macs_per_token"]  # attention and logits
    assert table[name][9] == f"{final['bpc']:.4g}"
    assert table[name][10] == "20"
    assert table[name][3] == f"d_model {config['model']['d_model']}"
    assert rows[name].value == final["bpc"]
    assert final["bpc"] < 8.0  # better than uniform over bytes
  sizes = {n: rows[n].params for n in names}
  assert sizes["r_match-none_d32"] < sizes["r_match-none_d48"]
  assert sizes["m2r_match-none_d32"] == pytest.approx(4 * sizes["r_match-none_d32"], rel=0.1)
  for png in ("metric_vs_params.png", "metric_vs_macs.png", "metric_vs_all_macs.png"):
    assert (out / png).read_bytes()[:8] == PNG_MAGIC


@pytest.mark.slow
def test_a_failed_run_is_recorded_and_started_again(tmp_path):
  root = tmp_path / "runs"
  data = {"text": str(tmp_path / "missing.txt")}
  [record] = launch.launch("debug_lm", root, data=data, only="^r_match-none_d32$",
                           log=lambda m: None)
  assert record["status"] == "failed" and record["returncode"] != 0
  wd = root / "r_match-none_d32"
  assert not launch.is_finished(wd)
  assert "expected a text or byte file" in (wd / launch.LOG_FILE).read_text()
  rows, skipped, records = collect.collect(root)
  assert rows == [] and [r["status"] for r in records] == ["failed"]
  assert "launcher status: failed" in skipped["r_match-none_d32"]


def test_estimate_arithmetic_and_table():
  from experiments import estimate  # pylint: disable=g-import-not-at-top
  e = estimate.Estimate("imagenet_resnet50", "r_match-params", "width 1", 25_557_032, 4.1e9,
                        4.2e9, "image", 90 * 1_281_167, 6 * 4.2e9 * 90 * 1_281_167)
  assert e.hours(100.0) == pytest.approx(6 * 4.2e9 * 90 * 1_281_167 / 1e14 / 3600)
  text = estimate.markdown([e], tflops=100.0)
  assert (f"| `r_match-params` | width 1 | 25,557,032 | 4,100,000,000 | 4,200,000,000 | "
          f"{e.flops:.3g} | {e.hours(100.0):,.1f} |") in text
  assert "6 x 4,200,000,000 all MACs/image x 1.153e+08 images" in text
  with pytest.raises(ValueError, match="no compute estimate for sweep 'cifar10_small'"):
    estimate.estimate(sweeps.get("cifar10_small"))  # its image folder names the classes


def test_estimate_counts_the_model_each_run_config_trains():
  # The run's config file, argument and overrides, resolved as the trainer would: enwik8's
  # reference tokens have 204 symbols (not the preset's 256), debug_lm's d_model overrides apply.
  from algebranets.models import transformer_xl  # pylint: disable=g-import-not-at-top
  from experiments import estimate  # pylint: disable=g-import-not-at-top
  rows = {e.run: e for e in estimate.estimate(sweeps.get("enwik8_transformer_xl"))}
  assert len(rows) == 17                                # dense runs only
  real = transformer_xl.model_costs(dict(transformer_xl.PRESETS["enwik8_base"], vocab_size=204),
                                    "r", seq_len=512)
  r = rows["r_match-params"]
  assert (r.params, r.all_macs) == (real.total_params, real.all_macs / 512)
  assert r.units == 400_000 * 22 * 512
  rows = {e.run: e for e in estimate.estimate(sweeps.get("debug_lm"))}
  small = transformer_xl.model_costs(dict(vocab_size=256, d_model=48, n_layers=1, n_heads=2,
                                          d_head=16, d_inner=96, mem_len=16), "m2r", seq_len=16)
  assert rows["m2r_match-none_d48"].params == small.total_params


def test_estimate_cli_reports_progress_on_stderr_and_the_table_on_stdout(capsys):
  assert sweeps.main(["--estimate", "--sweep=debug_lm"]) == 0
  captured = capsys.readouterr()
  assert captured.err.startswith("estimating the training compute of 4 dense runs in 1 sweep")
  assert "r_match-none_d32: d_model 32" in captured.err and "done in" in captured.err
  assert captured.out.startswith("**debug_lm**") and "| `m2r_match-none_d48` |" in captured.out
