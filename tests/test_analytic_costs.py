"""algebranets.analytic_costs: the closed forms equal the traced counts (`costs.model_costs`)
of every registered model and every option they cover, say None for what they do not cover,
and the matching built on them picks exactly the widths the traced matching picks."""

import jax
import jax.numpy as jnp
import pytest

from algebranets import analytic_costs
from algebranets import costs
from algebranets import models
from algebranets.models import transformer_xl as txl

Sizes = analytic_costs.Sizes


def _traced_image(name, algebra, num_classes, image_size, **kwargs) -> Sizes:
  fn = lambda x: models.MODELS[name](num_classes=num_classes, algebra=algebra, **kwargs)(
      x, is_training=False)
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  return Sizes.of(costs.model_costs(fn, images))


# Every registered model once (an algebra and a width each; ImageNet models on 64-pixel
# images: the counts scale with the output sizes, the tracing time does not).
_EVERY_MODEL = [(name, alg, 0.1 + 0.1 * i) for i, (name, alg) in enumerate(zip(
    sorted(models.MODELS), ["r", "c", "h", "m2r", "m3r", "m4r", "m2c", "dual", "cross3"] * 2))]


@pytest.mark.parametrize("name,algebra,width", _EVERY_MODEL)
def test_every_registered_image_model_counts_as_traced(name, algebra, width):
  size = 32 if name.startswith("cifar") else 64
  got = analytic_costs.image_model(name, algebra=algebra, num_classes=7, image_size=size,
                                   width=width)
  assert got == _traced_image(name, algebra, 7, size, width=width)


@pytest.mark.parametrize("name,algebra,size,kwargs", [
    ("resnet50", "c", 224, dict(width=0.6952, padding="symmetric")),     # a paper model
    ("resnet18", "m2r", 45, dict(padding="symmetric", zero_init_last_bn=True)),  # odd sizes
    ("resnet18", "dual", 37, dict(head="component", channel_divisor=4, width=0.33,
                                  bn_config={"create_scale": False})),
    ("cifar_resnet20", "cross3", 32, dict(shortcut="pad", width=0.5)),  # option A, lift linear
    ("cifar_resnet20", "cross3", 33, dict(lift="split", head="norm")),
    ("cifar_resnet32", "h", 32, dict(w_init="polar", activation="gelu", conv_path="expanded")),
    ("cifar_resnet20", "m2r", 32, dict(folded=True, width=0.5)),
    ("mobilenet_v1", "m4r", 96, dict(width=0.25, padding="symmetric", dropout_rate=0.1,
                                     head="component", stem_channels=16)),
    ("mobilenet_v1", "m2r", 64, dict(folded=True, width=0.3)),
])
def test_image_model_options_count_as_traced(name, algebra, size, kwargs):
  got = analytic_costs.image_model(name, algebra=algebra, num_classes=10, image_size=size,
                                   **kwargs)
  assert got == _traced_image(name, algebra, 10, size, **kwargs)


def test_uncovered_image_models_say_none():
  common = dict(algebra="c", num_classes=10, image_size=32)
  assert analytic_costs.image_model("cifar_resnet20", bn_config={"whitening": True},
                                    **common) is None
  assert analytic_costs.image_model("cifar_resnet20", activation="modrelu", **common) is None
  assert analytic_costs.image_model("vgg16", **common) is None
  assert analytic_costs.image_model("cifar_resnet20", new_option=1, **common) is None


_SMALL = dict(vocab_size=50, d_model=12, n_layers=2, n_heads=3, d_head=4, d_inner=20, mem_len=7)


@pytest.mark.parametrize("config,algebra,seq_len,kwargs", [
    (txl.PRESETS["enwik8_base"], "m2r", 64, {}),
    (dict(txl.PRESETS["wt103_base"], vocab_size=30_000, cutoffs=(2_000, 4_000, 20_000)), "c",
     32, {}),
    (dict(_SMALL, cutoffs=(10, 30), tie_weights=False, untie_r=True, pre_lnorm=True), "h", 5,
     dict(batch_size=3)),
    (dict(_SMALL, cutoffs=(10, 30)), "cross3", 5, dict(with_targets=False, with_mems=False)),
    (dict(_SMALL, cutoffs=(10,), tail_capacity=None, final_lnorm=True, d_embed=12), "dual", 6,
     {}),
    (dict(_SMALL, cutoffs=(10,), tail_capacity=2.0, activation="gelu"), "m2c", 6, {}),
    (dict(_SMALL, mem_len=0, clamp_len=3, same_length=True), "m3r", 9, dict(batch_size=2)),
])
def test_transformer_xl_counts_as_traced(config, algebra, seq_len, kwargs):
  got = analytic_costs.transformer_xl_model(config, algebra, seq_len=seq_len, **kwargs)
  assert got == Sizes.of(txl.model_costs(config, algebra, seq_len=seq_len, **kwargs))


def test_uncovered_transformer_xl_says_none():
  assert analytic_costs.transformer_xl_model(dict(_SMALL, d_embed=8), "c", seq_len=4) is None
  assert analytic_costs.transformer_xl_model(dict(_SMALL, cutoffs=(10,), div_val=2), "c",
                                             seq_len=4) is None
  assert analytic_costs.transformer_xl_model(dict(_SMALL, activation="norm_gate"), "c",
                                             seq_len=4) is None


@pytest.mark.parametrize("algebra,match", [("m2r", "params"), ("h", "macs"),
                                           ("cross3", "params"), ("m2c", "flops")])
def test_image_matching_picks_the_traced_width(algebra, match):
  kwargs = dict(match=match, image_size=32, num_classes=10, tolerance=0.1, shortcut="pad")
  fast = analytic_costs.match_image_model("cifar_resnet20", algebra, **kwargs)
  traced = models.match_image_model(models.MODELS["cifar_resnet20"], algebra, **kwargs)
  assert fast == traced                      # width, size, evaluations, history: all of it


def test_image_matching_traces_what_the_closed_forms_do_not_cover(monkeypatch):
  # Whitening batch norm is not covered: the traced search runs, with the same arguments.
  calls = []
  monkeypatch.setattr(models, "match_image_model", lambda *a, **k: calls.append((a, k)))
  kwargs = dict(match="params", image_size=32, num_classes=10, tolerance=0.1,
                bn_config={"whitening": True}, reference_width=0.5)
  analytic_costs.match_image_model("cifar_resnet20", "c", **kwargs)
  [(args, passed)] = calls
  assert args == (models.MODELS["cifar_resnet20"], "c")
  assert passed == dict(kwargs, reference_algebra="r")


@pytest.mark.parametrize("reference,algebra,match,seq_len", [
    (txl.PRESETS["enwik8_base"], "m2r", "params", 512),
    (dict(_SMALL, d_model=64, d_inner=256, d_head=16, n_heads=4), "m3r", "flops", 16),
    (dict(_SMALL, d_model=64, d_inner=256, d_head=16, n_heads=4, cutoffs=(20,)), "dual",
     "macs", 16),
    (dict(_SMALL, d_model=64, d_inner=256, d_head=16, n_heads=4, d_embed=32), "c", "params",
     16),                                                      # projections: traced
    (txl.PRESETS["enwik8_base"], "h", "width", 512),
])
def test_transformer_xl_matching_picks_the_traced_sizes(reference, algebra, match, seq_len):
  fast = analytic_costs.matched_config(reference, algebra, match, seq_len=seq_len)
  assert fast == txl.matched_config(reference, algebra, match, seq_len=seq_len)
