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

Per-device RNG streams. A step's key is fold_in(run key, step). With the (default)
partitionable threefry (`jax_threefry_partitionable`), random bits for an array sharded over
the batch are generated shard by shard: every device computes only the bits of its own rows,
from counters that depend on the global position, never on the device count. So each device
has its own stream with no communication, dropout masks do not depend on how many devices there
are, and a run on 8 devices reproduces the run on 1 (tests check this). (Folding the device
index into the key would give streams too, but results would then change with the device count.)
"""

from __future__ import annotations

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


def check_batch_size(batch_size: int, mesh: Mesh, what: str = "batch_size") -> int:
  """ValueError unless the global batch splits evenly over the devices and the hosts."""
  devices, hosts = mesh.devices.size, jax.process_count()
  if batch_size < 1 or batch_size % devices or batch_size % hosts:
    raise ValueError(f"{what}={batch_size} must be a positive multiple of the number of devices "
                     f"({devices}) and of hosts ({hosts}): the batch is split evenly over them")
  return batch_size


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
