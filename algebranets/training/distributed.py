"""Devices and hosts: multi-host start-up, the data-parallel mesh, global batches, RNG streams.

Data parallelism with `jax.jit` over a one-axis `Mesh` ("data") of every device of every host:
parameters and optimiser state are replicated, batches (and the Transformer-XL memories that go
with their rows) are sharded over the batch axis. The same jitted step runs on one CPU, on N
simulated CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=N) and on many hosts;
XLA inserts the gradient all-reduce.

Hosts. Each process reads its own B / P rows of every global batch B (algebranets.data does the
slicing) and `global_batch` assembles the per-host numpy arrays into one global jax.Array with
`jax.make_array_from_process_local_data`: host p's rows are rows [p·B/P, (p+1)·B/P) of the
global batch, on host p's devices.

Batch layout (`batch_layout`, `BatchLayout`). A step computes k micro-batches (gradient
accumulation, `train.microbatches`) of m rows on each of the N devices: B' = N·k·m rows. When
the global batch B is not a multiple of N·k (WikiText-103's 60 on 8 devices), a language model's
batch is padded: each host appends zero-weight rows to its own, so no row changes host, the loss
is exactly the B real rows' and the data pipeline still yields B rows; classification (batch
norm) is not padded and a batch that does not split stops with what to set. Evaluation batches
are padded the same way, with masked rows, so eval.batch_size can be anything.

Per-device RNG streams. A step's key is fold_in(run key, step). With the (default)
partitionable threefry (`jax_threefry_partitionable`), random bits for an array sharded over
the batch are generated shard by shard: every device computes only the bits of its own rows,
from counters that depend on the global position, never on the device count. So each device
has its own stream with no communication, dropout masks do not depend on how many devices there
are, and a run on 8 devices reproduces the run on 1 (tests check this). (Folding the device
index into the key would give streams too, but results would then change with the device count.)
With micro-batches, micro-batch j draws from fold_in(step key, j) (see `step.make_train_step`).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"

# Environment variables read when the corresponding argument is not given.
ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *, auto: bool = False) -> bool:
  """Starts multi-host JAX when asked to; returns whether it did.

  Arguments left out come from $JAX_COORDINATOR_ADDRESS, $JAX_NUM_PROCESSES, $JAX_PROCESS_ID.
  With a coordinator address, all three must be known (e.g. two processes on one machine:
  "127.0.0.1:12345", 2, 0 and 1). Without one, `auto=True` lets JAX detect the cluster (Cloud
  TPU pods, Slurm, Open MPI); otherwise this is a single-process run and nothing happens.
  On CPU the cross-process collectives go through gloo.
  """
  coordinator_address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
  if num_processes is None and os.environ.get(ENV_NUM_PROCESSES):
    num_processes = int(os.environ[ENV_NUM_PROCESSES])
  if process_id is None and os.environ.get(ENV_PROCESS_ID):
    process_id = int(os.environ[ENV_PROCESS_ID])
  if coordinator_address is None and not auto:
    if num_processes not in (None, 1) or process_id not in (None, 0):
      raise ValueError(f"num_processes={num_processes} / process_id={process_id} were given "
                       "without a coordinator address (--coordinator_address or "
                       f"${ENV_COORDINATOR}); give all three, or none for a single process")
    return False
  if coordinator_address is not None and (num_processes is None or process_id is None):
    raise ValueError(f"a coordinator address ({coordinator_address}) needs num_processes and "
                     "process_id too (--num_processes, --process_id or "
                     f"${ENV_NUM_PROCESSES}, ${ENV_PROCESS_ID})")
  if num_processes is not None and (num_processes < 1 or not 0 <= process_id < num_processes):
    raise ValueError(f"process_id must be in [0, num_processes), got {process_id} of "
                     f"{num_processes}")
  # gloo is JAX's default CPU collective backend in recent versions; say so explicitly, as
  # older ones defaulted to none (then cross-process CPU computations fail).
  try:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  except (AttributeError, KeyError, ValueError):  # a JAX without the option
    pass
  jax.distributed.initialize(coordinator_address=coordinator_address,
                             num_processes=num_processes, process_id=process_id)
  return True


def make_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A one-axis data-parallel mesh over `devices` (default: every device of every host).

  `jax.devices()` lists the devices of process 0 first, then process 1, ..., so host p's
  devices hold a contiguous block of the batch, which is what per-host input slicing gives.
  """
  devices = list(jax.devices() if devices is None else devices)
  return Mesh(np.asarray(devices), (DATA_AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
  """Leading (batch) axis split over the devices; other axes whole."""
  return NamedSharding(mesh, P(DATA_AXIS))


@dataclasses.dataclass(frozen=True)
class BatchLayout:
  """Where the rows of a global batch go: devices, hosts, micro-batches and padding rows.

  The step computes on B' = N·k·m rows: N devices, k micro-batches, m rows of each micro-batch
  on each device, m = ceil(B / (N·k)). When B' > B the B' - B extra rows are zero-weight
  padding (`pad`): each host appends its share, B'/P - B/P rows, after its B/P real rows, so
  every host keeps reading exactly its rows of the real batch and no row moves between hosts.
  Tasks whose rows are not independent (batch norm) get no padding: `batch_layout` refuses.

  Attributes:
    batch_size: B, the real rows of one global batch (what the data pipeline yields in all).
    devices: N, the devices of the mesh.
    hosts: P, the processes (each reads B / P rows).
    microbatches: k, the micro-batches a training step accumulates (1 for evaluation).
  """
  batch_size: int
  devices: int
  hosts: int
  microbatches: int = 1

  @property
  def microbatch_rows(self) -> int:
    """m: rows of one micro-batch on one device."""
    return -(-self.batch_size // (self.devices * self.microbatches))

  @property
  def padded_size(self) -> int:
    """B' = N·k·m: the rows of the global arrays the step sees (and of the carry)."""
    return self.devices * self.microbatches * self.microbatch_rows

  @property
  def pad_rows(self) -> int:
    return self.padded_size - self.batch_size

  @property
  def rows_per_host(self) -> int:
    return self.batch_size // self.hosts

  @property
  def padded_rows_per_host(self) -> int:
    return self.padded_size // self.hosts

  def describe(self) -> str:
    text = (f"{self.batch_size} rows on {self.devices} device(s) x {self.microbatches} "
            f"micro-batch(es) of {self.microbatch_rows} row(s) per device")
    if self.pad_rows:
      text += (f", padded with {self.pad_rows} zero-weight row(s) to {self.padded_size} "
               f"({100.0 * self.pad_rows / self.batch_size:.1f}% extra work)")
    return text

  def pad(self, local: Mapping[str, np.ndarray], mask_like: Optional[str] = None) -> dict:
    """This host's batch {name: [B/P, ...]} padded with zero rows to [B'/P, ...].

    A "mask" in `local` (evaluation batches) is padded with False. A training batch has no
    mask: with padding to do, `mask_like` names the array whose shape the mask takes (the
    targets), True on the real rows, so the loss weights the padding rows zero. Without
    padding the batch comes back as it is (no mask: the step is the plain one).
    """
    extra = self.padded_rows_per_host - self.rows_per_host
    out = {k: np.asarray(v) for k, v in local.items()}
    if not extra:
      return out
    if "mask" not in out and mask_like is not None:
      out["mask"] = np.ones(out[mask_like].shape, np.bool_)
    for k, v in out.items():
      if v.shape[0] != self.rows_per_host:
        raise ValueError(f"batch array {k!r} has {v.shape[0]} rows on this host; the layout "
                         f"expects {self.rows_per_host} ({self.batch_size} / {self.hosts} hosts)")
      out[k] = np.concatenate([v, np.zeros((extra,) + v.shape[1:], v.dtype)])
    return out


def multiples_around(value: int, unit: int) -> str:
  """'lo or hi': the multiples of `unit` nearest `value` (for messages saying what to set)."""
  lo, hi = (value // unit) * unit, -(-value // unit) * unit
  return f"{hi}" if lo < 1 or lo == hi else f"{lo} or {hi}"


def batch_layout(batch_size: int, mesh: Mesh, *, microbatches: int = 1,
                 device_batch_size: int = 0, can_pad: bool = True,
                 what: str = "train.batch_size", no_pad_reason: str = "") -> BatchLayout:
  """The BatchLayout of a global batch on `mesh`; ValueError saying what to set if none fits.

  Args:
    batch_size: B, the global batch (`what` names its config field in messages).
    mesh: the data-parallel mesh (N devices); the hosts are jax.process_count().
    microbatches: k (`train.microbatches`); 1 unless `device_batch_size` is given.
    device_batch_size: if > 0, the most rows one device computes at once
      (`train.device_batch_size`): k becomes the fewest micro-batches that keep m at or under
      it (without padding: the fewest that also divide the B / N rows per device).
    can_pad: whether zero-weight padding rows may fill B up to N·k·m (language models,
      evaluation); if not, B must be a multiple of N·k.
    no_pad_reason: why padding is refused, for the message.
  """
  n, p = int(mesh.devices.size), jax.process_count()
  if batch_size < 1:
    raise ValueError(f"{what}={batch_size} must be positive")
  if n % p:
    raise ValueError(f"the mesh has {n} devices, not a multiple of the {p} hosts")
  if batch_size % p:
    raise ValueError(f"{what}={batch_size} must be a multiple of the number of hosts ({p}): "
                     f"every host reads {what} / {p} rows; set {what} to "
                     f"{multiples_around(batch_size, p)}")
  if microbatches < 1:
    raise ValueError(f"train.microbatches must be >= 1, got {microbatches}")
  if device_batch_size < 0:
    raise ValueError(f"train.device_batch_size must be >= 0 (0: no limit), got "
                     f"{device_batch_size}")
  if device_batch_size and microbatches != 1:
    raise ValueError(f"train.microbatches={microbatches} and train.device_batch_size="
                     f"{device_batch_size} were both set; set one of them (the other to its "
                     "default, 1 and 0)")
  per_device = -(-batch_size // n)  # rows one device gets without micro-batches
  k = microbatches
  if device_batch_size:
    k = -(-per_device // device_batch_size)
    if not can_pad and batch_size % n == 0:
      k = min(d for d in range(k, per_device + 1) if per_device % d == 0)
  if k > per_device:
    raise ValueError(f"train.microbatches={k} is more than the {per_device} row(s) each of the "
                     f"{n} device(s) gets of {what}={batch_size}; set train.microbatches to at "
                     f"most {per_device}, or {what} to at least {n * k}")
  if not can_pad and batch_size % (n * k):
    message = (f"{what}={batch_size} does not split evenly over {n} device(s) x {k} "
               f"micro-batch(es){' (' + no_pad_reason + ')' if no_pad_reason else ''}; set "
               f"{what} to {multiples_around(batch_size, n * k)}")
    if batch_size % n == 0 and k > 1:
      fits = [d for d in range(1, per_device + 1) if per_device % d == 0]
      message += (f", or train.microbatches to one of {fits} (divisors of the {per_device} rows "
                  "per device)")
    raise ValueError(message)
  return BatchLayout(batch_size=batch_size, devices=n, hosts=p, microbatches=k)


def global_batch(local: Mapping[str, np.ndarray], mesh: Mesh) -> dict:
  """Per-host batch {name: [Bh, ...]} -> global {name: jax.Array [B, ...]}, batch-sharded."""
  sharding = batch_sharded(mesh)
  count = jax.process_count()
  out = {}
  for name, x in local.items():
    x = np.asarray(x)
    global_shape = (x.shape[0] * count,) + x.shape[1:]
    out[name] = jax.make_array_from_process_local_data(sharding, x, global_shape)
  return out


def to_host(x) -> np.ndarray:
  """A replicated (or fully addressable) jax.Array as numpy, on any host."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    if not x.sharding.is_fully_replicated:
      raise ValueError("to_host needs a replicated array in a multi-process run")
    return np.asarray(x.addressable_data(0))
  return np.asarray(x)


def tree_to_host(tree: Any) -> Any:
  return jax.tree.map(to_host, tree)


def step_rng(rng: jax.Array, step) -> jax.Array:
  """The PRNG key of training step `step`: fold_in(run key, step) (see the module docstring)."""
  return jax.random.fold_in(rng, step)
