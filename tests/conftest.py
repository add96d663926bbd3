"""Settings of the whole test suite: XLA:CPU compiles less, and each program once.

XLA:CPU compilation dominates this suite (small models, a few steps each). Three settings,
made here before JAX starts and inherited by the tests' subprocesses (the CLI, the sweep
launcher's runs, the Ray workers, the multi-device scripts):

* `--xla_backend_optimization_level=0`: LLVM's optimisations of the compiled CPU code off,
  about a quarter off a compile (test_ops' convolutions: 108 s -> 82 s). The same XLA program
  is compiled, without LLVM's optimisations (float rounding may differ in the last bits, within
  every test's tolerance: the suite passes under it); the code runs slower, which the tests'
  tiny sizes do not feel. Speed is measured by the benchmarks, which do not run under pytest.
* `--xla_cpu_use_fusion_emitters=false`: XLA:CPU emits its fusions with the older loop
  emitters, not the MLIR fusion emitters, whose pipeline costs more per fusion (a ResNet-18
  debug train step: 12-13 s -> 8 s of compile; test_train_e2e + test_resnet 161 -> 144 s on two
  workers). A flag of the locked jaxlib (0.10.2): an XLA that drops it stops at start-up with
  "Unknown flag in XLA_FLAGS", so a jax upgrade must recheck it.
* a persistent compilation cache in one directory of the pytest session, shared by the xdist
  workers and the subprocesses ($JAX_COMPILATION_CACHE_DIR): a run and its resumption, the CLI
  and the library, the sweep's runs of one config compile each program once.

`suite_env.xla_flags(devices)` gives the flags for a subprocess that sets its own device count.
"""

import os
import pathlib

from tests import suite_env

os.environ["XLA_FLAGS"] = f"{suite_env.SUITE_XLA_FLAGS} {os.environ.get('XLA_FLAGS', '')}".strip()

# pylint: disable=g-import-not-at-top,wrong-import-position
import jax
from jax.experimental.compilation_cache import compilation_cache as compilation_cache_lib
import pytest
# pylint: enable=g-import-not-at-top,wrong-import-position


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  # xdist workers each have a base temp directory under one shared root: the cache goes there.
  base = tmp_path_factory.getbasetemp()
  root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
  cache = pathlib.Path(root) / "jax_cache"
  cache.mkdir(exist_ok=True)
  before = (jax.config.jax_compilation_cache_dir,
            jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update("jax_compilation_cache_dir", str(cache))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  compilation_cache_lib.reset_cache()  # programs compiled at import time ran without a cache
  env = {"JAX_COMPILATION_CACHE_DIR": str(cache),
         "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0.5"}
  saved_env = {k: os.environ.get(k) for k in env}
  os.environ.update(env)
  yield cache
  jax.config.update("jax_compilation_cache_dir", before[0])
  jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
  compilation_cache_lib.reset_cache()
  for k, v in saved_env.items():
    if v is None:
      os.environ.pop(k, None)
    else:
      os.environ[k] = v


# The longest files, by the seconds of their tests in `pytest -n 2 --durations=0` on a 2-core
# Intel Xeon (2026-12-03): about 190, 140, 130, 110, 95 and 75 s.
LONGEST_FIRST = ("test_ray_launch.py", "test_microbatch.py", "test_accelerator_check.py",
                 "test_faults.py", "test_train_e2e.py", "test_sparsity_training.py")


def pytest_collection_modifyitems(items):
  """The longest files first (LONGEST_FIRST), then the others in collection order.

  The xdist workers take whole files (`--dist loadfile`) in collection order; a long file
  taken last leaves the other worker idle for its length. Longest first keeps both workers
  busy to the end.
  """
  rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
  items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest in order
