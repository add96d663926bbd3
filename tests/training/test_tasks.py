"""Every registered task implements the declared contract, `tasks.Task`.

`runtime_checkable` alone only sees that the names exist; the signature check here also pins
each method's parameters (names and order) and that `best_metric` and `resolve` can be called
on the class, as the trainer calls them before it builds a task.
"""

import inspect
import types

import pytest

from algebranets.training import tasks
from training_testlib import load_config

_METHODS = [n for n, v in vars(tasks.Task).items()
            if not n.startswith("_") and isinstance(v, (staticmethod, types.FunctionType))]
_ATTRIBUTES = sorted(tasks.Task.__annotations__)


def _parameters(owner, name):
  """(is static, parameter names without self) of owner's method `name`."""
  raw = inspect.getattr_static(owner, name)
  static = isinstance(raw, (staticmethod, classmethod))
  fn = raw.__func__ if static else raw
  names = list(inspect.signature(fn).parameters)
  return static, names if static else names[1:]


def test_the_contract_declares_the_trainers_calls():
  assert set(_METHODS) == {"best_metric", "resolve", "batch_spec", "units", "init",
                           "init_carry", "loss", "eval_sums", "summarize", "cost_report",
                           "costs"}
  assert _ATTRIBUTES == ["can_pad_train", "name", "target_key", "unit"]
  for name in _METHODS:  # one line saying what and the shapes
    doc = getattr(tasks.Task, name).__doc__
    assert doc and len(doc.strip().splitlines()) == 1, name


@pytest.mark.parametrize("key", sorted(tasks.TASKS))
def test_registered_task_class_follows_the_contract(key):
  cls = tasks.TASKS[key]
  assert cls.name == key
  for attr in _ATTRIBUTES:
    assert hasattr(cls, attr), f"{cls.__name__} lacks {attr}"
  for name in _METHODS:
    assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
    want_static, want = _parameters(tasks.Task, name)
    static, got = _parameters(cls, name)
    assert got == want, f"{cls.__name__}.{name}{tuple(got)}: the contract says {tuple(want)}"
    if want_static:  # called on the class, before a task is built
      assert static, f"{cls.__name__}.{name} must be a staticmethod"
  assert list(inspect.signature(cls.__init__).parameters) == ["self", "config", "dataset"]


def _built(key):
  if key == "language_model":
    config = load_config("enwik8_transformer_xl", "r,debug")
    dataset = types.SimpleNamespace(vocab_size=256, seq_len=8, eval_seq_len=8, vocab=None)
  elif key == "classification":
    config = load_config("cifar10_resnet", "r,debug")
    dataset = types.SimpleNamespace(num_classes=10, image_size=16)
  else:
    raise AssertionError(f"no test dataset for the task {key!r}: add one here")
  tasks.get(key).resolve(config, dataset)
  return tasks.build(config, dataset)


@pytest.mark.parametrize("key", sorted(tasks.TASKS))
def test_built_task_is_a_task(key):
  task = _built(key)
  assert isinstance(task, tasks.Task)
  assert not isinstance(object(), tasks.Task)  # the check can fail
