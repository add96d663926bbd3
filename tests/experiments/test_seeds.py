"""The 3-seed character-LM sweep and the collector's mean ± std over seeds.

The collector's statistics are checked against numpy (mean, std with ddof 1) and scipy's own
Welch t-test (`scipy.stats.ttest_ind(equal_var=False)`), on hand-written workdirs.
"""

import importlib.util
import json

import numpy as np
import pytest
from scipy import stats

from experiments import collect
from experiments import launch
from experiments import sweeps

BPC = {  # setting -> bpc of seeds 0, 1, 2
    "r": (2.770, 2.781, 2.765),
    "h": (2.700, 2.695, 2.708),          # clearly better than r
    "c": (2.772, 2.760, 2.779),          # within noise of r
    "learned:4": (2.690, 2.735, 2.701),
}


def _fake_lm_run(root, name, algebra, seed, value, params=266_000, d_model=48):
  wd = root / name
  wd.mkdir(parents=True)
  config = {"algebra": algebra, "match": "params", "seed": seed, "train": {"num_steps": 1000},
            "model_name": "transformer_xl", "model": {"d_model": d_model},
            "checkpoint": {"best_metric": "test/bpc"}, "sparsity": {"target": 0.0}}
  (wd / "config.json").write_text(json.dumps(config))
  (wd / "model.json").write_text(json.dumps({"params": params, "macs_per_token": 5e5,
                                             "all_macs_per_token": 6e5}))
  (wd / "metrics.jsonl").write_text(json.dumps({"step": 1000, "split": "test", "bpc": value})
                                    + "\n")
  (wd / launch.RUN_FILE).write_text(json.dumps(
      {"status": "done", "wall_s": 120.0, "metric": "test/bpc", "sweep": "char_lm_seeds",
       "git_commit": "abc", "machine": "m", "started": "2026-01-01T00:00:00",
       "finished": "2026-01-01T00:02:00"}))


def test_seed_sweep_runs_carry_their_seed_and_load():
  sweep = sweeps.get("char_lm_seeds")
  assert len(sweep.runs) == 3 * len(sweeps.SEED_ALGEBRAS)
  assert {r.algebra for r in sweep.runs} >= {"r", "c", "h", "m2r", "m4r", "cl_0_2", "learned:4"}
  for run in sweep.runs:
    seed = dict(run.overrides)["seed"]
    assert run.name.endswith(f"_seed-{seed}")
    assert f"--config.seed={seed}" in run.command("/w", {"text": "/d/t.txt"})
  assert sweep.runs[0].name == "r_match-params_seed-0"
  assert "learned_4_match-params_seed-2" in [r.name for r in sweep.runs]
  # Every run's config loads (learned:4 and cl_0_2 resolve through the config argument).
  for run in sweep.runs[:len(sweeps.SEED_ALGEBRAS)]:
    spec = importlib.util.spec_from_file_location("cfg", sweeps.ROOT / run.config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config(run.arg.format(text="/d/t.txt"))
    assert config.algebra == run.algebra and "seed" in config


def test_collector_reports_mean_std_over_seeds_and_marks_noise(tmp_path):
  root = tmp_path / "runs"
  for alg, values in BPC.items():
    for seed, v in enumerate(values):
      _fake_lm_run(root, f"{alg.replace(':', '_')}_seed-{seed}", alg, seed, v)
  _fake_lm_run(root, "m2r_seed-0", "m2r", 0, 2.75)                   # one seed only
  rows = collect.write(root, tmp_path / "out", title="seeds")
  assert len(rows) == 13
  groups = {g.algebra: g for g in collect.seed_groups(rows)}
  for alg, values in BPC.items():
    g = groups[alg]
    assert g.n == 3 and sorted(r.seed for r in g.runs) == [0, 1, 2]
    assert g.mean == pytest.approx(np.mean(values))
    assert g.std == pytest.approx(np.std(values, ddof=1))
    if alg != "r":
      want = stats.ttest_ind(values, BPC["r"], equal_var=False)
      got = collect.compare(g, groups["r"])
      assert got["p"] == pytest.approx(want.pvalue, rel=1e-9)
      assert got["t"] == pytest.approx(want.statistic, rel=1e-9)
  assert np.isnan(collect.compare(groups["m2r"], groups["r"])["p"])
  md = (tmp_path / "out" / "results.md").read_text()
  assert "## Over seeds" in md
  lines = {l.split("|")[1].strip(): [c.strip() for c in l.split("|")[2:-1]]
           for l in md.split("## Over seeds")[1].splitlines() if l.startswith("| ")}
  mean, std = np.mean(BPC["h"]), np.std(BPC["h"], ddof=1)
  assert lines["h"][3] == f"{mean:.4g} ± {std:.4g}"
  assert lines["h"][4].startswith(f"{mean - np.mean(BPC['r']):+.4f}: better (p=")
  assert lines["c"][4].startswith(f"{np.mean(BPC['c']) - np.mean(BPC['r']):+.4f}: within noise")
  assert lines["r"][4] == "-" and lines["r"][2] == "0, 1, 2"
  assert lines["m2r"][4].endswith("n/a (one run)") and lines["m2r"][3].endswith("± n/a")
  best = min(BPC, key=lambda a: np.mean(BPC[a]))
  assert lines[best][5] == "best"
  saved = json.loads((tmp_path / "out" / "seeds.json").read_text())
  assert {g["setting"]: g["n"] for g in saved}["learned:4"] == 3


def test_one_seed_per_setting_has_no_seed_table(tmp_path):
  root = tmp_path / "runs"
  _fake_lm_run(root, "r", "r", 0, 2.77)
  _fake_lm_run(root, "h", "h", 0, 2.70)
  collect.write(root, tmp_path / "out")
  assert "Over seeds" not in (tmp_path / "out" / "results.md").read_text()
  assert not (tmp_path / "out" / "seeds.json").exists()
