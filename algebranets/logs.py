"""One log format for every command, a log file per workdir, and quiet library start-up.

Every command (the trainer, the quickstart, ...) logs through the "algebranets" logger in one
format, on stderr:

    09:10:34 algebranets: step 100: loss 1.234 ...
    09:10:35 algebranets: warning: train.batch_size=12 is padded ...

and, where it has a workdir, also into a log file there (`add_file`, e.g. <workdir>/train.log)
with the date, and with the traceback of any error that ends the run (`errors.run_cli`). The
records propagate to the root logger as usual (pytest's caplog, an application's handlers).

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
import time
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
  """The project's logger at `level`, libraries at WARNING, all on stderr in `CONSOLE_FORMAT`.

  The project's records propagate to the root logger, whose stream handlers (absl's under
  app.run, else a new stderr handler) get the format; the root logger's level (WARNING) holds
  back the libraries' INFO lines. Idempotent.
  """
  quiet_startup()
  formatter = ConsoleFormatter(CONSOLE_FORMAT, CONSOLE_DATEFMT)
  log = logging.getLogger(LOGGER)
  log.setLevel(level)
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
  the workdir belongs to another run, or another process holds it; missing data) leaves that
  workdir as it was, and its traceback is shown only with --verbose.
  Returns the handler.
  """
  path = pathlib.Path(path).absolute()
  for handler in file_handlers():
    if handler.baseFilename == str(path):
      return handler
  if ready is None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = LogFileHandler(path, encoding="utf-8", delay=True)
  else:
    handler = DeferredFileHandler(path, ready)
  handler.setLevel(level)
  handler.setFormatter(Formatter(CONSOLE_FORMAT, FILE_DATEFMT))
  if header:
    handler.handle(logging.getLogger(LOGGER).makeRecord(
        LOGGER, logging.INFO, __file__, 0, "%s", (header,), None))
  handler._algebranets_log = True  # pylint: disable=protected-access
  logging.getLogger().addHandler(handler)  # the project's records propagate to it
  return handler


class LogFileHandler(logging.FileHandler):
  """A log file that, when it cannot be written (a full disk), says so once on stderr and stops,
  instead of printing logging's own traceback for every record."""

  def handleError(self, record):  # pylint: disable=invalid-name
    if getattr(self, "_failed", False):
      return
    self._failed = True  # pylint: disable=attribute-defined-outside-init
    cause = sys.exc_info()[1]
    sys.stderr.write(f"{time.strftime(CONSOLE_DATEFMT)} {LOGGER}: warning: could not write the "
                     f"log file {self.baseFilename} ({cause}); logging to the console only\n")

  def emit(self, record):
    if not getattr(self, "_failed", False):
      super().emit(record)


class ConsoleFormatter(Formatter):
  """`Formatter`, but a library's error record shows its message without its traceback, which
  stays in the log file (and on the console with --verbose): e.g. orbax logs a failed
  background save with its traceback before the trainer reports the failure in one line."""

  def format(self, record):
    if record.exc_info and not record.name.startswith(LOGGER) and not _verbose():
      saved = record.exc_info, record.exc_text
      record.exc_info, record.exc_text = None, None
      try:
        return super().format(record)
      finally:
        record.exc_info, record.exc_text = saved
    return super().format(record)


def _verbose() -> bool:
  return "--verbose" in sys.argv or os.environ.get("ALGEBRANETS_VERBOSE") == "1"


class DeferredFileHandler(LogFileHandler):
  """A log file written only once ready() is true (see `add_file`); until then the records are
  held in memory, and dropped if the command ends before."""

  def __init__(self, path: pathlib.Path, ready: Callable[[], bool]):
    super().__init__(path, encoding="utf-8", delay=True)
    self._ready = ready
    self._held: Optional[list] = []  # None once the records go to the file

  @property
  def writing(self) -> bool:
    """Whether the records go to the file (ready() was, or is now, true)."""
    return self._held is None or self._ready()

  def emit(self, record):
    if self._held is not None:
      if not self._ready():
        self._held.append(record)
        return
      self._release()
    super().emit(record)

  def _release(self):
    held, self._held = self._held, None
    for r in held:
      super().emit(r)

  def close(self):
    """At exit: the records still held go to the file if the run did write its workdir (e.g. an
    evaluation, whose only write, metrics.jsonl, follows its last record), else nowhere."""
    if self._held and self._ready():
      self._release()
    super().close()


def file_handlers() -> list:
  """The log files of `add_file` (not another library's file handlers on the root logger)."""
  return [h for h in logging.getLogger().handlers if getattr(h, "_algebranets_log", False)]


def remove_file(handler: Optional[logging.FileHandler]) -> None:
  """Stops logging into `handler`'s file and closes it."""
  if handler is None:
    return
  logging.getLogger().removeHandler(handler)
  handler.close()
