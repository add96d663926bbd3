"""Width matching: the search on synthetic size functions with known answers,
and matched algebra models checked against independently counted sizes."""

import functools
import math

import pytest
import jax
import jax.numpy as jnp
import haiku as hk

from algebranets import costs
from algebranets import models
from algebranets.models import matching
from algebranets.models import resnet
from algebranets.models import transformer_xl as txl

S = jax.ShapeDtypeStruct
F32 = jnp.float32
RESNET50_PARAMS, RESNET50_MACS = 25_557_032, 4_089_184_256
MOBILENET_PARAMS, MOBILENET_MACS = 4_231_976, 568_740_352


# ------------------------------------------------------------ channel rounding
@pytest.mark.parametrize("base, width, divisor, want", [
    (64, 1.0, 1, 64), (64, 0.5, 1, 32), (16, 0.3, 1, 5), (10, 0.25, 1, 3),  # 2.5 rounds up
    (16, 0.01, 1, 1), (64, 0.3, 8, 16), (64, 0.32, 8, 24), (64, 0.01, 8, 8), (512, 1.7, 1, 870),
])
def test_scaled_channels(base, width, divisor, want):
  assert matching.scaled_channels(base, width, divisor) == want


@pytest.mark.parametrize("args", [(0, 1.0), (64, 0.0), (64, -1.0), (64, float("inf")),
                                  (64, True), (64, 1.0, 0), (64.0, 1.0)])
def test_scaled_channels_rejects_bad_values(args):
  with pytest.raises(ValueError):
    matching.scaled_channels(*args)


# ------------------------------------------------------------ the search
def test_match_width_smooth_size_converges_fast():
  size = lambda w: 1000 * w * w + 50 * w + 7
  result = matching.match_width(size, 5000, tolerance=0.02, stop_tolerance=1e-6)
  root = (-50 + math.sqrt(50 ** 2 + 4 * 1000 * (5000 - 7))) / 2000
  assert result.width == pytest.approx(root, rel=1e-5)
  assert result.ratio == pytest.approx(1.0, abs=1e-6)
  assert result.evaluations <= 8
  assert result.history[-1][0] == result.width


def test_match_width_stops_within_stop_tolerance():
  calls = []

  def size(w):
    calls.append(w)
    return 1e6 * w ** 2.3

  result = matching.match_width(size, 1e5, tolerance=0.02)
  assert abs(result.ratio - 1) <= 0.005
  assert len(calls) == result.evaluations <= 4


def test_match_width_on_steps_finds_the_reachable_size():
  # Sizes 100·k² for k = round(10·w): 2500 is reachable (k = 5), exactly.
  size = lambda w: 100 * math.floor(10 * w + 0.5) ** 2
  result = matching.match_width(size, 2500)
  assert result.size == 2500 and result.ratio == 1.0
  assert math.floor(10 * result.width + 0.5) == 5


def test_match_width_unreachable_names_the_best_ratio():
  # Between the steps 2500 (k = 5) and 3600 (k = 6): 2800 is missed by > 2%.
  size = lambda w: 100 * math.floor(10 * w + 0.5) ** 2
  with pytest.raises(ValueError, match=r"ratio 0\.8929"):
    matching.match_width(size, 2800)
  result = matching.match_width(size, 2800, tolerance=0.15)
  assert result.size == 2500


def test_match_width_leaves_a_flat_floor_in_few_evaluations():
  # A tiny model: below some width every layer is at its minimum channel count, so the size
  # stops falling (the floor). Creeping along the floor by the power law's ~2% steps took all
  # 40 evaluations (a ResNet-18 debug model matched in M2(R) MACs: 14 s); the search must leave
  # the flat stretch fast and stop where the width can go no lower.
  calls = []

  def size(w):
    calls.append(w)
    return max(1000, 1000 * math.floor(8 * w + 0.5) ** 2)  # flat at and below w = 3/16

  result = matching.match_width(size, 960, tolerance=0.05, initial_width=0.5)
  assert result.size == 1000 and result.ratio == pytest.approx(1000 / 960)
  assert len(calls) == result.evaluations <= 12, calls


def test_match_width_out_of_range():
  with pytest.raises(ValueError, match="ratio"):
    matching.match_width(lambda w: 10 * w, 1e9, max_width=100.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(target=0), "target"),
    (dict(target=10, tolerance=1.5), "tolerance"),
    (dict(target=10, stop_tolerance=0.1), "stop_tolerance"),
    (dict(target=10, initial_width=0.0), "min_width"),
])
def test_match_width_bad_arguments(kwargs, match):
  with pytest.raises(ValueError, match=match):
    matching.match_width(lambda w: w, **kwargs)


# ------------------------------------------------------------ matched models
def _param_count(constructor, width, algebra, image_size=32, **kwargs):
  """All parameter leaves of the built model (not through costs.model_costs)."""
  f = hk.transform_with_state(lambda x: constructor(algebra=algebra, width=width, **kwargs)(
      x, is_training=False))
  params, _ = jax.eval_shape(lambda x: f.init(jax.random.key(0, impl="rbg"), x),
                             S((1, image_size, image_size, 3), F32))
  return sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(params))


def _macs(constructor, width, algebra, image_size=224, **kwargs):
  return costs.model_costs(lambda x: constructor(algebra=algebra, width=width, **kwargs)(
      x, is_training=False), S((1, image_size, image_size, 3), F32)).macs


@pytest.mark.parametrize("algebra", ["m2r"])
def test_resnet50_matched_params(algebra):
  result = matching.match_image_model(models.MODELS["resnet50"], algebra, match="params")
  assert result.target == RESNET50_PARAMS
  count = _param_count(models.MODELS["resnet50"], result.width, algebra)
  assert abs(count / RESNET50_PARAMS - 1) <= 0.02
  assert count == result.size and result.ratio == pytest.approx(count / RESNET50_PARAMS)
  assert 0.3 < result.width < 0.7              # about 1/sqrt(D) = 0.5


def test_resnet50_matched_macs():
  result = matching.match_image_model(models.MODELS["resnet50"], "c", match="macs")
  assert result.target == RESNET50_MACS
  macs = _macs(models.MODELS["resnet50"], result.width, "c")
  assert abs(macs / RESNET50_MACS - 1) <= 0.02
  assert 0.4 < result.width < 0.6              # about 1/sqrt(4 real products) = 0.5


@pytest.mark.parametrize("algebra, match", [("dual", "params"), ("h", "macs")])
def test_mobilenet_matched(algebra, match):
  result = matching.match_image_model(models.MODELS["mobilenet_v1"], algebra, match=match)
  if match == "params":
    got, want = _param_count(models.MobileNetV1, result.width, algebra), MOBILENET_PARAMS
  else:
    got, want = _macs(models.MobileNetV1, result.width, algebra), MOBILENET_MACS
  assert result.target == want
  assert abs(got / want - 1) <= 0.02


@pytest.mark.parametrize("algebra, match", [
    ("c", "params"), ("m3r", "params"), ("h", "macs"), ("m4r", "macs")])
def test_cifar_resnet20_matched(algebra, match):
  kwargs = dict(image_size=32, num_classes=10)
  result = matching.match_image_model(models.MODELS["cifar_resnet20"], algebra, match=match,
                                      **kwargs)
  if match == "params":
    got, want = _param_count(models.cifar_resnet, result.width, algebra, depth=20), 272_474
  else:
    got = _macs(models.cifar_resnet, result.width, algebra, image_size=32, depth=20)
    want = 40_813_184
  assert abs(got / want - 1) <= 0.02


def test_explicit_target_and_model_kwargs():
  # Match a quaternion ResNet-8 with option-A shortcuts to 100k parameters.
  result = matching.match_image_model(models.cifar_resnet, "h", depth=8, shortcut="pad",
                                      target=100_000, image_size=16, num_classes=10)
  count = _param_count(models.cifar_resnet, result.width, "h", depth=8, shortcut="pad")
  assert result.target == 100_000 and abs(count / 100_000 - 1) <= 0.02


def test_tiny_model_cannot_be_matched():
  # One block of 4 channels: one M4(R) channel more or less is far more than 2%.
  tiny = functools.partial(resnet.ResNet, (1,), stage_channels=(4,), stem="cifar")
  with pytest.raises(ValueError, match=r"within 2\.0%.*ratio"):
    matching.match_image_model(tiny, "m4r", image_size=8, num_classes=2)


def test_unknown_match_kind():
  with pytest.raises(ValueError, match="params, macs, flops"):
    matching.match_image_model(models.MODELS["cifar_resnet20"], "c", match="joules")
  with pytest.raises(ValueError, match="params, macs, flops"):
    matching.model_size(lambda x: x, jnp.ones(2), match="joules")


def test_image_models_match_flops_as_macs():
  # Every multiply-add of a ResNet is in a weight layer: equal compute either way.
  kwargs = dict(image_size=32, num_classes=10)
  flops = matching.match_image_model(models.MODELS["cifar_resnet20"], "h", match="flops",
                                     **kwargs)
  macs = matching.match_image_model(models.MODELS["cifar_resnet20"], "h", match="macs", **kwargs)
  assert flops == macs and flops.target == 40_813_184


# Transformer-XL at equal FLOPs (all multiply-adds of a training segment): the attention and the
# logits grow with the real width C·D, which weight-layer matching lets grow unchecked.
LM_REFERENCE = dict(vocab_size=256, d_model=64, n_layers=2, n_heads=4, d_head=16, d_inner=256,
                    mem_len=32)


def _lm_all_macs(config, algebra):
  return txl.model_costs(config, algebra, seq_len=32)


@pytest.mark.parametrize("algebra", ["m2r", "h"])
def test_transformer_xl_matched_flops(algebra):
  reference = _lm_all_macs(LM_REFERENCE, "r")
  # The hand count of the reference, independent of the code: per token, weight layers
  # (q, o and the FFN on T positions; kv and r on K = 2T) ...
  c, hch, f, t, v = 64, 64, 256, 32, 256
  weights = 2 * (t * c * hch * 2 + 2 * t * c * 2 * hch + 2 * t * c * hch + 2 * t * c * f)
  attention = 2 * 3 * t * (2 * t) * hch          # ... the scores and values over K keys
  logits = t * v * c
  assert (reference.macs, reference.all_macs) == (weights, weights + attention + logits)
  assert reference.other_macs / reference.all_macs > 0.2   # a quarter of the work here

  cfg = txl.matched_config(LM_REFERENCE, algebra, "flops", seq_len=32)
  got = _lm_all_macs(cfg, algebra)
  assert abs(got.all_macs / reference.all_macs - 1) <= 0.02
  macs_cfg = txl.matched_config(LM_REFERENCE, algebra, "macs", seq_len=32)
  by_macs = _lm_all_macs(macs_cfg, algebra)
  if algebra == "m2r":
    # 8 real multiplies per 4 components: at equal weight-layer MACs the real activation width
    # C·D is √2 that of r, and so is the attention and logit work; equal FLOPs narrows it.
    assert by_macs.all_macs > 1.05 * reference.all_macs
    assert cfg["d_model"] < macs_cfg["d_model"]
  else:
    # h: 16 = D² multiplies per product, so equal MACs already keep r's real width.
    assert abs(by_macs.all_macs / reference.all_macs - 1) <= 0.02


def test_folded_layout_does_not_change_the_match():
  kwargs = dict(match="params", image_size=8, num_classes=10)
  plain = matching.match_image_model(models.MODELS["cifar_resnet20"], "m3r", **kwargs)
  folded = matching.match_image_model(models.MODELS["cifar_resnet20"], "m3r", folded=True,
                                      **kwargs)
  assert folded == plain
