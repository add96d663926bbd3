"""Fixtures of the training tests: small files in the real formats and a compile cache.

XLA:CPU compilation dominates these tests, and several tests compile the same programs (a run
and its resumption, the CLI and the library): a persistent compilation cache, in a temporary
directory of the session and shared with the tests' subprocesses through
$JAX_COMPILATION_CACHE_DIR, compiles each program once.
"""

import os
import zipfile

import jax
from jax.experimental.compilation_cache import compilation_cache as compilation_cache_lib
import numpy as np
import pytest

from training_testlib import text_bytes


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory):
  cache = tmp_path_factory.mktemp("jax_cache")
  before = (jax.config.jax_compilation_cache_dir,
            jax.config.jax_persistent_cache_min_compile_time_secs)
  jax.config.update("jax_compilation_cache_dir", str(cache))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
  compilation_cache_lib.reset_cache()  # earlier tests may have compiled without a cache
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


@pytest.fixture(scope="session")
def enwik8_zip(tmp_path_factory):
  """An enwik8.zip holding one member 'enwik8' of 24,000 bytes (split 90/5/5 proportionally)."""
  path = tmp_path_factory.mktemp("enwik8") / "enwik8.zip"
  with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
    zf.writestr("enwik8", text_bytes(24_000))
  return path


@pytest.fixture(scope="session")
def byte_file(tmp_path_factory):
  path = tmp_path_factory.mktemp("bytes") / "corpus.txt"
  path.write_bytes(text_bytes(24_000))
  return path


@pytest.fixture(scope="session")
def wikitext_dir(tmp_path_factory):
  """wikitext-103/wiki.{train,valid,test}.tokens: 40 word types, lines ending in <eos>."""
  root = tmp_path_factory.mktemp("wt103") / "wikitext-103"
  root.mkdir()
  rng = np.random.default_rng(0)
  words = [f"w{i}" for i in range(39)] + ["<unk>"]
  for split, lines in (("train", 300), ("valid", 30), ("test", 30)):
    text = []
    for _ in range(lines):
      n = int(rng.integers(3, 12))
      # Zipf-like counts, so the adaptive-softmax clusters see a skewed vocabulary.
      text.append(" " + " ".join(words[min(int(rng.zipf(1.3)) - 1, 39)] for _ in range(n)))
    (root / f"wiki.{split}.tokens").write_text("\n".join(text) + "\n", encoding="utf-8")
  return root
