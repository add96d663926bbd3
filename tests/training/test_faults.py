"""Faults that used to lose work or give silently wrong results (issue 11 §1), each reproduced.

A workdir reused with another model, a "last good" checkpoint that was not good, a run lost at
its end, two runs on one workdir, a damaged latest checkpoint, a failed save. Each test failed
on the trainer before the fix (the commit that added this file says how).
"""

import hashlib
import json
import os
import re
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from algebranets import errors
from algebranets.training import checkpoint
from algebranets.training import metrics
from algebranets.training import train
from algebranets.training import workdir as workdir_lib
from training_testlib import ROOT, load_config, text_bytes

pytestmark = pytest.mark.slow  # trains models: compiles for seconds


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
  path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
  path.write_bytes(text_bytes(20_000, seed=3))
  return path


def _config(corpus, algebra="h", **train_kw):
  config = load_config("char_transformer_xl", f"{algebra},debug,path={corpus}")
  config.train.update(num_steps=6, log_every=2, eval_every=0, checkpoint_every=1000)
  config.train.update(train_kw)
  return config


def _snapshot(root):
  """{relative path: md5} of every file under root."""
  return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob("*")) if p.is_file()}


def _losses(workdir):
  return {r["step"]: r["loss"] for r in metrics.read_jsonl(workdir, "train")}


@pytest.fixture(scope="module")
def trained_h(corpus, tmp_path_factory):
  """A workdir that trained the quaternion debug model for 6 steps (and evaluated it)."""
  workdir = tmp_path_factory.mktemp("trained_h")
  train.train_and_evaluate(_config(corpus), workdir)
  return workdir


# ----------------------------------------------------------------------------- another model
@pytest.mark.parametrize("algebra, override, names", [
    ("m2r", {}, "algebra: 'h' -> 'm2r'"),
    ("h", {"d_model": 48}, "model.d_model"),
])
@pytest.mark.parametrize("mode", ["eval", "train"])
def test_a_workdir_of_another_model_is_refused_and_nothing_is_written(
    corpus, trained_h, algebra, override, names, mode):
  before = _snapshot(trained_h)
  config = _config(corpus, algebra)
  config.model.update(override)
  with pytest.raises(errors.WorkdirError, match=r"holds another model.*" + re.escape(names)):
    if mode == "eval":
      train.evaluate(config, trained_h)
    else:
      train.train_and_evaluate(config, trained_h)
  assert _snapshot(trained_h) == before  # no eval_<step>.json, config.json not relabelled
  assert errors.is_user_error(errors.WorkdirError("x"))


def test_a_checkpoint_of_other_shapes_is_refused_naming_them(corpus, trained_h, tmp_path):
  """What the config comparison cannot see (a config.json edited or lost): the shapes."""
  import shutil  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "w"
  shutil.copytree(trained_h / "checkpoints", workdir / "checkpoints")
  with pytest.raises(errors.WorkdirError, match=r"other shapes.*embeddings: checkpoint "
                     r"\(256, 12, 4\) float32, this config \(256, \d+, 2\) float32"):
    train.evaluate(_config(corpus, "c"), workdir)
  assert sorted(p.name for p in workdir.iterdir()) == ["checkpoints"]


def test_changes_that_keep_the_state_are_applied_and_said(corpus, trained_h, tmp_path, caplog):
  import shutil  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "w"
  shutil.copytree(trained_h, workdir)
  config = _config(corpus, num_steps=8, log_every=1)
  config.eval.batch_size = 5
  with caplog.at_level("INFO", logger="algebranets"):
    result = train.train_and_evaluate(config, workdir)
  assert result["step"] == 8 and sorted(_losses(workdir)) == [2, 4, 6, 7, 8]
  applied = [r.getMessage() for r in caplog.records if "config changes applied" in r.getMessage()]
  assert applied and all(k in applied[0] for k in (
      "eval.batch_size: 8 -> 5", "train.num_steps: 6 -> 8", "train.log_every: 2 -> 1"))
  # And a run that has reached its end says so instead of resuming.
  caplog.clear()
  with caplog.at_level("INFO", logger="algebranets"):
    again = train.train_and_evaluate(config, workdir)
  assert again["step"] == 8
  said = [r.getMessage() for r in caplog.records]
  assert any(m.startswith("finished: step 8 of 8") for m in said), said
  assert not any(m.startswith("resuming") for m in said)


# ----------------------------------------------------------------------------- good checkpoints
def test_a_diverged_run_names_a_good_checkpoint_and_a_sane_rerun_trains_on(corpus, tmp_path):
  """lr 1e10 with a checkpoint every step: the state after the last finite-loss step already
  holds weights of ~1e10 whose own loss is NaN. The named checkpoint must be one whose loss was
  seen to be finite, and a rerun with a sane learning rate must train to the end from it."""
  config = _config(corpus, num_steps=12, checkpoint_every=1, log_every=1)
  config.optimizer.update(lr=1e10, warmup_steps=0)
  with pytest.raises(train.NonFiniteLossError, match=r"at step (\d+) .*last good checkpoint "
                     r"is (step \d+|none)") as info:
    train.train_and_evaluate(config, tmp_path)
  bad = int(re.search(r"at step (\d+)", str(info.value)).group(1))
  steps = checkpoint.Checkpointer(tmp_path / "checkpoints").all_steps()
  assert all(s <= bad - 2 for s in steps), (bad, steps)  # bad - 1 gave the NaN: never saved
  named = re.search(r"last good checkpoint is (step (\d+)|none)", str(info.value))
  assert (int(named.group(2)) if named.group(2) else None) == (max(steps) if steps else None)
  if steps:
    state = jax.tree.map(np.asarray, train.restore_state(config, tmp_path))
    assert all(np.isfinite(x).all() for x in jax.tree.leaves((state.params, state.opt_state)))
  config.optimizer.lr = 1e-3
  result = train.train_and_evaluate(config, tmp_path)
  assert result["step"] == 12
  assert all(np.isfinite(v) for v in _losses(tmp_path).values())


def test_a_resumed_checkpoint_that_gives_nan_is_moved_aside(corpus, tmp_path):
  """A checkpoint saved without a next step to check it (the end of a shorter run) that gives
  a non-finite loss is not named good: it is moved aside, and a rerun starts before it."""
  config = _config(corpus, num_steps=1, checkpoint_every=1, log_every=1)
  config.optimizer.update(lr=1e12, warmup_steps=0, schedule="constant")
  train.train_and_evaluate(config, tmp_path)  # 1 step from the initial state: a finite loss
  assert checkpoint.Checkpointer(tmp_path / "checkpoints").all_steps() == (1,)
  config.train.num_steps = 12
  with pytest.raises(train.NonFiniteLossError, match=r"at step 2 .*checkpoint 1, which this "
                     r"run resumed from, gives it, so it was moved to .*last good checkpoint "
                     r"is none"):
    train.train_and_evaluate(config, tmp_path)
  assert not checkpoint.Checkpointer(tmp_path / "checkpoints").all_steps()
  assert (tmp_path / "checkpoints.damaged" / "1").is_dir()
  config.optimizer.lr = 1e-3
  assert train.train_and_evaluate(config, tmp_path)["step"] == 12  # afresh


# ----------------------------------------------------------------------------- batch sizes
def test_a_bad_eval_batch_fails_before_the_first_step(corpus, tmp_path):
  config = _config(corpus)
  config.eval.batch_size = 0
  with pytest.raises(ValueError, match="eval.batch_size=0 must be"):
    train.train_and_evaluate(config, tmp_path)
  assert not metrics.read_jsonl(tmp_path, "train")  # not a single step was trained
  assert not checkpoint.Checkpointer(tmp_path / "checkpoints").all_steps()


def test_the_final_state_is_saved_before_the_final_eval(corpus, tmp_path, monkeypatch):
  def failing_eval(self, state, split):
    raise RuntimeError(f"eval of {split} failed")
  monkeypatch.setattr(train._Run, "evaluate_split", failing_eval)  # pylint: disable=protected-access
  with pytest.raises(RuntimeError, match="eval of valid failed"):
    train.train_and_evaluate(_config(corpus), tmp_path)
  assert checkpoint.Checkpointer(tmp_path / "checkpoints").latest_step() == 6


def test_the_final_checkpoint_carries_the_final_eval_metrics(corpus, trained_h):
  ck = checkpoint.Checkpointer(trained_h / "checkpoints")
  meta = ck.read_meta(6)
  ck.close()
  assert meta["metrics"]["valid/bpc"] > 0 and "test/bpc" in meta["metrics"]
  evals = {r["step"]: r for r in metrics.read_jsonl(trained_h, "valid")}
  assert meta["metrics"]["valid/bpc"] == pytest.approx(evals[6]["bpc"])


# ----------------------------------------------------------------------------- one run per workdir
def _start_run(corpus, workdir, steps, log):
  cmd = [sys.executable, "-m", "algebranets.train", f"--config=configs/char_transformer_xl.py:"
         f"r,debug,path={corpus}", f"--workdir={workdir}", f"--config.train.num_steps={steps}",
         "--config.train.log_every=1", "--config.train.eval_every=0"]
  return subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                          stdout=log, stderr=log, text=True)


def test_a_second_run_on_a_workdir_is_refused_naming_the_holder(corpus, tmp_path):
  workdir = tmp_path / "w"
  with open(tmp_path / "first.txt", "w") as log:
    first = _start_run(corpus, workdir, 100_000, log)
    try:
      deadline = time.time() + 240
      while not metrics.read_jsonl(workdir, "train"):
        assert first.poll() is None and time.time() < deadline, (
            (tmp_path / "first.txt").read_text()[-3000:])
        time.sleep(0.1)
      with pytest.raises(errors.WorkdirError,
                         match=rf"in use by another run \(PID {first.pid} on host "
                               rf"{re.escape(socket.gethostname())}"):
        train.train_and_evaluate(_config(corpus, "r", num_steps=4), workdir)
      assert len(list((workdir / "tensorboard").rglob("events.*"))) == 1
      steps = [r["step"] for r in metrics.read_jsonl(workdir, "train")]
      assert steps == sorted(set(steps))  # one run's records, not two interleaved
    finally:
      first.kill()  # kill -9: its lock stays behind, stale
      first.wait(timeout=60)
  # The lock of a run that is gone is taken over, with a warning naming it.
  assert json.loads((workdir / "lock.json").read_text())["pid"] == first.pid
  result = train.train_and_evaluate(_config(corpus, "r", num_steps=4), workdir)
  assert result["step"] >= 4 and not (workdir / "lock.json").exists()


def test_a_lock_of_another_host_is_not_taken_over(tmp_path):
  (tmp_path / "lock.json").write_text(json.dumps({"host": "elsewhere", "pid": 1,
                                                  "started": time.time()}))
  with pytest.raises(errors.WorkdirError, match=r"host elsewhere.*delete .*lock.json"):
    workdir_lib.WorkdirLock(tmp_path).acquire()


# ----------------------------------------------------------------------------- damaged checkpoints
def test_a_damaged_latest_checkpoint_falls_back_and_the_run_ends_as_uninterrupted(
    corpus, tmp_path, caplog):
  reference = train.train_and_evaluate(_config(corpus, "r", num_steps=12, checkpoint_every=4),
                                       tmp_path / "reference")
  workdir = tmp_path / "w"
  train.train_and_evaluate(_config(corpus, "r", num_steps=12, checkpoint_every=4,
                                   preempt_at_step=8), workdir)
  assert checkpoint.Checkpointer(workdir / "checkpoints").all_steps() == (4, 8)
  for f in (workdir / "checkpoints" / "8" / "state").rglob("*"):
    if f.is_file() and f.stat().st_size > 0:
      f.write_bytes(f.read_bytes()[: f.stat().st_size // 3])  # truncated, as by a crash
  with caplog.at_level("WARNING", logger="algebranets"):
    resumed = train.train_and_evaluate(_config(corpus, "r", num_steps=12, checkpoint_every=4),
                                       workdir)
  warned = [r.getMessage() for r in caplog.records if "damaged" in r.getMessage()]
  assert warned and "checkpoint 8" in warned[0] and "checkpoints.damaged" in warned[0]
  assert (workdir / "checkpoints.damaged" / "8" / "state").is_dir()  # moved aside, not deleted
  assert resumed["step"] == 12
  assert resumed["eval"] == reference["eval"]  # bitwise: it resumed from 4 exactly
  assert _losses(workdir)[12] == _losses(tmp_path / "reference")[12]


def test_a_failed_save_is_one_line_and_the_earlier_checkpoints_are_intact(corpus, tmp_path):
  """A save that cannot write its files (here the file-size limit, as a full disk would)."""
  workdir = tmp_path / "w"
  train.train_and_evaluate(_config(corpus, "r", num_steps=4, eval_every=0), workdir)
  before = _snapshot(workdir / "checkpoints")
  limit = 20_000  # bytes: less than the state file (~90 kB), more than the logs write

  # The trainer in a process whose files may not grow past `limit` (EFBIG, not SIGXFSZ).
  script = (f"import resource, runpy, signal, sys\n"
            f"signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))\n"
            f"sys.argv = ['algebranets.train'] + sys.argv[1:]\n"
            f"runpy.run_module('algebranets.train', run_name='__main__', alter_sys=True)")
  args = [f"--config=configs/char_transformer_xl.py:r,debug,path={corpus}",
          f"--workdir={workdir}", "--config.train.num_steps=8", "--config.train.log_every=2",
          "--config.train.eval_every=0"]
  proc = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT,
                        env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                        text=True, timeout=300)
  lines = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
  assert proc.returncode == 1 and len(lines) == 1, proc.stderr[-3000:]
  assert re.search(r"could not save checkpoint 8 .*File too large.*before it are intact "
                   r"\(latest: step 4\)", lines[0]), lines[0]
  # No traceback of ours or orbax's; tensorstore's futures may still print, from a thread of
  # the failed save, that orbax closed their event loop (library noise, not an error path).
  frames = re.findall(r'File "([^"]+)"', proc.stderr)
  assert all("asyncio" in f for f in frames), frames
  assert "Logging error" not in proc.stderr
  assert _snapshot(workdir / "checkpoints") == before
  state = train.restore_state(_config(corpus, "r", num_steps=8), workdir)
  assert int(state.step) == 4



def test_a_save_that_cannot_fit_on_the_disk_is_refused_before_writing(tmp_path, monkeypatch):
  import collections  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  ck = checkpoint.Checkpointer(tmp_path, async_save=False)
  state = {"w": jnp.zeros((1000, 1000))}  # 4 MB
  assert ck.save(1, state)
  usage = collections.namedtuple("usage", "total used free")
  monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda _: usage(10**9, 10**9, 3 << 20))
  with pytest.raises(errors.CheckpointError, match=r"no space left on device for checkpoint 2 "
                     r".*needs about 3.8 MiB, 3.0 MiB are free.*\(latest: step 1\)"):
    ck.save(2, state)
  assert ck.all_steps() == (1,)
  ck.close()
