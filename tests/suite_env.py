"""The XLA flags of the test suite (set by tests/conftest.py before JAX starts), for the tests'
subprocesses that choose their own number of simulated CPU devices."""

import os

# LLVM's optimisations of XLA:CPU's compiled code off, and its older (simpler) loop emitters
# for fusions: compiles are faster, and the suite is mostly compiles (tests/conftest.py).
SUITE_XLA_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
_DEVICE_COUNT = "--xla_force_host_platform_device_count"


def xla_flags(devices: int = 0) -> str:
  """The suite's XLA flags (without a device count), with `devices` simulated CPU devices if
  > 0."""
  flags = [f for f in os.environ.get("XLA_FLAGS", SUITE_XLA_FLAGS).split()
           if not f.startswith(_DEVICE_COUNT)]
  if devices:
    flags.append(f"{_DEVICE_COUNT}={devices}")
  return " ".join(flags)
