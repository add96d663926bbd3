"""ResNet over algebras: published sizes, hand-counted sizes for every algebra,
shapes, and BatchNorm train/eval behaviour.

Big models are only evaluated abstractly (`jax.eval_shape`, `costs.model_costs`);
real forward passes use tiny widths on 8×8 images.
"""

import math

import numpy as np
import pytest
import jax
import jax.numpy as jnp
import haiku as hk

from algebranets import algebras
from algebranets import costs
from algebranets import models
from algebranets import nn as ann
from algebranets import ops
from algebranets.models import resnet

S = jax.ShapeDtypeStruct
F32 = jnp.float32
ALGEBRAS = ("r", "c", "h", "m2r", "m3r", "m4r", "m2c", "dual", "cross3")
# Typed in from PAPER.md (not read from the Algebra objects).
DIM = {"r": 1, "c": 2, "h": 4, "m2r": 4, "m3r": 9, "m4r": 16, "m2c": 8, "dual": 2, "cross3": 3}
MULTS = {"r": 1, "c": 4, "h": 16, "m2r": 8, "m3r": 27, "m4r": 64, "m2c": 32, "dual": 3,
         "cross3": 6}


def _key(seed=0):
  # "rbg" keys: jax.random compiles far faster on CPU than with threefry.
  return jax.random.key(seed, impl="rbg")


def np_init(seed=0):
  """He-scaled normal weights drawn by numpy: random weights without compiling
  jax.random for every weight shape (which dominates a tiny model's run time)."""
  rng = np.random.default_rng(seed)

  def init(shape, dtype):
    fan_in = math.prod(shape[:-2]) * shape[-1]
    return jnp.asarray(rng.standard_normal(shape) * np.sqrt(2 / fan_in), dtype)
  return init


def _forward(constructor, **kwargs):
  def forward(images, is_training):
    return constructor(**kwargs)(images, is_training=is_training)
  return forward


def _abstract_params(fn, images, is_training):
  init = hk.transform_with_state(fn).init
  return jax.eval_shape(lambda k, x: init(k, x, is_training), _key(), images)


def _abstract_logits(fn, images, is_training):
  f = hk.transform_with_state(fn)
  params, state = _abstract_params(fn, images, is_training)
  return jax.eval_shape(lambda p, s, x: f.apply(p, s, None, x, is_training)[0],
                        params, state, images)


def _leaf_sizes(tree):
  return sorted(math.prod(p.shape) for p in jax.tree_util.tree_leaves(tree))


# ------------------------------------------------------------ published sizes
def test_resnet50_real_is_the_published_resnet50():
  images = S((1, 224, 224, 3), F32)
  report = costs.model_costs(_forward(models.MODELS["resnet50"]), images, True)
  assert report.total_params == 25_557_032
  assert report.macs == 4_089_184_256        # costs.model_costs of hk.nets.ResNet50
  assert report.params_consistent
  # The same parameter tensors as Haiku's v1.5 ResNet-50, up to the D = 1 axis.
  ours, _ = _abstract_params(_forward(models.MODELS["resnet50"]), images, True)
  theirs, _ = _abstract_params(lambda x, t: hk.nets.ResNet50(1000)(x, is_training=t),
                               images, True)
  assert _leaf_sizes(ours) == _leaf_sizes(theirs)


@pytest.mark.parametrize("depth, params, macs", [
    (18, 11_689_512, 1_814_073_344),   # torchvision: 11,689,512 params, 1.81 GMACs
    (34, 21_797_672, 3_663_761_408),   # torchvision: 21,797,672 params, 3.66 GMACs
    (101, 44_549_160, 7_801_405_440),  # torchvision: 44,549,160 params, 7.80 GMACs
])
def test_imagenet_resnets_published_sizes(depth, params, macs):
  report = costs.model_costs(_forward(models.MODELS[f"resnet{depth}"]),
                             S((1, 224, 224, 3), F32), True)
  assert report.total_params == params
  assert report.macs == macs


def test_depth_table():
  assert {d: sum(b) for d, (b, _) in resnet.IMAGENET_DEPTHS.items()} == {
      18: 8, 34: 16, 50: 16, 101: 33, 152: 50, 200: 66}
  for depth, (blocks, bottleneck) in resnet.IMAGENET_DEPTHS.items():
    assert depth == sum(blocks) * (3 if bottleneck else 2) + 2


# -------------------------------------------------- CIFAR: hand-counted sizes
def _cifar_counts(n, channels, algebra, *, num_classes=10, image=32, shortcut="projection",
                  whitening=False, lift_params=0):
  """(real params, MACs at batch 1) of a CIFAR ResNet, counted from the paper's description."""
  d, m = DIM[algebra], MULTS[algebra]
  convs, bn_channels = [], []                # convs: (out positions, taps, c_in, c_out)
  size, c_in = image, 3
  convs.append((size * size, 9, c_in, channels[0]))
  bn_channels.append(channels[0])
  c_in = channels[0]
  for stage, c in enumerate(channels):
    for j in range(n):
      stride = 2 if stage > 0 and j == 0 else 1
      size = -(-size // stride)
      convs += [(size * size, 9, c_in, c), (size * size, 9, c, c)]
      bn_channels += [c, c]
      if (stride != 1 or c_in != c) and shortcut == "projection":
        convs.append((size * size, 1, c_in, c))
        bn_channels.append(c)
      c_in = c
  bn_per_channel = d * d + d if whitening else 2 * d
  head = channels[-1] * d * num_classes + num_classes
  params = (d * sum(t * ci * co for _, t, ci, co in convs) + bn_per_channel * sum(bn_channels)
            + head + lift_params)
  macs = m * sum(p * t * ci * co for p, t, ci, co in convs) + channels[-1] * d * num_classes
  return params, macs


def test_cifar_resnet20_published_size():
  # He et al. 2016, Table 6: ResNet-20 has 0.27M parameters.
  for shortcut, want in (("projection", 272_474), ("pad", 269_722)):
    report = costs.model_costs(_forward(models.cifar_resnet, depth=20, shortcut=shortcut),
                               S((1, 32, 32, 3), F32), True)
    assert report.total_params == want
    assert report.total_params == _cifar_counts(3, (16, 32, 64), "r", shortcut=shortcut)[0]
    assert report.macs == _cifar_counts(3, (16, 32, 64), "r", shortcut=shortcut)[1]


@pytest.mark.parametrize("name", ALGEBRAS)
def test_cifar_resnet20_sizes_every_algebra(name):
  # Width 0.5: 8, 16, 32 elements per stage. cross3 has no identity element and
  # lifts each pixel with a real linear map 3 -> 3·3 (27 weights + 9 biases).
  images = S((1, 32, 32, 3), F32)
  fn = _forward(models.cifar_resnet, depth=20, algebra=name, width=0.5)
  report = costs.model_costs(fn, images, True)
  lift_params, lift_macs = (36, 32 * 32 * 27) if name == "cross3" else (0, 0)
  params, macs = _cifar_counts(3, (8, 16, 32), name, lift_params=lift_params)
  assert report.total_params == params
  assert report.macs == macs + lift_macs
  assert report.params_consistent
  leaves, _ = _abstract_params(fn, images, True)
  assert sum(_leaf_sizes(leaves)) == params


@pytest.mark.parametrize("name", ["c", "h"])
def test_cifar_resnet_whitening_sizes(name):
  images = S((1, 16, 16, 3), F32)
  fn = _forward(models.cifar_resnet, depth=8, algebra=name, width=0.5, shortcut="pad",
                bn_config={"whitening": True})
  report = costs.model_costs(fn, images, True)
  want = _cifar_counts(1, (8, 16, 32), name, image=16, shortcut="pad", whitening=True)
  assert (report.total_params, report.macs) == want
  _, state = _abstract_params(fn, images, True)
  assert state["cifar_resnet8/stem_batchnorm"]["cov"].shape == (8, DIM[name], DIM[name])


# ------------------------------------------------------------------ layout
def test_width_rounds_channels_per_stage():
  model_fn = _forward(models.MODELS["resnet50"], algebra="m2r", width=0.3)
  params, _ = _abstract_params(model_fn, S((1, 64, 64, 3), F32), True)
  # round(64·0.3) = 19, round(128·0.3) = 38, round(256·0.3) = 77, round(512·0.3) = 154.
  for stage, c in enumerate((19, 38, 77, 154)):
    block = params[f"resnet50/stage_{stage}_block_1/conv_1"]["w"]
    assert block.shape == (3, 3, c, c, 4)
    assert params[f"resnet50/stage_{stage}_block_1/conv_2"]["w"].shape == (1, 1, c, 4 * c, 4)
  assert params["resnet50/stem_conv"]["w"].shape == (7, 7, 3, 19, 4)
  assert params["resnet50/logits/linear"]["w"].shape == (4 * 154 * 4, 1000)
  assert "resnet50/lift" not in str(list(params))       # identity lift: no parameters


def test_channel_divisor():
  params, _ = _abstract_params(
      _forward(models.cifar_resnet, depth=8, width=0.3, channel_divisor=4),
      S((1, 8, 8, 3), F32), True)
  # 16·0.3 = 4.8 -> 4, 32·0.3 = 9.6 -> 8, 64·0.3 = 19.2 -> 20.
  assert [params[f"cifar_resnet8/stage_{i}_block_0/conv_0"]["w"].shape[3]
          for i in range(3)] == [4, 8, 20]


@pytest.mark.parametrize("name", ALGEBRAS)
def test_output_shapes_every_algebra(name):
  images = S((2, 8, 8, 3), F32)
  fn = _forward(models.cifar_resnet, depth=20, algebra=name, width=0.25)
  logits = _abstract_logits(fn, images, True)
  assert logits.shape == (2, 10) and logits.dtype == F32
  _, state = _abstract_params(fn, images, True)
  d = DIM[name]
  assert state["cifar_resnet20/stage_2_block_2/batchnorm_1"]["mean"].shape == (16, d)


@pytest.mark.parametrize("name", ["cross3"])  # sparse convs, linear lift; m2r: zero-init test
def test_forward_pass_is_finite(name):
  x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3)), F32)
  f = hk.transform_with_state(_forward(resnet.ResNet, blocks_per_stage=(1, 1), num_classes=5,
                                       stage_channels=(4, 8), stem="cifar", algebra=name,
                                       w_init=np_init()))
  params, state = f.init(_key(), x, True)
  for is_training in (True, False):
    logits, _ = f.apply(params, state, None, x, is_training)
    assert logits.shape == (2, 5)
    assert np.all(np.isfinite(logits))
    assert np.std(logits) > 0


def test_imagenet_resnet_shapes_abstract():
  # ResNet-18 for quaternions: 224 -> 7x7 final maps, 1000 logits.
  fn = _forward(models.MODELS["resnet18"], algebra="h", width=0.5)
  images = S((2, 224, 224, 3), F32)
  params, _ = _abstract_params(fn, images, True)
  assert _abstract_logits(fn, images, False).shape == (2, 1000)
  assert params["resnet18/stage_3_block_1/conv_1"]["w"].shape == (3, 3, 256, 256, 4)


# -------------------------------------------------------------- BatchNorm
def _tiny(algebra, **kwargs):
  return hk.transform_with_state(_forward(
      resnet.ResNet, blocks_per_stage=(1, 1), num_classes=4, stage_channels=(3, 4),
      stem="cifar", algebra=algebra, w_init=np_init(), **kwargs))


@pytest.mark.parametrize("name, whitening", [("c", False), ("c", True)])
def test_batchnorm_train_vs_eval(name, whitening):
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal((4, 8, 8, 3)) * 2 + 1, F32)
  y = jnp.asarray(rng.standard_normal((4, 8, 8, 3)), F32)
  f = _tiny(name, bn_config={"decay_rate": 0.0, "whitening": whitening})
  params, state0 = f.init(_key(), x, True)
  apply = f.apply
  train_x, state1 = apply(params, state0, None, x, True)
  # With decay 0 the running statistics are the batch statistics of x, layer by
  # layer, so evaluation on x reproduces training on x ...
  eval_x, state_after_eval = apply(params, state1, None, x, False)
  np.testing.assert_allclose(eval_x, train_x, rtol=1e-3, atol=1e-3)
  # ... evaluation leaves them alone ...
  for a, b in zip(jax.tree_util.tree_leaves(state1), jax.tree_util.tree_leaves(state_after_eval)):
    np.testing.assert_array_equal(a, b)
  # ... but on a fresh batch, training (batch statistics of y) and evaluation
  # (statistics of x) disagree, as do evaluation with the initial statistics.
  train_y, _ = apply(params, state1, None, y, True)
  eval_y, _ = apply(params, state1, None, y, False)
  assert np.max(np.abs(train_y - eval_y)) > 1e-2
  eval_x0, _ = apply(params, state0, None, x, False)
  assert np.max(np.abs(eval_x0 - train_x)) > 1e-2


def test_zero_init_last_bn():
  f = _tiny("m2r", zero_init_last_bn=True)
  params = f.init(_key(), jnp.ones((2, 8, 8, 3)), True)[0]
  scales = {k: v["scale"] for k, v in params.items() if "batchnorm" in k}
  assert len(scales) == 6  # stem, 2 in each of 2 blocks, the stage-1 projection
  for k, v in scales.items():
    # The last BN of each residual branch starts at 0, every other BN at 1.
    np.testing.assert_array_equal(v, 0.0 if k.endswith("batchnorm_1") else 1.0, err_msg=k)


# ---------------------------------------------------------- options, errors
def test_shortcut_pad_has_no_projection_and_keeps_shapes():
  fn = _forward(models.cifar_resnet, depth=8, shortcut="pad", algebra="dual", width=0.25)
  images = S((2, 8, 8, 3), F32)
  params, _ = _abstract_params(fn, images, True)
  assert not any("shortcut" in k for k in params)
  assert _abstract_logits(fn, images, True).shape == (2, 10)


@pytest.mark.parametrize("head, num_classes", [("component", 4), ("norm", 6)])
def test_algebra_heads(head, num_classes):
  fn = _forward(resnet.ResNet, blocks_per_stage=(1, 1), num_classes=num_classes,
                stage_channels=(3, 5), stem="cifar", algebra="h", head=head)
  images = S((2, 8, 8, 3), F32)
  params, _ = _abstract_params(fn, images, True)
  assert params["res_net/logits"]["w"].shape == (5, num_classes, 4)  # [C, K, D]
  assert params["res_net/logits"]["b"].shape == (num_classes, 4)
  assert not any("linear" in k for k in params)                       # no real fc
  assert _abstract_logits(fn, images, True).shape == (2, num_classes)


def test_lift_defaults():
  assert resnet.default_lift("r") == "identity"
  assert resnet.default_lift("m2c") == "identity"
  assert resnet.default_lift("cross3") == "linear"
  params, _ = _abstract_params(_forward(models.cifar_resnet, depth=8, algebra="cross3"),
                               S((1, 8, 8, 3), F32), True)
  assert params["cifar_resnet8/lift/linear"]["w"].shape == (3, 9)


@pytest.mark.parametrize("kwargs, match", [
    (dict(stem="vgg"), "stem"),
    (dict(shortcut="C"), "shortcut"),
    (dict(head="softmax"), "head"),
    (dict(lift="magic"), "lift"),
    (dict(width=0.0), "width"),
    (dict(width=float("nan")), "width"),
    (dict(bn_config={"momentum": 0.9}), "momentum"),
    (dict(stage_channels=(16, 32)), "stage_channels"),
    (dict(algebra="octonions"), "octonions"),
])
def test_bad_arguments_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    hk.transform_with_state(_forward(models.cifar_resnet, depth=20, **kwargs)).init(
        _key(), jnp.ones((1, 8, 8, 3)), True)


def test_bad_depths_raise():
  with pytest.raises(ValueError, match="18, 34, 50, 101, 152, 200"):
    hk.transform(lambda: resnet.imagenet_resnet(42)).init(None)
  with pytest.raises(ValueError, match="6n"):
    hk.transform(lambda: resnet.cifar_resnet(21)).init(None)
  with pytest.raises(ValueError, match="identity"):
    hk.transform_with_state(_forward(models.cifar_resnet, depth=8, algebra="cross3",
                                     lift="identity")).init(_key(), jnp.ones((1, 8, 8, 3)), True)


def test_registry():
  names = set(models.MODELS)
  assert {f"resnet{d}" for d in (18, 34, 50, 101, 152, 200)} <= names
  assert {f"cifar_resnet{d}" for d in (20, 32, 44, 56, 110)} <= names
  assert models.get_model("resnet50") is models.MODELS["resnet50"]
  with pytest.raises(ValueError, match="resnet50"):
    models.get_model("resnet51")


# ------------------------------------------------------------ folded layout
def _max_diff(a, b):
  return max(float(jnp.max(jnp.abs(x - y)))
             for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("name, whitening", [("m2c", True), ("m3r", False)])
def test_folded_batchnorm_matches_unfolded(name, whitening):
  alg = algebras.get(name)
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.standard_normal((4, 3, 5, 2, alg.dim)) + 0.5, F32)   # [B, H, W, C, D]
  f = hk.transform_with_state(lambda x, t, folded: ann.BatchNorm(
      algebra=alg, whitening=whitening, decay_rate=0.5, folded=folded)(x, t))
  params, state = f.init(None, x, True, False)
  params = jax.tree_util.tree_map(lambda p: p + 0.3 * rng.standard_normal(p.shape), params)
  for is_training in (True, False):
    y, s1 = f.apply(params, state, None, x, is_training, False)
    yf, s2 = f.apply(params, state, None, ops.fold(x, alg), is_training, True)
    assert yf.shape == (4 * alg.matrix_base[0], 3, 5, 2 * alg.matrix_base[0],
                        alg.matrix_base[1].dim)
    np.testing.assert_allclose(ops.unfold(yf, alg), y, atol=2e-5)
    assert _max_diff(s1, s2) < 1e-5                       # the same statistics, unfolded


def test_folded_conv_matches_unfolded():
  alg = algebras.get("m2c")
  x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 5, 5, 4, 8)), F32)
  for groups, cout in ((1, 3), (4, 8)):                   # dense and depthwise (×2)
    f = hk.transform(lambda x, folded: ann.Conv2D(
        cout, 3, algebra=alg, stride=2, feature_group_count=groups, folded=folded,
        w_init=np_init(), b_init=np_init(1))(x))
    params = f.init(None, x, False)
    y = f.apply(params, None, x, False)
    yf = f.apply(params, None, ops.fold(x, alg), True)
    assert yf.shape == (4, 3, 3, 2 * cout, 2)
    np.testing.assert_allclose(ops.unfold(yf, alg), y, atol=1e-5)


def test_folded_resnet_matches_unfolded():
  x = jnp.asarray(np.random.default_rng(5).standard_normal((2, 8, 8, 3)), F32)
  f = hk.transform_with_state(lambda x, folded: resnet.ResNet(
      (1, 1), 5, stage_channels=(2, 3), stem="cifar", algebra="m2r", shortcut="pad",
      w_init=np_init(), folded=folded)(x, is_training=True))

  @jax.jit
  def both(x):
    params, state = f.init(_key(), x, False)
    return f.apply(params, state, None, x, False), f.apply(params, state, None, x, True)

  (y, s1), (yf, s2) = both(x)
  assert np.std(y) > 0.1
  np.testing.assert_allclose(yf, y, atol=1e-5)
  assert _max_diff(s1, s2) < 1e-5


@pytest.mark.parametrize("kwargs, match", [
    (dict(algebra="c", folded=True), "matrix algebra"),
    (dict(algebra="m2r", folded=True, activation="modrelu"), "component-wise"),
])
def test_folded_needs_matrix_algebra_and_componentwise_activation(kwargs, match):
  with pytest.raises(ValueError, match=match):
    hk.transform_with_state(_forward(models.cifar_resnet, depth=8, **kwargs)).init(
        _key(), jnp.ones((1, 8, 8, 3)), True)
  with pytest.raises(ValueError, match="matrix algebra"):
    hk.transform(lambda: ann.Conv2D(2, 3, algebra="h", folded=True)).init(None)
  with pytest.raises(ValueError, match="folded layout"):
    hk.transform(lambda x: ann.BatchNorm(algebra="m2r", folded=True)(x, True)).init(
        None, jnp.ones((3, 4, 1)))
