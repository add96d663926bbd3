"""experiments.launch --backend=ray on a real Ray cluster started inside the tests (no mocks).

Each cluster is a head and one worker node, 1 CPU each, on loopback addresses of this machine:
127.0.0.2 and 127.0.0.3 (Ray replaces 127.0.0.1 and localhost by the machine's routable
address, which these tests stay off). A cluster has its own temp dir and ports and its own
token authentication: RAY_AUTH_MODE=token and a fresh RAY_AUTH_TOKEN for the head, the worker
and the launcher, so nothing is read from or written to ~/.ray (an old ~/.ray/auth_token made
`ray start --address` fail with InvalidAuthToken in Ray 2.60), and no dashboard. Teardown kills
exactly the cluster's processes by PID -- those whose command line names its temp dir or its
GCS address, and their descendants -- even when the test fails; `ray stop` is not used, as it
stops every Ray process of the user, other people's clusters included. Every wait is bounded.

The launcher runs as a subprocess (`python -m experiments.launch ...`), its runs as the
training CLI in subprocesses of Ray workers, all sharing one JAX compilation cache. Checks:
  * the debug_lm sweep runs on both nodes, a rerun skips it, and experiments.collect's table
    matches each workdir's own files;
  * killing the worker node's raylet (by PID) while a run trains there: the run is retried on the
    head, resumes from its checkpoint (its log says so) and ends with the same metrics, bit for
    bit, as its twin that was not interrupted;
  * a 2-process run (two Ray tasks on the two nodes, coordinator on process 0's node) trains like
    the 1-process run of the same config;
  * a bad override fails once, with its error, and is not retried; --detach / --attach /
    --status follow it.
"""

import json
import os
import pathlib
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest

from experiments import collect
from experiments import launch
from experiments import sweeps
from tests import suite_env

from experiments import ray_backend

ROOT = sweeps.ROOT
HEAD_IP, WORKER_IP = "127.0.0.2", "127.0.0.3"
NAMES = [r.name for r in sweeps.get("debug_lm").runs]
D32 = "r_match-none_d32"
START_TIMEOUT_S = 120
LAUNCH_TIMEOUT_S = 900  # a bound, not a speed: the suite runs two test processes at once


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _require_ray():
  """Ray, for the tests that start clusters: skipped without the cluster extra, except in CI
  (which installs it: a missing Ray fails there)."""
  if os.environ.get("CI"):
    import ray  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
  else:
    pytest.importorskip("ray", reason="the Ray backend tests need pip install -e .[cluster]")


class LocalCluster:
  """A Ray head (and worker nodes) on loopback addresses, isolated from ~/.ray (see above)."""

  def __init__(self, jax_cache: pathlib.Path):
    # Short: Ray's unix sockets live under it and their paths must fit in 107 bytes.
    self.tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    self.port = _free_port()
    self.address = f"{HEAD_IP}:{self.port}"
    self.env = {k: v for k, v in os.environ.items()
                if not k.startswith("RAY_") and k != "XLA_FLAGS"}
    self.env.update(XLA_FLAGS=suite_env.xla_flags(),  # one CPU device per process
                    RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=secrets.token_hex(16),
                    RAY_USAGE_STATS_ENABLED="0", JAX_COMPILATION_CACHE_DIR=str(jax_cache),
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0.5")
    self.logs = []

  def start_nodes(self, *nodes) -> None:
    """`ray start` for each (ip, head, num_cpus, argv prefix) at once (a worker waits for the
    head's GCS)."""
    starts = []
    for ip, head, num_cpus, prefix in nodes:
      argv = list(prefix) + [str(pathlib.Path(sys.executable).parent / "ray"), "start",
              f"--node-ip-address={ip}", f"--num-cpus={num_cpus}", f"--temp-dir={self.tmp}",
              "--object-store-memory=80000000", "--include-log-monitor=false",
              "--disable-usage-stats", f"--dashboard-agent-listen-port={_free_port()}"]
      if head:
        argv += ["--head", f"--port={self.port}", "--include-dashboard=false",
                 f"--dashboard-port={_free_port()}", f"--ray-client-server-port={_free_port()}"]
      else:
        argv += [f"--address={self.address}"]
      log = pathlib.Path(self.tmp) / f"start_{ip}_{len(self.logs)}.log"
      self.logs.append(log)
      with open(log, "w") as out:  # a file, not a pipe: Ray's daemons inherit it
        starts.append((log, subprocess.Popen(argv, env=self.env, stdout=out,
                                             stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)))
    try:
      for log, proc in starts:
        assert proc.wait(timeout=START_TIMEOUT_S) == 0, log.read_text()[-3000:]
    finally:
      for _, proc in starts:
        if proc.poll() is None:
          proc.kill()

  def processes(self):
    """This cluster's processes: command line naming its temp dir or GCS address, and their
    descendants (the raylets' workers and agents, the training processes)."""
    import psutil  # pylint: disable=g-import-not-at-top  (a dependency of Ray)
    me = os.getpid()
    roots = []
    for p in psutil.process_iter(["cmdline"]):
      cmdline = p.info["cmdline"] or []
      if p.pid != me and any(self.tmp in a or a.endswith(f"={self.address}") for a in cmdline):
        roots.append(p)
    found = {}
    for p in roots:
      try:
        found.update({q.pid: q for q in [p] + p.children(recursive=True)})
      except psutil.NoSuchProcess:
        pass
    return found

  def raylet(self, ip: str):
    [raylet] = [p for p in self.processes().values()
                if p.name() == "raylet" and f"--node_ip_address={ip}" in p.cmdline()]
    return raylet

  def stop(self) -> None:
    import psutil  # pylint: disable=g-import-not-at-top
    for _ in range(3):  # a dying raylet may still start a worker
      procs = list(self.processes().values())
      if not procs:
        break
      for p in procs:
        try:
          p.kill()
        except psutil.NoSuchProcess:
          pass
      psutil.wait_procs(procs, timeout=15)
    shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def jax_cache(compilation_cache):
  return compilation_cache  # the suite's (tests/conftest.py)


@pytest.fixture(scope="module")
def text_file(tmp_path_factory):
  """20 kB of word-like text (a Zipf draw over a small vocabulary), deterministic."""
  rng = np.random.default_rng(0)
  words = "the of and to in a is that for it as was with be by on not he this are".split()
  text = " ".join(words[min(int(rng.zipf(1.5)) - 1, len(words) - 1)] for _ in range(6000))
  path = tmp_path_factory.mktemp("text") / "corpus.txt"
  path.write_text(text[:20_000])
  return path


def _cluster(jax_cache, worker_prefix=()):
  _require_ray()
  cluster = LocalCluster(jax_cache)
  try:
    cluster.start_nodes((HEAD_IP, True, 1, ()), (WORKER_IP, False, 1, worker_prefix))
  except BaseException:
    cluster.stop()
    raise
  return cluster


@pytest.fixture
def cluster(jax_cache):
  c = _cluster(jax_cache)
  try:
    yield c
  finally:
    c.stop()


def _launcher(cluster, args, out: pathlib.Path, script=None, wait=True):
  """`python -m experiments.launch --backend=ray --address=... ARGS` (or `python -c script ARGS`)
  with the cluster's token; output in `out`. The return code, or the Popen if not `wait`."""
  argv = [sys.executable] + (["-c", script] if script else ["-m", "experiments.launch"])
  argv += ["--backend=ray", f"--address={cluster.address}", "--report_every=10"] + list(args)
  env = dict(cluster.env, PYTHONPATH=str(ROOT))
  f = open(out, "w")  # pylint: disable=consider-using-with
  proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL)
  f.close()
  if not wait:
    return proc
  try:
    return proc.wait(timeout=LAUNCH_TIMEOUT_S)
  finally:
    if proc.poll() is None:
      proc.kill()


def _process_with_arg(parent, arg):
  """The descendant of `parent` with `arg` on its command line."""
  import psutil  # pylint: disable=g-import-not-at-top
  for p in parent.children(recursive=True):
    try:
      if arg in p.cmdline():
        return p
    except psutil.Error:  # gone meanwhile
      pass
  raise AssertionError(f"no process with {arg} under {parent}")


def _record(workdir) -> dict:
  return json.loads((pathlib.Path(workdir) / launch.RUN_FILE).read_text())


def _metrics(workdir, split):
  return [json.loads(line) for line in (pathlib.Path(workdir) / "metrics.jsonl").read_text()
          .splitlines() if json.loads(line)["split"] == split]


def _table_rows(markdown: str):
  """{run name: {column header: cell}} of the results.md table (by name: columns get added)."""
  rows, columns = {}, None
  for line in markdown.splitlines():
    if line.startswith("| run |"):
      columns = [c.strip() for c in line.strip("|").split("|")][1:]
    m = re.match(r"\| `([^`]+)` \|(.*)\|$", line)
    if m:
      rows[m.group(1)] = dict(zip(columns, (c.strip() for c in m.group(2).split("|"))))
  return rows


# ----------------------------------------------------------------------------- the sweep
@pytest.fixture(scope="module")
def debug_lm_on_ray(jax_cache, text_file, tmp_path_factory):
  """The debug_lm sweep through --backend=ray on its own cluster, launched twice (the second
  time every run is finished): (root, first output, second output, return codes)."""
  tmp = tmp_path_factory.mktemp("sweep")
  root = tmp / "runs"
  cluster = _cluster(jax_cache)
  try:
    args = ["--sweep=debug_lm", f"--root={root}", f"--data=text={text_file}"]
    rc1 = _launcher(cluster, args, tmp / "out1.txt")
    rc2 = _launcher(cluster, args, tmp / "out2.txt")
  finally:
    cluster.stop()
  return root, (tmp / "out1.txt").read_text(), (tmp / "out2.txt").read_text(), (rc1, rc2)


@pytest.mark.slow  # starts a Ray cluster and trains
def test_debug_lm_sweep_runs_on_both_nodes_and_collects(debug_lm_on_ray, tmp_path):
  root, out, again, codes = debug_lm_on_ray
  assert codes == (0, 0), out[-5000:]
  assert "storage: every node sees and writes" in out
  hosts = set()
  for name in NAMES:
    record = _record(root / name)
    assert record["status"] == "done" and record["backend"] == "ray", record
    assert [a["outcome"] for a in record["attempts"]] == ["done"]
    assert record["returncode"] == 0 and record["wall_s"] > 0
    hosts.update(record["hosts"])
    assert f"{name}: done in" in out
  assert hosts == {HEAD_IP, WORKER_IP}  # two 1-CPU nodes: two runs at a time, one per node
  assert re.search(r"progress: 4/4 done, 0 running, 0 waiting for resources, 0 failed", out)
  assert all(f"{n}: finished, skipped" in again for n in NAMES)
  assert "0 run(s) launched, 0 failed" in again

  # experiments.collect, unchanged, against each workdir's own files.
  rows = {r.run: r for r in collect.write(root, tmp_path, title="debug on ray")}
  assert sorted(rows) == sorted(NAMES)
  table = _table_rows((tmp_path / "results.md").read_text())
  for name in NAMES:
    final = _metrics(root / name, "test")[-1]
    model = json.loads((root / name / "model.json").read_text())
    config = json.loads((root / name / "config.json").read_text())
    assert final["step"] == config["train"]["num_steps"] == 20
    row = table[name]
    assert row["params"] == f"{model['params']:,}"
    assert row["MACs/token"] == f"{model['macs_per_token']:,.0f}"
    assert row["all MACs/token"] == f"{model['all_macs_per_token']:,.0f}"
    assert row["test/bpc"] == f"{final['bpc']:.4g}"
    assert row["steps"] == "20"
    assert row["width / d_model"] == f"d_model {config['model']['d_model']}"
    assert rows[name].value == final["bpc"] < 8.0


# ----------------------------------------------------------------------------- a lost node
# Two identical long runs (twins "a" and "b"): one per node. Once the worker node's run has
# saved a checkpoint, its trainer is frozen (SIGSTOP: it cannot finish meanwhile) and the node's
# raylet killed (SIGKILL); the other twin is the uninterrupted reference. 500 steps: about 7 s
# of training (70 steps/s on one core) after the first checkpoint at step 25 for the test to see
# it and freeze the run, which it does within 0.05 s.
TWIN_STEPS = 500
_TWINS = r"""
import sys
from experiments import launch, sweeps
over = (("train.num_steps", %d), ("train.checkpoint_every", 25), ("train.log_every", 50))
sweeps.SWEEPS["twins"] = sweeps.Sweep(
    "twins", "two identical debug runs", tuple(
        sweeps.Run("configs/char_transformer_xl.py", "r,debug,match=none,path={text}", over,
                   variant=v) for v in ("a", "b")),
    metric="test/bpc", data=(("text", "a text file"),))
sys.exit(launch.main(sys.argv[1:]))
""" % TWIN_STEPS


@pytest.mark.slow  # starts a Ray cluster and trains
def test_a_run_on_a_killed_node_resumes_elsewhere_and_ends_like_its_twin(
    cluster, text_file, tmp_path):
  root = tmp_path / "runs"
  raylet = cluster.raylet(WORKER_IP)
  proc = _launcher(cluster, ["--sweep=twins", f"--root={root}", f"--data=text={text_file}",
                             "--max_retries=2"], tmp_path / "out.txt", script=_TWINS, wait=False)
  out = tmp_path / "out.txt"
  try:
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    victim = trainer = None
    while trainer is None:  # the twin on the worker node, once it has saved a step
      assert proc.poll() is None and time.monotonic() < deadline, out.read_text()[-5000:]
      for name in ("r_match-none_a", "r_match-none_b"):
        wd = root / name
        if (wd / launch.RUN_FILE).exists() and _record(wd)["hosts"] == [WORKER_IP]:
          assert _record(wd)["status"] == "running", "it ended before it could be killed"
          if launch.latest_checkpoint_step(wd) > 0:
            victim = name
            trainer = _process_with_arg(raylet, f"--workdir={wd}")
      time.sleep(0.05)
    # Freeze the trainer (a hung node), so that it is surely mid-way, then kill the node.
    trainer.send_signal(signal.SIGSTOP)
    killed_after = launch.latest_checkpoint_step(root / victim)
    raylet.send_signal(signal.SIGKILL)
    rc = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
  finally:
    if proc.poll() is None:
      proc.kill()
  text = out.read_text()
  assert rc == 0, text[-5000:]
  twin = "r_match-none_b" if victim.endswith("_a") else "r_match-none_a"
  record = _record(root / victim)
  assert record["status"] == "done"
  first, second = record["attempts"]
  assert first["outcome"] == "lost" and "NodeDied" in first["why"], first
  assert first["hosts"] == [WORKER_IP] and second["hosts"] == [HEAD_IP]
  resumed_at = second["start_step"]
  assert killed_after <= resumed_at < TWIN_STEPS
  log = (root / victim / launch.LOG_FILE).read_text()
  assert f"resuming at step {resumed_at} of {TWIN_STEPS}" in log
  assert f"{victim}: lost on {WORKER_IP}" in text and "resubmitted (retry 1 of 2" in text
  assert [a["outcome"] for a in _record(root / twin)["attempts"]] == ["done"]
  # The same numbers as the uninterrupted twin: every logged training step and the evals.
  for split in ("train", "valid", "test"):
    ours, theirs = _metrics(root / victim, split), _metrics(root / twin, split)
    assert [r["step"] for r in ours] == [r["step"] for r in theirs]
    assert [r["loss" if split == "train" else "bpc"] for r in ours] == \
        [r["loss" if split == "train" else "bpc"] for r in theirs]
  assert _metrics(root / victim, "test")[-1]["step"] == TWIN_STEPS


# ----------------------------------------------------------------------------- 2 processes
def _params(workdir, step=20):
  """The checkpoint's parameters as {path: numpy array}, read without the run's config."""
  import jax  # pylint: disable=g-import-not-at-top
  import orbax.checkpoint as ocp  # pylint: disable=g-import-not-at-top
  path = pathlib.Path(workdir) / "checkpoints" / str(step) / "state"
  with ocp.PyTreeCheckpointer() as checkpointer:
    meta = checkpointer.metadata(path)
    tree = meta.item_metadata.tree if hasattr(meta, "item_metadata") else meta.tree
    args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), tree)
    state = checkpointer.restore(path, restore_args=args)
  return {jax.tree_util.keystr(k): v for k, v in
          jax.tree_util.tree_flatten_with_path(state["params"])[0]}


@pytest.mark.slow  # starts a Ray cluster and trains
def test_a_two_process_run_on_two_nodes_trains_like_one_process(
    cluster, debug_lm_on_ray, text_file, tmp_path):
  reference = debug_lm_on_ray[0] / D32  # the 1-process run of the same config
  root = tmp_path / "runs"
  rc = _launcher(cluster, ["--sweep=debug_lm", f"--root={root}", f"--data=text={text_file}",
                           f"--only=^{D32}$", "--hosts_per_run=2"], tmp_path / "out.txt")
  text = (tmp_path / "out.txt").read_text()
  assert rc == 0, text[-5000:]
  wd = root / D32
  record = _record(wd)
  assert record["status"] == "done" and record["num_processes"] == 2
  [attempt] = record["attempts"]
  assert attempt["returncodes"] == [0, 0]
  assert sorted(attempt["hosts"]) == [HEAD_IP, WORKER_IP]  # STRICT_SPREAD: one per node
  log0, log1 = (wd / launch.LOG_FILE).read_text(), (wd / "train.1.log").read_text()
  coordinator = f"--coordinator_address={attempt['hosts'][0]}:"
  assert coordinator in log0 and coordinator in log1
  assert "--num_processes=2 --process_id=0" in log0 and "--process_id=1" in log1
  assert "on 2 device(s), 2 process(es)" in log0
  # The existing multi-device / multi-process criteria: the same training (float32 rounding
  # apart: the gradient is summed over two processes), one checkpoint, one metrics writer.
  two, one = _metrics(wd, "train"), _metrics(reference, "train")
  assert [r["step"] for r in two] == [r["step"] for r in one] == [5, 10, 15, 20]
  np.testing.assert_allclose([r["loss"] for r in two], [r["loss"] for r in one], rtol=2e-6)
  for split in ("valid", "test"):
    np.testing.assert_allclose(_metrics(wd, split)[-1]["bpc"], _metrics(reference, split)[-1]
                               ["bpc"], rtol=1e-5)
  p2, p1 = _params(wd), _params(reference)
  assert sorted(p2) == sorted(p1) and p1
  for k in p1:
    np.testing.assert_allclose(p2[k], p1[k], rtol=1e-4, atol=1e-6, err_msg=k)


# ----------------------------------------------------------------------------- failures
@pytest.mark.slow  # starts a Ray cluster and trains
def test_a_bad_override_fails_once_and_a_preempted_run_is_resubmitted(
    cluster, text_file, tmp_path):
  # A bad override, detached, then followed (--attach) and queried (--status).
  root = tmp_path / "bad"
  args = ["--sweep=debug_lm", f"--root={root}", f"--data=text={text_file}",
          f"--only=^{D32}$", "--config.train.no_such_key=1"]
  assert _launcher(cluster, args + ["--detach"], tmp_path / "detach.txt") == 0
  assert "detached: the sweep runs in Ray actor" in (tmp_path / "detach.txt").read_text()
  rc = _launcher(cluster, args + ["--attach"], tmp_path / "attach.txt")
  text = (tmp_path / "attach.txt").read_text()
  assert rc == 1, text
  assert text.count(f"{D32}: failed (exit 1), not retried") == 1, text
  assert "config.train has no key 'no_such_key'" in text  # the log tail, printed
  record = _record(root / D32)
  assert record["status"] == "failed" and record["returncode"] == 1
  assert [a["outcome"] for a in record["attempts"]] == ["failed"]
  assert "no_such_key" in record["log_tail"]
  assert (root / D32 / launch.LOG_FILE).read_text().count("\n=== ") == 1  # started once
  rc = _launcher(cluster, args + ["--status"], tmp_path / "status.txt")
  status = (tmp_path / "status.txt").read_text()
  assert rc == 1 and "1 failed" in status and f"failed      {root / D32}" in status, status

  # A run stopped as if by SIGTERM at step 10 (the trainer saves and exits 0) is resubmitted
  # and resumes there; a preemption that made progress costs no retry.
  root = tmp_path / "preempted"
  rc = _launcher(cluster, ["--sweep=debug_lm", f"--root={root}", f"--data=text={text_file}",
                           f"--only=^{D32}$", "--config.train.preempt_at_step=10",
                           "--max_retries=0"], tmp_path / "preempted.txt")
  text = (tmp_path / "preempted.txt").read_text()
  assert rc == 0, text
  record = _record(root / D32)
  assert [(a["outcome"], a["returncodes"], a["start_step"], a["end_step"])
          for a in record["attempts"]] == [("preempted", [0], 0, 10), ("done", [0], 10, 20)]
  assert "resuming at step 10 of 20" in (root / D32 / launch.LOG_FILE).read_text()
  assert "a preemption after progress uses no retry" in text


# ----------------------------------------------------------------------------- storage
@pytest.mark.slow  # starts a Ray cluster
def test_the_launcher_stops_if_a_node_does_not_see_root_or_the_repository(
    jax_cache, text_file, tmp_path):
  if subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30).returncode:
    pytest.skip("needs `unshare -m` (root) to give a node its own view of --root")
  root = tmp_path / "runs"
  root.mkdir()
  # The worker node (its raylet, workers and their tasks) sees an empty tmpfs at --root: as a
  # node without the shared file system would.
  hide = ["unshare", "-m", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"', str(root)]
  cluster = _cluster(jax_cache, worker_prefix=hide)
  try:
    args = ["--sweep=debug_lm", f"--root={root}", f"--data=text={text_file}", f"--only=^{D32}$"]
    assert _launcher(cluster, args, tmp_path / "out.txt") == 2
    err = (tmp_path / "out.txt").read_text()
    assert "must be a folder every node of the cluster sees and can write" in err, err
    assert f"node {WORKER_IP} " in err and "cannot read the launcher's probe file" in err
    assert f"node {HEAD_IP}" not in err
    assert not (root / D32).exists() and list(root.iterdir()) == []  # nothing ran, no probe left
    # No repository where --repo says: every node fails to load the launcher's code.
    assert _launcher(cluster, args + [f"--repo={tmp_path / 'nowhere'}"],
                     tmp_path / "out2.txt") == 2
    err = (tmp_path / "out2.txt").read_text()
    assert f"every node needs the repository at {tmp_path / 'nowhere'}" in err, err
    assert f"node {HEAD_IP}" in err and f"node {WORKER_IP}" in err
  finally:
    cluster.stop()


# ----------------------------------------------------------------------------- no cluster
def test_resources_per_run_are_parsed_into_ray_options():
  assert ray_backend.parse_resources(None) == {"CPU": 1.0}
  res = ray_backend.parse_resources("CPU=8,GPU=1,memory=4e9,TPU=4,slice-a=1")
  assert res == {"CPU": 8.0, "GPU": 1.0, "memory": 4e9, "TPU": 4.0, "slice-a": 1.0}
  assert ray_backend.task_options(res) == {
      "num_cpus": 8.0, "num_gpus": 1.0, "memory": 4e9, "resources": {"TPU": 4.0, "slice-a": 1.0}}
  assert ray_backend.task_options({"TPU": 4.0}) == {"num_cpus": 0.0, "num_gpus": 0.0,
                                                    "resources": {"TPU": 4.0}}
  for bad, match in (("CPU", "NAME=AMOUNT"), ("GPU=x", "NAME=AMOUNT"), ("GPU=-1", "NAME=AMOUNT"),
                     ("CPU=1,CPU=2", "names CPU twice"), ("CPU=0", "asks for nothing")):
    with pytest.raises(ValueError, match=match):
      ray_backend.parse_resources(bad)
  assert ray_backend.parse_tpu_slice("v5p:2x2x4") == ("v5p", "2x2x4")
  with pytest.raises(ValueError, match="ACCELERATOR_VERSION:TOPOLOGY"):
    ray_backend.parse_tpu_slice("v4-16")


def test_launcher_flags_of_the_ray_backend(capsys, tmp_path):
  with pytest.raises(SystemExit):
    launch.main(["--sweep=debug_lm", "--data=text=/x", "--hosts_per_run=2"])
  assert "--hosts_per_run go with --backend=ray" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    launch.main(["--sweep=debug_lm", "--data=text=/x", "--backend=ray", "--tpu_slice=v4"])
  assert "--tpu_slice expects" in capsys.readouterr().err
  # Without Ray installed: one clear error naming the extra (a subprocess that hides Ray).
  code = ("import sys; sys.modules['ray'] = None\nfrom experiments import launch\n"
          "sys.exit(launch.main(sys.argv[1:]))")
  out = subprocess.run([sys.executable, "-c", code, "--sweep=debug_lm", "--data=text=/x",
                        f"--root={tmp_path}", "--backend=ray"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert out.returncode == 2
  assert "--backend=ray needs Ray" in out.stderr and "pip install -e '.[cluster]'" in out.stderr


def test_status_is_read_from_the_workdirs_without_a_cluster(capsys, tmp_path):
  names = NAMES
  (tmp_path / names[0]).mkdir()
  (tmp_path / names[0] / launch.RUN_FILE).write_text(json.dumps({"status": "done"}))
  (tmp_path / names[1]).mkdir()
  (tmp_path / names[1] / launch.RUN_FILE).write_text(json.dumps(
      {"status": "running", "hosts": ["10.0.0.7", "10.0.0.8"]}))
  (tmp_path / names[2]).mkdir()
  (tmp_path / names[2] / launch.RUN_FILE).write_text(json.dumps(
      {"status": "failed", "failure": "exit 1"}))
  assert launch.main(["--sweep=debug_lm", f"--root={tmp_path}", "--status"]) == 1
  out = capsys.readouterr().out
  assert out.splitlines()[0] == "1 done, 1 running, 1 failed, 0 preempted, 0 lost, 1 not started"
  assert f"running     {tmp_path / names[1]}  (on 10.0.0.7, 10.0.0.8)" in out
  assert f"failed      {tmp_path / names[2]}  (exit 1)" in out
  assert f"not started {tmp_path / names[3]}" in out


def test_a_run_reached_its_last_step_by_its_evals_or_its_checkpoints(tmp_path):
  """How both backends tell a finished trainer from a preempted one (both exit 0)."""
  wd = tmp_path / "run"
  assert not launch.reached_last_step(wd) and launch.latest_checkpoint_step(wd) == 0
  wd.mkdir()
  (wd / "config.json").write_text(json.dumps({"train": {"num_steps": 20}}))
  for name in ("10", "15.orbax-checkpoint-tmp-3"):  # a save in flight is not a step
    (wd / "checkpoints" / name).mkdir(parents=True)
  assert launch.latest_checkpoint_step(wd) == 10 and not launch.reached_last_step(wd)
  (wd / "checkpoints" / "20").mkdir()  # --mode=train: no evals, a checkpoint at the last step
  assert launch.reached_last_step(wd)
  other = tmp_path / "evaluated"
  other.mkdir()
  (other / "config.json").write_text(json.dumps({"train": {"num_steps": 20}}))
  (other / "metrics.jsonl").write_text(json.dumps({"split": "test", "step": 20}) + "\n")
  assert launch.reached_last_step(other)


def test_nothing_in_the_library_imports_ray():
  hits = [str(p.relative_to(ROOT)) for p in (ROOT / "algebranets").rglob("*.py")
          if re.search(r"^\s*(import ray|from ray)\b", p.read_text(), re.M)]
  assert hits == []
  code = ("import sys, algebranets.training.train, algebranets.train, experiments.launch\n"
          "assert 'ray' not in sys.modules, 'ray imported'")
  subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120,
                 env=dict(os.environ, PYTHONPATH=str(ROOT)))
