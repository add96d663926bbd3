"""Two processes on 127.0.0.1 (two simulated hosts, gloo CPU collectives) train together and
hold the same parameters afterwards.

Each process is started with `distributed.initialize("127.0.0.1:PORT", 2, i)`, reads its own
half of every batch, and both share one workdir (as hosts share a file system): orbax writes
one checkpoint, process 0 alone writes the metrics.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from tests import suite_env

from training_testlib import ROOT

pytestmark = pytest.mark.slow  # trains models: compiles for seconds

_SCRIPT = r"""
import json, sys
from algebranets.training import distributed
process_id, port, data, workdir = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
batch_size, microbatches = int(sys.argv[5]), int(sys.argv[6])
distributed.initialize(f"127.0.0.1:{port}", 2, process_id)
import jax, numpy as np
from algebranets.training import train
from training_testlib import load_config

assert jax.process_count() == 2 and jax.process_index() == process_id
config = load_config("enwik8_transformer_xl", "r,debug")
config.data.path = data
config.train.update(num_steps=4, log_every=1, eval_every=4, batch_size=batch_size,
                    microbatches=microbatches)
result = train.train_and_evaluate(config, workdir)
state = train.restore_state(config, workdir)
params = [distributed.to_host(x).tolist() for x in jax.tree.leaves(state.params)]
print("RESULT" + json.dumps({"params": params, "step": result["step"],
                             "bpc": result["eval"]["valid"]["bpc"],
                             "devices": jax.device_count(),
                             "layout": result["model"]["batch_layout"]}))
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


# (4, 1): the plain step, 2 rows per host. (6, 2): 3 rows per host in 2 micro-batches, each
# host padding its own rows to 4 (gradient accumulation and padding across hosts).
@pytest.mark.parametrize("batch_size,microbatches", [(4, 1), (6, 2)])
def test_two_processes_train_and_agree_on_the_parameters(enwik8_zip, tmp_path, batch_size,
                                                        microbatches):
  port = _free_port()
  here = os.path.dirname(os.path.abspath(__file__))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), here]))
  env["XLA_FLAGS"] = suite_env.xla_flags()  # one CPU device per process
  # Output goes to files: a full pipe would block one process while the other waits for it
  # at JAX's shutdown barrier.
  logs = [(open(tmp_path / f"out{i}.txt", "w"), open(tmp_path / f"err{i}.txt", "w"))
          for i in range(2)]
  procs = [subprocess.Popen(
      [sys.executable, "-c", _SCRIPT, str(i), str(port), str(enwik8_zip), str(tmp_path / "run"),
       str(batch_size), str(microbatches)],
      cwd=ROOT, env=env, stdout=logs[i][0], stderr=logs[i][1], text=True) for i in range(2)]
  outs = []
  try:
    for i, p in enumerate(procs):
      p.wait(timeout=420)
      for f in logs[i]:
        f.close()
      err = (tmp_path / f"err{i}.txt").read_text()
      assert p.returncode == 0, err[-4000:]
      outs.append(json.loads((tmp_path / f"out{i}.txt").read_text().split("RESULT", 1)[1]))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  a, b = outs
  assert a["devices"] == b["devices"] == 2 and a["step"] == b["step"] == 4
  assert ("padded with 2 zero-weight row(s) to 8" in a["layout"]) == (batch_size == 6)
  assert a["bpc"] == b["bpc"] and np.isfinite(a["bpc"])
  for x, y in zip(a["params"], b["params"]):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
  records = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in records if r["split"] == "train"] == [1, 2, 3, 4]
  assert (tmp_path / "run" / "checkpoints" / "4").is_dir()
