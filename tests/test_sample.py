"""`python -m algebranets.sample`: a trained debug run continues a prompt exactly as
`models.Decoder` does for the same seed, computed here independently -- the model built from
config.json by hand, the parameters restored with the trainer's own `restore_state`, the prompt
encoded and the tokens decoded by hand -- for a byte-level (pruned, also on the sparse path) and
a word-level run; vocabularies and user errors."""

import contextlib
import importlib.util
import io
import json
import pathlib
import zipfile

import jax
import ml_collections
import numpy as np
import pytest

from algebranets import data as data_lib
from algebranets import models
from algebranets import sample
from algebranets.training import train

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 6


def _config(name: str, arg: str):
  spec = importlib.util.spec_from_file_location(f"config_{name}", ROOT / "configs" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg)


def _text(n: int) -> bytes:
  rng = np.random.default_rng(0)
  words = "the of and to in a is that for algebra network weight matrix element".split()
  return ". ".join(" ".join(words[min(int(rng.zipf(1.5)) - 1, len(words) - 1)]
                            for _ in range(9)) for _ in range(n // 30)).encode()[:n]


def _train(config, workdir):
  config.train.update(num_steps=STEPS, log_every=STEPS, eval_every=0, checkpoint_every=1000)
  config.eval.splits = ("valid",)
  train.train_and_evaluate(config, workdir)
  return workdir


@pytest.fixture(scope="module")
def byte_run(tmp_path_factory):
  """A pruned m2r character model (half of its weight elements zero) trained 6 steps."""
  root = tmp_path_factory.mktemp("byte_run")
  (root / "corpus.txt").write_bytes(_text(30_000))
  config = _config("char_transformer_xl", f"m2r,debug,path={root / 'corpus.txt'}")
  config.sparsity.update(target=0.5, begin_step=1, end_step=3, frequency=1)
  return _train(config, root / "run")


@pytest.fixture(scope="module")
def word_run(tmp_path_factory):
  root = tmp_path_factory.mktemp("word_run")
  wt = root / "wikitext-103"
  wt.mkdir()
  rng = np.random.default_rng(0)
  words = [f"w{i}" for i in range(30)] + ["<unk>"]
  for split, lines in (("train", 300), ("valid", 20), ("test", 20)):
    text = [" " + " ".join(words[min(int(rng.zipf(1.3)) - 1, 30)] for _ in range(8))
            for _ in range(lines)]
    (wt / f"wiki.{split}.tokens").write_text("\n".join(text) + "\n")
  config = _config("wikitext103_transformer_xl", "c,debug")
  config.data.path = str(wt)
  return _train(config, root / "run")


def _reference(workdir, prompt_ids, tokens, temperature, top_k, seed, sparse=False):
  """models.Decoder on the restored params, with the model built from config.json by hand:
  the run's evaluation memory, as the trainer evaluates."""
  saved = json.loads((workdir / "config.json").read_text())
  kwargs = {k: v for k, v in saved["model"].items() if k != "name"}
  kwargs.update(mem_len=saved["task"]["eval_mem_len"], clamp_len=saved["task"]["eval_clamp_len"],
                same_length=saved["task"]["eval_same_length"])
  kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
  config = ml_collections.ConfigDict(dict(saved, match="none"))   # sizes already resolved
  params = train.restore_state(config, workdir).params
  decoder = models.Decoder(lambda: models.TransformerXL(algebra=saved["algebra"], **kwargs),
                           sparse=sparse)
  out = decoder.sample(params, jax.random.PRNGKey(seed), np.asarray([prompt_ids], np.int32),
                       tokens, temperature=temperature, top_k=top_k)
  return [int(t) for t in np.asarray(out)[0]]


def _cli(*args) -> str:
  out = io.StringIO()
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
    assert sample.main(list(args)) == 0
  return out.getvalue()


pytestmark = pytest.mark.slow  # trains two debug models (compiles for seconds)


@pytest.mark.parametrize("sparse", [False, True])
def test_byte_run_continues_as_the_decoder_does(byte_run, sparse):
  prompt = "The algebra network"
  expected = _reference(byte_run, list(prompt.encode()), 30, 0.8, 12, 7, sparse=sparse)
  args = [f"--workdir={byte_run}", f"--prompt={prompt}", "--tokens=30", "--temperature=0.8",
          "--top_k=12", "--seed=7"] + (["--sparse"] if sparse else [])
  text = _cli(*args)
  assert text == bytes(expected).decode("utf-8", errors="replace") + "\n"
  assert _cli(*args) == text                                     # same seed, same text


def test_prompt_file_and_default_prompt(byte_run, tmp_path):
  (tmp_path / "prompt.txt").write_bytes("weight matrix\n".encode())
  expected = _reference(byte_run, list(b"weight matrix\n"), 10, 1.5, None, 1)
  assert _cli(f"--workdir={byte_run}", f"--prompt_file={tmp_path / 'prompt.txt'}",
              "--tokens=10", "--temperature=1.5", "--seed=1") == (
                  bytes(expected).decode(errors="replace") + "\n")
  expected = _reference(byte_run, [10], 10, 1.0, None, 0)        # a newline
  assert _cli(f"--workdir={byte_run}", "--tokens=10") == (
      bytes(expected).decode(errors="replace") + "\n")


def test_word_run_continues_as_the_decoder_does(word_run):
  vocab = next(word_run.parent.glob("wikitext103-*/vocab.txt"))  # the data's cache
  words = vocab.read_text().split("\n")[:-1]
  ids = [words.index(w) for w in ("w1", "w2", "<eos>", "w0")]   # a line break is <eos>
  expected = _reference(word_run, ids, 12, 1.0, None, 3)
  lines = [[]]
  for i in expected:
    if words[i] == "<eos>":
      lines.append([])
    else:
      lines[-1].append(words[i])
  text = _cli(f"--workdir={word_run}", "--prompt=w1 w2\nw0", "--tokens=12", "--seed=3")
  assert text == "\n".join(" ".join(line) for line in lines) + "\n"
  with pytest.raises(ValueError, match=r"2 word\(s\) not in the run's vocabulary.*'zebra'"):
    sample.main([f"--workdir={word_run}", "--prompt=w1 zebra w2 yak"])


def test_reference_token_vocabulary_maps_ids_through_the_symbols(tmp_path):
  path = tmp_path / "enwik8.zip"
  with zipfile.ZipFile(path, "w") as zf:
    zf.writestr("enwik8", b"abca\nbcab cab\n" * 300)
  dataset = data_lib.build("enwik8", path=str(path), proportional=True, reference_tokens=True,
                           cache_dir=str(tmp_path))
  vocab = sample.Vocabulary.of(dataset)
  assert vocab.kind == "symbols" and sorted(vocab.symbols) == sorted(b"abc ")
  ids = vocab.encode(b"ab\nc")                                   # newlines were dropped
  assert [vocab.symbols[i] for i in ids] == list(b"abc")
  assert vocab.decode(ids) == "abc"
  with pytest.raises(ValueError, match=r"lacks: b'z'"):
    vocab.encode(b"abz")


def test_user_errors_are_clear(byte_run, tmp_path):
  with pytest.raises(FileNotFoundError, match="not the workdir of a training run"):
    sample.main([f"--workdir={tmp_path}"])
  with pytest.raises(ValueError, match=r"--top_k must be in \[1, 256\]"):
    sample.main([f"--workdir={byte_run}", "--top_k=300"])
  with pytest.raises(FileNotFoundError, match="pass --data_path=PATH"):
    moved = tmp_path / "moved"
    moved.mkdir()
    (moved / "checkpoints").symlink_to(byte_run / "checkpoints")
    saved = json.loads((byte_run / "config.json").read_text())
    saved["data"]["path"] = str(tmp_path / "gone.txt")
    (moved / "config.json").write_text(json.dumps(saved))
    sample.main([f"--workdir={moved}"])
  cifar = tmp_path / "cifar"
  cifar.mkdir()
  (cifar / "config.json").write_text(json.dumps(_config("cifar10_resnet", "r,debug").to_dict()))
  with pytest.raises(ValueError, match="is a classification run: sampling needs a language"):
    sample.main([f"--workdir={cifar}"])
