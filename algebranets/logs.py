"""One log format for every command, a log file per workdir, and quiet library start-up.

Every command (the trainer, the quickstart, ...) logs through the "algebranets" logger in one
format, on stderr:

    09:10:34 algebranets: step 100: loss 1.234 ...
    09:10:35 algebranets: warning: train.batch_size=12 is padded ...

and, where it has a workdir, also into a log file there (`add_file`, e.g. <workdir>/train.log)
with the date, and with the traceback of any error that ends the run (`errors.run_cli`).

Libraries speak up only for warnings: TensorFlow's and libtpu's C++ start-up lines (which go to
the process's stderr before any Python logging exists) are held back by `quiet_startup`, to be
called before TensorFlow or a TPU runtime is imported, and by `quiet_stderr` around TensorFlow's
import (TensorFlow >= 2.17 prints some lines before it reads TF_CPP_MIN_LOG_LEVEL); Python
loggers (absl's for orbax and TFDS, jax's "Unable to initialize backend" INFO lines) are set to
WARNING by `setup`. TF_CPP_MIN_LOG_LEVEL=0 (set by the user) brings TensorFlow's lines back.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
import sys
import tempfile
from typing import Callable, Optional

LOGGER = "algebranets"
CONSOLE_FORMAT = "%(asctime)s %(name)s: %(message)s"
CONSOLE_DATEFMT = "%H:%M:%S"
FILE_DATEFMT = "%Y-%m-%d %H:%M:%S"

# Environment read by TensorFlow's and libtpu's C++ logging when they load; set only where the
# user has not set them. 2: errors only.
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "2",
    "TPU_STDERR_LOG_LEVEL": "2",
    "TPU_MIN_LOG_LEVEL": "2",
    "GRPC_VERBOSITY": "ERROR",
}
# Python loggers of libraries that log start-up or per-checkpoint lines at INFO.
QUIET_LOGGERS = ("absl", "jax", "orbax", "tensorflow", "tensorflow_datasets", "tensorboardX")


class Formatter(logging.Formatter):
  """`CONSOLE_FORMAT`, with "warning: " / "error: " before the message of such records."""

  def formatMessage(self, record):  # pylint: disable=invalid-name
    text = super().formatMessage(record)
    if record.levelno >= logging.WARNING:
      head, sep, tail = text.partition(": ")
      text = f"{head}{sep}{record.levelname.lower()}: {tail}"
    return text


def quiet_startup() -> None:
  """Sets `QUIET_ENVIRONMENT` (where unset): call before TensorFlow or libtpu is loaded."""
  for key, value in QUIET_ENVIRONMENT.items():
    os.environ.setdefault(key, value)


@contextlib.contextmanager
def quiet_stderr():
  """Sends the process's stderr (file descriptor 2) to /dev/null inside the block, unless the
  user asked for TensorFlow's logs (TF_CPP_MIN_LOG_LEVEL=0). Python exceptions still propagate;
  for imports that print C++ start-up lines before reading their log level."""
  if os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
    yield
    return
  try:
    sys.stderr.flush()
    saved = os.dup(2)
  except (OSError, ValueError):  # no real stderr (e.g. an embedded interpreter)
    yield
    return
  try:
    with open(os.devnull, "w") as null:
      os.dup2(null.fileno(), 2)
    yield
  finally:
    os.dup2(saved, 2)
    os.close(saved)


def setup(level: int = logging.INFO) -> logging.Logger:
  """The project's logger in `CONSOLE_FORMAT` on stderr at `level`; libraries at WARNING.

  Idempotent; works under absl's app.run (its handler on the root logger gets the same format)
  and without it (a plain stderr handler for the libraries' warnings).
  """
  quiet_startup()
  formatter = Formatter(CONSOLE_FORMAT, CONSOLE_DATEFMT)
  log = logging.getLogger(LOGGER)
  log.setLevel(level)
  log.propagate = False  # one line per record, in our format, whoever configured the root
  if not any(getattr(h, "_algebranets_console", False) for h in log.handlers):
    handler = logging.StreamHandler(sys.stderr)
    handler._algebranets_console = True  # pylint: disable=protected-access
    log.addHandler(handler)
  for handler in log.handlers:
    if getattr(handler, "_algebranets_console", False):
      handler.setFormatter(formatter)
  root = logging.getLogger()
  root.setLevel(logging.WARNING)
  if not root.handlers:
    root.addHandler(logging.StreamHandler(sys.stderr))
  for handler in root.handlers:
    if not isinstance(handler, logging.FileHandler):
      handler.setFormatter(formatter)
  for name in QUIET_LOGGERS:
    logging.getLogger(name).setLevel(logging.WARNING)
  return log


def add_file(path, *, header: Optional[str] = None, level: int = logging.INFO,
             ready: Optional[Callable[[], bool]] = None) -> logging.FileHandler:
  """Also logs into `path` (appended, its folder created): the project's records and the
  libraries' warnings, with the date; first `header` (e.g. the command line), in the file only.

  With `ready`, nothing is written to `path` until ready() is true (checked at each record):
  the records wait in memory, so a command that stops before it owns its workdir (a refusal:
  the workdir belongs to another run, or another process holds it) leaves that workdir as it
  was. If it ends with an error before then, the records and the traceback go to a file in the
  temporary directory instead (the handler's `baseFilename` names it).
  Returns the handler.
  """
  path = pathlib.Path(path).absolute()
  for handler in logging.getLogger(LOGGER).handlers:
    if isinstance(handler, logging.FileHandler) and handler.baseFilename == str(path):
      return handler
  if ready is None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
  else:
    handler = DeferredFileHandler(path, ready)
  handler.setLevel(level)
  handler.setFormatter(Formatter(CONSOLE_FORMAT, FILE_DATEFMT))
  if header:
    handler.handle(logging.getLogger(LOGGER).makeRecord(
        LOGGER, logging.INFO, __file__, 0, "%s", (header,), None))
  logging.getLogger(LOGGER).addHandler(handler)
  logging.getLogger().addHandler(handler)
  return handler


class DeferredFileHandler(logging.FileHandler):
  """A log file written only once ready() is true (see `add_file`). Until then records are held
  in memory; an error record before then sends them all to a new temporary file instead.
  `baseFilename` is where they went (or will go)."""

  def __init__(self, path: pathlib.Path, ready: Callable[[], bool]):
    super().__init__(path, encoding="utf-8", delay=True)
    self._ready = ready
    self._held: Optional[list] = []  # None once the records go to a file

  def emit(self, record):
    if self._held is not None:
      ready = self._ready()
      if not ready and record.levelno < logging.ERROR:
        self._held.append(record)
        return
      if not ready:  # an error ends the command before it wrote to its workdir
        fd, self.baseFilename = tempfile.mkstemp(prefix="algebranets-", suffix=".log")
        os.close(fd)
      self._release()
    super().emit(record)

  def _release(self):
    held, self._held = self._held, None
    for r in held:
      super().emit(r)

  def close(self):
    """At exit: the records still held go to the file if the run did write its workdir (e.g. an
    evaluation, whose only write, metrics.jsonl, follows its last record)."""
    if self._held and self._ready():
      self._release()
    super().close()


def remove_file(handler: Optional[logging.FileHandler]) -> None:
  """Stops logging into `handler`'s file and closes it."""
  if handler is None:
    return
  for name in (LOGGER, None):
    logging.getLogger(name).removeHandler(handler)
  handler.close()
