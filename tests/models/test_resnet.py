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
    f = hk.transform(lambda x, folded, cout=cout, groups=groups: ann.Conv2D(
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


# -------------------------------------------------------------- padding
from tests import naive  # pylint: disable=g-import-not-at-top,wrong-import-position


def _record_calls(fn, x, types, is_training=False, params=None, state=None):
  """Applies fn(x, is_training) under jit (fresh params unless given) and records the calls
  of modules of `types`: returns ([(module, input, output)], params)."""
  modules = []

  def recorded(x):
    ios = []
    modules.clear()  # jit may trace more than once; keep the last trace's modules

    def interceptor(next_f, args, kwargs, context):
      out = next_f(*args, **kwargs)
      if isinstance(context.module, types) and context.method_name == "__call__":
        modules.append(context.module)
        ios.append((args[0], out[0] if isinstance(out, tuple) else out))
      return out

    with hk.intercept_methods(interceptor):
      fn(x, is_training)
    return ios

  f = hk.transform_with_state(recorded)
  if params is None:
    params, state = jax.jit(hk.transform_with_state(fn).init, static_argnums=2)(_key(), x,
                                                                                 is_training)
  ios, _ = jax.jit(f.apply)(params, state, None, x)
  return [(m, xin, y) for m, (xin, y) in zip(modules, ios)], params


def _module_params(params, module):
  return params[module.module_name]


def _symmetric_reference(module, x, w, name):
  """The conv of `module` on x with k//2 zeros on each side, padded by hand, then VALID."""
  (kh, kw), stride = module.kernel_shape, module.stride
  xp = np.pad(np.asarray(x, np.float64),
              ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0), (0, 0)))
  return naive.conv2d(xp, w, name, stride=stride, padding="VALID",
                      groups=module.feature_group_count)


def _bottleneck_resnet(algebra, padding):
  # An ImageNet stem (7×7/2 conv, 3×3/2 max pool) and two bottleneck stages: the second
  # starts with a 3×3/2 conv beside a 1×1/2 projection shortcut.
  return _forward(resnet.ResNet, blocks_per_stage=(1, 1), num_classes=3, stage_channels=(2, 3),
                  bottleneck=True, stem="imagenet", algebra=algebra, w_init=np_init(),
                  padding=padding)


@pytest.mark.parametrize("name", ["r", "c"])
def test_symmetric_padding_is_hand_padded_valid_conv(name):
  x = jnp.asarray(np.random.default_rng(3).standard_normal((2, 16, 16, 3)), F32)
  calls, params = _record_calls(_bottleneck_resnet(name, "symmetric"), x, (ann.Conv2D,))
  strides = {}
  for module, xin, y in calls:
    w = _module_params(params, module)["w"]
    np.testing.assert_allclose(y, _symmetric_reference(module, xin, w, name), atol=2e-5,
                               err_msg=module.module_name)
    strides[module.module_name.split("/")[-1]] = module.stride
  # Every kind of strided layer was checked: the stem, a 3×3/2 branch and its 1×1/2 shortcut.
  assert strides["stem_conv"] == (2, 2) and strides["shortcut_conv"] == (2, 2)
  assert (2, 2) in [m.stride for m, _, _ in calls if m.module_name.endswith("conv_1")]

  # "SAME" pads the stride-2 layers (2, 3) and (0, 1): one pixel off the symmetric grid.
  calls, params = _record_calls(_bottleneck_resnet(name, "same"), x, (ann.Conv2D,))
  module, xin, y = calls[0]
  assert module.module_name.endswith("stem_conv")
  reference = _symmetric_reference(module, xin, _module_params(params, module)["w"], name)
  assert np.max(np.abs(np.asarray(y) - reference)) > 0.1
  np.testing.assert_allclose(y, naive.conv2d(xin, _module_params(params, module)["w"], name,
                                             stride=(2, 2), padding=((2, 3), (2, 3))),
                             atol=2e-5)


def test_symmetric_max_pool_pads_one_on_each_side():
  # The stem's max pool (torchvision's MaxPool2d(3, 2, padding=1)): from the stem's
  # activations (BN output, ReLU) to the first block's input, by hand with -inf padding.
  x = jnp.asarray(np.random.default_rng(4).standard_normal((2, 16, 16, 3)), F32)
  for padding, pads in (("symmetric", (1, 1)), ("same", (0, 1))):
    calls, _ = _record_calls(_bottleneck_resnet("r", padding), x, (ann.BatchNorm, ann.Conv2D))
    stem_bn = next(y for m, _, y in calls if m.module_name.endswith("stem_batchnorm"))
    block_in = next(xin for m, xin, _ in calls
                    if m.module_name.endswith("stage_0_block_0/conv_0"))
    a = np.maximum(np.asarray(stem_bn, np.float64), 0.0)                # [2, 8, 8, 2, 1]
    a = np.pad(a, ((0, 0), pads, pads, (0, 0), (0, 0)), constant_values=-np.inf)
    want = np.stack([np.stack([a[:, 2 * i:2 * i + 3, 2 * j:2 * j + 3].max(axis=(1, 2))
                               for j in range(4)], axis=1) for i in range(4)], axis=1)
    np.testing.assert_allclose(block_in, want, atol=1e-6, err_msg=padding)


def test_symmetric_resnet_trains():
  # Gradients flow through the explicitly padded convs and max pool (under jit, as in training).
  x = jnp.asarray(np.random.default_rng(5).standard_normal((2, 16, 16, 3)), F32)
  f = hk.transform_with_state(_bottleneck_resnet("m2r", "symmetric"))
  params, state = jax.jit(f.init, static_argnums=2)(_key(), x, True)
  loss = lambda p: jnp.sum(f.apply(p, state, None, x, True)[0] ** 2)
  grads = jax.jit(jax.grad(loss))(params)
  stem = grads["res_net/stem_conv"]["w"]
  assert np.all(np.isfinite(stem)) and np.abs(stem).max() > 0


def test_padding_changes_no_parameters_or_macs():
  images = S((1, 224, 224, 3), F32)
  reports = {p: costs.model_costs(_forward(models.MODELS["resnet50"], padding=p), images, False)
             for p in resnet.PADDINGS}
  same, symmetric = reports["same"], reports["symmetric"]
  assert symmetric.total_params == same.total_params == 25_557_032
  assert symmetric.macs == same.macs == 4_089_184_256     # padded taps count (costs docstring)
  assert [l.output_shape for l in symmetric.layers] == [l.output_shape for l in same.layers]
  with pytest.raises(ValueError, match="padding"):
    hk.transform_with_state(_forward(models.MODELS["resnet18"], padding="valid")).init(
        _key(), jnp.ones((1, 32, 32, 3)), True)


# ------------------------------------------------------- mixed precision head
def _dots(jaxpr):
  """(lhs dtype, rhs dtype, output dtype, preferred_element_type) of every dot_general."""
  out = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      out.append((eqn.invars[0].aval.dtype, eqn.invars[1].aval.dtype, eqn.outvars[0].aval.dtype,
                  eqn.params["preferred_element_type"]))
    for v in eqn.params.values():
      for sub in (v if isinstance(v, (tuple, list)) else [v]):
        inner = getattr(sub, "jaxpr", sub)
        if hasattr(inner, "eqns"):
          out += _dots(inner)
  return out


@pytest.mark.parametrize("head", ["linear", "component"])
def test_bfloat16_head_is_computed_in_float32(head):
  # A small ResNet over C under bfloat16 compute, as the train step runs it: parameters and
  # images cast to bfloat16, batch statistics in the BNs.
  bf16 = jnp.bfloat16
  x = jnp.asarray(np.random.default_rng(6).standard_normal((4, 8, 8, 3)), F32)
  fn = _forward(resnet.ResNet, blocks_per_stage=(1, 1), num_classes=10, stage_channels=(4, 8),
                stem="cifar", algebra="c", w_init=np_init(), head=head, name="net")
  head_type = ann.Project if head == "linear" else ann.Linear

  def run(x):  # (logits, the head's input), the latter caught by an interceptor
    caught = []

    def interceptor(next_f, args, kwargs, context):
      if isinstance(context.module, head_type) and context.method_name == "__call__":
        caught.append(args[0])
      return next_f(*args, **kwargs)

    with hk.intercept_methods(interceptor):
      logits = fn(x, True)
    return logits, caught[0]

  f = hk.transform_with_state(run)
  params, state = jax.jit(f.init)(_key(), x)
  params16 = jax.tree.map(lambda p: p.astype(bf16), params)
  apply = jax.jit(lambda p, x: f.apply(p, state, None, x)[0])
  (logits16, feats16), (logits32, _) = apply(params16, x.astype(bf16)), apply(params, x)
  assert logits16.dtype == logits32.dtype == feats16.dtype == F32

  # The convolutions run in bfloat16; the head's dot (the last one) takes float32 operands
  # and accumulates and returns float32.
  *convs, last = _dots(jax.make_jaxpr(apply)(params16, x.astype(bf16)).jaxpr)
  assert convs and all(out == bf16 for _, _, out, _ in convs)
  assert last == (F32, F32, F32, F32)

  # Computed, not cast: the logits equal a float64 head applied to the model's own pooled
  # float32 features and bfloat16 weights, to float32 rounding (a bfloat16 result, or
  # bfloat16 weight sums on the Gauss path, would be off by up to 2^-9 ≈ 2e-3 relative).
  h = np.asarray(feats16, np.float64)
  scope = "net/logits" + ("/linear" if head == "linear" else "")
  w, b = (np.asarray(params16[scope][k], np.float64) for k in ("w", "b"))
  if head == "linear":
    want = h.reshape(h.shape[0], -1) @ w + b
  else:
    want = (naive.dense(h, w, "c") + b)[..., 0]
  np.testing.assert_allclose(logits16, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())

  # And the whole bfloat16 network stays near float32: its activations carry bfloat16
  # rounding (unit roundoff 2^-9 ≈ 0.2%) through 5 conv + BN layers, which amounts to a few
  # percent of the logits' scale at most (measured about 1% here).
  scale = np.abs(np.asarray(logits32)).max()
  assert np.abs(np.asarray(logits16) - np.asarray(logits32)).max() < 0.05 * scale
