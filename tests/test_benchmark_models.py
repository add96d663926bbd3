"""scripts/benchmark_models.py's timing: runners called in turn each round, the per-round
speed ratios that its stage-3 and Transformer-XL tables print beside the fastest round's, and
the stage-3 blocks with parts taken out (stage3_parts)."""

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


def test_round_speeds_pair_each_round_with_itself(bm):
  times = {"r": [0.20, 0.30, 0.25, 0.21], "m4r": [0.25, 0.30, 0.40, 0.30]}
  lo, med, hi = bm.round_speeds(times, "r", "m4r")
  ratios = np.array(times["r"]) / np.array(times["m4r"])   # 0.8, 1.0, 0.625, 0.7
  assert (lo, med, hi) == pytest.approx((ratios.min(), np.median(ratios), ratios.max()))
  # Not the ratio of the extremes across rounds (0.20 / 0.40 = 0.5, 0.30 / 0.25 = 1.2), nor of
  # the per-key medians (0.23 / 0.30 = 0.767).
  assert (lo, med, hi) == pytest.approx((0.625, 0.75, 1.0))
  assert bm.round_speeds(times, "r", "r") == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("folded", [False, True])
def test_stage3_parts_take_out_what_they_name(bm, folded):
  """The stage3_parts variants: "all" has BatchNorm parameters, "no_bn" none but keeps the
  ReLUs (the block is not odd), and "convs" is linear (odd: f(-x) = -f(x)); and the step the
  bench times runs for each."""
  import argparse  # pylint: disable=g-import-not-at-top
  import haiku as hk  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from algebranets.models import resnet  # pylint: disable=g-import-not-at-top
  alg = "m2r" if folded else "c"

  def block_outputs(parts):
    """(has BatchNorm parameters, f(x), f(-x)) of one bottleneck block."""
    layers = bm._PartLayers(bm.algebras_lib.get(alg), resnet.check_bn_config(None), "relu",
                            None, None, folded=folded, parts=parts)
    f = hk.transform_with_state(lambda x: resnet.Block(2, 1, bottleneck=True,
                                                       shortcut="projection",
                                                       zero_init_last_bn=False,
                                                       layers=layers, name="b")(x, True))
    x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3, 3, 8, layers.algebra.dim)),
                    jnp.float32)
    x = layers.fold(x)
    params, state = f.init(jax.random.PRNGKey(0), x)
    apply = lambda x: np.asarray(f.apply(params, state, None, x)[0])
    return any("batchnorm" in k for k in params), apply(x), apply(-x)

  outs = {parts: block_outputs(parts) for parts in bm.STAGE3_PARTS}
  assert outs["all"][0] and not outs["no_bn"][0] and not outs["convs"][0]
  np.testing.assert_allclose(outs["convs"][2], -outs["convs"][1], rtol=1e-4, atol=1e-4)
  assert not np.allclose(outs["no_bn"][2], -outs["no_bn"][1], atol=1e-3)
  args = argparse.Namespace(stage3_blocks=1, stage3_batch=1, stage3_width=8)
  for parts in bm.STAGE3_PARTS:
    run, width, macs = bm._stage3_case(alg, args, np.random.default_rng(0), folded, parts)
    grads = run()
    assert width >= 1 and macs > 0 and jax.tree.leaves(grads)
