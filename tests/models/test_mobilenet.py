"""MobileNet-v1 over algebras: the published size, hand-counted sizes for every
algebra, the algebra depthwise conv, and shapes.

Full-size models are only evaluated abstractly (`costs.model_costs`,
`jax.eval_shape`); real forward passes use a few narrow blocks on 8×8 images.
"""

import math

import numpy as np
import pytest
import jax
import jax.numpy as jnp
import haiku as hk

from algebranets import costs
from algebranets import models
from algebranets.models import mobilenet

S = jax.ShapeDtypeStruct
F32 = jnp.float32
ALGEBRAS = ("r", "c", "h", "m2r", "m3r", "m4r", "m2c", "dual", "cross3")
# Typed in from PAPER.md (not read from the Algebra objects).
DIM = {"r": 1, "c": 2, "h": 4, "m2r": 4, "m3r": 9, "m4r": 16, "m2c": 8, "dual": 2, "cross3": 3}
MULTS = {"r": 1, "c": 4, "h": 16, "m2r": 8, "m3r": 27, "m4r": 64, "m2c": 32, "dual": 3,
         "cross3": 6}
# Howard et al. 2017, Table 1: (output channels, stride) of the separable blocks.
PAPER_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [
    (1024, 2), (1024, 1)]
TINY_BLOCKS = ((8, 1), (16, 2), (16, 1))


def _key(seed=0):
  return jax.random.key(seed, impl="rbg")


def np_init(seed=0):
  """He-scaled numpy normal weights (no jax.random compile per weight shape)."""
  rng = np.random.default_rng(seed)

  def init(shape, dtype):
    fan_in = math.prod(shape[:-2]) * shape[-1]
    return jnp.asarray(rng.standard_normal(shape) * np.sqrt(2 / fan_in), dtype)
  return init


def _forward(**kwargs):
  def forward(images, is_training):
    return mobilenet.MobileNetV1(**kwargs)(images, is_training=is_training)
  return forward


def _counts(stem, blocks, algebra, *, num_classes=1000, image=224, lift_params=0, lift_macs=0):
  """(real params, MACs at batch 1), counted from the paper's Table 1."""
  d, m = DIM[algebra], MULTS[algebra]
  size = -(-image // 2)
  weights, products, bn = 9 * 3 * stem, size * size * 9 * 3 * stem, stem
  c_in = stem
  for c, stride in blocks:
    size = -(-size // stride)
    weights += 9 * c_in + c_in * c                       # depthwise + pointwise
    products += size * size * (9 * c_in + c_in * c)
    bn += c_in + c
    c_in = c
  head_w = c_in * d * num_classes
  params = d * weights + 2 * d * bn + head_w + num_classes + lift_params
  macs = m * products + head_w + lift_macs
  return params, macs


def test_real_mobilenet_is_the_published_one():
  report = costs.model_costs(_forward(), S((1, 224, 224, 3), F32), True)
  assert report.total_params == 4_231_976               # Howard et al. 2017; Keras trainable
  assert abs(report.macs / 569e6 - 1) < 0.001            # "569 million mult-adds"
  assert (report.total_params, report.macs) == _counts(32, PAPER_BLOCKS, "r")
  assert tuple(PAPER_BLOCKS) == mobilenet.MOBILENET_V1_BLOCKS
  assert models.MODELS["mobilenet_v1"] is mobilenet.MobileNetV1


@pytest.mark.parametrize("name", ALGEBRAS)
def test_sizes_every_algebra(name):
  # Width 0.25: 8 stem elements, blocks 16 ... 256 elements.
  images = S((1, 64, 64, 3), F32)
  fn = _forward(algebra=name, width=0.25, num_classes=10)
  report = costs.model_costs(fn, images, True)
  lift = (36, 64 * 64 * 27) if name == "cross3" else (0, 0)    # linear lift 3 -> 3·3
  want = _counts(8, [(c // 4, s) for c, s in PAPER_BLOCKS], name, num_classes=10, image=64,
                 lift_params=lift[0], lift_macs=lift[1])
  assert (report.total_params, report.macs) == want
  assert report.params_consistent
  params, _ = jax.eval_shape(lambda k, x: hk.transform_with_state(fn).init(k, x, True),
                             _key(), images)
  assert sum(math.prod(p.shape) for p in jax.tree_util.tree_leaves(params)) == want[0]


def test_depthwise_conv_is_one_element_per_channel():
  fn = _forward(algebra="m2r", width=0.25, num_classes=10)
  params, _ = jax.eval_shape(lambda k, x: hk.transform_with_state(fn).init(k, x, True),
                             _key(), S((1, 32, 32, 3), F32))
  assert params["mobilenet_v1/block_0_depthwise"]["w"].shape == (3, 3, 1, 8, 4)
  assert params["mobilenet_v1/block_0_pointwise"]["w"].shape == (1, 1, 8, 16, 4)
  assert params["mobilenet_v1/block_12_depthwise"]["w"].shape == (3, 3, 1, 256, 4)
  assert not any("b" in v for k, v in params.items() if "wise" in k)   # convs have no bias


@pytest.mark.parametrize("name", ALGEBRAS)
def test_output_shapes_every_algebra(name):
  fn = _forward(algebra=name, width=0.5, blocks=TINY_BLOCKS, num_classes=7)
  f = hk.transform_with_state(fn)
  images = S((2, 8, 8, 3), F32)
  params, state = jax.eval_shape(lambda k, x: f.init(k, x, True), _key(), images)
  logits = jax.eval_shape(lambda p, s, x: f.apply(p, s, None, x, False)[0],
                          params, state, images)
  assert logits.shape == (2, 7) and logits.dtype == F32
  assert state["mobilenet_v1/block_2_pointwise_batchnorm"]["var"].shape == (8, DIM[name])


def test_dropout_needs_rng_only_in_training():
  fn = _forward(width=0.25, blocks=TINY_BLOCKS, num_classes=3, dropout_rate=0.5)
  f = hk.transform_with_state(fn)
  images = S((2, 8, 8, 3), F32)
  params, state = jax.eval_shape(lambda k, x: f.init(k, x, False), _key(), images)
  jax.eval_shape(lambda p, s, x: f.apply(p, s, None, x, False), params, state, images)
  jax.eval_shape(lambda p, s, k, x: f.apply(p, s, k, x, True), params, state, _key(), images)
  with pytest.raises(ValueError, match="PRNGKey"):
    jax.eval_shape(lambda p, s, x: f.apply(p, s, None, x, True), params, state, images)


@pytest.mark.parametrize("kwargs, match", [
    (dict(blocks=((64, 3),)), "stride"),
    (dict(dropout_rate=1.0), "dropout_rate"),
    (dict(width=-1.0), "width"),
    (dict(head="avg"), "head"),
    (dict(bn_config={"axis": 0}), "axis"),
    (dict(num_classes=0), "num_classes"),
])
def test_bad_arguments_raise(kwargs, match):
  with pytest.raises(ValueError, match=match):
    hk.transform_with_state(_forward(**kwargs)).init(_key(), jnp.ones((1, 8, 8, 3)), True)


def test_forward_pass_folded_and_unfolded():
  # M2(R): folded depthwise convs, unfolded (transposing in every layer) and
  # with the activations kept folded between layers.
  x = jnp.asarray(np.random.default_rng(5).standard_normal((2, 8, 8, 3)), F32)
  f = hk.transform_with_state(lambda x, folded: mobilenet.MobileNetV1(
      3, algebra="m2r", width=0.25, blocks=TINY_BLOCKS, w_init=np_init(),
      folded=folded)(x, is_training=True))

  @jax.jit
  def both(x):
    params, state = f.init(_key(), x, False)
    return f.apply(params, state, None, x, False), f.apply(params, state, None, x, True)

  (y, _), (yf, _) = both(x)
  assert y.shape == (2, 3) and np.all(np.isfinite(y)) and np.std(y) > 0.1
  np.testing.assert_allclose(yf, y, atol=1e-5)


# ------------------------------------------------------------------ padding
from algebranets import nn as ann  # pylint: disable=g-import-not-at-top,wrong-import-position
from tests import naive  # pylint: disable=g-import-not-at-top,wrong-import-position


def _conv_calls(fn, x):
  """Every nn.Conv2D call of fn(x, False) under jit: [(module, input, output)], params."""
  modules = []

  def recorded(x):
    ios = []
    modules.clear()  # jit may trace more than once; keep the last trace's modules

    def interceptor(next_f, args, kwargs, context):
      out = next_f(*args, **kwargs)
      if isinstance(context.module, ann.Conv2D) and context.method_name == "__call__":
        modules.append(context.module)
        ios.append((args[0], out))
      return out

    with hk.intercept_methods(interceptor):
      fn(x, False)
    return ios

  params, state = jax.jit(hk.transform_with_state(fn).init, static_argnums=2)(_key(), x, False)
  ios, _ = jax.jit(hk.transform_with_state(recorded).apply)(params, state, None, x)
  return [(m, xin, y) for m, (xin, y) in zip(modules, ios)], params


def test_symmetric_padding_of_strided_depthwise_convs():
  # Stride-2 stem and depthwise convs with padding 1 on each side, checked against the naive
  # algebra conv on inputs padded by hand (then VALID); "SAME" pads them (0, 1) instead.
  x = jnp.asarray(np.random.default_rng(7).standard_normal((2, 8, 8, 3)), F32)
  for padding in ("symmetric", "same"):
    fn = _forward(num_classes=3, algebra="c", width=0.25, blocks=TINY_BLOCKS, w_init=np_init(),
                  padding=padding)
    calls, params = _conv_calls(fn, x)
    strided = [m.module_name for m, _, _ in calls if m.stride == (2, 2)]
    assert strided == ["mobilenet_v1/stem_conv", "mobilenet_v1/block_1_depthwise"]
    for module, xin, y in calls:
      k = module.kernel_shape[0] // 2
      xp = np.pad(np.asarray(xin, np.float64), ((0, 0), (k, k), (k, k), (0, 0), (0, 0)))
      want = naive.conv2d(xp, params[module.module_name]["w"], "c", stride=module.stride,
                          padding="VALID", groups=module.feature_group_count)
      if padding == "symmetric" or module.stride == (1, 1):
        np.testing.assert_allclose(y, want, atol=2e-5, err_msg=module.module_name)
      else:
        assert np.max(np.abs(np.asarray(y) - want)) > 0.1, module.module_name


def test_padding_changes_no_parameters_or_macs():
  images = S((1, 224, 224, 3), F32)
  reports = [costs.model_costs(_forward(padding=p), images, False) for p in ("same", "symmetric")]
  assert reports[0].total_params == reports[1].total_params == 4_231_976
  assert reports[0].macs == reports[1].macs
  assert reports[0].all_macs == reports[0].macs                      # no other multiply-adds


def test_bfloat16_head_returns_float32_logits():
  x = jnp.asarray(np.random.default_rng(8).standard_normal((2, 8, 8, 3)), F32)
  f = hk.transform_with_state(_forward(num_classes=3, algebra="h", width=0.25,
                                       blocks=TINY_BLOCKS, w_init=np_init()))
  params, state = jax.jit(f.init, static_argnums=2)(_key(), x, True)
  params16 = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
  apply = lambda p, x: f.apply(p, state, None, x, True)[0]
  jaxpr = jax.make_jaxpr(apply)(params16, x.astype(jnp.bfloat16))
  dots = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "dot_general"]
  head = dots[-1]                                                    # the fc layer
  assert [v.aval.dtype for v in head.invars] == [F32, F32]
  assert head.params["preferred_element_type"] == F32 and head.outvars[0].aval.dtype == F32
  assert all(e.outvars[0].aval.dtype == jnp.bfloat16 for e in dots[:-1])
  assert jaxpr.out_avals[0].dtype == F32
