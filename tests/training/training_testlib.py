"""Helpers shared by the training tests (fixtures are in conftest.py)."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "configs"


def load_config(name: str, arg: str):
  """configs/<name>.py's get_config(arg), loaded by path as config_flags does."""
  spec = importlib.util.spec_from_file_location(f"config_{name}", CONFIGS / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


_WORDS = ("the of and to in a is that for it as was with be by on not he this are or his "
          "from at which but have an they you were her she there one all we their algebra "
          "network weight matrix element product layer train").split()


def text_bytes(n: int, seed: int = 0) -> bytes:
  """n bytes of word-like text (Zipf-distributed words, sentences), deterministic."""
  rng = np.random.default_rng(seed)
  out, size = [], 0
  while size < n:
    words = [_WORDS[min(int(rng.zipf(1.5)) - 1, len(_WORDS) - 1)]
             for _ in range(int(rng.integers(4, 14)))]
    sentence = " ".join(words).capitalize() + ". "
    out.append(sentence)
    size += len(sentence)
  return "".join(out).encode()[:n]


def write_image_folder(root: pathlib.Path, splits, classes=("ant", "bee", "cat"), per_class=4,
                       size=40, fmt="png"):
  """root/<split>/<label>/<i>.<fmt>: constant images whose colour depends on the label."""
  tf = pytest.importorskip("tensorflow")
  for split in splits:
    for c, label in enumerate(classes):
      d = root / split / label
      d.mkdir(parents=True, exist_ok=True)
      for i in range(per_class):
        pixels = np.full((size, size + 8, 3), 40 * c + 5 * i, np.uint8)
        encoded = (tf.io.encode_png(pixels) if fmt == "png" else
                   tf.io.encode_jpeg(pixels, quality=90))
        (d / f"{i:03d}.{fmt}").write_bytes(encoded.numpy())
  return root


def run_python(script: str, *args, env=None, timeout=300):
  """Runs `python -c script args` from the repository root; returns the CompletedProcess."""
  here = str(pathlib.Path(__file__).resolve().parent)
  full_env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), here]), **(env or {}))
  return subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=full_env,
                        capture_output=True, text=True, timeout=timeout)


def run_on_devices(script: str, *args, devices: int, timeout=600) -> dict:
  """Runs `script` with `devices` simulated CPU devices; returns the JSON it printed after
  "RESULT" (failing the test, with the script's stderr, if it exits non-zero)."""
  proc = run_python(script, *args, timeout=timeout,
                    env={"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"})
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.split("RESULT", 1)[1])
