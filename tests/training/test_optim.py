"""Optimisers, schedules and weight-decay masks from config blocks."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from algebranets.training import config_lib
from algebranets.training import optim


def _opt(**kw):
  base = config_lib.base_config(experiment="t", args={"algebra": "r"}, task={"name": "x"},
                                model_name="x", model={}, data={"name": "x"}).optimizer
  base.update(kw)
  return base


PARAMS = {
    "net/~/conv_0": {"w": jnp.ones((3, 3, 2, 4, 4))},          # conv weight [KH, KW, Cin, Cout, D]
    "net/~/conv_0_depthwise": {"w": jnp.ones((3, 3, 1, 4, 4))},
    "net/~/batchnorm": {"scale": jnp.ones((4, 4)), "offset": jnp.zeros((4, 4))},
    "net/~/linear": {"w": jnp.ones((4, 8, 4)), "b": jnp.ones((8, 4))},  # algebra bias: 2 axes
}


def test_weight_decay_is_selected_by_name_not_by_rank():
  mask = optim.name_mask(PARAMS, r"/w$", "depthwise")
  assert mask["net/~/conv_0"]["w"] and mask["net/~/linear"]["w"]
  assert not mask["net/~/conv_0_depthwise"]["w"]
  # [C, D] biases and norm parameters have two axes, like weights: still not decayed.
  assert not mask["net/~/linear"]["b"] and not mask["net/~/batchnorm"]["scale"]
  assert optim.describe_mask(PARAMS, mask).startswith("2 of 6 arrays")


def test_sgd_weight_decay_is_coupled_l2_on_the_masked_parameters_only():
  tx, _ = optim.build(_opt(name="sgd", lr=0.5, momentum=0.0, schedule="constant",
                           weight_decay=0.1, weight_decay_include=r"/w$"), 10, 8)
  grads = jax.tree.map(jnp.zeros_like, PARAMS)
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  np.testing.assert_allclose(updates["net/~/linear"]["w"], -0.5 * 0.1 * 1.0)
  np.testing.assert_allclose(updates["net/~/linear"]["b"], 0.0)
  np.testing.assert_allclose(updates["net/~/batchnorm"]["scale"], 0.0)


def test_adamw_decays_decoupled_with_the_mask():
  tx, _ = optim.build(_opt(name="adamw", lr=1.0, schedule="constant", weight_decay=0.01,
                           weight_decay_include=r"/w$"), 10, 8)
  grads = jax.tree.map(jnp.zeros_like, PARAMS)
  updates, _ = tx.update(grads, tx.init(PARAMS), PARAMS)
  np.testing.assert_allclose(updates["net/~/conv_0"]["w"], -0.01, rtol=1e-6)
  np.testing.assert_allclose(updates["net/~/linear"]["b"], 0.0)


def test_gradient_clipping_by_global_norm():
  tx, _ = optim.build(_opt(name="sgd", lr=1.0, momentum=0.0, schedule="constant",
                           grad_clip_norm=0.25), 10, 8)
  params = {"a": {"w": jnp.zeros(4)}}
  updates, _ = tx.update({"a": {"w": jnp.full(4, 10.0)}}, tx.init(params), params)
  assert float(optax.tree.norm(updates)) == pytest.approx(0.25, rel=1e-5)


def test_linear_scaling_warmup_and_cosine():
  sched = optim.make_schedule(_opt(lr=0.1, lr_batch_scale=256, warmup_steps=10,
                                   schedule="cosine"), 110, 1024)
  assert float(sched(0)) == 0.0
  assert float(sched(5)) == pytest.approx(0.2, rel=1e-5)      # halfway up to 0.1 * 1024 / 256
  assert float(sched(10)) == pytest.approx(0.4, rel=1e-5)
  assert float(sched(60)) == pytest.approx(0.2, rel=1e-5)     # cosine halfway
  assert float(sched(110)) == pytest.approx(0.0, abs=1e-7)


def test_piecewise_schedule_of_he_et_al():
  sched = optim.make_schedule(_opt(lr=0.1, schedule="piecewise", decay_boundaries=(0.5, 0.75),
                                   decay_factor=0.1), 64_000, 128)
  values = [float(sched(s)) for s in (0, 31_999, 32_000, 47_999, 48_000, 63_999)]
  np.testing.assert_allclose(values, [0.1, 0.1, 0.01, 0.01, 0.001, 0.001], rtol=1e-5)


def test_unknown_optimizer_and_schedule_name_the_choices():
  with pytest.raises(ValueError, match=r"Unknown optimizer 'lion'; valid: .*adam.*sgd"):
    optim.build(_opt(name="lion"), 10, 8)
  with pytest.raises(ValueError, match=r"Unknown learning-rate schedule 'exp'; valid: .*cosine"):
    optim.build(_opt(schedule="exp"), 10, 8)
  with pytest.raises(ValueError, match=r"warmup_steps=10 must be in \[0, num_steps=10\)"):
    optim.build(_opt(warmup_steps=10), 10, 8)


def test_rmsprop_is_tensorflow_style():
  tx, _ = optim.build(_opt(name="rmsprop", lr=1.0, schedule="constant", momentum=0.0,
                           eps=1.0), 10, 8)
  params = {"a": {"w": jnp.zeros(1)}}
  updates, _ = tx.update({"a": {"w": jnp.ones(1)}}, tx.init(params), params)
  # ms = 0.9 * 1 + 0.1 * 1 = 1 (initialised to 1); update = -g / sqrt(ms + eps), eps = 1.
  np.testing.assert_allclose(updates["a"]["w"], -1.0 / np.sqrt(2.0), rtol=1e-6)
