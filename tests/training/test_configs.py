"""Experiment configs: every file parses its argument, has a debug variant and a launch
command; bad algebras, keys and modes stop at once with errors that name the valid choices."""

import json

import pytest

from algebranets import models
from algebranets import saved_run
from algebranets.training import config_lib
from training_testlib import CONFIGS, load_config, run_python

EXPERIMENTS = ("imagenet_resnet50", "imagenet_mobilenet_v1", "cifar10_resnet",
               "enwik8_transformer_xl", "wikitext103_transformer_xl", "quickstart")


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_config_has_a_launch_command_a_debug_variant_and_every_block(name):
  text = (CONFIGS / f"{name}.py").read_text()
  assert f"configs/{name}.py:" in text.split('"""')[1]  # the launch command, in the docstring
  full, debug = load_config(name, "m2r"), load_config(name, "m2r,debug")
  for block in ("task", "model", "data", "train", "eval", "optimizer", "checkpoint",
                "mixed_precision"):
    assert block in full and block in debug
  assert full.algebra == "m2r" and full.experiment == name
  for c in (full, debug):  # the registry key beside the constructor arguments, not among them
    assert c.model_name in {**models.MODELS, **models.LANGUAGE_MODELS} and "name" not in c.model
  # debug is small: fewer steps than the recipe.
  assert 0 < debug.train.num_steps <= 20 < (full.train.num_steps or 10**9)


def test_published_recipes():
  # torchvision's ResNet-50 recipe (configs/imagenet_resnet50.py docstring).
  rn50 = load_config("imagenet_resnet50", "r")
  assert (rn50.optimizer.name, rn50.optimizer.nesterov, rn50.optimizer.lr,
          rn50.optimizer.lr_batch_scale, rn50.train.batch_size, rn50.task.label_smoothing,
          rn50.train.num_epochs) == ("sgd", False, 0.1, 256, 256, 0.0, 90.0)
  assert (rn50.optimizer.schedule, tuple(rn50.optimizer.decay_boundaries),
          rn50.optimizer.warmup_epochs) == ("piecewise", (1 / 3, 2 / 3), 0.0)
  assert (rn50.optimizer.weight_decay, rn50.optimizer.weight_decay_include) == (1e-4, ".*")
  assert (rn50.model.padding, rn50.model.zero_init_last_bn) == ("symmetric", False)
  assert rn50.data.recipe == "inception"
  # GluonCV's mobilenet1.0 recipe (configs/imagenet_mobilenet_v1.py docstring).
  mbv1 = load_config("imagenet_mobilenet_v1", "r")
  assert (mbv1.optimizer.nesterov, mbv1.train.batch_size, mbv1.train.num_epochs,
          mbv1.optimizer.warmup_epochs, mbv1.optimizer.weight_decay,
          mbv1.optimizer.weight_decay_exclude, mbv1.task.label_smoothing,
          mbv1.model.padding) == (True, 1024, 120.0, 5.0, 1e-4, "", 0.1, "symmetric")
  enwik8 = load_config("enwik8_transformer_xl", "r")
  assert (enwik8.model.n_layers, enwik8.model.d_model, enwik8.model.mem_len,
          enwik8.data.seq_len, enwik8.optimizer.lr, enwik8.optimizer.grad_clip_norm) == (
              12, 512, 512, 512, 2.5e-4, 0.25)
  assert enwik8.task.eval_mem_len > enwik8.model.mem_len  # the longer eval memory
  wt103 = load_config("wikitext103_transformer_xl", "r")
  assert (wt103.model.mem_len, wt103.data.seq_len, tuple(wt103.model.cutoffs)) == (
      150, 150, (20000, 40000, 200000))
  cifar = load_config("cifar10_resnet", "r,depth=56")
  assert cifar.model_name == "cifar_resnet56" and cifar.data.recipe == "cifar"
  assert cifar.model.padding == "symmetric"
  assert load_config("cifar10_resnet", "r,preset=small").model.padding == "same"  # as recorded


def test_transformer_xl_recipes_are_the_pytorch_base_scripts():
  # kimiyoung/transformer-xl pytorch/run_{enwik8,wt103}_base.sh + train.py defaults.
  for name, batch, steps in (("enwik8_transformer_xl", 22, 400_000),
                             ("wikitext103_transformer_xl", 60, 200_000)):
    c = load_config(name, "r")
    assert (c.train.batch_size, c.train.num_steps, c.train.eval_every) == (batch, steps, 4000)
    assert (c.optimizer.name, c.optimizer.lr, c.optimizer.schedule, c.optimizer.warmup_steps,
            c.optimizer.end_lr_ratio, c.optimizer.grad_clip_norm) == (
                "adam", 2.5e-4, "cosine", 0, 0.0, 0.25)
    assert (c.model.init, c.model.init_std, c.model.dropout, c.model.dropatt) == (
        "reference", 0.02, 0.1, 0.0)
    assert not c.model.get("untie_r", False) and not c.model.get("pre_lnorm", False)
  assert load_config("enwik8_transformer_xl", "r").data.reference_tokens


def test_argument_parsing():
  args = config_lib.parse_arg("M2R,debug,match=macs,width=0.5")
  assert args == {"algebra": "m2r", "debug": True, "match": "macs", "width": 0.5}
  with pytest.raises(ValueError, match=r"Unknown algebra 'octonion'.*m2r"):
    config_lib.parse_arg("octonion")
  with pytest.raises(ValueError, match=r"unknown config argument key 'depht'.*'match'.*'width'"):
    config_lib.parse_arg("r,depht=3")
  with pytest.raises(ValueError, match=r"unknown config argument 'fast'.*'debug'"):
    config_lib.parse_arg("r,fast")
  assert config_lib.parse_arg("r,match=flops")["match"] == "flops"
  with pytest.raises(ValueError, match=r"Unknown match 'width'; valid: .*params.*flops"):
    config_lib.parse_arg("r,match=width")
  assert config_lib.parse_arg("r,match=width", match_kinds=config_lib.LM_MATCH_KINDS)
  with pytest.raises(ValueError, match=r"must start with an algebra"):
    config_lib.parse_arg("")


_CLI = """
import sys
from algebranets import train
sys.argv = ["algebranets.train"] + sys.argv[1:]
from absl import app
app.run(train.main, flags_parser=train.parse_flags)
"""


@pytest.mark.parametrize("args,expected", [
    (["--config=configs/enwik8_transformer_xl.py:octonion"],
     r"Unknown algebra 'octonion'\. Valid names: r, c, h"),
    (["--config=configs/enwik8_transformer_xl.py:r,size=big"],
     r"unknown config argument key 'size'; valid keys"),
    (["--config=configs/enwik8_transformer_xl.py:r", "--config.optimizer.learning_rate=1"],
     r"config\.optimizer has no key 'learning_rate'.*valid keys: \[.*'lr'"),
    (["--config=configs/enwik8_transformer_xl.py:r", "--mode=fit"],
     r"--mode=fit: value should be one of <train\|eval\|train_and_eval>"),
])
def test_the_command_line_stops_at_once_on_bad_input(args, expected, tmp_path):
  proc = run_python(_CLI, *args, f"--workdir={tmp_path}", timeout=120)
  assert proc.returncode != 0
  assert __import__("re").search(expected, proc.stderr), proc.stderr[-2000:]
  assert not (tmp_path / "checkpoints").exists()


def test_model_name_is_the_registry_key_not_a_constructor_argument(tmp_path):
  with pytest.raises(ValueError, match="model_name='resnet50'"):
    config_lib.base_config(experiment="t", args={"algebra": "r"}, task={"name": "x"},
                           model_name="resnet50", model={"name": "resnet50"}, data={"name": "x"})
  # A run saved before the split (model.name) still reads back, with model_name.
  old = load_config("cifar10_resnet", "r,debug").to_dict()
  old["model"]["name"] = old.pop("model_name")
  (tmp_path / "config.json").write_text(json.dumps(old))
  config = saved_run.read_config(tmp_path)
  assert config.model_name == "cifar_resnet20" and "name" not in config.model
