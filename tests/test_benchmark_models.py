"""scripts/benchmark_models.py's timing: runners called in turn each round, and the per-round
speed ratios that its stage-3 and Transformer-XL tables print beside the fastest round's."""

import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture
def bm(monkeypatch):
  monkeypatch.syspath_prepend(str(ROOT / "scripts"))
  import benchmark_models  # pylint: disable=g-import-not-at-top
  return benchmark_models


def test_round_robin_calls_every_runner_once_per_round_in_turn(bm):
  calls = []
  runners = {k: (lambda k=k: calls.append(k) or np.zeros(())) for k in ("r", "c", "m4r")}
  times = bm._round_robin(runners, 3)
  assert calls == ["r", "c", "m4r"] * 3
  assert set(times) == set(runners) and all(len(v) == 3 and min(v) >= 0
                                            for v in times.values())


def test_speed_range_pairs_each_round_with_itself(bm):
  times = {"r": [0.20, 0.30, 0.25], "m4r": [0.25, 0.30, 0.40]}
  lo, hi = bm.speed_range(times, "r", "m4r")
  ratios = np.array(times["r"]) / np.array(times["m4r"])   # 0.8, 1.0, 0.625
  assert (lo, hi) == pytest.approx((ratios.min(), ratios.max()))
  # Not the ratio of the extremes across rounds (0.20 / 0.40 = 0.5, 0.30 / 0.25 = 1.2).
  assert lo == pytest.approx(0.625) and hi == pytest.approx(1.0)
  assert bm.speed_range(times, "r", "r") == (1.0, 1.0)
