"""`python -m algebranets.costs --config=...` (algebranets.cost_report): the cost of exactly the
model a config trains. Checked against the trainer itself -- the dataset built from files in
the real formats, `train.resolve_config` (traced matching), then the task's own traced
`costs()`, the numbers it writes to model.json -- and against independently traced models."""

import importlib.util
import json
import pathlib
import zipfile

import numpy as np
import pytest

from algebranets import cost_report
from algebranets.models import transformer_xl as txl
from algebranets.training import tasks
from algebranets.training import train

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _config(name: str, arg: str):
  spec = importlib.util.spec_from_file_location(f"config_{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _text(n: int, seed: int = 0) -> bytes:
  rng = np.random.default_rng(seed)
  words = "the of and to in a is that for algebra network weight\nmatrix element".split(" ")
  return " ".join(words[min(int(rng.zipf(1.5)) - 1, len(words) - 1)]
                  for _ in range(n // 3)).encode()[:n]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  (root / "corpus.txt").write_bytes(_text(20_000))
  with zipfile.ZipFile(root / "enwik8.zip", "w") as zf:
    zf.writestr("enwik8", _text(24_000, seed=1))
  wt = root / "wikitext-103"
  wt.mkdir()
  rng = np.random.default_rng(0)
  vocab = [f"w{i}" for i in range(39)] + ["<unk>"]
  for split, lines in (("train", 200), ("valid", 20), ("test", 20)):
    text = [" " + " ".join(vocab[min(int(rng.zipf(1.3)) - 1, 39)] for _ in range(8))
            for _ in range(lines)]
    (wt / f"wiki.{split}.tokens").write_text("\n".join(text) + "\n")
  for split in ("train", "test"):                 # listed, never decoded: empty files do
    for label in ("ant", "bee", "cat"):
      (root / "images" / split / label).mkdir(parents=True)
      (root / "images" / split / label / "0.png").write_bytes(b"")
  return root


def _trainer_costs(config):
  """(resolved model block, model.json sizes) as the trainer computes them (traced)."""
  dataset = train.build_dataset(config)
  resolved = train.resolve_config(config, dataset)
  return resolved.model.to_dict(), tasks.build(resolved, dataset).costs()


@pytest.mark.parametrize("name,arg,load_data", [
    ("char_transformer_xl", "m2r,debug,match=params,path={data}/corpus.txt", False),
    ("char_transformer_xl", "h,debug,match=flops,path={data}/corpus.txt", False),
    ("quickstart", "cross3,debug", False),
    ("enwik8_transformer_xl", "c,debug,match=params", True),
    pytest.param("wikitext103_transformer_xl", "m2r,debug,match=flops", True,
                 marks=pytest.mark.slow),   # the traced matching takes ~20 s
    ("cifar10_resnet", "m2r,debug,match=params,preset=small,width=0.5,folder={data}/images",
     False),
])
def test_config_costs_are_the_trainers(data, name, arg, load_data):
  config = _config(name, arg.format(data=data))
  if name == "enwik8_transformer_xl":
    config.data.path = str(data / "enwik8.zip")
    config.data.reference_tokens = True           # the symbols of this file: data needed
  if name == "wikitext103_transformer_xl":
    config.data.path = str(data / "wikitext-103")
  if name == "cifar10_resnet":
    config.match_tolerance = 0.1
  model, sizes = _trainer_costs(config)
  got = cost_report.config_costs(config, load_data=load_data)
  assert not got.traced
  assert got.config.model.to_dict() == model      # same matched width / d_model ...
  per = got.per_unit()
  for key, value in sizes.items():
    assert per[key] == pytest.approx(value, rel=1e-12), key


def test_config_costs_know_the_paper_datasets_without_their_data():
  # enwik8 reference tokens: 204 symbols; WikiText-103: 267,735 words; ImageNet: 1000 classes.
  enwik8 = cost_report.config_costs(_config("enwik8_transformer_xl", "r"))
  assert enwik8.config.model.vocab_size == 204
  traced = txl.model_costs(dict(txl.PRESETS["enwik8_base"], vocab_size=204), "r", seq_len=512)
  assert (enwik8.sizes.params, enwik8.sizes.all_macs) == (traced.total_params, traced.all_macs)
  bytes_ = _config("enwik8_transformer_xl", "r")
  bytes_.data.reference_tokens = False
  assert cost_report.config_costs(bytes_).config.model.vocab_size == 256
  wt103 = cost_report.config_costs(_config("wikitext103_transformer_xl", "r"))
  assert wt103.config.model.vocab_size == 267_735 and wt103.sizes.params == 151_107_538
  rn50 = cost_report.config_costs(_config("imagenet_resnet50", "m2r,match=params"))
  assert rn50.config.model.num_classes == 1000 and rn50.info.train_examples == 1_281_167
  assert rn50.size == "width 0.4787" and rn50.sizes.params == 25_571_128


def test_missing_data_and_bad_input_are_clear_errors(data, tmp_path):
  config = _config("cifar10_resnet", f"r,debug,folder={tmp_path / 'nowhere'}")
  with pytest.raises(FileNotFoundError, match="label directories give the number of classes"):
    cost_report.config_costs(config)
  config = _config("char_transformer_xl", "r,debug")
  with pytest.raises(FileNotFoundError, match="--load_data reads the data"):
    cost_report.config_costs(config, load_data=True)
  with pytest.raises(ValueError, match="valid keys: .*'d_model'"):
    cost_report.apply_override(config, "model.d_modle", "3")
  with pytest.raises(FileNotFoundError, match="no config file configs/nope.py"):
    cost_report.main(["--config=configs/nope.py:r"])


def test_cli_config_per_algebra_with_overrides(capsys, data):
  path = data / "corpus.txt"
  assert cost_report.main([f"--config=configs/char_transformer_xl.py:m2r,debug,path={path}",
                           "--algebras=r,m2r", "--config.model.d_model=48",
                           "--config.model.d_inner=96", "--config.match=none", "--json"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["unit"] == "token" and [r["algebra"] for r in out["rows"]] == ["r", "m2r"]
  for row in out["rows"]:
    assert row["model_name"] == "transformer_xl"
    model = row["model"]
    assert (model["d_model"], model["d_inner"]) == (48, 96)
    traced = txl.model_costs(model, row["algebra"], seq_len=16)
    assert row["params"] == traced.total_params
    assert row["all_macs_per_token"] == pytest.approx(traced.all_macs / 16)
  # The table names the model the config trains, per token.
  cost_report.main([f"--config=configs/char_transformer_xl.py:m2r,debug,path={path}"])
  text = capsys.readouterr().out
  assert "per token" in text and "| m2r " in text and "d_model" in text


def test_cli_model_table_matches_fast(capsys):
  # The registered-model table of ResNet-50 at equal params (its widths as PAPER.md's sweep).
  assert cost_report.main(["--model=resnet50", "--match=params", "--algebras=r,m2r",
                           "--json"]) == 0
  rows = {r["algebra"]: r for r in json.loads(capsys.readouterr().out)["rows"]}
  assert rows["r"]["params"] == 25_557_032 and rows["r"]["macs"] == 4_089_184_256
  assert rows["m2r"]["size"] == "width 0.4787" and rows["m2r"]["params"] == 25_571_128
