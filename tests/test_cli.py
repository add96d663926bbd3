"""The commands' error path and log format, through the real command lines (subprocesses).

A user error ends a command with one line, `error: <what; what to do>`, and exit status 1; the
traceback only with --verbose (and in the workdir's train.log); a bug keeps its traceback. The
trainer logs in one format, `HH:MM:SS algebranets: message`, without TensorFlow/JAX start-up
chatter.
"""

import errno
import logging
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from algebranets import errors
from algebranets import logs

ROOT = pathlib.Path(__file__).resolve().parents[1]
LM = "configs/char_transformer_xl.py"
LINE = re.compile(r"^\d\d:\d\d:\d\d algebranets: ")


def _run(*args, module="algebranets.train", env=None, timeout=240, prelude=""):
  """`python -m module args` from the repository root (with `prelude` run first, e.g. to hide
  a module); returns (returncode, stdout, stderr)."""
  code = (f"import runpy, sys\n{prelude}\nsys.argv = [{module!r}] + sys.argv[1:]\n"
          f"runpy.run_module({module!r}, run_name='__main__', alter_sys=True)")
  proc = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT,
                        capture_output=True, text=True, timeout=timeout,
                        env=dict(os.environ, **(env or {})))
  return proc.returncode, proc.stdout, proc.stderr


def _error_lines(stderr):
  return [line for line in stderr.splitlines() if line.startswith("error: ")]


def _corpus(tmp_path, n=4000):
  path = tmp_path / "corpus.txt"
  path.write_bytes(np.random.default_rng(0).integers(32, 127, n, dtype=np.uint8).tobytes())
  return path


# ----------------------------------------------------------------------------- the trainer
@pytest.mark.parametrize("args, says", [
    (["--config=" + LM + ":zz,debug"], r"^error: Unknown algebra 'zz'.*Valid names: r, c, h"),
    (["--config=" + LM + ":r,debug", "--config.train.batchsize=3"],
     r"^error: --config.train.batchsize: config.train has no key 'batchsize' \(did you mean "
     r"batch_size"),
    (["--config=" + LM + ":r,debug", "--config.train.batch_size=abc"],
     r"^error: flag --config.train.batch_size=abc: invalid literal"),
    (["--config=configs/nowhere.py:r"], r"^error: --config=configs/nowhere.py:r: no config file"),
])
def test_bad_config_or_flag_is_one_line_and_exit_1(tmp_path, args, says):
  code, out, err = _run(*args, f"--workdir={tmp_path / 'w'}")
  assert code == 1, err
  assert err.strip().count("\n") == 0, err  # one line, no traceback
  assert re.search(says, err), err
  assert "Traceback" not in err
  assert err.rstrip().endswith(("(--verbose shows the traceback)", "(--helpshort lists the flags)"))
  assert not (tmp_path / "w").exists()  # refused before anything was written


def test_the_config_file_is_loaded_once_and_its_overrides_applied(tmp_path):
  # A config that counts its get_config calls in a file, wrapping the character-LM config.
  calls = tmp_path / "calls"
  config = tmp_path / "counted.py"
  config.write_text(
      "import pathlib, runpy\n"
      f"_lm = runpy.run_path({str(ROOT / LM)!r})\n"
      "def get_config(arg):\n"
      f"  with open({str(calls)!r}, 'a') as f:\n"
      "    f.write('.')\n"
      "  return _lm['get_config'](arg)\n")
  code = ("import sys\nfrom algebranets import train\n"
          "train.parse_flags(sys.argv)\n"
          "print(train._CONFIG.value.algebra, train._CONFIG.value.train.batch_size)")
  proc = subprocess.run([sys.executable, "-c", code, f"--config={config}:h,debug",
                         "--config.train.batch_size=5", f"--workdir={tmp_path / 'w'}"],
                        cwd=ROOT, capture_output=True, text=True, timeout=240)
  assert proc.returncode == 0, proc.stderr
  assert proc.stdout.split() == ["h", "5"]
  assert calls.read_text() == "."  # one get_config call


def test_missing_data_file_and_missing_checkpoint_are_one_line_with_the_traceback_logged(
    tmp_path):
  workdir = tmp_path / "w"
  code, _, err = _run(f"--config={LM}:r,debug,path={tmp_path / 'none.txt'}",
                      f"--workdir={workdir}")
  assert code == 1
  (line,) = _error_lines(err)
  assert re.search(r"expected a text or byte file at .*none.txt", line)
  assert "Traceback" not in err
  # Stopped before the run wrote to its workdir: nothing written there.
  assert line.endswith("(--verbose shows the traceback)") and not workdir.exists()

  code, _, err = _run(f"--config={LM}:r,debug,path={_corpus(tmp_path)}", f"--workdir={workdir}",
                      "--mode=eval")
  assert code == 1
  (line,) = _error_lines(err)
  assert re.search(r"no latest checkpoint in .*checkpoints to evaluate; train first", line)
  assert "Traceback" not in err


def test_empty_or_too_short_text_file_is_one_line_naming_file_and_split(tmp_path):
  empty = tmp_path / "empty.txt"
  empty.write_bytes(b"")
  code, _, err = _run(f"--config={LM}:r,debug,path={empty}", f"--workdir={tmp_path / 'w'}")
  assert code == 1 and "Traceback" not in err
  (line,) = _error_lines(err)
  assert re.search(r"empty\.txt \(0 bytes\): its 'train' split has 0 token", line), line
  # 200 bytes: a 180-byte training split, short of the debug batch (16 rows of 16, + 1).
  code, _, err = _run(f"--config={LM}:r,debug,path={_corpus(tmp_path, 200)}",
                      f"--workdir={tmp_path / 'w2'}")
  assert code == 1 and "Traceback" not in err
  (line,) = _error_lines(err)
  assert re.search(r"corpus\.txt: the 'train' split has 180 tokens, too few for 16 rows of "
                   r"16-token segments.*at least 257", line), line
  assert not (tmp_path / "w2" / "checkpoints").exists() and "model:" not in err


def test_verbose_prints_the_traceback_too(tmp_path):
  code, _, err = _run(f"--config={LM}:r,debug,path={tmp_path / 'none.txt'}",
                      f"--workdir={tmp_path / 'w'}", "--verbose")
  assert code == 1
  assert "Traceback (most recent call last)" in err and "FileNotFoundError" in err
  assert err.rstrip().splitlines()[-1].startswith("error: expected a text or byte file")
  code, _, err = _run(f"--config={LM}:zz", f"--workdir={tmp_path / 'w'}", "--verbose")
  assert code == 1 and "Traceback" in err and "algebras.py" in err


def test_a_missing_extra_is_one_line_naming_it(tmp_path):
  # The image pipelines without TensorFlow Datasets installed (hidden from the import system).
  code, _, err = _run("--config=configs/cifar10_resnet.py:r,debug", f"--workdir={tmp_path / 'w'}",
                      prelude="sys.modules['tensorflow_datasets'] = None")
  assert code == 1, err
  (line,) = _error_lines(err)
  assert "tensorflow_datasets" in line and "pip install -e .[images]" in line
  assert "Traceback" not in err


def _snapshot(root):
  return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
          if p.is_file()}


@pytest.mark.slow
def test_trainer_logs_in_one_clean_format_and_a_refused_run_leaves_the_workdir_alone(tmp_path):
  workdir = tmp_path / "w"
  corpus = _corpus(tmp_path, 20_000)
  code, out, err = _run(f"--config={LM}:r,debug,path={corpus}", f"--workdir={workdir}",
                        "--config.train.num_steps=4", "--config.train.log_every=2")
  assert code == 0, err[-3000:]
  lines = [line for line in err.splitlines() if line.strip()]
  # Every line is ours, or the continuation of one of ours (the multi-line resolved config).
  heads = [line for line in lines if not line.startswith((" ", "-"))]
  logged = [line for line in heads if LINE.match(line)]
  assert logged and any("step 4/4" in line for line in logged), err[-3000:]
  strangers = [line for line in heads if not LINE.match(line) and not re.match(r"^\w+:", line)]
  assert not strangers, strangers
  for chatter in ("Unable to initialize backend", "absl::InitializeLog", "oneDNN", "I1202",
                  "xla_bridge"):
    assert chatter not in err
  assert not re.search(r"^[IWE]\d{4} ", err, re.M)  # absl's prefix
  log = (workdir / "train.log").read_text()
  assert re.search(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d algebranets: step 4/4", log, re.M)
  assert "mode train_and_eval" in log  # the lines logged before the run started writing, too

  # A run stopped before it starts (here: its data is missing) leaves every file as it was.
  before = _snapshot(workdir)
  code, _, err = _run(f"--config={LM}:r,debug,path={tmp_path / 'gone.txt'}",
                      f"--workdir={workdir}", "--mode=eval")
  assert code == 1 and len(_error_lines(err)) == 1
  assert _snapshot(workdir) == before

  # An error after the run has written to its workdir puts the traceback into train.log.
  code, _, err = _run(f"--config={LM}:r,debug,path={corpus}", f"--workdir={workdir}",
                      "--config.train.num_steps=8", "--config.optimizer.lr=1e30",
                      "--config.train.log_every=1")
  assert code == 1, err[-2000:]
  (line,) = _error_lines(err)
  assert "non-finite" in line and line.endswith(f"(traceback in {workdir}/train.log)")
  assert "Traceback (most recent call last)" in (workdir / "train.log").read_text()


# ----------------------------------------------------------------------------- the other CLIs
def test_quickstart_bad_algebra_is_one_line(tmp_path):
  code, _, err = _run("--algebras=r,zz", f"--workdir={tmp_path}", module="algebranets.quickstart")
  assert code == 1
  assert err.strip().count("\n") == 0 and err.startswith("error: Unknown algebra 'zz'"), err
  assert not list(tmp_path.iterdir())  # every config is checked before anything is written


def test_launch_and_collect_errors_are_one_line(tmp_path):
  code, _, err = _run("--sweep=nosuch", "--print_commands", module="experiments.launch")
  assert code == 2 and err.strip().count("\n") == 0, err
  assert re.match(r"error: Unknown sweep 'nosuch'", err), err
  code, _, err = _run(f"--root={tmp_path / 'none'}", module="experiments.collect")
  assert code == 2 and err.strip().count("\n") == 0 and err.startswith("error: "), err


@pytest.mark.parametrize("module, args, code, says", [
    ("algebranets.sample", ["--workdir={tmp}/none"], 1,
     r"^error: \S+/none/config.json not found: .* is not the workdir of a training run"),
    ("algebranets.costs", ["--config=" + LM + ":zz"], 1, r"^error: Unknown algebra 'zz'"),
    ("algebranets.sparsity", ["export", "--workdir={tmp}/none", "--out={tmp}/x.npz"], 1,
     r"^error: \S+/none/config.json not found"),
    ("experiments.sweeps", ["--sweep=zz"], 2, r"^error: Unknown sweep 'zz'; valid: "),
])
def test_sample_costs_sparsity_and_sweeps_errors_are_one_line(tmp_path, module, args, code, says):
  got, _, err = _run(*[a.format(tmp=tmp_path) for a in args], module=module)
  assert got == code and err.strip().count("\n") == 0 and "Traceback" not in err, err
  assert re.search(says, err), err


# ----------------------------------------------------------------------------- the rule
def _raise(error):
  raise error


def test_user_errors_are_the_documented_kinds_and_bugs_are_not():
  def caught(fn):
    try:
      fn()
    except Exception as e:  # pylint: disable=broad-except
      return e
    raise AssertionError("no exception")

  from algebranets import algebras  # pylint: disable=g-import-not-at-top
  ours = caught(lambda: algebras.get("zz"))  # a ValueError raised by algebranets
  library = caught(lambda: np.reshape(np.zeros(3), (2, 2)))  # one raised inside numpy
  assert isinstance(ours, ValueError) and errors.is_user_error(ours)
  assert isinstance(library, ValueError) and not errors.is_user_error(library)
  assert errors.is_user_error(errors.DataError("x"))
  assert errors.is_user_error(caught(lambda: open("/nonexistent/file")))
  assert errors.is_user_error(OSError(errno.ENOSPC, "No space left on device", "/w/ckpt"))
  assert not errors.is_user_error(OSError(errno.EIO, "Input/output error"))
  assert errors.is_user_error(ModuleNotFoundError("No module named 'ray'", name="ray"))
  assert not errors.is_user_error(
      ModuleNotFoundError("No module named 'algebranets.nope'", name="algebranets.nope"))
  assert not errors.is_user_error(KeyError("x")) and not errors.is_user_error(TypeError("x"))
  assert "pip install -e '.[cluster]'" in errors.message(
      ModuleNotFoundError("No module named 'ray'", name="ray"))
  assert errors.message(OSError(errno.ENOSPC, "No space left on device", "/w/ckpt")).startswith(
      "/w/ckpt: No space left on device; free space")
  # A list laid out by its author keeps its lines, indented under the first.
  assert errors.message(errors.WorkdirError("W holds another run:\n  algebra: h -> m2r\n\n")) == (
      "W holds another run:\n    algebra: h -> m2r")


def test_run_cli_reports_user_errors_in_one_line_and_lets_bugs_through(capsys, tmp_path):
  handler = logs.add_file(tmp_path / "run.log")
  try:
    assert errors.run_cli(lambda: _raise(errors.DataError("bad file x; fix it"))) == 1
    err = capsys.readouterr().err
    assert err == f"error: bad file x; fix it (traceback in {tmp_path / 'run.log'})\n"
    with pytest.raises(KeyError):
      errors.run_cli(lambda: _raise(KeyError("a bug")))
    assert errors.run_cli(lambda: 3) == 3 and errors.run_cli(lambda: None) == 0
  finally:
    logs.remove_file(handler)
  log = (tmp_path / "run.log").read_text()
  assert "error: bad file x; fix it\nTraceback" in log
  assert "KeyError: a bug, please report it" in log and "KeyError: 'a bug'" in log


def test_one_format_with_the_level_named_for_warnings():
  formatter = logs.Formatter(logs.CONSOLE_FORMAT, logs.CONSOLE_DATEFMT)
  record = logging.LogRecord("algebranets", logging.WARNING, __file__, 1, "padded %d rows", (3,),
                             None)
  assert re.match(r"^\d\d:\d\d:\d\d algebranets: warning: padded 3 rows$",
                  formatter.format(record))
  record = logging.LogRecord("algebranets", logging.INFO, __file__, 1, "step %d", (5,), None)
  assert re.match(r"^\d\d:\d\d:\d\d algebranets: step 5$", formatter.format(record))


def test_the_log_file_waits_until_this_run_owns_the_workdir(tmp_path):
  """train.log is written once this run wrote config.json / metrics.jsonl and no other process
  holds the workdir's lock: a run refused by the lock (while the holder writes those files) or
  by a mismatch (before config.json) leaves the workdir alone."""
  import json as json_lib  # pylint: disable=g-import-not-at-top
  import socket  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  from algebranets import train as train_cli  # pylint: disable=g-import-not-at-top
  start = time.time()
  owns = lambda: train_cli._run_owns(tmp_path, start)  # pylint: disable=protected-access
  assert not owns()  # nothing written yet
  handler = logs.add_file(tmp_path / "train.log", header="cmd", ready=owns)
  try:
    logging.getLogger("algebranets").warning("held")
    assert not (tmp_path / "train.log").exists()
    (tmp_path / "config.json").write_text("{}")
    lock = tmp_path / train_cli.WORKDIR_LOCK
    lock.write_text(json_lib.dumps({"host": socket.gethostname(), "pid": os.getpid() + 1}))
    logging.getLogger("algebranets").warning("another process holds it")
    assert not (tmp_path / "train.log").exists()
    lock.write_text(json_lib.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    logging.getLogger("algebranets").warning("ours")
    text = (tmp_path / "train.log").read_text()
    assert [line.split("algebranets: ")[1] for line in text.splitlines()] == [
        "cmd", "warning: held", "warning: another process holds it", "warning: ours"]
  finally:
    logs.remove_file(handler)
