r"""Command line: train and/or evaluate one experiment config.

  python -m algebranets.train --config=configs/<experiment>.py:<algebra>[,debug][,key=value...] \
      --workdir=DIR [--config.a.b=value ...] [--mode=train|eval|train_and_eval]

e.g. python -m algebranets.train --config=configs/enwik8_transformer_xl.py:m2r,match=params \
         --workdir=/tmp/enwik8_m2r --config.train.batch_size=32

--mode: train_and_eval (default) trains, evaluating every `eval.eval_every` steps and at the end;
train skips the evals; eval evaluates the workdir's latest (or `--config.eval.checkpoint=best`)
checkpoint on every eval split of the dataset. Running again with the same --workdir resumes.

Several hosts: start one process per host with --coordinator_address=HOST:PORT
--num_processes=N --process_id=I (or $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES,
$JAX_PROCESS_ID), or with --distributed alone where JAX detects the cluster (Cloud TPU, Slurm,
Open MPI).

Errors: a user error (bad flag or config, missing or bad data, missing checkpoint, a workdir
that belongs to another run; see `algebranets.errors`) ends the run with one line on stderr,
`error: <what is wrong; what to do>`, and exit status 1; --verbose adds its traceback, which is
also in <workdir>/train.log once the run has written to its workdir (a run that stops before
-- refused because the workdir belongs to another run, or its data is missing -- leaves the
workdir untouched). A bug keeps its traceback. The log (stderr, and appended to train.log) has
one format, `HH:MM:SS algebranets: message` (`algebranets.logs`).

This module only parses flags; the work is `training.train.train_and_evaluate(config, workdir)`
and `training.train.evaluate(config, workdir)`.
"""

import difflib
import functools
import importlib.util
import json
import os
import pathlib
import shlex
import socket
import sys
import threading
import time

from algebranets import logs

logs.quiet_startup()  # before anything loads TensorFlow or libtpu

# pylint: disable=g-import-not-at-top,wrong-import-position
from absl import app
from absl import flags
from ml_collections import config_flags

from algebranets import errors
from algebranets.training import config_lib
from algebranets.training import distributed
from algebranets.training import workdir as workdir_lib
# pylint: enable=g-import-not-at-top,wrong-import-position

LOG_FILE = "train.log"  # in the workdir: every run's log, and the traceback of any error
WORKDIR_LOCK = workdir_lib.LOCK_FILE  # the trainer's workdir lock: {"host", "pid", ...}

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "experiment config: configs/<experiment>.py:<algebra>[,debug][,key=value]",
    lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "directory for checkpoints, metrics and logs")
_MODE = flags.DEFINE_enum("mode", "train_and_eval", config_lib.MODES, "what to do")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None,
                                   "HOST:PORT of process 0, for multi-host runs")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "processes of a multi-host run")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index, 0..N-1")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False,
                                 "let JAX detect the cluster (Cloud TPU, Slurm, Open MPI)")
_VERBOSE = flags.DEFINE_bool("verbose", False,
                             "print the traceback of a user error too (it is also in "
                             f"<workdir>/{LOG_FILE} once the run has written to its workdir)")
flags.mark_flags_as_required(["config", "workdir"])


def _load_config(spec: str):
  """get_config(arg) of 'path.py[:arg]', as config_flags will load it."""
  path, _, arg = spec.partition(":")
  if not pathlib.Path(path).is_file():
    raise ValueError(f"--config={spec}: no config file {path}")
  module_spec = importlib.util.spec_from_file_location("_algebranets_config", path)
  module = importlib.util.module_from_spec(module_spec)
  module_spec.loader.exec_module(module)
  return module.get_config(arg) if arg else module.get_config()


def _check_override(config, dotted: str) -> None:
  """ValueError naming the valid keys if --config.<dotted> is not a field of the config."""
  node, done = config, []
  for key in dotted.split("."):
    keys = sorted(node.keys()) if hasattr(node, "keys") else []
    if key not in keys:
      where = "config" + "".join(f".{k}" for k in done)
      close = difflib.get_close_matches(key, keys, n=3)
      hint = f" (did you mean {', '.join(close)}?)" if close else ""
      raise ValueError(f"--config.{dotted}: {where} has no key {key!r}{hint}; valid keys: "
                       f"{keys}")
    node = node[key]
    done.append(key)


class _ConfigLoader(flags.ArgumentParser):
  """The parser of --config=path.py[:arg], in place of config_flags' own: it loads the file once
  and checks every --config.* override against it before ml_collections applies them.

  ml_collections would fail on an unknown key with a bare AttributeError; this names the valid
  keys. absl recasts a parser's ValueError as "flag --config=...: <message>", so the loader
  keeps the original (a bad algebra or argument key, from get_config) for parse_flags to report.
  """

  def __init__(self, overrides: list[str]):
    super().__init__()
    self.overrides = overrides
    self.error = None

  def parse(self, path):
    try:
      config = _load_config(path)
      for dotted in self.overrides:
        _check_override(config, dotted)
    except Exception as e:  # pylint: disable=broad-except
      self.error = e
      raise
    config.lock()
    return config


def parse_flags(argv):
  """absl flag parsing, the config loaded once by `_ConfigLoader`."""
  overrides = [a.split("=", 1)[0].split("config.", 1)[1] for a in argv[1:]
               if a.startswith(("--config.", "--noconfig."))]
  loader = _ConfigLoader(overrides)
  flags.FLAGS["config"].parser = loader
  try:
    return flags.FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    # Loading the config is reading user input: its ValueErrors are the user's, wherever raised.
    error = loader.error or e
    if isinstance(error, (flags.Error, ValueError)) or errors.is_user_error(error):
      hint = "--helpshort lists the flags" if isinstance(error, flags.Error) else None
      sys.exit(errors.report(error, verbose=errors.verbose_requested(argv[1:]), hint=hint))
    raise


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
  # Libraries (orbax: several lines per checkpoint; jax: backends it did not find) speak up only
  # for warnings; this program's own log ("algebranets") stays at INFO, in logs' format.
  log = logs.setup()
  distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
                         auto=_DISTRIBUTED.value)
  # Imported after the distributed set-up: nothing may touch the devices before it.
  import jax  # pylint: disable=g-import-not-at-top
  from algebranets.training import train  # pylint: disable=g-import-not-at-top
  config = _CONFIG.value
  if jax.process_index() == 0:  # one log file per run, from process 0 (as the metrics)
    command = ["python", "-m", "algebranets.train", *sys.argv[1:]]
    workdir, started = pathlib.Path(_WORKDIR.value), time.time()
    # Written once this run has taken the workdir over (`_run_owns`), so that a run refused
    # before (the workdir holds another model, another process holds it) leaves it untouched.
    logs.add_file(workdir / LOG_FILE, header=shlex.join(command),
                  ready=lambda: _run_owns(workdir, started))
  log.info("mode %s, workdir %s", _MODE.value, _WORKDIR.value)
  try:
    if _MODE.value == "eval":
      train.evaluate(config, _WORKDIR.value)
    else:
      train.train_and_evaluate(config, _WORKDIR.value,
                               evaluate_during_training=_MODE.value == "train_and_eval")
  except train.NonFiniteLossError as e:  # a diverged run: the message names the step and
    raise errors.UserError(str(e)) from e  # the last good checkpoint
  finally:
    _join_background_threads(timeout_s=60)


def _run_owns(workdir: pathlib.Path, start: float) -> bool:
  """Whether this run has taken `workdir` over: it wrote config.json (training) or metrics.jsonl
  (evaluation) at or after `start`, and no other process holds the workdir's lock (a second run
  refused by the lock sees the holder write those files)."""
  written = False
  for name in ("config.json", "metrics.jsonl"):
    try:
      written = written or (workdir / name).stat().st_mtime >= start - 1.0
    except OSError:
      pass
  if not written:
    return False
  try:
    holder = json.loads((workdir / WORKDIR_LOCK).read_text())
  except (OSError, ValueError):
    return True  # no lock (released at the end of the run), or one being rewritten
  return holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname()


def _join_background_threads(timeout_s: float) -> None:
  """Waits (up to timeout_s in all) for the threads a library left running. Orbax's checkpoint
  manager starts a thread that cleans up temporary checkpoint folders and close() does not wait
  for it: a run that ends within a second (e.g. on an error) would shut the interpreter down
  under it and print its 40-line traceback after ours."""
  deadline = time.monotonic() + timeout_s
  for thread in threading.enumerate():
    if thread is not threading.current_thread() and not thread.daemon:
      thread.join(max(0.0, deadline - time.monotonic()))


if __name__ == "__main__":
  app.run(functools.partial(errors.run_cli, main), flags_parser=parse_flags)
