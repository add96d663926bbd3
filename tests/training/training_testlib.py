"""Helpers shared by the training tests (fixtures are in conftest.py)."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests import suite_env

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
                    env={"XLA_FLAGS": suite_env.xla_flags(devices)})
  assert proc.returncode == 0, proc.stderr[-4000:]
  return json.loads(proc.stdout.split("RESULT", 1)[1])


# ----------------------------------------------------------------------------- step tests
def step_setup(kind: str, mesh, batch_size: int, microbatches: int = 1, *,
               padded_size: int = 0):
  """(task, tx, state, train_step) of a debug model for tests of the jitted train step.

  kind "lm": the enwik8 Transformer-XL debug model without dropout (memories of 8 tokens);
  "resnet": the CIFAR ResNet-20 debug model (batch norm) on 16x16 images. The dataset is a
  stub of the fields the task reads; the optimiser plain SGD with momentum (linear in the
  gradients, so rounding differences stay rounding-sized). `padded_size`: the rows of the
  global arrays (carry) when the batch is padded.
  """
  import types
  import jax
  from algebranets.training import optim, step as step_lib, tasks
  if kind == "lm":
    config = load_config("enwik8_transformer_xl", "r,debug")
    config.model.dropout = 0.0
    dataset = types.SimpleNamespace(vocab_size=256, seq_len=8, eval_seq_len=8, vocab=None)
  elif kind == "resnet":
    config = load_config("cifar10_resnet", "r,debug")
    dataset = types.SimpleNamespace(num_classes=10, image_size=16)
  else:
    raise ValueError(f"unknown kind {kind!r}; kinds: ['lm', 'resnet']")
  tasks.get(config.task.name).resolve(config, dataset)
  config.optimizer.update(name="sgd", lr=0.5, lr_batch_scale=0, momentum=0.9, nesterov=False,
                          schedule="constant", warmup_steps=0, warmup_epochs=0.0,
                          grad_clip_norm=0.0, weight_decay=0.0)
  task = tasks.build(config, dataset)
  tx, schedule = optim.build(config.optimizer, 10, batch_size)
  init, _, shardings = step_lib.make_init(task, tx, mesh, padded_size or batch_size)
  train_step = step_lib.make_train_step(task, tx, schedule, shardings, mesh,
                                        partitionable_rng=False, microbatches=microbatches)
  return task, tx, init(jax.random.PRNGKey(0)), train_step


def random_batch(task, batch_size: int, seed: int) -> dict:
  """A training batch of `task` (numpy): random images and labels, or random tokens."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, spec in task.batch_spec(batch_size, train=True).items():
    if name == "image":
      out[name] = rng.normal(size=spec.shape).astype(np.float32)
    elif name == "label":
      out[name] = rng.integers(0, task.num_classes, spec.shape).astype(np.int32)
    else:
      out[name] = rng.integers(0, 256, spec.shape).astype(np.int32)
  return out


def hand_step(task, tx, params, model_state, opt_state, carry, batch, k: int):
  """One optimiser step of k micro-batches, computed by hand, independently of training.step.

  Micro-batch j is rows j, j+k, ... (with its memory rows); its loss and gradient come from
  jax.value_and_grad of task.loss on those rows alone (its own batch-norm statistics). The
  gradients, losses and new running statistics are averaged over the k micro-batches; the
  new memories are put back in their rows. Returns (params, model_state, opt_state, carry,
  loss) as numpy.
  """
  import jax
  import optax
  to_np = lambda tree: jax.tree.map(np.asarray, tree)
  params, model_state, opt_state, carry = to_np((params, model_state, opt_state, carry))
  batch = {n: np.asarray(x) for n, x in batch.items()}
  grads, states, losses = [], [], []
  new_carry = [np.zeros_like(m) for m in carry]
  loss_and_grad = _jitted_value_and_grad(task)
  for j in range(k):
    b = {n: x[j::k] for n, x in batch.items()}
    c = tuple(m[j::k] for m in carry)
    (loss, (_, state, c)), g = loss_and_grad(params, model_state, c, b, jax.random.PRNGKey(1))
    grads.append(to_np(g))
    states.append(to_np(state))
    losses.append(float(loss))
    for out, m in zip(new_carry, c):
      out[j::k] = np.asarray(m)
  mean = lambda *xs: sum(np.asarray(x, np.float64) for x in xs) / len(xs)
  grads = jax.tree.map(lambda *g: mean(*g).astype(np.float32), *grads)
  model_state = jax.tree.map(mean, *states) if states and jax.tree.leaves(states[0]) else {}
  updates, opt_state = tx.update(grads, opt_state, params)
  params = optax.apply_updates(params, updates)
  return (to_np(params), model_state, to_np(opt_state), tuple(new_carry),
          float(np.mean(losses)))


_VALUE_AND_GRAD = {}


def _jitted_value_and_grad(task):
  """jit(value_and_grad(task.loss)), one per task (compiled once per micro-batch shape)."""
  import jax
  if id(task) not in _VALUE_AND_GRAD:
    _VALUE_AND_GRAD[id(task)] = (task, jax.jit(jax.value_and_grad(task.loss, has_aux=True)))
  return _VALUE_AND_GRAD[id(task)][1]


def assert_trees_close(actual, expected, rtol=1e-5, atol=1e-6, what=""):
  """Every leaf of `actual` close to `expected`'s (same structure)."""
  import jax
  a, b = jax.tree.leaves(actual), jax.tree.leaves(expected)
  assert len(a) == len(b), (what, len(a), len(b))
  for i, (x, y) in enumerate(zip(a, b)):
    np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol,
                               atol=atol, err_msg=f"{what} leaf {i}")
