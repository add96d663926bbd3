r"""Sample a continuation from a trained language-model run.

  python -m algebranets.sample --workdir=DIR [--prompt=TEXT | --prompt_file=FILE] [--tokens=N]
      [--temperature=T] [--top_k=K] [--seed=S] [--sparse] [--step=N] [--data_path=PATH]

e.g. python -m algebranets.sample --workdir=/tmp/char_m2r --prompt="ROMEO:" --tokens=300 \
         --temperature=0.8 --top_k=20

Prints the N tokens that follow the prompt (stdout; what was sampled from which checkpoint goes
to stderr). No --config: the run's saved config (DIR/config.json) rebuilds its model, and the
latest checkpoint (or --step) is restored on one device, a CPU will do (`saved_run`). The model
is the run's evaluation model: the Transformer-XL with the config's evaluation memory
(task.eval_mem_len, eval_clamp_len, eval_same_length), decoded one token per step with a cache
of eval_mem_len + 1 positions (`models.Decoder`); --sparse runs the layers of a pruned run on
the element-sparse path where that pays (`Decoder(sparse=True)`).

Vocabularies (the run's dataset is rebuilt for them: its data must be where config.json says,
or at --data_path):
  bytes     byte corpora (stdlib, byte_file, enwik8 as bytes): the prompt's UTF-8 bytes are the
            tokens; the output bytes are decoded as UTF-8 (an incomplete or invalid sequence as
            U+FFFD). Default prompt: a newline.
  symbols   enwik8 with the reference tokens: each token is one byte of the dataset's symbol
            table (`TextDataset.symbols`); the training stream has no newlines, so a prompt's
            newlines are dropped, and any other byte the table lacks is an error. Default prompt:
            token 0, the most frequent symbol.
  words     WikiText-103: whitespace-separated words of the vocabulary read from the data, a
            line break in the prompt is "<eos>" (as the data marks line ends), and "<eos>" in the
            output a line break; a word not in the vocabulary is an error (the corpus writes rare
            words as "<unk>"). Default prompt: "<eos>".

Sampling: temperature <= 0 is greedy; --top_k keeps the K most likely tokens; the same --seed,
checkpoint and flags give the same text.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
from typing import Optional, Sequence

import jax
import numpy as np

from algebranets import errors
from algebranets import models
from algebranets import saved_run

__all__ = ["Vocabulary", "sample_run", "main"]

EOS = "<eos>"
NEWLINE = 10


@dataclasses.dataclass(frozen=True)
class Vocabulary:
  """Text <-> token ids of a language-model dataset (see the module docstring).

  kind: "bytes", "symbols" (ids index `symbols`, the byte of every id) or "words" (ids index
  `words`).
  """
  kind: str
  size: int
  symbols: Optional[Sequence[int]] = None
  words: Optional[Sequence[str]] = None

  @classmethod
  def of(cls, dataset) -> "Vocabulary":
    """The vocabulary of a `data.TextDataset`."""
    if dataset.vocab is not None:
      return cls("words", int(dataset.vocab_size), words=tuple(dataset.vocab))
    if dataset.symbols is not None:
      return cls("symbols", int(dataset.vocab_size), symbols=tuple(int(s) for s in dataset.symbols))
    return cls("bytes", int(dataset.vocab_size))

  def default_prompt(self) -> np.ndarray:
    if self.kind == "bytes":
      return np.asarray([NEWLINE], np.int32)
    if self.kind == "words":
      return np.asarray([self.words.index(EOS) if EOS in self.words else 0], np.int32)
    return np.asarray([0], np.int32)

  def encode(self, prompt: bytes) -> np.ndarray:
    """Token ids [P] of the prompt's bytes; ValueError naming the symbols not in the vocabulary."""
    if self.kind == "bytes":
      return np.frombuffer(prompt, np.uint8).astype(np.int32)
    if self.kind == "symbols":
      index = {b: i for i, b in enumerate(self.symbols)}
      data = [b for b in prompt if b != NEWLINE]             # dropped from the training stream
      unknown = sorted({b for b in data if b not in index})
      if unknown:
        shown = ", ".join(repr(bytes([b])) for b in unknown[:10])
        raise ValueError(f"the prompt has {len(unknown)} byte value(s) that the run's "
                         f"vocabulary of {self.size} symbols lacks: {shown}"
                         f"{' ...' if len(unknown) > 10 else ''}; remove them")
      return np.asarray([index[b] for b in data], np.int32)
    text = prompt.decode("utf-8")
    lines = text.split("\n")
    tokens = []
    for i, line in enumerate(lines):
      tokens += line.split()
      if i < len(lines) - 1:
        tokens.append(EOS)                                   # the data's line ends
    index = {w: i for i, w in enumerate(self.words)}
    unknown = [w for w in dict.fromkeys(tokens) if w not in index]
    if unknown:
      raise ValueError(f"the prompt has {len(unknown)} word(s) not in the run's vocabulary of "
                       f"{self.size:,} words: {unknown[:10]}{' ...' if len(unknown) > 10 else ''}"
                       f"; use words of the corpus ({'<unk>' if '<unk>' in index else 'no <unk>'}"
                       " stands for rare ones)")
    return np.asarray([index[w] for w in tokens], np.int32)

  def decode(self, ids) -> str:
    """The text of token ids."""
    ids = [int(i) for i in ids]
    if self.kind == "words":
      lines, line = [], []
      for word in (self.words[i] for i in ids):
        if word == EOS:
          lines.append(" ".join(line))
          line = []
        else:
          line.append(word)
      return "\n".join(lines + [" ".join(line)])
    data = bytes(ids) if self.kind == "bytes" else bytes(self.symbols[i] for i in ids)
    return data.decode("utf-8", errors="replace")


def model_fn(config):
  """The run's evaluation model (module docstring): what the trainer evaluates, as a
  `models.Decoder` model_fn."""
  kwargs = config.model.to_dict()
  name = config.model_name
  if name not in models.LANGUAGE_MODELS:
    raise ValueError(f"the run's model {name!r} is not a language model "
                     f"({sorted(models.LANGUAGE_MODELS)})")
  task = config.task
  kwargs.update(mem_len=int(task.get("eval_mem_len", 0) or kwargs.get("mem_len", 0)),
                clamp_len=int(task.get("eval_clamp_len", kwargs.get("clamp_len", -1))),
                same_length=bool(task.get("eval_same_length", False)))
  constructor = models.LANGUAGE_MODELS[name]
  return lambda: constructor(algebra=config.algebra, **kwargs)


def sample_run(workdir, prompt: Optional[bytes] = None, *, tokens: int = 200,
               temperature: float = 1.0, top_k: Optional[int] = None, seed: int = 0,
               sparse: bool = False, step: Optional[int] = None,
               data_path: Optional[str] = None, log=None) -> str:
  """The text of `tokens` tokens sampled after `prompt` (bytes; None: the default prompt)
  from the run in `workdir` (see the module docstring)."""
  if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
    raise ValueError(f"--tokens must be a positive integer, got {tokens!r}")
  config = saved_run.read_config(workdir)
  if config.task.name != "language_model":
    raise ValueError(f"{workdir} is a {config.task.name} run: sampling needs a language model "
                     "(a Transformer-XL config such as configs/char_transformer_xl.py)")
  build = model_fn(config)
  state, run = saved_run.restore(config, workdir, step=step, data_path=data_path)
  vocab = Vocabulary.of(run.dataset)
  if top_k is not None and not 1 <= top_k <= vocab.size:
    raise ValueError(f"--top_k must be in [1, {vocab.size}] (the vocabulary), got {top_k}")
  ids = vocab.default_prompt() if prompt is None else vocab.encode(prompt)
  if not ids.size:
    raise ValueError("the prompt has no tokens; give a non-empty --prompt (or none for the "
                     "default)")
  if log:
    log(f"sampling {tokens} tokens after a {ids.size}-token prompt from step "
        f"{int(np.asarray(state.step))} of {workdir} ({config.algebra} Transformer-XL, d_model "
        f"{config.model.d_model}, {vocab.kind} vocabulary of {vocab.size:,}); temperature "
        f"{temperature:g}, top_k {top_k}, seed {seed}{', sparse' if sparse else ''}")
  decoder = models.Decoder(build, sparse=sparse)
  params = jax.device_get(state.params)
  out = decoder.sample(params, jax.random.PRNGKey(seed), ids[None], tokens,
                       temperature=temperature, top_k=top_k)
  return vocab.decode(np.asarray(out)[0])


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The command line (module docstring); raises ValueError / FileNotFoundError on bad input."""
  parser = argparse.ArgumentParser(prog="python -m algebranets.sample",
                                   description=__doc__.split("\n\n")[0])
  parser.add_argument("--workdir", required=True, help="the training run's workdir")
  prompt = parser.add_mutually_exclusive_group()
  prompt.add_argument("--prompt", default=None, help="the text to continue")
  prompt.add_argument("--prompt_file", default=None, help="a file whose text to continue")
  parser.add_argument("--tokens", type=int, default=200, help="tokens to sample (default 200)")
  parser.add_argument("--temperature", type=float, default=1.0,
                      help="divides the log-probabilities; <= 0 is greedy (default 1)")
  parser.add_argument("--top_k", type=int, default=None,
                      help="sample among the K most likely tokens only")
  parser.add_argument("--seed", type=int, default=0, help="the PRNG seed (default 0)")
  parser.add_argument("--sparse", action="store_true",
                      help="pruned runs: element-sparse layers where they pay")
  parser.add_argument("--step", type=int, default=None, help="checkpoint step (default latest)")
  parser.add_argument("--data_path", default=None,
                      help="where the run's data is now, if not at config.json's data.path")
  parser.add_argument("--verbose", action="store_true",
                      help="print the traceback of an error too")
  flags = parser.parse_args(argv)
  text = None
  if flags.prompt is not None:
    text = flags.prompt.encode("utf-8")
  elif flags.prompt_file is not None:
    path = pathlib.Path(flags.prompt_file)
    if not path.is_file():
      raise FileNotFoundError(f"--prompt_file={path}: no such file")
    text = path.read_bytes()
  out = sample_run(flags.workdir, text, tokens=flags.tokens, temperature=flags.temperature,
                   top_k=flags.top_k, seed=flags.seed, sparse=flags.sparse, step=flags.step,
                   data_path=flags.data_path,
                   log=lambda line: print(line, file=sys.stderr, flush=True))
  print(out, flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(errors.run_cli(main, sys.argv[1:]))
