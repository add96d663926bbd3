"""sparsity: schedules, masks (element, unstructured, block; layer and global), the optimiser
wrapper, name selection on the real models, cost reports and the compact export.

Every mask is checked against numpy: norms computed here, counts from round(s·n), order by a
stable numpy sort.
"""

import re

import haiku as hk
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from algebranets import algebras
from algebranets import common
from algebranets import costs
from algebranets import models
from algebranets import nn as ann
from algebranets import sparsity
from algebranets.models import transformer_xl as txl


def _spec(**kw):
  return sparsity.Spec(**dict(dict(target=0.5), **kw))


def _rand(shape, seed=0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _cfg(**kw):
  c = ml_collections.ConfigDict(dict(
      target=0.9, kind="element", block="1xd", block_algebra="m2r", schedule="gradual",
      initial=0.0, begin_fraction=0.1, end_fraction=0.6, begin_step=0, end_step=0,
      frequency=100, scope="layer", norm="l2", include="", exclude=""))
  c.update(kw)
  return c


# ----------------------------------------------------------------------------- schedules
def test_gradual_schedule_matches_zhu_gupta_at_chosen_steps():
  spec = _spec(target=0.9, initial=0.1, begin_step=10, end_step=110, frequency=25)
  for t in (0, 9, 10, 11, 35, 60, 85, 109, 110, 111, 500):
    if t < 10:
      want = 0.0
    elif t >= 110:
      want = 0.9
    else:
      want = 0.9 + (0.1 - 0.9) * (1 - (t - 10) / (110 - 10)) ** 3
    assert float(sparsity.sparsity_at(spec, t)) == pytest.approx(want, abs=1e-6), t
  updates = [t for t in range(0, 200) if bool(sparsity.is_update_step(spec, t))]
  assert updates == [10, 35, 60, 85, 110]
  # t1 is an update step even when the frequency does not land on it.
  spec = _spec(target=0.9, begin_step=10, end_step=100, frequency=40)
  assert [t for t in range(200) if bool(sparsity.is_update_step(spec, t))] == [10, 50, 90, 100]


def test_one_shot_prunes_everything_at_the_begin_step_only():
  spec = _spec(target=0.8, schedule="one_shot", begin_step=30, end_step=30)
  assert [float(sparsity.sparsity_at(spec, t)) for t in (0, 29, 30, 31, 1000)] == pytest.approx(
      [0.0, 0.0, 0.8, 0.8, 0.8])
  assert [t for t in range(100) if bool(sparsity.is_update_step(spec, t))] == [30]


def test_spec_from_config_resolves_fractions_and_names_the_choices_of_bad_values():
  assert sparsity.spec_from_config(_cfg(target=0.0), 1000) is None
  spec = sparsity.spec_from_config(_cfg(), 1000, "m2r")
  assert (spec.begin_step, spec.end_step) == (100, 600)
  assert spec.include == sparsity.DEFAULT_INCLUDE and spec.exclude == sparsity.DEFAULT_EXCLUDE
  spec = sparsity.spec_from_config(_cfg(begin_step=7, end_step=70), 1000)
  assert (spec.begin_step, spec.end_step) == (7, 70)
  spec = sparsity.spec_from_config(_cfg(kind="block", block="nxn", block_algebra="m4r"), 10, "r")
  assert spec.block == (4, 4)
  for key, value, names in (("kind", "blocks", "element"), ("schedule", "cubic", "one_shot"),
                            ("scope", "model", "global"), ("norm", "l3", "linf"),
                            ("block", "2x2", "nxn")):
    with pytest.raises(ValueError, match=names):
      sparsity.spec_from_config(_cfg(**{key: value}), 1000)
  with pytest.raises(ValueError, match="target"):
    sparsity.spec_from_config(_cfg(target=1.0), 1000)
  with pytest.raises(ValueError, match="frequency"):
    sparsity.spec_from_config(_cfg(frequency=0), 1000)
  with pytest.raises(ValueError, match="num_steps"):
    sparsity.spec_from_config(_cfg(end_step=2000), 1000)
  with pytest.raises(ValueError, match="square"):
    sparsity.spec_from_config(_cfg(kind="block", block="nxn", block_algebra="c"), 10)
  with pytest.raises(ValueError, match="real-network"):
    sparsity.spec_from_config(_cfg(kind="block"), 10, "m2r")
  with pytest.raises(ValueError, match="algebras|unknown"):
    sparsity.spec_from_config(_cfg(kind="block", block_algebra="octonion"), 10)


# ----------------------------------------------------------------------------- masks
def _element_norms(w):
  return np.sqrt(np.sum(np.asarray(w, np.float64) ** 2, axis=-1))


def test_element_masks_prune_whole_elements_exactly_the_fraction_per_layer():
  params = {"net/conv": {"w": _rand((3, 3, 8, 16, 4), 1)}, "net/fc": {"w": _rand((32, 24, 4), 2)}}
  pruner = sparsity.Pruner(_spec(target=0.7), params, algebra_dim=4)
  masks = pruner.compute_masks(params, None, 0.7)
  pruned_params = sparsity.apply_masks(params, masks)
  for module in params:
    w, m = np.asarray(params[module]["w"]), np.asarray(masks[module]["w"])
    assert m.dtype == bool and m.shape == w.shape[:-1] + (1,)
    n = m.size
    assert (~m).sum() == round(0.7 * n)  # exactly the fraction of this weight's elements
    norms = _element_norms(w)
    assert norms[~m[..., 0]].max() <= norms[m[..., 0]].min()  # the smallest norms went
    p = np.asarray(pruned_params[module]["w"])
    # whole elements: all D components zero where pruned, all kept where kept
    assert np.all(p[~m[..., 0]] == 0) and np.array_equal(p[m[..., 0]], w[m[..., 0]])


def test_global_scope_uses_one_threshold_and_the_exact_overall_count():
  params = {"a": {"w": _rand((16, 16, 4), 3) * 3.0}, "b": {"w": _rand((8, 32, 4), 4) * 0.5}}
  pruner = sparsity.Pruner(_spec(target=0.6, scope="global"), params, algebra_dim=4)
  masks = pruner.compute_masks(params, None, 0.6)
  all_norms = np.concatenate([_element_norms(params[k]["w"]).ravel() for k in "ab"])
  all_kept = np.concatenate([np.asarray(masks[k]["w"])[..., 0].ravel() for k in "ab"])
  assert (~all_kept).sum() == round(0.6 * all_kept.size)
  assert all_norms[~all_kept].max() <= all_norms[all_kept].min()
  fractions = [1 - np.asarray(masks[k]["w"]).mean() for k in "ab"]
  assert fractions[1] > 0.9 > 0.3 > fractions[0]  # the small-scale weight takes most of it


def test_ties_are_broken_by_index_and_pruned_units_go_first():
  w = jnp.ones((4, 5, 2))
  params = {"m": {"w": w}}
  pruner = sparsity.Pruner(_spec(target=0.45), params, algebra_dim=2)
  masks = pruner.compute_masks(params, None, 0.45)
  kept = np.asarray(masks["m"]["w"])[..., 0].ravel()
  k = round(0.45 * 20)
  assert np.array_equal(kept, np.arange(20) >= k)  # lowest flat indices pruned first
  # Deterministic: the same call gives the same mask; and units pruned before stay pruned
  # ahead of equal (or even larger) scores.
  again = pruner.compute_masks(params, None, 0.45)
  assert np.array_equal(np.asarray(again["m"]["w"]), np.asarray(masks["m"]["w"]))
  old = np.ones((4, 5, 1), bool)
  old[3, 4, 0] = old[2, 0, 0] = False
  new = pruner.compute_masks({"m": {"w": w * 10.0}}, {"m": {"w": jnp.asarray(old)}}, 0.1)
  assert np.array_equal(np.asarray(new["m"]["w"]), old)


def test_a_rising_schedule_only_grows_the_masks():
  params = {"m": {"w": _rand((32, 32, 4), 5)}}
  pruner = sparsity.Pruner(_spec(target=0.9), params, algebra_dim=4)
  masks = pruner.full_masks()
  for s in (0.2, 0.5, 0.8, 0.9):
    params = sparsity.apply_masks(params, masks)
    new = pruner.compute_masks(params, masks, s)
    assert not np.any(np.asarray(new["m"]["w"]) & ~np.asarray(masks["m"]["w"]))
    masks = new


def test_unstructured_masks_prune_real_components_of_an_algebra_weight():
  w = _rand((3, 3, 4, 8, 4), 6)
  params = {"c": {"w": w}}
  pruner = sparsity.Pruner(_spec(kind="unstructured"), params, algebra_dim=4)
  m = np.asarray(pruner.compute_masks(params, None, 0.75)["c"]["w"])
  assert m.shape == w.shape
  assert (~m).sum() == round(0.75 * w.size)
  a = np.abs(np.asarray(w))
  assert a[~m].max() <= a[m].min()
  per_element = m.sum(-1)
  assert np.any((per_element > 0) & (per_element < 4))  # elements split: not element-level


@pytest.mark.parametrize("block,algebra,shape", [("1xd", "m2r", (1, 4)), ("dx1", "m2r", (4, 1)),
                                                 ("nxn", "m2r", (2, 2)), ("1xd", "c", (1, 2)),
                                                 ("nxn", "m4r", (4, 4))])
def test_block_masks_of_real_networks_have_the_block_shape(block, algebra, shape):
  bh, bw = shape
  w = _rand((3, 3, 8, 16, 1), 7)  # a real conv weight [KH, KW, Cin, Cout, 1]
  params = {"conv": {"w": w}}
  spec = sparsity.spec_from_config(_cfg(target=0.7, kind="block", block=block,
                                        block_algebra=algebra), 100, "r")
  assert spec.block == shape
  m = np.asarray(sparsity.Pruner(spec, params, 1).compute_masks(params, None, 0.7)["conv"]["w"])
  assert m.shape == w.shape
  m = m[..., 0]
  # per tap: every aligned bh x bw block of the [Cin, Cout] matrix is all kept or all pruned
  blocks = m.reshape(3, 3, 8 // bh, bh, 16 // bw, bw)
  assert np.all(blocks.all(axis=(3, 5)) | ~blocks.any(axis=(3, 5)))
  kept_blocks = blocks.all(axis=(3, 5))
  assert (~kept_blocks).sum() == round(0.7 * kept_blocks.size)
  norms = np.sqrt((np.asarray(w[..., 0], np.float64) ** 2).reshape(
      3, 3, 8 // bh, bh, 16 // bw, bw).sum(axis=(3, 5)))
  assert norms[~kept_blocks].max() <= norms[kept_blocks].min()
  if bh * bw > 1:
    # not merely element-wise: some pruned real weight is larger than some kept one
    a = np.abs(np.asarray(w[..., 0]))
    assert a[~m].max() > a[m].min()


def test_block_that_does_not_tile_a_weight_is_rejected_with_its_name():
  params = {"dw": {"w": jnp.ones((3, 3, 1, 8, 1))}}
  with pytest.raises(ValueError, match="dw/w.*exclude"):
    sparsity.Pruner(_spec(kind="block", block=(4, 1)), params, 1)


def test_norms_choose_different_elements():
  w = np.zeros((1, 3, 4), np.float32)
  w[0, 0] = [1, 1, 1, 1]          # l1 4,   l2² 4,    linf 1
  w[0, 1] = [1.9, 0, 0, 0]        # l1 1.9, l2² 3.61, linf 1.9
  w[0, 2] = [1.5, 1.0, 0, 0]      # l1 2.5, l2² 3.25, linf 1.5
  params = {"m": {"w": jnp.asarray(w)}}
  pruned = {}
  for norm in sparsity.NORMS:
    pruner = sparsity.Pruner(_spec(norm=norm), params, 4)
    m = np.asarray(pruner.compute_masks(params, None, 1 / 3)["m"]["w"])[0, :, 0]
    pruned[norm] = int(np.flatnonzero(~m)[0])
  assert pruned == {"l2": 2, "l1": 1, "linf": 0}


def test_weights_without_the_algebra_axis_are_checked_and_can_be_named_real():
  params = {"m/~/linear": {"w": jnp.ones((8, 6))}, "m/conv": {"w": jnp.ones((3, 3, 2, 2, 4))}}
  with pytest.raises(ValueError, match="no trailing algebra axis"):
    sparsity.Pruner(_spec(include="w$", exclude="^$"), params, 4, real_weights="")
  pruner = sparsity.Pruner(_spec(include="w$", exclude="^$"), params, 4)
  masks = pruner.compute_masks(params, None, 0.5)
  assert masks["m/~/linear"]["w"].shape == (8, 6)  # one entry per real
  assert masks["m/conv"]["w"].shape == (3, 3, 2, 2, 1)


# ----------------------------------------------------------------------------- optimisers
def _prune_and_train(tx, steps=60, zero_state=True):
  """Warm the optimiser up unpruned, prune half, train `steps` steps with random grads."""
  params = {"net/fc": {"w": _rand((16, 8, 4), 8), "b": _rand((8, 4), 9)}}
  pruner = sparsity.Pruner(_spec(target=0.5), params, 4)
  tx = sparsity.keep_pruned_zero(tx)
  state = tx.init(params)
  rng = np.random.default_rng(0)

  def grads():
    return jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)

  for _ in range(5):  # moments full of history
    updates, state = tx.update(grads(), state, params)
    params = optax.apply_updates(params, updates)
  masks = pruner.compute_masks(params, None, 0.5)
  params = sparsity.apply_masks(params, masks)
  if zero_state:
    state = sparsity.zero_pruned_state(tx, state, params, masks)
  start = params
  for _ in range(steps):
    updates, state = tx.update(grads(), state, params, masks=masks)
    params = sparsity.apply_masks(optax.apply_updates(params, updates), masks)
  return start, params, state, np.broadcast_to(np.asarray(masks["net/fc"]["w"]), (16, 8, 4))


@pytest.mark.parametrize("name,tx", [
    ("sgd-momentum", optax.chain(optax.add_decayed_weights(1e-2), optax.sgd(0.1, momentum=0.9))),
    ("adam", optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))),
    ("adamw", optax.adamw(1e-2, weight_decay=0.1)),
])
def test_pruned_weights_and_their_optimiser_state_stay_exactly_zero(name, tx):
  start, params, state, kept = _prune_and_train(tx)
  w = np.asarray(params["net/fc"]["w"])
  assert np.all(w[~kept] == 0.0), name
  assert np.all(w[kept] != np.asarray(start["net/fc"]["w"])[kept])  # the rest trains
  assert not np.array_equal(np.asarray(params["net/fc"]["b"]), np.asarray(start["net/fc"]["b"]))
  moments = [x for x in jax.tree.leaves(state) if getattr(x, "shape", None) == (16, 8, 4)]
  assert moments  # momentum / mu and nu
  for m in moments:
    assert np.all(np.asarray(m)[~kept] == 0.0)
    assert np.any(np.asarray(m)[kept] != 0.0)


def test_without_zeroing_the_state_adam_moments_of_pruned_weights_keep_their_history():
  # The check above can fail: the moments are not zero by themselves (only the updates are).
  _, params, state, kept = _prune_and_train(optax.adam(1e-2), steps=3, zero_state=False)
  assert np.all(np.asarray(params["net/fc"]["w"])[~kept] == 0.0)  # masked updates alone
  mu = [x for x in jax.tree.leaves(state) if getattr(x, "shape", None) == (16, 8, 4)][0]
  assert np.any(np.asarray(mu)[~kept] != 0.0)


def test_pruner_update_changes_masks_only_on_update_steps_under_jit():
  params = {"net/fc": {"w": _rand((16, 8, 4), 10)}}
  spec = _spec(target=0.5, begin_step=2, end_step=6, frequency=2)
  pruner = sparsity.Pruner(spec, params, 4)
  tx = optax.sgd(0.1, momentum=0.9)
  params, masks = pruner.init(params)
  assert np.all(np.asarray(masks["net/fc"]["w"]))  # begin_step 2: nothing pruned at init
  state = tx.init(params)
  update = jax.jit(lambda step, p, m, s: pruner.update(step, p, m, s, tx))
  seen = []
  for step in range(1, 8):
    params, masks, state = update(step, params, masks, state)
    seen.append(1 - float(np.asarray(masks["net/fc"]["w"]).mean()))
  want = [0.0] * 7
  for t in range(1, 8):
    s = float(sparsity.sparsity_at(spec, t)) if t in (2, 4, 6) else None
    want[t - 1] = round(s * 128) / 128 if s is not None else want[t - 2]
  assert seen == pytest.approx(want)
  assert seen[-1] == 0.5
  # one_shot from step 0 prunes at init
  spec0 = _spec(target=0.25, schedule="one_shot")
  p0, m0 = sparsity.Pruner(spec0, params, 4).init({"net/fc": {"w": _rand((16, 8, 4), 11)}})
  assert 1 - np.asarray(m0["net/fc"]["w"]).mean() == 0.25
  assert np.all(np.asarray(p0["net/fc"]["w"])[~np.asarray(m0["net/fc"]["w"])[..., 0]] == 0)


# ----------------------------------------------------------------------------- names
def _names(fn, *args):
  params = jax.eval_shape(hk.transform_with_state(fn).init, jax.random.PRNGKey(0), *args)[0]
  return params, [n for n in common.named_leaves(params)]


def _image_params(name):
  ctor = models.MODELS[name]
  alg = algebras.get("m2r")
  return _names(lambda x: ctor(num_classes=10, algebra=alg, width=0.25)(x, is_training=True),
                jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))


@pytest.mark.parametrize("model", ["cifar_resnet20", "resnet50", "mobilenet_v1"])
def test_default_selection_on_image_models(model):
  params, names = _image_params(model)
  chosen = set(sparsity.select(params))
  convs = {n for n in names if re.search(r"(conv_\d|shortcut.*|pointwise)/w$", n)}
  assert convs and chosen == convs, sorted(chosen ^ convs)
  for n in names:
    if "stem_conv" in n or "logits" in n or "depthwise" in n or not n.endswith("/w"):
      assert n not in chosen
  assert any("stem_conv/w" in n for n in names) and any("logits" in n for n in names)
  sparsity.Pruner(_spec(), params, 4)  # every chosen weight has the algebra axis


@pytest.mark.parametrize("kw", [dict(), dict(cutoffs=(8, 16), div_val=2, tie_weights=True),
                                dict(cutoffs=(8, 16), div_val=2, tie_weights=False,
                                     tie_projs=False)])
def test_default_selection_on_transformer_xl(kw):
  alg = algebras.get("m2r")
  config = dict(vocab_size=40, d_model=16, n_layers=2, n_heads=2, d_head=8, d_inner=32,
                mem_len=4, **kw)
  params, names = _names(lambda t: txl.TransformerXL(**config, algebra=alg)(t, None, False,
                                                                          targets=t),
                         jax.ShapeDtypeStruct((2, 4), jnp.int32))
  chosen = set(sparsity.select(params))
  want = {f"transformer_xl/layer_{l}/{m}/w" for l in range(2)
          for m in ("q", "kv", "r", "o", "ff_in", "ff_out")}
  assert chosen == want, sorted(chosen ^ want)
  assert any("/embed/" in n for n in names)
  if kw:  # adaptive softmax: tables, projections and cluster weights stay dense
    assert any(re.search(r"softmax.*(proj|cluster|table)", n) for n in names)
  sparsity.Pruner(_spec(), params, 4)


# ----------------------------------------------------------------------------- reports
def _mlp(x):
  alg = algebras.get("h")
  h = ann.Linear(12, algebra=alg, name="fc1")(x)
  return ann.Linear(6, algebra=alg, name="fc2")(h)


def test_sparse_costs_count_only_nonzero_params_and_scale_macs():
  x = jax.ShapeDtypeStruct((5, 8, 4), jnp.float32)
  report = costs.model_costs(_mlp, x)
  params = hk.transform(_mlp).init(jax.random.PRNGKey(0), jnp.zeros((5, 8, 4)))
  pruner = sparsity.Pruner(_spec(include="fc1/w"), params, 4)
  masks = pruner.compute_masks(params, None, 0.75)
  params = sparsity.apply_masks(params, masks)
  c = sparsity.sparse_costs(report, pruner, params, masks)
  pruned_reals = round(0.75 * 8 * 12) * 4
  assert c["params"] == report.total_params == (8 * 12 + 12 + 12 * 6 + 6) * 4
  assert c["nonzero_params"] == report.total_params - pruned_reals
  fc1, fc2 = c["layers"]
  assert fc1["macs"] == 5 * 8 * 12 * 16 and fc1["nonzero_macs"] == 5 * 24 * 16  # 24 kept
  assert fc2["nonzero_macs"] == fc2["macs"] == 5 * 12 * 6 * 16
  assert c["nonzero_macs"] == fc1["nonzero_macs"] + fc2["nonzero_macs"]
  assert c["sparsity"] == pytest.approx(0.75)
  assert "fc1" in sparsity.format_costs(c) and "fc2" not in sparsity.format_costs(c)


def _table_rows(table: str):
  """{first cell: [cells]} of a markdown table (header and rule left out)."""
  lines = table.splitlines()
  return {cells[0]: cells for cells in
          ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}


def test_every_row_of_the_export_table_has_one_denominator():
  # Each row's sparsity is 1 - (its nonzero params) / (its params): the total row over the
  # whole model (here 8·12·4 of 744 reals pruned at 75%: 0.387, not the pruned weight's 0.75),
  # a layer row over its weight and bias, and a separate row for the pruned weights alone.
  x = jax.ShapeDtypeStruct((5, 8, 4), jnp.float32)
  report = costs.model_costs(_mlp, x)
  params = hk.transform(_mlp).init(jax.random.PRNGKey(0), jnp.zeros((5, 8, 4)))
  pruner = sparsity.Pruner(_spec(include="fc1/w"), params, 4)
  masks = pruner.compute_masks(params, None, 0.75)
  c = sparsity.sparse_costs(report, pruner, sparsity.apply_masks(params, masks), masks)
  rows = _table_rows(sparsity.format_costs(c))
  number = lambda cell: int(cell.replace(",", ""))
  total = rows["total (model)"]
  assert (number(total[1]), number(total[2])) == (744, 744 - 72 * 4)
  assert float(total[5]) == pytest.approx(1 - (744 - 288) / 744, abs=5e-4)
  pruned = rows["pruned weights"]
  assert (number(pruned[1]), number(pruned[2]), float(pruned[5])) == (96 * 4, 24 * 4, 0.75)
  fc1 = rows["fc1"]
  assert (number(fc1[1]), number(fc1[2])) == ((96 + 12) * 4, (24 + 12) * 4)
  assert float(fc1[5]) == pytest.approx(1 - 36 / 108, abs=5e-4)
  assert c["pruned_params"] == 96 * 4 and c["pruned_nonzero_params"] == 24 * 4


@pytest.mark.parametrize("spec,dim,shapes", [
    (_spec(), 4, {"a/conv": (3, 3, 8, 12, 4), "a/fc": (10, 6, 4)}),
    (_spec(kind="unstructured"), 4, {"a/conv": (3, 3, 8, 12, 4), "a/fc": (10, 6, 4)}),
    (_spec(kind="block", block=(2, 2)), 1, {"a/conv": (3, 3, 8, 12, 1), "a/fc": (10, 6, 1)}),
    (_spec(kind="block", block=(1, 4), scope="global"), 1, {"a/conv": (1, 1, 8, 12, 1)}),
])
def test_export_round_trip_equals_the_masked_params(tmp_path, spec, dim, shapes):
  params = {m: {"w": _rand(s, i), "b": _rand(s[-2:], 20 + i)}
            for i, (m, s) in enumerate(shapes.items())}
  pruner = sparsity.Pruner(spec, params, dim)
  masks = pruner.compute_masks(params, None, 0.8)
  masked = jax.tree.map(np.asarray, sparsity.apply_masks(params, masks))
  compact = sparsity.compress(pruner, masked, jax.tree.map(np.asarray, masks))
  sparsity.save(tmp_path / "m.npz", compact)
  back = sparsity.load(tmp_path / "m.npz")
  assert jax.tree.structure(back) == jax.tree.structure(masked)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(masked)):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(a, b)
  for m, s in shapes.items():
    values = compact[f"{m}/w::values"]
    kept = int(np.asarray(masks[m]["w"]).sum()) * (1 if spec.kind == "unstructured" else
                                                   s[-1])
    assert values.size == kept  # only the kept units are stored
    assert compact[f"{m}/w::indptr"][-1] == values.shape[0]
    assert values.shape[1:3] == spec.block
    assert f"{m}/b::dense" in compact


# ----------------------------------------------------------------------------- N:M and ERK
def _np_nm_mask(w, n, m):
  """Numpy N:M over elements of w [..., A, B, D]: keep the n largest l2 norms of every m
  consecutive elements along A (ties: lower index pruned first); mask [..., A, B, 1]."""
  norms = np.sum(np.asarray(w, np.float64) ** 2, axis=-1)             # [..., A, B]
  keep = np.zeros(norms.shape, bool)
  for idx in np.ndindex(*norms.shape[:-2]):
    a, b = norms[idx].shape
    for g in range(a // m):
      for col in range(b):
        group = norms[idx][g * m:(g + 1) * m, col].astype(np.float32)
        order = np.argsort(group, kind="stable")
        keep[idx][g * m + order[m - n:], col] = True
  return keep[..., None]


@pytest.mark.parametrize("shape", [(16, 6, 4), (3, 3, 8, 5, 2), (12, 7, 1)])
def test_nm_element_masks_match_numpy(shape):
  w = _rand(shape, seed=3)
  params = {"a": {"w": w}}
  pruner = sparsity.Pruner(_spec(target=0.5, nm=(2, 4)), params, algebra_dim=shape[-1])
  mask = pruner.compute_masks(params, None, 0.5)["a"]["w"]
  np.testing.assert_array_equal(mask, _np_nm_mask(w, 2, 4))
  # Exactly 2 of every 4 along Cin, at every (tap, output): 50% of the elements.
  groups = np.asarray(mask[..., 0]).reshape(shape[:-3] + (shape[-3] // 4, 4, shape[-2]))
  assert np.all(groups.sum(-2) == 2)
  # Along the schedule: 1 of each group at half the target, and the masks only grow.
  half = pruner.compute_masks(params, None, 0.25)["a"]["w"]
  assert np.all(np.asarray(half[..., 0]).reshape(groups.shape).sum(-2) == 3)
  full = pruner.compute_masks(params, {"a": {"w": half}}, 0.5)["a"]["w"]
  assert not np.any(np.asarray(full) & ~np.asarray(half))


def test_nm_config_and_checks():
  spec = sparsity.spec_from_config(_cfg(target=0.0, nm="2:4"), 1000, "m2r")
  assert spec.nm == (2, 4) and spec.target == 0.5
  assert sparsity.spec_from_config(_cfg(target=0.75, nm="1:4"), 1000, "h").target == 0.75
  with pytest.raises(ValueError, match="prunes 0.5 of the elements, but sparsity.target is 0.9"):
    sparsity.spec_from_config(_cfg(target=0.9, nm="2:4"), 1000, "h")
  with pytest.raises(ValueError, match="'N:M' with 0 < N < M"):
    sparsity.spec_from_config(_cfg(nm="4:2"), 1000, "h")
  with pytest.raises(ValueError, match="needs sparsity.kind 'element' and scope 'layer'"):
    sparsity.spec_from_config(_cfg(target=0.0, nm="2:4", scope="global"), 1000, "h")
  with pytest.raises(ValueError, match=r"Cin \(A\) axis of a/w \(6, 3, 4\) to be a multiple of 4"):
    sparsity.Pruner(_spec(nm=(2, 4)), {"a": {"w": _rand((6, 3, 4))}}, algebra_dim=4)


def _np_erk(grids, target):
  """ERK densities written out (Evci et al. 2020): iterate, freezing layers above density 1."""
  n = {k: np.prod(g) for k, g in grids.items()}
  raw = {k: np.sum(g) / np.prod(g) for k, g in grids.items()}
  dense = set()
  while True:
    rest = [k for k in grids if k not in dense]
    eps = ((1 - target) * sum(n.values()) - sum(n[k] for k in dense)) / sum(
        raw[k] * n[k] for k in rest)
    over = {k for k in rest if eps * raw[k] > 1}
    if not over:
      return {k: 1.0 if k in dense else eps * raw[k] for k in grids}
    dense |= over


def test_erk_allocation_matches_numpy_and_ignores_the_algebra_axis():
  shapes = {"conv1": (3, 3, 4, 16, 4), "conv2": (3, 3, 16, 32, 4), "fc": (32, 10, 4),
            "tiny": (2, 2, 4)}
  params = {k: {"w": _rand(s, seed=i)} for i, (k, s) in enumerate(shapes.items())}
  pruner = sparsity.Pruner(_spec(target=0.8, scope="erk"), params, algebra_dim=4)
  grids = {f"{k}/w": s[:-1] for k, s in shapes.items()}
  want = _np_erk(grids, 0.8)
  for name, density in want.items():
    assert pruner.final_sparsity[name] == pytest.approx(1 - density, abs=1e-9)
  assert pruner.final_sparsity["tiny/w"] == 0.0                      # too small: kept dense
  units = {k: np.prod(g) for k, g in grids.items()}
  kept = sum(units[k] * (1 - pruner.final_sparsity[k]) for k in units)
  assert kept == pytest.approx(0.2 * sum(units.values()))
  # Counting the algebra axis as a dimension (a real-network pruner's view) is different.
  assert _np_erk({f"{k}/w": s for k, s in shapes.items()}, 0.8)["conv2/w"] != pytest.approx(
      want["conv2/w"], rel=1e-3)
  masks = pruner.compute_masks(params, None, 0.8)
  for name, m in sparsity.flat_masks(masks).items():
    assert int(np.asarray(m).sum()) == round((1 - pruner.final_sparsity[name]) * units[name])
  # Half way along the schedule every weight is at half its final sparsity.
  half = sparsity.flat_masks(pruner.compute_masks(params, None, 0.4))
  for name, m in half.items():
    pruned = units[name] - int(np.asarray(m).sum())
    assert pruned == round(0.5 * pruner.final_sparsity[name] * units[name])


def test_nm_and_erk_masks_export_round_trip(tmp_path):
  params = {"a": {"w": _rand((8, 6, 4), 1), "b": _rand((6, 4), 2)},
            "c": {"w": _rand((3, 3, 8, 4, 4), 3)}}
  for spec in (_spec(target=0.5, nm=(2, 4)), _spec(target=0.7, scope="erk")):
    pruner = sparsity.Pruner(spec, params, algebra_dim=4)
    masks = pruner.compute_masks(params, None, spec.target)
    masked = sparsity.apply_masks(params, masks)
    sparsity.save(tmp_path / "m.npz", sparsity.compress(pruner, masked, masks))
    back = sparsity.load(tmp_path / "m.npz")
    for name, (keys, leaf) in common.named_leaves(masked).items():
      node = back
      for k in keys:
        node = node[k]
      np.testing.assert_array_equal(node, np.asarray(leaf), err_msg=name)


def test_learned_algebra_structure_is_not_pruned_and_is_exported(tmp_path):
  def f(x):
    return ann.Linear(8, algebra="learned:4", name="fc")(x)
  params = hk.transform(f).init(jax.random.PRNGKey(0), jnp.ones((2, 8, 4)))
  pruner = sparsity.Pruner(_spec(target=0.5), params, algebra_dim=4)
  assert list(pruner.weights) == ["fc/w"]
  masks = pruner.compute_masks(params, None, 0.5)
  sparsity.save(tmp_path / "m.npz", sparsity.compress(pruner, params, masks))
  back = sparsity.load(tmp_path / "m.npz")
  np.testing.assert_array_equal(back["fc"]["structure"], params["fc"]["structure"])
