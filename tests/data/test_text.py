"""Text corpora and Transformer-XL batching on small files in the real formats."""

import collections
import itertools
import sys
import zipfile

import numpy as np
import pytest

from algebranets import data
from algebranets.data import text

SIZES = (2700, 150, 150)  # a 3,000-byte "enwik8", split like the real 90M/5M/5M


def _files(root):
  return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


@pytest.fixture
def enwik8_bytes():
  return np.random.default_rng(0).integers(0, 256, sum(SIZES), dtype=np.uint8).tobytes()


def _zip(path, members):
  with zipfile.ZipFile(path, "w") as zf:
    for name, payload in members.items():
      zf.writestr(name, payload)
  return path


# ----------------------------------------------------------------------------- enwik8
def test_enwik8_zip_raw_and_directory_give_the_same_splits(tmp_path, enwik8_bytes):
  (tmp_path / "raw").mkdir()
  (tmp_path / "raw" / "enwik8").write_bytes(enwik8_bytes)
  archive = _zip(tmp_path / "enwik8.zip", {"enwik8": enwik8_bytes})
  cache = tmp_path / "cache"
  from_zip = text.enwik8(archive, cache_dir=cache, split_sizes=SIZES)
  from_raw = text.enwik8(tmp_path / "raw" / "enwik8", split_sizes=SIZES)
  from_dir = text.enwik8(tmp_path / "raw", split_sizes=SIZES)
  whole = np.frombuffer(enwik8_bytes, np.uint8)
  expected = {"train": whole[:2700], "valid": whole[2700:2850], "test": whole[2850:]}
  for ds in (from_zip, from_raw, from_dir):
    assert ds.vocab_size == 256
    assert {s: len(a) for s, a in ds.splits.items()} == {"train": 2700, "valid": 150, "test": 150}
    for split, want in expected.items():
      np.testing.assert_array_equal(ds.splits[split], want)
  # The zip's member went to a file the loader named, inside the cache dir, and is reused.
  (cached,) = _files(cache)
  assert cached.startswith("enwik8-") and cached.endswith(".bytes")
  mtime = (cache / cached).stat().st_mtime_ns
  text.enwik8(archive, cache_dir=cache, split_sizes=SIZES)
  assert (cache / cached).stat().st_mtime_ns == mtime


def test_enwik8_size_mismatch_errors_unless_proportional(tmp_path, enwik8_bytes):
  raw = tmp_path / "enwik8"
  raw.write_bytes(enwik8_bytes[:2000])
  with pytest.raises(ValueError, match=r"2,000 bytes.*3,000.*download_enwik8\.sh"):
    text.enwik8(raw, split_sizes=SIZES)
  with pytest.raises(ValueError, match="100,000,000"):
    text.enwik8(raw)  # the real split needs the real file
  ds = text.enwik8(raw, split_sizes=SIZES, proportional=True)
  assert {s: len(a) for s, a in ds.splits.items()} == {"train": 1800, "valid": 100, "test": 100}


def test_enwik8_missing_and_malformed_files_say_what_and_how(tmp_path, enwik8_bytes):
  with pytest.raises(FileNotFoundError, match=r"enwik8\.zip.*nowhere.*download_enwik8\.sh"):
    text.enwik8(tmp_path / "nowhere")
  with pytest.raises(FileNotFoundError, match=r"enwik8\.zip or the raw file enwik8 in"):
    text.enwik8(tmp_path)  # an existing directory without the files
  wrong = _zip(tmp_path / "wrong.zip", {"enwik9": enwik8_bytes})
  with pytest.raises(ValueError, match=r"'enwik8'.*found \['enwik9'\].*mattmahoney"):
    text.enwik8(wrong, cache_dir=tmp_path / "cache", split_sizes=SIZES)
  # A damaged member (CRC mismatch) is an error, and leaves no partial cache file behind.
  damaged = _zip(tmp_path / "damaged.zip", {"enwik8": enwik8_bytes})
  payload = bytearray(damaged.read_bytes())
  at = payload.index(enwik8_bytes[:64]) + 100
  payload[at] ^= 0xFF
  damaged.write_bytes(bytes(payload))
  with pytest.raises(ValueError, match="corrupt"):
    text.enwik8(damaged, cache_dir=tmp_path / "cache2", split_sizes=SIZES)
  assert _files(tmp_path / "cache2") == []


def test_archive_member_names_are_never_used_as_paths(tmp_path, enwik8_bytes):
  work = tmp_path / "work"
  work.mkdir()
  evil = _zip(work / "enwik8.zip", {"../enwik8": enwik8_bytes, "../../escaped": b"x"})
  with pytest.raises(ValueError, match="expected member"):
    text.enwik8(evil, cache_dir=work / "cache", split_sizes=SIZES)
  # A WikiText zip with the right members and hostile extras: loads; the extras go nowhere.
  members = {f"wikitext-103/wiki.{s}.tokens": " a b \n" for s in text.SPLITS}
  members.update({"../evil.txt": "x", "wikitext-103/../../evil2.txt": "x", "/tmp/evil3": "x"})
  ds = text.wikitext103(_zip(work / "wikitext-103-v1.zip", members), cache_dir=work / "cache")
  assert ds.vocab[0] == "<eos>"
  outside = [p for p in tmp_path.rglob("*") if "evil" in p.name or "escaped" in p.name]
  assert outside == []
  assert all(f.startswith(("enwik8.zip", "wikitext-103-v1.zip", "cache/"))
             for f in _files(work))
  assert _files(tmp_path) == [f"work/{f}" for f in _files(work)]


# ----------------------------------------------------------------------------- enwik8 tokens
def _reference_prep(raw: bytes, sizes, workdir):
  """The Transformer-XL reference's enwik8 tokens, step by step as its code does them.

  salesforce/awd-lstm-lm data/enwik8/prep_enwik8.py (num_test_chars from the end), then
  kimiyoung/transformer-xl pytorch/utils/vocabulary.py `Vocab` (special=[], lower_case=True,
  delimiter None) as pytorch/data_utils.py `Corpus` uses it for enwik8: count_file over train,
  valid, test; build_vocab; encode_file(ordered=True, add_eos=False).
  """
  num_test = sizes[2]
  assert sizes[1] == num_test
  parts = {"train": raw[:-2 * num_test], "valid": raw[-2 * num_test:-num_test],
           "test": raw[-num_test:]}
  for fn, part in parts.items():
    part_str = " ".join([str(c) if c != ord("\n") else "\n" for c in part])
    with open(workdir / f"{fn}.txt", "w") as f:
      f.write(part_str)

  def tokenize(line):
    return line.strip().lower().split(None)

  counter = collections.Counter()
  for fn in parts:
    with open(workdir / f"{fn}.txt", "r", encoding="utf-8") as f:
      for line in f:
        counter.update(tokenize(line))
  idx2sym = [sym for sym, cnt in counter.most_common(None) if cnt >= 0]
  sym2idx = {sym: i for i, sym in enumerate(idx2sym)}
  encoded = {}
  for fn in parts:
    with open(workdir / f"{fn}.txt", "r", encoding="utf-8") as f:
      encoded[fn] = [sym2idx[sym] for line in f for sym in tokenize(line)]
  return encoded, [int(sym) for sym in idx2sym]


@pytest.fixture
def enwik8_text():
  """3,000 bytes with newlines (~6%, in runs and at every split boundary), \\r, ties in the
  counts, and bytes that occur only in valid (250) or only in test (251)."""
  rng = np.random.default_rng(3)
  alphabet = np.array([10, 13, 32, 97, 98, 99, 100, 101, 60, 62, 195, 164, 0, 255], np.uint8)
  weights = np.array([6, 1, 15, 12, 8, 8, 5, 12, 3, 3, 2, 2, 1, 1], float)
  raw = rng.choice(alphabet, sum(SIZES), p=weights / weights.sum())
  raw[[0, 2699, 2700, 2701, 2849, 2850, 2999]] = 10   # newlines on every split boundary
  raw[100:104] = 10                                     # a run of line breaks
  raw[2760], raw[2900], raw[50] = 250, 251, 252         # valid-only, test-only, train: ties
  return raw.tobytes()


def test_enwik8_reference_tokens_equal_the_reference_preparation(tmp_path, enwik8_text):
  want, want_symbols = _reference_prep(enwik8_text, SIZES, tmp_path)
  archive = _zip(tmp_path / "enwik8.zip", {"enwik8": enwik8_text})
  ds = text.enwik8(archive, cache_dir=tmp_path / "cache", split_sizes=SIZES,
                   reference_tokens=True, seq_len=8)
  raw = np.frombuffer(enwik8_text, np.uint8)
  assert list(ds.symbols) == want_symbols and ds.vocab_size == len(want_symbols)
  # V: every distinct byte but the newline, over all three splits (250, 251 only in eval).
  assert ds.vocab_size == len(set(enwik8_text) - {10}) and {250, 251} <= set(ds.symbols)
  assert ds.vocab is None  # a character corpus: bits per character remain its metric
  bounds = {"train": (0, 2700), "valid": (2700, 2850), "test": (2850, 3000)}
  for split, ids in want.items():
    np.testing.assert_array_equal(ds.splits[split], ids)
    lo, hi = bounds[split]  # split by bytes first, newlines dropped after
    kept = raw[lo:hi][raw[lo:hi] != 10]
    assert len(ds.splits[split]) == len(kept) == len(ids)
    np.testing.assert_array_equal(np.asarray(ds.symbols)[ds.splits[split]], kept)
    assert ds.info["newlines_dropped"][split] == int(np.sum(raw[lo:hi] == 10))
  # The raw file gives the same tokens; the zip's second load reuses its cache folder.
  (tmp_path / "raw").mkdir()
  (tmp_path / "raw" / "enwik8").write_bytes(enwik8_text)
  from_raw = text.enwik8(tmp_path / "raw", split_sizes=SIZES, reference_tokens=True)
  for split in text.SPLITS:
    np.testing.assert_array_equal(from_raw.splits[split], ds.splits[split])
  folders = [p for p in _files(tmp_path / "cache") if p.startswith("enwik8-reference-")]
  mtimes = [(tmp_path / "cache" / p).stat().st_mtime_ns for p in folders]
  text.enwik8(archive, cache_dir=tmp_path / "cache", split_sizes=SIZES, reference_tokens=True)
  assert [(tmp_path / "cache" / p).stat().st_mtime_ns for p in folders] == mtimes
  # The default stays all bytes.
  assert text.enwik8(archive, cache_dir=tmp_path / "cache", split_sizes=SIZES).vocab_size == 256


def test_enwik8_reference_vocabulary_order_by_count_then_first_appearance():
  # counts: 7 -> 3, 5 -> 2 (first at 1), 9 -> 2 (first at 3), 4 -> 1 (valid), 6 -> 1 (test).
  splits = {"train": np.array([7, 5, 10, 10, 9, 7, 5, 7, 9], np.uint8),
            "valid": np.array([10, 4], np.uint8), "test": np.array([6, 10], np.uint8)}
  np.testing.assert_array_equal(text.reference_token_vocabulary(splits), [7, 5, 9, 4, 6])


def test_enwik8_reference_token_counts_are_the_bpc_denominators(tmp_path, enwik8_text):
  path = tmp_path / "enwik8"
  path.write_bytes(enwik8_text)
  ds = data.build("enwik8", path=path, split_sizes=SIZES, reference_tokens=True, seq_len=8,
                  eval_seq_len=5)
  raw = np.frombuffer(enwik8_text, np.uint8)
  for split, (lo, hi) in (("valid", (2700, 2850)), ("test", (2850, 3000))):
    scored = sum(int(b["mask"].sum()) for b in ds.eval_batches(split, 4))
    assert scored == int(np.sum(raw[lo:hi] != 10)) - 1  # every reference token but the first
    for b in ds.eval_batches(split, 4):
      assert int(b["targets"].max()) < ds.vocab_size
  batch = next(ds.train_batches(4))
  assert batch["inputs"].shape == (4, 8) and int(batch["inputs"].max()) < ds.vocab_size


# ----------------------------------------------------------------------------- WikiText-103
WIKI = {
    # counts over train, <eos> per line: the 4, <eos> 4, cat 2, sat 2, <unk> 1, a 1, mat 1
    "train": "the cat sat\n\n the <unk> sat the \na cat the mat\n",
    "valid": "the dog sat\n",  # "dog" is unseen -> <unk>
    "test": "mat a\n",
}
# <eos> first, then by count, ties in order of first occurrence (cat before sat; <unk>, a, mat).
VOCAB = ("<eos>", "the", "cat", "sat", "<unk>", "a", "mat")


def _wiki_ids(words):
  return [VOCAB.index(w) for w in words.split()]


@pytest.mark.parametrize("form", ["zip", "directory", "parent_directory"])
def test_wikitext103_vocabulary_and_eos_against_a_hand_computed_example(tmp_path, form):
  root = tmp_path / "src"
  if form == "zip":
    source = _zip(tmp_path / "wikitext-103-v1.zip",
                  {f"wikitext-103/wiki.{s}.tokens": body for s, body in WIKI.items()})
  else:
    (root / "wikitext-103").mkdir(parents=True)
    for s, body in WIKI.items():
      (root / "wikitext-103" / f"wiki.{s}.tokens").write_text(body)
    source = root if form == "parent_directory" else root / "wikitext-103"
  ds = text.wikitext103(source, cache_dir=tmp_path / "cache", seq_len=4)
  assert ds.vocab == VOCAB and ds.vocab_size == 7
  np.testing.assert_array_equal(
      ds.splits["train"],
      _wiki_ids("the cat sat <eos> <eos> the <unk> sat the <eos> a cat the mat <eos>"))
  np.testing.assert_array_equal(ds.splits["valid"], _wiki_ids("the <unk> sat <eos>"))
  np.testing.assert_array_equal(ds.splits["test"], _wiki_ids("mat a <eos>"))
  assert ds.splits["train"].dtype == np.uint16
  # The second build reads the cache.
  again = text.wikitext103(source, cache_dir=tmp_path / "cache", seq_len=4)
  assert again.info["cache"] == ds.info["cache"] and again.vocab == VOCAB


def test_wikitext103_missing_or_malformed_say_what_and_how(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"wikitext-103-v1\.zip.*wiki\.train\.tokens.*"
                     r"download_wikitext103\.sh"):
    text.wikitext103(tmp_path)
  raw = _zip(tmp_path / "wikitext-103-raw-v1.zip",
             {f"wikitext-103-raw/wiki.{s}.raw": "a\n" for s in text.SPLITS})
  with pytest.raises(ValueError, match=r"wikitext-103/wiki\.train\.tokens.*not '-raw-v1'"):
    text.wikitext103(raw, cache_dir=tmp_path / "cache")
  (tmp_path / "junk.zip").write_bytes(b"not a zip at all")
  with pytest.raises(ValueError, match="not a valid zip"):
    text.wikitext103(tmp_path / "junk.zip", cache_dir=tmp_path / "cache")


# ----------------------------------------------------------------------------- batching
def test_stream_batches_are_contiguous_shifted_sharded_and_resumable():
  n, batch, seq = 1000, 4, 7
  tokens = np.arange(n, dtype=np.uint32)  # a token's value is its position
  steps = text.steps_per_epoch(n, batch, seq)
  row_len = (n - 1) // batch
  assert steps == row_len // seq == 35
  batches = list(itertools.islice(text.stream_batches(tokens, batch, seq), 2 * steps + 1))
  for s, (inputs, targets) in enumerate(batches):
    assert inputs.shape == targets.shape == (batch, seq) and inputs.dtype == np.int32
    np.testing.assert_array_equal(targets, inputs + 1)
    offset = (s % steps) * seq  # epochs repeat the layout
    np.testing.assert_array_equal(inputs[:, 0], np.arange(batch) * row_len + offset)
    np.testing.assert_array_equal(inputs, inputs[:, :1] + np.arange(seq))
  for s in range(steps - 1):  # row r at step s + 1 continues exactly where step s ended
    np.testing.assert_array_equal(batches[s + 1][0][:, 0], batches[s][1][:, -1])
  # Two hosts' rows, concatenated in process order, are the single-host batch; resuming at a
  # step gives the same batches as iterating up to it.
  for start in (0, 5, steps + 3):
    hosts = [text.stream_batches(tokens, batch, seq, process_index=p, process_count=2,
                                 start_step=start) for p in range(2)]
    for s in range(start, start + 3):
      (i0, t0), (i1, t1) = next(hosts[0]), next(hosts[1])
      np.testing.assert_array_equal(np.concatenate([i0, i1]), batches[s][0])
      np.testing.assert_array_equal(np.concatenate([t0, t1]), batches[s][1])


@pytest.mark.parametrize("n,batch,seq,hosts", [(1000, 4, 7, 2), (101, 4, 10, 1), (9, 8, 3, 4),
                                               (64, 3, 64, 1)])
def test_eval_batches_cover_every_token_exactly_once(n, batch, seq, hosts):
  tokens = np.arange(n, dtype=np.uint32)
  steps = text.num_eval_steps(n, batch, seq)
  seen = []
  per_host = []
  for p in range(hosts):
    batches = list(text.eval_stream_batches(tokens, batch, seq, process_index=p,
                                            process_count=hosts))
    per_host.append(len(batches))
    for inputs, targets, mask in batches:
      assert inputs.shape == targets.shape == mask.shape == (batch // hosts, seq)
      np.testing.assert_array_equal(targets[mask], inputs[mask] + 1)
      seen.extend(targets[mask].tolist())
  assert per_host == [steps] * hosts
  np.testing.assert_array_equal(np.sort(seen), np.arange(1, n))  # every target exactly once


def test_eval_rows_are_contiguous_streams():
  tokens = np.arange(200, dtype=np.uint32)
  batches = list(text.eval_stream_batches(tokens, 4, 10))
  for prev, nxt in zip(batches, batches[1:]):
    live = nxt[2][:, 0]
    np.testing.assert_array_equal(nxt[0][live, 0], prev[1][live, -1])


def test_batching_rejects_bad_geometry():
  tokens = np.arange(100, dtype=np.uint8)
  with pytest.raises(ValueError, match="multiple of the process count 3"):
    next(text.stream_batches(tokens, 4, 5, process_count=3))
  with pytest.raises(ValueError, match=r"too short.*at least 1,001"):
    next(text.stream_batches(tokens, 10, 100))
  with pytest.raises(ValueError, match="process_index"):
    next(text.eval_stream_batches(tokens, 4, 5, process_index=2, process_count=2))


# ----------------------------------------------------------------------------- corpora, registry
def test_embedded_stdlib_corpus_is_deterministic_and_megabytes(tmp_path):
  a = text.stdlib(cache_dir=tmp_path / "a")
  b = text.stdlib(cache_dir=tmp_path / "b")
  assert a.info["sha256"] == b.info["sha256"]
  for split in text.SPLITS:
    np.testing.assert_array_equal(a.splits[split], b.splits[split])
  total = sum(len(x) for x in a.splits.values())
  assert total == a.info["bytes"] > 2_000_000
  assert len(a.splits["train"]) == int(0.9 * total)
  assert f"Python {sys.version.split()[0]}" in a.description
  files = text.stdlib_files()
  assert [rel for rel, _ in files] == sorted(rel for rel, _ in files)
  assert not any(set(rel.split("/")[:-1]) & text.STDLIB_EXCLUDED_DIRS for rel, _ in files)
  assert bytes(a.splits["train"][:200]) == files[0][1].read_bytes()[:200]


def test_registry_builds_text_datasets_with_the_common_interface(tmp_path):
  corpus = tmp_path / "corpus.txt"
  corpus.write_bytes(bytes(range(256)) * 8)
  ds = data.build("byte_file", path=corpus, seq_len=8)
  assert {s: len(a) for s, a in ds.splits.items()} == {"train": 1843, "valid": 102, "test": 103}
  batch = next(ds.train_batches(4, process_index=1, process_count=2, start_step=3))
  assert batch["inputs"].shape == batch["targets"].shape == (2, 8)
  evals = list(ds.eval_batches("valid", 2))
  assert len(evals) == ds.num_eval_steps("valid", 2)
  assert sum(int(b["mask"].sum()) for b in evals) == 101
  with pytest.raises(ValueError, match="no split 'dev'"):
    next(ds.eval_batches("dev", 2))
  with pytest.raises(ValueError, match=r"Unknown dataset 'enwik9'; valid: .*enwik8"):
    data.build("enwik9")
  with pytest.raises(FileNotFoundError, match="expected a text or byte file"):
    data.build("byte_file", path=tmp_path / "missing.txt")
