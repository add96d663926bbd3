"""Dropout per real component or per whole algebra element, and the models' dropout_unit."""

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algebranets import nn as ann
from algebranets.models import mobilenet, resnet
from algebranets.models import transformer_xl as txl


def test_element_dropout_keeps_or_zeroes_whole_elements():
  rate, d = 0.3, 4
  x = np.random.default_rng(0).normal(size=(64, 50, d)).astype(np.float32) + 5.0  # no zeros
  out = np.asarray(ann.dropout(jax.random.PRNGKey(0), rate, jnp.asarray(x), "element"))
  kept = np.any(out != 0, axis=-1)                                     # [64, 50]
  # Every element is all-kept (scaled by 1/(1 - rate)) or all-zero: numpy's reading of it.
  np.testing.assert_allclose(out, np.where(kept[..., None], x / (1 - rate), 0.0), rtol=1e-6)
  n = kept.size
  dropped = 1 - kept.mean()
  assert abs(dropped - rate) < 4 * np.sqrt(rate * (1 - rate) / n)
  # Component dropout is Haiku's: components of one element are dropped independently.
  comp = np.asarray(ann.dropout(jax.random.PRNGKey(0), rate, jnp.asarray(x), "component"))
  np.testing.assert_array_equal(comp, hk.dropout(jax.random.PRNGKey(0), rate, jnp.asarray(x)))
  partly = np.any(comp == 0, axis=-1) & np.any(comp != 0, axis=-1)
  assert partly.mean() > 0.5
  assert ann.DEFAULT_DROPOUT_UNIT == "component"


def test_dropout_arguments_are_checked():
  with pytest.raises(ValueError, match="Unknown dropout_unit 'row'; valid: component, element"):
    ann.dropout(jax.random.PRNGKey(0), 0.1, jnp.ones((2, 4)), "row")
  for build in (lambda: txl.TransformerXL(30, 8, 1, 2, 4, 16, algebra="h", mem_len=0,
                                          dropout_unit="x"),
                lambda: resnet.cifar_resnet(20, algebra="h", dropout_unit="x"),
                lambda: mobilenet.MobileNetV1(algebra="h", dropout_unit="x")):
    with pytest.raises(ValueError, match="Unknown dropout_unit"):
      hk.transform(build).init(jax.random.PRNGKey(0))
  x = jnp.ones((3, 4))
  assert ann.dropout(jax.random.PRNGKey(0), 0.0, x, "element") is x


def _txl_hidden(unit):
  """Transformer-XL's final hidden state in training mode (dropout 0.5), with its zeros."""
  cfg = dict(vocab_size=30, d_model=6, n_layers=1, n_heads=2, d_head=3, d_inner=12,
             mem_len=0, dropout=0.5, algebra="h", dropout_unit=unit, final_lnorm=True)
  captured = {}

  def interceptor(next_f, args, kwargs, context):
    out = next_f(*args, **kwargs)
    if context.method_name == "_output":
      captured["h"] = out
    return out

  def f(tokens):
    with hk.intercept_methods(interceptor):
      return txl.TransformerXL(**cfg)(tokens, is_training=True)

  f = hk.transform(f)
  tokens = jnp.zeros((4, 5), jnp.int32)
  params = f.init(jax.random.PRNGKey(0), tokens)
  f.apply(params, jax.random.PRNGKey(1), tokens)
  return np.asarray(captured["h"])                                     # [B, T, C, D]


def test_transformer_xl_drops_whole_elements_with_element_dropout():
  h = _txl_hidden("element")
  zero = h == 0
  assert zero.any()
  np.testing.assert_array_equal(zero, np.broadcast_to(zero.all(-1, keepdims=True), zero.shape))
  h = _txl_hidden("component")
  zero = h == 0
  assert (zero.any(-1) & ~zero.all(-1)).any()


@pytest.mark.parametrize("model", ["resnet", "mobilenet"])
def test_image_models_drop_pooled_elements(model):
  def f(x, unit, rate):
    if model == "resnet":
      net = resnet.cifar_resnet(8, algebra="h", width=0.25, dropout_rate=rate, dropout_unit=unit)
    else:
      net = mobilenet.MobileNetV1(10, algebra="h", width=0.125, dropout_rate=rate,
                                  dropout_unit=unit, blocks=((8, 2),))
    return net(x, is_training=True)

  f = hk.transform_with_state(f)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 16, 16, 3)), jnp.float32)
  params, state = jax.jit(f.init, static_argnums=(2, 3))(jax.random.PRNGKey(0), x, "element",
                                                          0.5)
  apply = jax.jit(f.apply, static_argnums=(4, 5))  # compiled once: op by op took twice as long
  plain, _ = apply(params, state, jax.random.PRNGKey(1), x, "element", 0.0)
  elem, _ = apply(params, state, jax.random.PRNGKey(1), x, "element", 0.5)
  comp, _ = apply(params, state, jax.random.PRNGKey(1), x, "component", 0.5)
  assert np.all(np.isfinite(elem)) and not np.allclose(elem, plain)
  assert not np.allclose(elem, comp)
