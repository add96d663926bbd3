"""Checkpoints: exact resumption, SIGTERM, non-finite losses, partial writes, keep-last + best."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from algebranets.training import checkpoint
from algebranets.training import metrics
from algebranets.training import train
from training_testlib import ROOT, load_config

pytestmark = pytest.mark.slow  # trains models: compiles for seconds

STEPS = 300


def _config(enwik8_zip, **train_kw):
  config = load_config("enwik8_transformer_xl", "r,debug")
  config.data.path = str(enwik8_zip)
  config.train.update(num_steps=STEPS, log_every=1, eval_every=0, checkpoint_every=1000)
  config.train.update(train_kw)
  return config


def _losses(workdir):
  return {r["step"]: r["loss"] for r in metrics.read_jsonl(workdir, "train")}


def _final_state(config, workdir):
  """The TrainState of the workdir's latest checkpoint, as numpy."""
  return jax.tree.map(np.asarray, train.restore_state(config, workdir))


@pytest.fixture(scope="module")
def uninterrupted(enwik8_zip, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("uninterrupted")
  result = train.train_and_evaluate(_config(enwik8_zip), workdir)
  assert result["step"] == STEPS
  return workdir, _losses(workdir)


def _assert_same_state(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y)


def test_a_run_stopped_and_resumed_repeats_the_uninterrupted_run_bitwise(
    enwik8_zip, uninterrupted, tmp_path):
  reference, losses = uninterrupted
  stopped = train.train_and_evaluate(_config(enwik8_zip, preempt_at_step=7), tmp_path)
  assert stopped["step"] == 7 and stopped["preempted"]
  assert checkpoint.Checkpointer(tmp_path / "checkpoints").latest_step() == 7
  resumed = train.train_and_evaluate(_config(enwik8_zip), tmp_path)
  assert resumed["step"] == STEPS
  again = _losses(tmp_path)
  assert sorted(again) == list(range(1, STEPS + 1))  # records past step 7 were not duplicated
  assert again == losses  # bitwise: the same float32 values (memories, RNG, data, optimiser)
  _assert_same_state(_final_state(_config(enwik8_zip), tmp_path),
                     _final_state(_config(enwik8_zip), reference))
  assert resumed["eval"]["valid"] == pytest.approx(
      json.loads(json.dumps(resumed["eval"]["valid"])))


def test_sigterm_saves_a_checkpoint_exits_cleanly_and_the_run_resumes(
    enwik8_zip, uninterrupted, tmp_path):
  _, losses = uninterrupted
  cmd = [sys.executable, "-m", "algebranets.train",
         "--config=configs/enwik8_transformer_xl.py:r,debug", f"--workdir={tmp_path}",
         f"--config.data.path={enwik8_zip}", f"--config.train.num_steps={STEPS}",
         "--config.train.log_every=1", "--config.train.eval_every=0",
         "--config.train.checkpoint_every=1000"]
  env = dict(os.environ, PYTHONPATH=str(ROOT))
  with open(tmp_path / "stderr.txt", "w") as log:  # a file, not a pipe that could fill up
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=log, text=True)
    deadline = time.time() + 240
    while len(metrics.read_jsonl(tmp_path, "train")) < 3 and proc.poll() is None:
      assert time.time() < deadline, "the run logged no steps"
      time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=120)
  err = (tmp_path / "stderr.txt").read_text()
  assert proc.returncode == 0, err[-3000:]
  assert "received SIGTERM" in err
  step = checkpoint.Checkpointer(tmp_path / "checkpoints").latest_step()
  assert 3 <= step < STEPS, err[-2000:]
  assert max(_losses(tmp_path)) == step
  # Resuming continues the run as if it had never stopped.
  train.train_and_evaluate(_config(enwik8_zip), tmp_path)
  assert _losses(tmp_path) == losses


def test_a_non_finite_loss_stops_with_its_step_and_keeps_the_last_good_checkpoint(
    enwik8_zip, tmp_path):
  config = _config(enwik8_zip, num_steps=12, checkpoint_every=1)
  config.optimizer.lr = 1e30
  with pytest.raises(train.NonFiniteLossError, match=r"non-finite training loss .* at step "
                     r"(\d+) .*last good checkpoint is (step \d+|none)") as info:
    train.train_and_evaluate(config, tmp_path)
  bad = int(re.search(r"at step (\d+)", str(info.value)).group(1))
  good = checkpoint.Checkpointer(tmp_path / "checkpoints").latest_step()
  # The state after step bad - 1 gave the non-finite loss: it is not good, and not saved.
  assert good is None or good <= bad - 2
  assert f"last good checkpoint is {'none' if good is None else f'step {good}'}" in str(
      info.value)
  if good is not None:
    state = _final_state(config, tmp_path)
    assert int(state.step) == good
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(state.params))


def test_a_half_written_checkpoint_is_never_the_latest(enwik8_zip, uninterrupted, tmp_path):
  reference, _ = uninterrupted
  ckpt_dir = reference / "checkpoints"
  latest = checkpoint.Checkpointer(ckpt_dir).latest_step()
  # What a crash in the middle of writing step 10**6 leaves: orbax's temporary directory.
  partial = ckpt_dir / f"{10**6}.orbax-checkpoint-tmp"
  (partial / "state.orbax-checkpoint-tmp").mkdir(parents=True)
  (partial / "state.orbax-checkpoint-tmp" / "garbage").write_bytes(b"\x00" * 100)
  ck = checkpoint.Checkpointer(ckpt_dir)
  assert ck.latest_step() == latest and 10**6 not in ck.all_steps()
  ck.close()
  # And a run in that workdir resumes from the real latest step (here: nothing left to do).
  assert train.train_and_evaluate(_config(enwik8_zip), reference)["step"] == latest


def test_keeps_the_last_k_and_the_best_by_metric(tmp_path):
  ck = checkpoint.Checkpointer(tmp_path, keep=2, keep_best=1, best_metric="valid/bpc",
                               best_mode="min", async_save=False)
  state = {"w": jnp.arange(3.0)}
  bpc = {2: 1.5, 4: 1.0, 6: 1.2}
  for step in range(1, 9):
    metrics_ = {"valid/bpc": bpc[step]} if step in bpc else None
    ck.save(step, jax.tree.map(lambda x, s=step: x + s, state), metrics=metrics_)
  ck.wait()
  assert ck.all_steps() == (4, 7, 8)
  assert ck.best_step() == 4 and ck.latest_step() == 8
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
  np.testing.assert_array_equal(ck.restore(abstract, 4)["w"], [4.0, 5.0, 6.0])
  assert ck.read_meta(4)["metrics"] == {"valid/bpc": 1.0}
  assert not ck.save(8, state)  # a step is saved once
  ck.close()
