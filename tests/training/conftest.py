"""Fixtures of the training tests: small files in the real formats (the compile cache is the
whole suite's, tests/conftest.py)."""

import zipfile

import numpy as np
import pytest

from training_testlib import text_bytes


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
