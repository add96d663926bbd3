r"""The Ray backend of experiments.launch: a sweep's runs as Ray tasks on the nodes of a cluster.

  ray start --head --port=6379 --num-gpus=8                 (on the head node)
  ray start --address=HEAD_IP:6379 --num-gpus=8             (on every other node)
  python -m experiments.launch --sweep=imagenet_resnet50 --root=/shared/runs/rn50 \
      --data=imagenet=/shared/tfds --backend=ray --address=auto --resources_per_run=GPU=8

Ray is an optional extra (`pip install -e .[cluster]`); only this module imports it, lazily.

A run is the same training command it is locally (`python -m algebranets.train --config=...
--workdir=ROOT/<run>`), started by a Ray task as a subprocess on the node the task lands on, its
output appended to ROOT/<run>/train.log. Each attempt of a run first reserves a placement group
of --hosts_per_run bundles of --resources_per_run (default CPU=1), STRICT_SPREAD over distinct
nodes when there are several, so at most as many runs go at once as the cluster holds and the
rest wait in Ray's queue; then one task per bundle runs one process of the run. A run of N > 1
hosts gets the trainer's own multi-host flags: --coordinator_address=<IP of process 0's node>:
<a free port there> --num_processes=N --process_id=i (processes i > 0 write train.<i>.log).
--tpu_slice=VERSION:TOPOLOGY reserves a whole TPU pod slice instead (Ray's slice placement
group: one bundle per host of one slice) and runs one process per host.

Faults. Ray's own task retries are off; this module decides per attempt, from the processes'
exit codes and Ray's errors:
  * every process exited 0 and the run reached its last step: done;
  * every process exited 0 before the last step: preempted (the trainer saves and exits 0 on
    SIGTERM), resubmitted; this costs a retry only if the latest checkpoint did not advance;
  * a node or worker died (Ray's NodeDiedError, WorkerCrashedError, ...) or a process was killed
    by a signal: lost, retried up to --max_retries times, each retry resuming from the run's
    latest checkpoint (the trainer resumes from its workdir); the other processes of a
    multi-host run are cancelled first;
  * a process exited with a nonzero status by itself (a bad config or override, missing data, a
    diverged loss): failed, not retried; its log tail is printed and kept in launch.json.
Training processes die with the Ray worker that started them (PR_SET_PDEATHSIG), so a lost
node's processes cannot go on writing to a workdir that a retry is using.

Storage. --root must be a path every node sees (NFS, a cluster file system, GCS/S3 through a
FUSE mount) at the same place, as must the repository (each node runs the training CLI from
it: `--repo` if it is elsewhere on the nodes) with the same Python environment. At start, a
task on every node checks that it sees a file this machine wrote under --root and writes one
back, and that it finds the repository; a clear error names the nodes that fail.

Detached sweeps. --detach hands the sweep to a detached Ray actor on this node and returns;
--attach follows it until it is done; --status prints where the sweep stands (from the actor if
it is alive, else from the workdirs' launch.json records, with no cluster needed).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import logging
import os
import pathlib
import platform
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from typing import Any, Optional

from experiments import sweeps as sweeps_lib
from experiments import workdirs

EXTRA_HINT = "pip install -e '.[cluster]'"
NAMESPACE = "algebranets"
DEFAULT_RESOURCES = {"CPU": 1.0}
# Placeholder for the interpreter in a run's argv: the node's own (the Ray worker's) Python.
NODE_PYTHON = "{node_python}"
LOG_TAIL_LINES = 25
PROBE_TIMEOUT_S = 120.0


def require_ray():
  """The `ray` module, or ImportError saying which extra installs it."""
  try:
    import ray  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(f"--backend=ray needs Ray, which is not installed: {EXTRA_HINT} (the "
                      "'cluster' extra) on this machine and on every node of the cluster") from e
  return ray


# ----------------------------------------------------------------------------- resources
def parse_resources(text: Optional[str]) -> dict[str, float]:
  """"CPU=4,GPU=1,memory=8e9,my_resource=1" -> {name: amount}; the default is CPU=1.

  CPU, GPU and memory (bytes) are Ray's task options; TPU and any other name are Ray resources
  (a node offers them with `ray start --resources='{"name": n}'`; Ray detects TPU and GPU).
  """
  if not text:
    return dict(DEFAULT_RESOURCES)
  out = {}
  for item in text.split(","):
    name, sep, amount = item.strip().partition("=")
    try:
      value = float(amount)
    except ValueError:
      value = float("nan")
    if not sep or not re.fullmatch(r"[A-Za-z_][\w.:-]*", name) or not value >= 0:
      raise ValueError(f"--resources_per_run: expected NAME=AMOUNT[,NAME=AMOUNT...] with "
                       f"amounts >= 0 (e.g. CPU=8,GPU=1 or TPU=4), got {item!r} in {text!r}")
    if name in out:
      raise ValueError(f"--resources_per_run names {name} twice: {text!r}")
    out[name] = value
  if not any(out.values()):
    raise ValueError(f"--resources_per_run={text!r} asks for nothing: a run needs some "
                     "resource (CPU=1 at least) so that the cluster bounds how many run at once")
  return out


def task_options(resources: dict[str, float]) -> dict[str, Any]:
  """Ray task options that ask for `resources` (the whole of one placement-group bundle)."""
  opts = {"num_cpus": resources.get("CPU", 0.0), "num_gpus": resources.get("GPU", 0.0)}
  if resources.get("memory"):
    opts["memory"] = resources["memory"]
  custom = {k: v for k, v in resources.items() if k not in ("CPU", "GPU", "memory") and v}
  if custom:
    opts["resources"] = custom
  return opts


def parse_tpu_slice(text: str) -> tuple[str, str]:
  """"v4:2x2x2" -> ("v4", "2x2x2")."""
  version, sep, topology = text.partition(":")
  if not sep or not re.fullmatch(r"v\d+[a-z]*", version) or not re.fullmatch(r"\d+(x\d+)+",
                                                                            topology):
    raise ValueError(f"--tpu_slice expects ACCELERATOR_VERSION:TOPOLOGY (e.g. v4:2x2x2, "
                     f"v5p:2x2x4, v6e:4x4), got {text!r}")
  return version, topology


# ----------------------------------------------------------------------------- on the nodes
def _die_with_parent() -> None:
  """In the child, before exec: SIGKILL when the Ray worker that started it dies (Linux)."""
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    import signal  # pylint: disable=g-import-not-at-top
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
  except (OSError, AttributeError):  # not Linux: the process outlives a lost worker
    pass


def node_probe(probe_dir: str, token: str, repo: str) -> dict[str, Any]:
  """On one node: does it see the driver's file under --root, can it write there, and does it
  have the repository? {"ip", "host", "errors": [...]}."""
  import ray  # pylint: disable=g-import-not-at-top
  errors = []
  folder = pathlib.Path(probe_dir)
  node_id = ray.get_runtime_context().get_node_id()
  try:
    seen = (folder / "driver").read_text()
    if seen != token:
      errors.append(f"{folder / 'driver'} holds another sweep's probe")
  except OSError as e:
    errors.append(f"cannot read the launcher's probe file under --root ({e})")
  try:
    (folder / node_id).write_text(token)
  except OSError as e:
    errors.append(f"cannot write under --root ({e})")
  if not (pathlib.Path(repo) / "algebranets" / "train.py").is_file():
    errors.append(f"no repository at {repo} (algebranets/train.py): check it out there, put it "
                  "on shared storage, or pass --repo=PATH where the nodes have it")
  return {"ip": ray.util.get_node_ip_address(), "host": platform.node(), "node_id": node_id,
          "errors": errors}


def free_address() -> str:
  """On process 0's node: "<node IP>:<a free port>" for the trainer's coordinator."""
  import ray  # pylint: disable=g-import-not-at-top
  ip = ray.util.get_node_ip_address()
  with socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET) as s:
    s.bind((ip, 0))
    port = s.getsockname()[1]
  return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def run_process(spec: dict[str, Any], coordinator: Optional[str] = None) -> dict[str, Any]:
  """On a node: one process of one attempt of a run; its exit code, host and wall time.

  spec: argv (NODE_PYTHON for this node's interpreter), repo (cwd, on PYTHONPATH), log (the
  file the output is appended to), process_id / num_processes (multi-host), header (a line for
  the log).
  """
  import ray  # pylint: disable=g-import-not-at-top
  argv = [sys.executable if a == NODE_PYTHON else a for a in spec["argv"]]
  if spec["num_processes"] > 1:
    argv += [f"--coordinator_address={coordinator}", f"--num_processes={spec['num_processes']}",
             f"--process_id={spec['process_id']}"]
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [spec["repo"]] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  ip = ray.util.get_node_ip_address()
  log = pathlib.Path(spec["log"])
  log.parent.mkdir(parents=True, exist_ok=True)
  start = time.monotonic()
  with open(log, "a") as out:
    out.write(f"\n=== {datetime.datetime.now().isoformat(timespec='seconds')} {spec['header']} "
              f"on {platform.node()} ({ip}), pid {os.getpid()}: {shlex.join(argv)}\n")
    out.flush()
    # pylint: disable-next=subprocess-popen-preexec-fn
    proc = subprocess.Popen(argv, cwd=spec["repo"], env=env, stdout=out,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent)
    try:
      returncode = proc.wait()
    finally:  # cancelled (KeyboardInterrupt) or worse: the process goes with the task
      if proc.poll() is None:
        proc.kill()
        proc.wait()
  return {"returncode": returncode, "ip": ip, "host": platform.node(),
          "machine": workdirs.machine(), "wall_s": round(time.monotonic() - start, 1),
          "process_id": spec["process_id"]}


# ----------------------------------------------------------------------------- the driver
def log_tail(path: pathlib.Path, lines: int = LOG_TAIL_LINES) -> str:
  """The last `lines` lines of a log file ("" if there is none)."""
  try:
    with open(path, "rb") as f:
      f.seek(0, os.SEEK_END)
      f.seek(max(0, f.tell() - 64 * 1024))
      text = f.read().decode("utf-8", "replace")
  except OSError:
    return ""
  return "\n".join(text.splitlines()[-lines:])


def _now() -> str:
  return datetime.datetime.now().isoformat(timespec="seconds")


@dataclasses.dataclass
class RunState:
  """A run of the sweep as the scheduler tracks it."""
  run: Any  # sweeps_lib.Run
  workdir: pathlib.Path
  status: str = "pending"  # pending, waiting (for resources), running, done, failed
  attempts: int = 0
  retries: int = 0  # attempts lost or preempted without progress, against --max_retries
  pg: Any = None  # the attempt's placement group
  slice_handle: Any = None  # its TPU slice placement group, with --tpu_slice
  ready_ref: Any = None
  refs: list[Any] = dataclasses.field(default_factory=list)
  results: dict[int, Any] = dataclasses.field(default_factory=dict)  # process id -> result
  cancelled: bool = False
  hosts: list[str] = dataclasses.field(default_factory=list)
  num_processes: int = 1
  start_step: int = 0
  attempt_start: float = 0.0
  wall_s: float = 0.0  # over all attempts
  record: dict[str, Any] = dataclasses.field(default_factory=dict)
  history: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class RaySweep:
  """Schedules a sweep's runs on a connected Ray cluster (see the module docstring).

  `run()` returns the launch records of the runs it launched once every run is done or failed;
  `progress()` says where the sweep stands; `messages` keeps every progress line.
  """

  def __init__(self, sweep, runs, root, data, extra=(), *, resources=None, hosts_per_run=1,
               tpu_slice=None, max_retries=3, python=None, repo=None, log=print,
               report_every_s=60.0, poll_s=1.0):
    self.ray = require_ray()
    if hosts_per_run < 1:
      raise ValueError(f"--hosts_per_run must be >= 1, got {hosts_per_run}")
    if max_retries < 0:
      raise ValueError(f"--max_retries must be >= 0, got {max_retries}")
    if tpu_slice and hosts_per_run != 1:
      raise ValueError("--tpu_slice takes the number of hosts from the slice's topology: "
                       f"leave out --hosts_per_run (got {hosts_per_run})")
    self.sweep, self.root = sweep, pathlib.Path(root).absolute()
    self.data, self.extra = dict(data), list(extra)
    self.resources = dict(resources or DEFAULT_RESOURCES)
    self.hosts_per_run, self.max_retries = hosts_per_run, max_retries
    self.tpu_slice = parse_tpu_slice(tpu_slice) if tpu_slice else None
    self.python = python or NODE_PYTHON
    self.repo = str(repo or sweeps_lib.ROOT)
    self.log_fn, self.report_every_s, self.poll_s = log, report_every_s, poll_s
    self.messages: list[str] = []
    self.commit = workdirs.git_commit()
    self.states = [RunState(run, self.root / run.name) for run in runs]
    self.skipped = []
    self._node_ips: dict[str, str] = {}
    self._lock = threading.Lock()
    self._last_report = 0.0
    self.finished = False

  # -- output
  def log(self, message: str) -> None:
    line = f"[{_now()}] {message}"
    with self._lock:
      self.messages.append(line)
    self.log_fn(line)

  def progress(self) -> dict[str, Any]:
    """{"done", "running", "waiting", "failed", "pending": [[run, workdir, detail], ...],
    "skipped": [...], "finished": bool}."""
    out = {k: [] for k in ("done", "running", "waiting", "pending", "failed")}
    for st in self.states:
      detail = ""
      if st.status == "running":
        detail = f"on {', '.join(st.hosts) or '?'} (attempt {st.attempts})"
      elif st.status == "failed":
        detail = st.record.get("failure", "")
      elif st.status == "done":
        detail = f"{st.wall_s:.0f} s, {st.attempts} attempt(s)"
      out[st.status].append([st.run.name, str(st.workdir), detail])
    out["skipped"] = [[name, str(self.root / name), "finished before"] for name in self.skipped]
    out["finished"] = self.finished
    return out

  def report(self) -> None:
    p = self.progress()
    total = len(self.states) + len(self.skipped)
    running = "; ".join(f"{name} {detail}" for name, _, detail in p["running"])
    self.log(f"progress: {len(p['done']) + len(p['skipped'])}/{total} done, "
             f"{len(p['running'])} running{' (' + running + ')' if running else ''}, "
             f"{len(p['waiting']) + len(p['pending'])} waiting for resources, "
             f"{len(p['failed'])} failed")
    self._last_report = time.monotonic()

  # -- cluster checks
  def _node_ip(self, node_id: str) -> str:
    if node_id not in self._node_ips:
      self._node_ips = {n["NodeID"]: n["NodeManagerAddress"] for n in self.ray.nodes()}
    return self._node_ips.get(node_id, node_id[:12])

  def check_storage(self) -> list[dict[str, Any]]:
    """Every alive node sees this machine's --root and can write there, and has the repository
    (see the module docstring); ValueError naming the nodes that fail."""
    ray = self.ray
    # pylint: disable=g-import-not-at-top
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    token = uuid.uuid4().hex
    probe_dir = self.root / f".launch-probe-{token[:12]}"
    try:
      probe_dir.mkdir(parents=True)
      (probe_dir / "driver").write_text(token)
    except OSError as e:
      raise ValueError(f"--root={self.root}: cannot write there on this machine ({e})") from e
    try:
      nodes = [n for n in ray.nodes() if n["Alive"]]
      probe = ray.remote(node_probe)
      refs = {probe.options(num_cpus=0, max_retries=0,
                            scheduling_strategy=NodeAffinitySchedulingStrategy(
                                n["NodeID"], soft=False)).remote(str(probe_dir), token,
                                                                 self.repo): n for n in nodes}
      ready, not_ready = ray.wait(list(refs), num_returns=len(refs), timeout=PROBE_TIMEOUT_S)
      problems, answers = [], []
      for ref in not_ready:
        problems.append(f"node {refs[ref]['NodeManagerAddress']}: no answer to the storage "
                        f"probe in {PROBE_TIMEOUT_S:.0f} s")
        ray.cancel(ref, force=True)
      for ref in ready:
        node = refs[ref]
        try:
          answer = ray.get(ref)
        except ray.exceptions.RayError as e:
          problems.append(f"node {node['NodeManagerAddress']}: the probe failed: "
                          f"{str(e).strip().splitlines()[-1] if str(e).strip() else e!r}")
          continue
        answers.append(answer)
        errors = list(answer["errors"])
        if not errors and not (probe_dir / answer["node_id"]).exists():
          errors.append("its file under --root is not visible on this machine")
        if errors:
          problems.append(f"node {answer['ip']} ({answer['host']}): " + "; ".join(errors))
      if problems:
        raise ValueError(
            f"--root={self.root} must be a folder every node of the cluster sees and can write "
            "(shared storage such as NFS or a FUSE mount, at the same path everywhere), and "
            f"every node needs the repository at {self.repo}:\n  " + "\n  ".join(problems))
      return answers
    finally:
      shutil.rmtree(probe_dir, ignore_errors=True)

  def check_fits(self, nodes) -> None:
    """Warns if no run fits the cluster now: then runs wait for nodes to join (an autoscaler)."""
    if self.tpu_slice:
      return
    fit = [n for n in nodes if all(n["Resources"].get(k, 0.0) >= v
                                   for k, v in self.resources.items())]
    if len(fit) < self.hosts_per_run:
      offers = "; ".join(f"{n['NodeManagerAddress']}: " + ", ".join(
          f"{k} {v:g}" for k, v in sorted(n["Resources"].items())
          if k in self.resources) for n in nodes)
      self.log(f"WARNING: a run needs {self.hosts_per_run} node(s) with {self.resources} each, "
               f"and {len(fit)} node(s) of the cluster have that ({offers}): the runs wait "
               "until such nodes join; lower --resources_per_run / --hosts_per_run otherwise")

  # -- one attempt
  def _argv(self, st: RunState) -> list[str]:
    return st.run.command(st.workdir, self.data, self.python) + self.extra

  def _reserve(self, st: RunState) -> bool:
    """Asks for the attempt's placement group; False if a TPU slice is not free yet."""
    # pylint: disable=g-import-not-at-top
    from ray.util.placement_group import placement_group
    if self.tpu_slice:
      # pylint: disable=g-import-not-at-top
      from ray.util import tpu
      version, topology = self.tpu_slice
      try:
        st.slice_handle = tpu.slice_placement_group(
            topology, version, resources_per_bundle=self.resources if self.resources !=
            DEFAULT_RESOURCES else None, head_reservation_timeout_s=1.0)
      except (TimeoutError, RuntimeError):
        return False  # every slice busy: try again later
      st.pg, st.num_processes = st.slice_handle.placement_group, st.slice_handle.num_hosts
    else:
      n = self.hosts_per_run
      st.pg = placement_group([dict(self.resources) for _ in range(n)],
                              strategy="STRICT_SPREAD" if n > 1 else "PACK")
      st.num_processes = n
    st.ready_ref = st.pg.ready()
    st.status = "waiting"
    return True

  def _bundle_resources(self, st: RunState) -> dict[str, float]:
    if st.slice_handle is not None:
      return dict(st.slice_handle.bundle_resources)
    return self.resources

  def _start(self, st: RunState) -> None:
    """The placement group is ready: one task per bundle, each running one process."""
    ray = self.ray
    # pylint: disable=g-import-not-at-top
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy
    if st.slice_handle is not None:
      st.slice_handle.release_head_pgs()
    st.attempts += 1
    st.results, st.cancelled = {}, False
    st.start_step = workdirs.latest_checkpoint_step(st.workdir)
    bundles = ray.util.placement_group_table(st.pg).get("bundles_to_node_id", {})
    st.hosts = [self._node_ip(bundles[i]) if i in bundles else "?"
                for i in range(st.num_processes)]
    strategy = lambda i: PlacementGroupSchedulingStrategy(
        placement_group=st.pg, placement_group_bundle_index=i)
    coordinator = None
    if st.num_processes > 1:
      coordinator = ray.remote(free_address).options(
          num_cpus=0, max_retries=0, scheduling_strategy=strategy(0)).remote()
    argv = self._argv(st)
    task = ray.remote(run_process)
    opts = task_options(self._bundle_resources(st))
    st.refs = []
    for i in range(st.num_processes):
      log = st.workdir / (workdirs.LOG_FILE if i == 0 else f"train.{i}.log")
      spec = dict(argv=argv, repo=self.repo, log=str(log), process_id=i,
                  num_processes=st.num_processes,
                  header=f"attempt {st.attempts} (ray), process {i} of {st.num_processes}")
      st.refs.append(task.options(max_retries=0, scheduling_strategy=strategy(i),
                                  **opts).remote(spec, coordinator))
    st.status, st.attempt_start = "running", time.monotonic()
    command = shlex.join([("python" if a == NODE_PYTHON else a) for a in argv])
    st.record = dict(
        sweep=self.sweep.name, run=st.run.name, algebra=st.run.algebra,
        settings=st.run.arg_keys, sparsity=st.run.sparsity, variant=st.run.variant,
        metric=self.sweep.metric, command=command, status="running", returncode=None,
        started=st.record.get("started") or _now(), finished=None, wall_s=None,
        git_commit=self.commit, host=st.hosts[0], machine=st.record.get("machine"),
        backend="ray", hosts=st.hosts, num_processes=st.num_processes,
        resources=self._bundle_resources(st), attempts=st.history)
    st.workdir.mkdir(parents=True, exist_ok=True)
    workdirs.write_record(st.workdir / workdirs.RUN_FILE, st.record)
    resume = f", resuming from step {st.start_step}" if st.start_step else ""
    self.log(f"{st.run.name}: started on {', '.join(st.hosts)} (attempt {st.attempts}"
             f"{resume}) -> {st.workdir}")

  def _release(self, st: RunState) -> None:
    # pylint: disable=g-import-not-at-top
    from ray.util.placement_group import remove_placement_group
    try:
      if st.slice_handle is not None:
        st.slice_handle.shutdown()
      elif st.pg is not None:
        remove_placement_group(st.pg)
    except Exception:  # pylint: disable=broad-except
      pass  # the placement group went with its node or the cluster
    st.pg, st.slice_handle, st.ready_ref, st.refs = None, None, None, []

  def _collect(self, st: RunState, ref) -> None:
    """A process of a running attempt finished (or its task failed)."""
    ray = self.ray
    i = st.refs.index(ref)
    try:
      st.results[i] = ray.get(ref)
    except ray.exceptions.TaskCancelledError:
      st.results[i] = {"cancelled": True}
    except ray.exceptions.RayTaskError as e:  # run_process itself raised: say so, do not retry
      st.results[i] = {"error": f"{type(e.cause).__name__}: {e.cause}" if e.cause else str(e)}
    except ray.exceptions.RayError as e:  # the node, the worker or the object went away
      st.results[i] = {"lost": f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"}
    result = st.results[i]
    if not st.cancelled and (result.get("returncode", 0) != 0 or "returncode" not in result):
      st.cancelled = True  # the others cannot go on without it
      for other in st.refs:
        if other is not ref:
          ray.cancel(other, force=True)
    if len(st.results) == len(st.refs):
      self._finish_attempt(st)

  def _finish_attempt(self, st: RunState) -> None:
    results = [st.results[i] for i in range(len(st.refs))]
    attempt_wall = time.monotonic() - st.attempt_start
    st.wall_s += attempt_wall
    codes = [r.get("returncode") for r in results]
    lost = [r["lost"] for r in results if "lost" in r]
    killed = [c for c in codes if c is not None and c < 0]
    errors = [r["error"] for r in results if "error" in r]
    failed = [(i, c) for i, c in enumerate(codes) if c is not None and c > 0]
    step = workdirs.latest_checkpoint_step(st.workdir)
    if lost or killed:
      outcome = "lost"
      why = lost[0] if lost else f"process killed by signal {-killed[0]}"
    elif errors:
      outcome, why = "failed", errors[0]
    elif failed:
      outcome, why = "failed", f"exit {failed[0][1]}" + (
          f" (process {failed[0][0]})" if len(codes) > 1 else "")
    elif workdirs.reached_last_step(st.workdir):
      outcome, why = "done", ""
    else:
      outcome, why = "preempted", f"exit 0 at step {step}, before the last step"
    hosts = [r.get("ip") for r in results if r.get("ip")] or st.hosts
    machine = next((r["machine"] for r in results if r.get("machine")), None)
    st.history.append(dict(attempt=st.attempts, outcome=outcome, why=why, hosts=hosts,
                           returncodes=codes, start_step=st.start_step, end_step=step,
                           wall_s=round(attempt_wall, 1), finished=_now()))
    self._release(st)
    record = st.record
    record.update(returncode=next((c for c in codes if c), codes[0] if codes else None),
                  machine=machine or record.get("machine"), attempts=st.history,
                  wall_s=round(st.wall_s, 1), finished=_now())
    if outcome == "done":
      st.status = record["status"] = "done"
      self.log(f"{st.run.name}: done in {st.wall_s:.0f} s ({st.attempts} attempt(s)) -> "
               f"{st.workdir}")
    elif outcome == "failed":
      failing = failed[0][0] if failed else 0
      log = st.workdir / (workdirs.LOG_FILE if failing == 0 else f"train.{failing}.log")
      tail = log_tail(log)
      st.status = record["status"] = "failed"
      record.update(failure=why, log_tail=tail)
      self.log(f"{st.run.name}: failed ({why}), not retried; last lines of {log}:\n" +
               "\n".join("    | " + line for line in tail.splitlines()))
    else:
      progressed = step > st.start_step
      if outcome == "lost" or not progressed:
        st.retries += 1
      if st.retries > self.max_retries:
        st.status = record["status"] = "failed"
        record.update(failure=f"{outcome} ({why}) after {self.max_retries} retries",
                      log_tail=log_tail(st.workdir / workdirs.LOG_FILE))
        self.log(f"{st.run.name}: {outcome} ({why}); no retries left (--max_retries="
                 f"{self.max_retries}), failed -> {st.workdir}")
      else:
        st.status, record["status"] = "pending", outcome
        if outcome == "preempted" and progressed:
          cost = "a preemption after progress uses no retry"
        else:
          cost = f"retry {st.retries} of {self.max_retries}"
        self.log(f"{st.run.name}: {outcome} on {', '.join(hosts)} after {attempt_wall:.0f} s "
                 f"({why}); checkpoint at step {step}; resubmitted ({cost})")
    workdirs.write_record(st.workdir / workdirs.RUN_FILE, record)

  # -- the loop
  def run(self) -> list[dict]:
    ray = self.ray
    todo = []
    for st in self.states:
      if workdirs.is_finished(st.workdir):
        self.skipped.append(st.run.name)
        self.log(f"{st.run.name}: finished, skipped")
      else:
        todo.append(st)
    self.states = todo
    nodes = [n for n in ray.nodes() if n["Alive"]]
    totals = ray.cluster_resources()
    self.log(f"ray: {len(nodes)} node(s), "
             + ", ".join(f"{k} {v:g}" for k, v in sorted(totals.items())
                         if k in ("CPU", "GPU", "TPU")) +
             f"; {len(todo)} run(s) to launch, each {st_hosts(self)} x "
             f"{self.resources}; root {self.root}")
    if todo:
      self.check_storage()
      self.log(f"storage: every node sees and writes {self.root}")
      self.check_fits(nodes)
    try:
      while any(st.status not in ("done", "failed") for st in self.states):
        tried_slice = False
        for st in self.states:
          if st.status == "pending" and not (self.tpu_slice and tried_slice):
            tried_slice = bool(self.tpu_slice)
            self._reserve(st)
        waiting = {st.ready_ref: st for st in self.states if st.status == "waiting"}
        running = {ref: st for st in self.states if st.status == "running" for ref in st.refs
                   if st.refs.index(ref) not in st.results}
        refs = list(waiting) + list(running)
        if refs:
          ray.wait(refs, num_returns=1, timeout=self.poll_s)
          ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        else:
          time.sleep(self.poll_s)
          ready = []
        for ref in ready:
          if ref in waiting:
            st = waiting[ref]
            try:
              ray.get(ref)
            except ray.exceptions.RayError:  # the group went with a node: ask again
              self._release(st)
              st.status = "pending"
              continue
            self._start(st)
          else:
            self._collect(running[ref], ref)
        if time.monotonic() - self._last_report >= self.report_every_s:
          self.report()
    finally:
      for st in self.states:
        if st.status in ("waiting", "running"):
          for ref in st.refs:
            ray.cancel(ref, force=True)
          self._release(st)
    self.finished = True
    self.report()
    for st in self.states:
      mark = "done  " if st.status == "done" else "FAILED"
      self.log(f"  {mark} {st.workdir}" + (f"  ({st.record.get('failure')})"
                                            if st.status == "failed" else ""))
    return [st.record for st in self.states]


def st_hosts(sweep: RaySweep) -> str:
  if sweep.tpu_slice:
    return f"a TPU {sweep.tpu_slice[0]} {sweep.tpu_slice[1]} slice: its hosts"
  return f"{sweep.hosts_per_run} host(s)"


# ----------------------------------------------------------------------------- entry points
def actor_name(root) -> str:
  """The detached scheduler's name: one per --root."""
  return "sweep-" + hashlib.sha1(str(pathlib.Path(root).absolute()).encode()).hexdigest()[:16]


def connect(address: Optional[str], repo: Optional[str] = None):
  """ray.init to the cluster at `address` (None: $RAY_ADDRESS, a cluster started on this
  machine, else a new one-machine cluster); its workers import this repository."""
  ray = require_ray()
  if not ray.is_initialized():
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
             logging_level=logging.WARNING,
             runtime_env={"env_vars": {"PYTHONPATH": str(repo or sweeps_lib.ROOT)}})
  return ray


class SweepActor:
  """The scheduler of a detached sweep, in a detached actor: the loop runs in a thread."""

  def __init__(self, kwargs: dict[str, Any], linger_s: float = 600.0):
    self.kwargs, self.linger_s = kwargs, linger_s
    self.sweep: Optional[RaySweep] = None
    self.error: Optional[str] = None
    self.thread = threading.Thread(target=self._main, daemon=True)
    self.thread.start()

  def _main(self):
    import ray  # pylint: disable=g-import-not-at-top
    kw = dict(self.kwargs)
    sweep = sweeps_lib.get(kw.pop("sweep_name"))
    runs = sweeps_lib.select(sweep, kw.pop("only"))
    try:
      self.sweep = RaySweep(sweep, runs, log=lambda m: None, **kw)
      self.sweep.run()
    except Exception as e:  # pylint: disable=broad-except
      self.error = f"{type(e).__name__}: {e}"
    time.sleep(self.linger_s)  # room for --attach to read the end, then go
    try:
      ray.kill(ray.get_runtime_context().current_actor, no_restart=True)
    except Exception:  # pylint: disable=broad-except
      os._exit(0)  # pylint: disable=protected-access

  def state(self, since: int = 0) -> dict[str, Any]:
    """New progress lines since `since`, the progress, whether the sweep ended, its error."""
    if self.sweep is None:
      return {"messages": [], "progress": None, "finished": self.error is not None,
              "error": self.error}
    messages = list(self.sweep.messages)
    return {"messages": messages[since:], "progress": self.sweep.progress(),
            "finished": self.sweep.finished or self.error is not None, "error": self.error}


def detach(kwargs: dict[str, Any], address: Optional[str], log=print) -> str:
  """Starts the sweep in a detached actor on this node; returns its name."""
  ray = connect(address, kwargs.get("repo"))
  # pylint: disable=g-import-not-at-top
  from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
  name = actor_name(kwargs["root"])
  try:
    ray.get_actor(name)
  except ValueError:  # none: good
    pass
  else:
    raise ValueError(f"a sweep for --root={kwargs['root']} is already running on this cluster "
                     f"(actor {name}): --attach to follow it, --status to see it")
  actor = ray.remote(SweepActor).options(
      name=name, lifetime="detached", num_cpus=0, max_restarts=0,
      scheduling_strategy=NodeAffinitySchedulingStrategy(
          ray.get_runtime_context().get_node_id(), soft=False))
  handle = actor.remote(kwargs)
  ray.get(handle.state.remote(), timeout=PROBE_TIMEOUT_S)  # it is up
  log(f"detached: the sweep runs in Ray actor {name!r} (namespace {NAMESPACE!r}); follow it "
      "with --attach, see it with --status (same --sweep and --root)")
  return name


def attach(root, address: Optional[str], *, follow: bool, log=print,
           poll_s: float = 2.0) -> Optional[dict[str, Any]]:
  """Prints a detached sweep's progress lines (until it ends if `follow`); its last state, or
  None if no scheduler for `root` is alive."""
  ray = connect(address)
  try:
    handle = ray.get_actor(actor_name(root))
  except ValueError:
    return None
  seen, state = 0, None
  while True:
    try:
      state = ray.get(handle.state.remote(seen), timeout=60)
    except ray.exceptions.RayError:  # it ended (and lingered out) meanwhile
      return state
    for line in state["messages"]:
      log(line)
    seen += len(state["messages"])
    if state["error"]:
      log(f"the detached sweep stopped: {state['error']}")
    if state["finished"] or not follow:
      if state["finished"] and follow:
        ray.kill(handle, no_restart=True)
      return state
    time.sleep(poll_s)


def status_from_records(sweep, runs, root) -> dict[str, list[list[str]]]:
  """Where each run stands from its workdir alone (launch.json, metrics): no cluster needed."""
  out = {k: [] for k in ("done", "running", "failed", "preempted", "lost", "not started")}
  for run in runs:
    workdir = pathlib.Path(root).absolute() / run.name
    record_path = workdir / workdirs.RUN_FILE
    record = {}
    if record_path.exists():
      try:
        record = json.loads(record_path.read_text())
      except json.JSONDecodeError:
        pass
    if workdirs.is_finished(workdir):
      status = "done"
    else:
      status = record.get("status") or "not started"
      status = status if status in out else "running"
    detail = record.get("failure") or (f"on {', '.join(record.get('hosts') or [])}"
                                       if status == "running" else "")
    out[status].append([run.name, str(workdir), detail])
  return out


def format_status(status: dict[str, list[list[str]]]) -> str:
  counts = ", ".join(f"{len(v)} {k}" for k, v in status.items() if isinstance(v, list))
  lines = [counts]
  for kind, rows in status.items():
    if not isinstance(rows, list):
      continue
    for _name, workdir, detail in rows:
      lines.append(f"  {kind:<11} {workdir}" + (f"  ({detail})" if detail else ""))
  return "\n".join(lines)
