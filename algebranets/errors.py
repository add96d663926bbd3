"""Errors a user can act on, and the one path by which every command reports them.

A command-line run ends in one of three ways: it succeeds; it meets a *user error* -- bad data,
a bad config or flag, a missing file, checkpoint or extra, a workdir that belongs to another run
-- and exits 1 after ONE line on stderr (or a short list under it, where the message is one),

    error: <what is wrong; what to do>

(the traceback only with --verbose, and in the command's log file where it has one, named at
the end of the line: <workdir>/train.log once the run has written to its workdir; a run that
stops before leaves the workdir untouched); or it meets a bug and ends with the usual traceback.

What counts as a user error (`is_user_error`) is a fixed, short list:

  1. `UserError` and its subclasses (`DataError`, `WorkdirError`, `CheckpointError`): raised by
     algebranets for a condition the user made and can change;
  2. `ValueError` raised by algebranets' own code (the innermost frame of its traceback is in
     the algebranets package or the repository's configs/ or experiments/): the project's input
     validation (house style: a ValueError naming the bad value and the valid choices). A
     ValueError raised inside a library (jax, numpy, haiku, ...) is a bug in how we call it
     and keeps its traceback;
  3. the environment's file errors: `FileNotFoundError`, `NotADirectoryError`,
     `IsADirectoryError`, `PermissionError`, and an `OSError` for a full disk or quota;
  4. `ModuleNotFoundError` for a module outside algebranets (a missing extra or dependency:
     the line says what to install). A missing algebranets module is a broken checkout: a bug.

Everything else -- a KeyError, a TypeError, an XLA error, a ValueError from inside jax -- is a
bug and keeps its traceback. To make a new failure mode a user error, raise a `UserError`
subclass (or a ValueError from algebranets code) whose message says what to do.

Commands use it as

    if __name__ == "__main__":
      sys.exit(errors.run_cli(main))             # argparse mains: main(argv=None) -> int
      app.run(functools.partial(errors.run_cli, main))   # absl mains

and accept a --verbose flag (run_cli reads it from sys.argv, or ALGEBRANETS_VERBOSE=1).
"""

from __future__ import annotations

import errno
import logging
import os
import pathlib
import sys
import traceback
from typing import Callable, Optional, Sequence

from algebranets import logs

LOGGER = "algebranets"  # the project's logger (the records of the tracebacks carry its name)


class UserError(Exception):
  """A condition the user made and can change; the message says what is wrong and what to do."""


class DataError(UserError, ValueError):
  """A dataset's files are missing pieces, too short, damaged or inconsistent (names the file
  and the split). A ValueError too, so callers that catch bad input keep catching it."""


class WorkdirError(UserError, ValueError):
  """A workdir that belongs to another run (model, algebra, shapes) or is in use by one."""


class CheckpointError(UserError):
  """A checkpoint that is missing, unreadable or not finite, where no fallback exists."""


# Top-level module -> (extra, what needs it): the message for a ModuleNotFoundError.
EXTRAS = {
    "tensorflow": ("images", "the image pipelines"),
    "tensorflow_datasets": ("images", "the image pipelines"),
    "importlib_resources": ("images", "the image pipelines (TFDS)"),
    "ray": ("cluster", "the Ray sweep backend"),
    "pytest": ("test", "the test suite"),
}

_ROOT = pathlib.Path(__file__).resolve().parent  # the algebranets package
_OWN_CODE = (_ROOT, _ROOT.parent / "configs", _ROOT.parent / "experiments")
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def _raised_by_own_code(error: BaseException) -> bool:
  """True if the innermost frame of `error`'s traceback is in algebranets' own source."""
  tb = error.__traceback__
  if tb is None:
    return False
  while tb.tb_next is not None:
    tb = tb.tb_next
  path = pathlib.Path(tb.tb_frame.f_code.co_filename).resolve()
  return any(path.is_relative_to(root) for root in _OWN_CODE)


def is_user_error(error: BaseException) -> bool:
  """Whether `error` is a user error by the module docstring's rule (else a bug)."""
  if isinstance(error, UserError):
    return True
  if isinstance(error, ModuleNotFoundError):
    return not (error.name or "").startswith("algebranets")
  if isinstance(error, (FileNotFoundError, NotADirectoryError, IsADirectoryError,
                        PermissionError)):
    return True
  if isinstance(error, OSError) and error.errno in _DISK_ERRNOS:
    return True
  if isinstance(error, ValueError):
    return _raised_by_own_code(error)
  return False


def message(error: BaseException) -> str:
  """The one line that reports user error `error` (without the "error: " prefix)."""
  if isinstance(error, ModuleNotFoundError) and error.name:
    text = str(error)
    top = error.name.split(".")[0]
    if top in EXTRAS and "pip install" not in text:
      extra, needs = EXTRAS[top]
      text = (f"{text}; {needs} need the {extra!r} extra: pip install -e '.[{extra}]' (or "
              "pip install -r requirements-lock.txt for the tested versions)")
    elif "pip install" not in text:
      text = f"{text}; install it (pip install -e . installs algebranets' requirements)"
  elif isinstance(error, OSError) and error.filename and error.strerror and not isinstance(
      error, UserError):
    text = f"{error.filename}: {error.strerror}"
    if error.errno in _DISK_ERRNOS:
      text += "; free space there (or choose another --workdir) and run again"
  else:
    text = str(error) or type(error).__name__
  # One line, unless the message is a short list its author laid out in lines (e.g. the fields
  # in which a workdir's run differs): those stay, indented under the first.
  lines = [line.rstrip() for line in text.strip().splitlines() if line.strip()]
  return "\n  ".join([" ".join(lines[0].split()), *lines[1:]]) if lines else ""


def verbose_requested(argv: Optional[Sequence[str]] = None) -> bool:
  """--verbose (absl's --verbose=true, --verbose=1 too) in argv, or $ALGEBRANETS_VERBOSE=1."""
  argv = sys.argv[1:] if argv is None else argv
  if os.environ.get("ALGEBRANETS_VERBOSE", "") not in ("", "0"):
    return True
  verbose = False
  for a in argv:
    if a == "--":
      break
    if a in ("--verbose", "--verbose=true", "--verbose=True", "--verbose=1"):
      verbose = True
    elif a in ("--noverbose", "--verbose=false", "--verbose=False", "--verbose=0"):
      verbose = False
  return verbose


def _log_files() -> list:
  """The commands' log files (`logs.add_file`) that are being written."""
  return [h for h in logs.file_handlers() if getattr(h, "writing", True)]


def _to_log_files(error: BaseException, msg: str, *args) -> list:
  """Writes `msg % args` and `error`'s traceback to the log files only (not the console).
  Returns the file handlers."""
  files = _log_files()
  if files:
    record = logging.getLogger(LOGGER).makeRecord(
        LOGGER, logging.ERROR, __file__, 0, msg, args, (type(error), error, error.__traceback__))
    for handler in files:
      handler.handle(record)
  return files


def report(error: BaseException, *, verbose: bool = False, stream=None,
           hint: Optional[str] = None) -> int:
  """Reports user error `error`: one line on `stream` (stderr), the traceback with `verbose`
  and in every log file (`logs.add_file`). Returns the exit status, 1.

  The line ends with where the traceback is (a log file, or --verbose), or with `hint`.
  """
  stream = stream or sys.stderr
  files = _to_log_files(error, "%s", message(error))
  if verbose:
    traceback.print_exception(type(error), error, error.__traceback__, file=stream)
  where = (hint if hint else "" if verbose else
           f"traceback in {files[0].baseFilename}" if files else "--verbose shows the traceback")
  stream.write(f"error: {message(error)}" + (f" ({where})" if where else "") + "\n")
  stream.flush()
  return 1


def run_cli(main: Callable[..., Optional[int]], *args, **kwargs) -> int:
  """main(*args, **kwargs), with user errors reported in one line (exit status 1).

  Bugs propagate with their traceback (also into the log files). Returns main's status (None
  counts as 0), for sys.exit.
  """
  try:
    status = main(*args, **kwargs)
  except Exception as e:  # pylint: disable=broad-except
    if is_user_error(e):
      return report(e, verbose=verbose_requested())
    _to_log_files(e, "%s: a bug, please report it (traceback below)", type(e).__name__)
    raise
  return 0 if status is None else int(status)
