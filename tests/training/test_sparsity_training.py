"""Pruning in training: pruned debug runs train end to end and reach their target sparsity,
masks are saved in and restored from checkpoints, a resumed pruned run repeats the
uninterrupted one bitwise, the export CLI round-trips, and 4 devices prune like 1."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from algebranets import common
from algebranets import sparsity
from algebranets.training import checkpoint
from algebranets.training import metrics
from algebranets.training import train
from training_testlib import ROOT, load_config, run_on_devices

pytestmark = pytest.mark.slow  # trains models: compiles for seconds

STEPS = 12


def _config(enwik8_zip, algebra="m2r", **sparsity_kw):
  config = load_config("enwik8_transformer_xl", f"{algebra},debug")
  config.data.path = str(enwik8_zip)
  config.train.update(num_steps=STEPS, log_every=1, eval_every=0, checkpoint_every=1000)
  config.sparsity.update(dict(dict(target=0.8, begin_step=2, end_step=8, frequency=2),
                              **sparsity_kw))
  return config


def _host(tree):
  return jax.tree.map(np.asarray, tree)


def _check_masked(state, want_sparsity):
  """Every mask prunes `want_sparsity` of its elements (up to rounding) and its weight is 0
  there; returns the flat masks."""
  flat = sparsity.flat_masks(_host(state.masks))
  params = {n: leaf for n, (_, leaf) in common.named_leaves(_host(state.params)).items()}
  assert flat
  for name, m in flat.items():
    assert m.dtype == bool and m.shape == params[name].shape[:-1] + (1,)
    assert (~m).sum() == round(want_sparsity * m.size), name
    w = params[name]
    assert np.all(w[~m[..., 0]] == 0.0) and np.all(np.any(w[m[..., 0]] != 0, axis=-1))
  return flat


@pytest.fixture(scope="module")
def pruned_run(enwik8_zip, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("pruned")
  result = train.train_and_evaluate(_config(enwik8_zip), workdir)
  return workdir, result


def test_a_pruned_debug_run_reaches_its_target_with_masks_in_the_checkpoint(
    enwik8_zip, pruned_run):
  workdir, result = pruned_run
  assert result["step"] == STEPS and np.isfinite(result["eval"]["valid"]["bpc"])
  records = {r["step"]: r for r in metrics.read_jsonl(workdir, "train")}
  spec = sparsity.Spec(target=0.8, begin_step=2, end_step=8, frequency=2)
  for step, r in records.items():
    assert r["sparsity/target"] == pytest.approx(float(sparsity.sparsity_at(spec, step)))
  # The actual sparsity follows the masks recomputed at 2, 4, 6, 8.
  assert records[1]["sparsity/overall"] == 0.0
  assert records[4]["sparsity/overall"] == pytest.approx(float(sparsity.sparsity_at(spec, 4)),
                                                         abs=0.01)
  assert records[5]["sparsity/overall"] == records[4]["sparsity/overall"]
  state = train.restore_state(_config(enwik8_zip), workdir)
  assert int(state.step) == STEPS
  flat = _check_masked(state, 0.8)
  assert sorted(flat) == sorted(f"transformer_xl/layer_{l}/{m}/w" for l in range(2)
                                for m in ("q", "kv", "r", "o", "ff_in", "ff_out"))
  pruned = sum(round(0.8 * m.size) for m in flat.values())  # elements, round(s·n) per layer
  overall = pruned / sum(m.size for m in flat.values())
  for step in (8, 12):
    assert records[step]["sparsity/overall"] == pytest.approx(overall, abs=1e-6)
    assert records[step]["sparsity/transformer_xl/layer_1/ff_in/w"] == round(0.8 * 512) / 512
  model = json.loads((workdir / "model.json").read_text())
  assert model["nonzero_params"] == model["params"] - pruned * 4
  assert model["nonzero_macs_per_token"] < model["macs_per_token"] * 0.21
  assert model["sparsity"]["overall"] == pytest.approx(overall)


def test_a_resumed_pruned_run_repeats_the_uninterrupted_one_bitwise(
    enwik8_zip, pruned_run, tmp_path):
  reference, _ = pruned_run
  losses = {r["step"]: r["loss"] for r in metrics.read_jsonl(reference, "train")}
  config = _config(enwik8_zip)
  config.train.preempt_at_step = 5  # between two mask updates, after the first ones
  result = train.train_and_evaluate(config, tmp_path)
  assert result["preempted"] and result["step"] == 5
  assert checkpoint.Checkpointer(tmp_path / "checkpoints").latest_step() == 5
  # Masks and zeros survive the checkpoint: the restored state has the step-4 masks.
  middle = train.restore_state(_config(enwik8_zip), tmp_path)
  spec = sparsity.Spec(target=0.8, begin_step=2, end_step=8, frequency=2)
  _check_masked(middle, float(sparsity.sparsity_at(spec, 4)))
  resumed = train.train_and_evaluate(_config(enwik8_zip), tmp_path)
  assert resumed["step"] == STEPS
  again = {r["step"]: r["loss"] for r in metrics.read_jsonl(tmp_path, "train")}
  assert again == losses  # bitwise
  a = _host(train.restore_state(_config(enwik8_zip), tmp_path))
  b = _host(train.restore_state(_config(enwik8_zip), reference))
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):  # params, masks, moments, memories
    np.testing.assert_array_equal(x, y)


def test_export_cli_writes_the_compact_model_and_it_loads_back_exactly(
    enwik8_zip, pruned_run, tmp_path):
  workdir, _ = pruned_run
  out = tmp_path / "model.npz"
  proc = subprocess.run([sys.executable, "-m", "algebranets.sparsity", "export",
                         f"--workdir={workdir}", f"--out={out}"], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert "transformer_xl/layer_0/ff_in" in proc.stdout and "total (model)" in proc.stdout
  state = _host(train.restore_state(_config(enwik8_zip), workdir))
  loaded = sparsity.load(out)
  assert jax.tree.structure(loaded) == jax.tree.structure(state.params)
  for x, y in zip(jax.tree.leaves(loaded), jax.tree.leaves(state.params)):
    np.testing.assert_array_equal(x, y)
  with np.load(out) as f:
    values = f["transformer_xl/layer_0/ff_in/w::values"]
  assert values.shape == (round(0.2 * 16 * 32), 1, 1, 4)  # only the kept elements
  model = json.loads((workdir / "model.json").read_text())
  assert f"{model['nonzero_params']:,}" in proc.stdout


def test_real_resnet_block_sparse_baseline_trains_end_to_end(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets")
  config = load_config("cifar10_resnet", "r,debug")
  config.data.data_dir = str(tmp_path / "tfds")
  config.sparsity.update(target=0.9, kind="block", block="1xd", block_algebra="m2r",
                         schedule="one_shot", begin_step=1, scope="global")
  with tfds.testing.mock_data(num_examples=20):
    result = train.train_and_evaluate(config, tmp_path / "run")
    state = _host(train.restore_state(config, tmp_path / "run"))
  assert result["step"] == config.train.num_steps and np.isfinite(result["train"]["loss"])
  flat = sparsity.flat_masks(state.masks)
  names = {n for n, _ in common.named_leaves(state.params).items()}
  assert "cifar_resnet20/stem_conv/w" in names and "cifar_resnet20/stem_conv/w" not in flat
  assert not any("logits" in n for n in flat) and len(flat) == 18  # 9 blocks x 2 convs
  total = sum(m.size for m in flat.values())
  assert sum((~m).sum() for m in flat.values()) == round(0.9 * total / 4) * 4  # global count
  for name, m in flat.items():  # 1x4 blocks along Cout, per tap
    kh, kw, cin, cout, _ = m.shape
    blocks = m[..., 0].reshape(kh, kw, cin, cout // 4, 4)
    assert np.all(blocks.all(-1) | ~blocks.any(-1)), name
  model = json.loads((tmp_path / "run" / "model.json").read_text())
  assert model["nonzero_params"] < model["params"]
  assert model["nonzero_macs_per_example"] < model["macs_per_example"]


_DEVICES_SCRIPT = r"""
import json, sys
import jax, numpy as np
from algebranets import sparsity
from algebranets.training import distributed, metrics, train
from training_testlib import load_config

assert jax.device_count() == 4, jax.devices()
config = load_config("enwik8_transformer_xl", "m2r,debug")
config.data.path = sys.argv[1]
config.train.update(batch_size=4, num_steps=6, log_every=1, eval_every=0)
config.sparsity.update(target=0.7, begin_step=1, end_step=5, frequency=2, scope="global")
out = {}
for name, devices in (("four", jax.devices()), ("one", jax.devices()[:1])):
  workdir = f"{sys.argv[2]}/{name}"
  mesh = distributed.make_mesh(devices)
  train.train_and_evaluate(config, workdir, mesh=mesh)
  state = train.restore_state(config, workdir, mesh=mesh)
  out[name] = {"losses": [r["loss"] for r in metrics.read_jsonl(workdir, "train")],
               "masks": {k: np.asarray(v).tolist()
                         for k, v in sparsity.flat_masks(state.masks).items()},
               "mask_devices": len({d.id for m in jax.tree.leaves(state.masks)
                                    for d in m.sharding.device_set})}
print("RESULT" + json.dumps(out))
"""


def test_four_devices_prune_like_one(enwik8_zip, tmp_path):
  out = run_on_devices(_DEVICES_SCRIPT, str(enwik8_zip), str(tmp_path), devices=4)
  four, one = out["four"], out["one"]
  assert four["mask_devices"] == 4 and one["mask_devices"] == 1  # replicated like params
  np.testing.assert_allclose(four["losses"], one["losses"], rtol=2e-6)
  assert four["masks"] == one["masks"]
  kept = np.concatenate([np.asarray(m).ravel() for m in four["masks"].values()])
  assert (~kept).sum() == round(0.7 * kept.size)
