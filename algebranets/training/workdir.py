"""A workdir belongs to one run: the lock that keeps a second process out, and the check that
keeps another model out.

Lock. `WorkdirLock` creates `workdir/lock.json` atomically (O_CREAT | O_EXCL) holding the
holder's host, PID, process start time and command; it is removed when the run ends, however it
ends short of kill -9. A second run on the workdir is refused with a `WorkdirError` naming the
holder. A lock left by a crashed run is *stale* and taken over, with a warning, when its holder
is on this host and its PID is no longer running (or is another process now: the start time
differs). A lock from another host cannot be checked from here: the message says how to remove
it once that run is known to be gone. In a multi-process run process 0 holds the lock for all.

Model. `check_compatible(saved, config)` compares the resolved config a run is started with to
the one the workdir was started with (`config.json`): a difference in what defines the state --
the algebra, the model, the task, the dataset's name, the optimiser's name -- is refused with a
`WorkdirError` listing every difference, before anything is written; every other difference
(learning rate, steps, eval batch size, log cadence, ...) is applied and returned, so that the
run can say which. `check_shapes` compares the state the config builds with a checkpoint's, leaf
by leaf, for what the config comparison cannot see.
"""

from __future__ import annotations

import json
import logging
import os
import pathlib
import socket
import time
from typing import Any, Mapping, Optional

import jax

from algebranets import common
from algebranets import errors

log = logging.getLogger("algebranets")

LOCK_FILE = "lock.json"
# Config keys (dotted, or a prefix ending in ".") whose change makes another model: refused.
STATE_KEYS = ("algebra", "model_name", "model.", "task.name", "data.name", "optimizer.name",
              "experiment")


# ----------------------------------------------------------------------------- the lock
def _start_time(pid: int) -> Optional[str]:
  """The start time of process `pid` (Linux /proc; None elsewhere or if it is not running)."""
  try:
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
  except OSError:
    return None
  return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _running(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def describe_holder(holder: Mapping[str, Any]) -> str:
  started = holder.get("started")
  when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
  return (f"PID {holder.get('pid')} on host {holder.get('host')}, started {when}"
          + (f": {holder['command']}" if holder.get("command") else ""))


class WorkdirLock:
  """`with WorkdirLock(workdir):` holds workdir/lock.json for the block (see the module).

  `enabled=False` (the other processes of a multi-process run) holds nothing.
  """

  def __init__(self, workdir, *, command: str = "", enabled: bool = True):
    self.path = pathlib.Path(workdir) / LOCK_FILE
    self.command, self.enabled = command, enabled
    self.held = False

  def _record(self) -> dict[str, Any]:
    return {"host": socket.gethostname(), "pid": os.getpid(),
            "process_start": _start_time(os.getpid()), "started": time.time(),
            "command": self.command}

  def _stale(self, holder: Mapping[str, Any]) -> Optional[str]:
    """Why `holder`'s lock is stale, or None if it may be alive."""
    if holder.get("host") != socket.gethostname():
      return None
    pid = int(holder.get("pid", -1))
    if pid == os.getpid():
      return None  # this process holds it (another run in this process): not stale
    if pid <= 0 or not _running(pid):
      return f"PID {pid} is not running"
    start = _start_time(pid)
    if holder.get("process_start") and start and start != holder["process_start"]:
      return f"PID {pid} is another process now"
    return None

  def acquire(self) -> None:
    if not self.enabled:
      return
    self.path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
      try:
        fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
      except FileExistsError:
        holder = self._read()
        if holder is None:  # being written by its holder this instant, or unreadable
          time.sleep(0.2)
          holder = self._read()
          if holder is None:
            raise errors.WorkdirError(
                f"{self.path} exists but is not a lock file this program wrote; if no run "
                f"uses {self.path.parent}, delete it and start again") from None
        why = self._stale(holder)
        if why is None:
          raise errors.WorkdirError(
              f"workdir {self.path.parent} is in use by another run ({describe_holder(holder)})"
              f"; wait for it to finish, stop it, or use another --workdir. If that run is gone "
              f"(its machine crashed), delete {self.path}") from None
        aside = self.path.with_name(f"{LOCK_FILE}.stale")
        try:
          os.replace(self.path, aside)  # one of several takers wins; the others retry
        except FileNotFoundError:
          continue
        log.warning("took over the lock of a run that is gone (%s; %s)", describe_holder(holder),
                    why)
        aside.unlink(missing_ok=True)
        continue
      with os.fdopen(fd, "w") as f:
        json.dump(self._record(), f)
      self.held = True
      return
    raise errors.WorkdirError(f"could not take the lock {self.path}: other runs keep taking it")

  def _read(self) -> Optional[dict[str, Any]]:
    try:
      return json.loads(self.path.read_text())
    except (OSError, ValueError):
      return None

  def release(self) -> None:
    if self.held:
      holder = self._read()
      if holder and holder.get("pid") == os.getpid() and holder.get("host") == (
          socket.gethostname()):
        self.path.unlink(missing_ok=True)
      self.held = False

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc):
    self.release()
    return False


def lock_all_processes(workdir, command: str = "") -> WorkdirLock:
  """A held WorkdirLock on process 0; every process raises the same WorkdirError if it failed."""
  lock = WorkdirLock(workdir, command=command, enabled=jax.process_index() == 0)
  if jax.process_count() == 1:
    lock.acquire()
    return lock
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  failure = None
  try:
    lock.acquire()
  except errors.WorkdirError as e:
    failure = e
  failed = multihost_utils.process_allgather(np.asarray([int(failure is not None)], np.int32))
  if failure is not None:
    raise failure
  if bool(np.asarray(failed).any()):
    raise errors.WorkdirError(f"process 0 could not take the lock of workdir {workdir} (its log "
                              "says why)")
  return lock


# ----------------------------------------------------------------------------- the model
def _flat(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      out.update(_flat(v, f"{prefix}{k}."))
    else:
      out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
  return out


def _defines_state(key: str) -> bool:
  return any(key == k or (k.endswith(".") and key.startswith(k)) for k in STATE_KEYS)


def config_differences(saved: Mapping[str, Any], new: Mapping[str, Any]
                       ) -> tuple[list[str], list[str]]:
  """(refused, applied): 'key: saved -> new' for each key that differs between two resolved
  configs (as dicts), split by whether it defines the state (STATE_KEYS)."""
  a, b = _flat(saved), _flat(new)
  refused, applied = [], []
  for key in sorted(set(a) | set(b)):
    old, now = a.get(key, "<absent>"), b.get(key, "<absent>")
    if old == now:
      continue
    (refused if _defines_state(key) else applied).append(f"{key}: {old!r} -> {now!r}")
  return refused, applied


def check_compatible(workdir, config) -> list[str]:
  """The applied differences between `config` (resolved) and workdir/config.json; raises
  WorkdirError, naming them, if the state-defining ones differ (see the module)."""
  path = pathlib.Path(workdir) / "config.json"
  if not path.exists():
    return []
  try:
    saved = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise errors.WorkdirError(f"{path} is unreadable ({e}); it records the model this workdir "
                              "holds: restore it, or use another --workdir") from None
  if "model_name" not in saved and "name" in saved.get("model", {}):  # saved before model_name
    saved["model_name"] = saved["model"].pop("name")                # left config.model
  new = json.loads(config.to_json_best_effort())
  refused, applied = config_differences(saved, new)
  if refused:
    raise errors.WorkdirError(
        f"workdir {path.parent} holds another model than this config builds ("
        + "; ".join(refused) + "); nothing was written. Use another --workdir for this model, "
        f"or the config it was started with ({path})")
  return applied


def _path(path) -> str:
  """'opt_state/1/0/mu/transformer_xl/r_w_bias': a leaf's path, the same whether the tree is a
  NamedTuple or tuple (as built) or nested dicts with string keys (as orbax reads it back)."""
  return "/".join(common.key_name(k) for k in path)


def check_shapes(abstract_state, saved_metadata, where: str) -> None:
  """WorkdirError listing the leaves whose path, shape or dtype differ between the state this
  run builds and a checkpoint's (orbax tree metadata of the same pytree)."""
  mine = {_path(p): (tuple(x.shape), str(x.dtype))
          for p, x in jax.tree_util.tree_flatten_with_path(abstract_state)[0]}
  theirs = {_path(p): (tuple(x.shape), str(x.dtype))
            for p, x in jax.tree_util.tree_flatten_with_path(saved_metadata)[0]
            if hasattr(x, "shape")}
  diffs = []
  for key in sorted(set(mine) | set(theirs)):
    if mine.get(key) != theirs.get(key):
      fmt = lambda v: "absent" if v is None else f"{v[0]} {v[1]}"
      diffs.append(f"{key}: checkpoint {fmt(theirs.get(key))}, this config {fmt(mine.get(key))}")
  if diffs:
    more = f" (and {len(diffs) - 5} more)" if len(diffs) > 5 else ""
    raise errors.WorkdirError(
        f"{where} holds a state of other shapes than this config builds ("
        + "; ".join(diffs[:5]) + more + "); use another --workdir for this model, or the "
        "config the workdir was started with")
