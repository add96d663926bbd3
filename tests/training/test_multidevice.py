"""The same jitted step on 8 (simulated) devices gives the parameters it gives on 1.

XLA_FLAGS=--xla_force_host_platform_device_count=8 must be set before JAX starts, so the runs
happen in a subprocess: a few Transformer-XL steps (dropout on, memories carried and sharded
over the devices) on a mesh of all 8 devices and on a mesh of 1, compared to float32 rounding.
"""

import numpy as np
import pytest

from training_testlib import run_on_devices

pytestmark = pytest.mark.slow  # trains models: compiles for seconds

_SCRIPT = r"""
import json, sys
import jax, numpy as np
from algebranets.training import distributed, metrics, train
from training_testlib import load_config

assert jax.device_count() == 8, jax.devices()
config = load_config("enwik8_transformer_xl", "r,debug")
config.data.path = sys.argv[1]
config.train.update(batch_size=8, num_steps=5, log_every=1, eval_every=5)
config.eval.batch_size = 8
out = {}
for name, devices in (("eight", jax.devices()), ("one", jax.devices()[:1])):
  workdir = f"{sys.argv[2]}/{name}"
  mesh = distributed.make_mesh(devices)
  result = train.train_and_evaluate(config, workdir, mesh=mesh)
  state = train.restore_state(config, workdir, mesh=mesh)
  carry_devices = {d.id for leaf in jax.tree.leaves(state.carry) for d in leaf.sharding.device_set}
  out[name] = {"losses": [r["loss"] for r in metrics.read_jsonl(workdir, "train")],
               "valid_bpc": result["eval"]["valid"]["bpc"],
               "params": [np.asarray(x).tolist() for x in jax.tree.leaves(state.params)],
               "carry": [np.asarray(x).tolist() for x in jax.tree.leaves(state.carry)],
               "carry_devices": len(carry_devices)}
print("RESULT" + json.dumps(out))
"""


def test_eight_devices_train_like_one(enwik8_zip, tmp_path):
  out = run_on_devices(_SCRIPT, str(enwik8_zip), str(tmp_path), devices=8)
  eight, one = out["eight"], out["one"]
  assert eight["carry_devices"] == 8 and one["carry_devices"] == 1  # memories are sharded
  np.testing.assert_allclose(eight["losses"], one["losses"], rtol=2e-6)
  np.testing.assert_allclose(eight["valid_bpc"], one["valid_bpc"], rtol=1e-5)
  for a, b in zip(eight["params"], one["params"]):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
  for a, b in zip(eight["carry"], one["carry"]):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
