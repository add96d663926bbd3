"""Language-modelling corpora and Transformer-XL stream batching.

Corpora, each returned as a `TextDataset` of memory-mapped token arrays:
  enwik8        the first 10^8 bytes of an English Wikipedia dump (Hutter prize), from
                `enwik8.zip` or the raw file; first 90,000,000 bytes train, next 5,000,000
                valid, last 5,000,000 test (the Transformer-XL split). Tokens are the bytes
                (V = 256, the default), or with `reference_tokens=True` the Transformer-XL
                reference's tokens: see "enwik8 reference tokens" below.
  wikitext103   WikiText-103 (Merity et al. 2016), from `wikitext-103-v1.zip` or its extracted
                directory; whitespace-separated words, `<eos>` at the end of every line; the
                vocabulary is read from the training split, `<eos>` first, then words by
                decreasing count, ties in order of first occurrence (as the reference
                Transformer-XL `Vocab`, so adaptive-softmax cutoffs name the same words).
  byte_file     any file as bytes, split 90/5/5 by position.
  stdlib        the embedded default: the source files of the running Python's standard
                library (every machine has them), concatenated in a fixed order, split 90/5/5.

Tokens live in numpy memmaps (uint8 bytes, uint16/uint32 word ids); nothing is read into Python
objects beyond one line at a time while a word corpus is first encoded. Archives are read in place:
a zip member is streamed into a cache file whose name the loader chooses; member names are only
compared against the expected ones, never used as paths.

Batching follows the reference `LMOrderedIterator`: a split of N tokens is cut into B contiguous
streams (rows) and every step advances all rows by T tokens, so a row's segment at step s + 1
continues exactly where it ended at step s and Transformer-XL memories carry across segments.
Row r covers tokens [r·L, r·L + L] (L + 1 tokens: its last target is the next row's first input):
  train  L = (N - 1) // B, S = L // T full segments per epoch; step s reads segment s mod S,
         so the batch at a step is a pure function of the step (resuming replays exactly).
         The last L mod T targets of each row and the (N - 1) mod B tail are not trained on.
  eval   L = ceil((N - 1) / B), ceil(L / T) segments; the last segment and the rows past the end
         are padded and masked, so every token but the first is a target exactly once.
Per host: B is the global batch; process p of P reads rows [p·B/P, (p+1)·B/P).

enwik8 reference tokens: the published Transformer-XL results (1.06 bpc for the base model)
are measured on the token stream of the reference's preparation, not on raw bytes. Its
prep_enwik8.py (salesforce/awd-lstm-lm, fetched by kimiyoung/transformer-xl's getdata.sh) splits
the bytes 90M/5M/5M, then writes each split as the decimal byte values separated by spaces,
except that the newline byte (10) is written as a line break; pytorch/data_utils.py reads the
three files line by line with `add_eos=False`, and its `Vocab` (utils/vocabulary.py) counts the
symbols of train, valid and test and numbers them by decreasing count, ties in order of first
appearance (`Counter.most_common`, a stable sort). So the stream is every byte except newlines,
dropped after splitting, and the vocabulary is the distinct non-newline bytes of the whole file
(204 on enwik8), by frequency. Bits per character are then per reference token. The tokens are
written once to a cache folder (`enwik8-reference-<key>/`: {split}.ids as uint8, meta.json with
the byte of every id) and memory-mapped like the other corpora.

Shapes: N tokens in a split, B global rows, P processes, Bh = B / P rows per host, T segment
length, V vocabulary size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import pathlib
import shutil
import sys
import sysconfig
import uuid
import zipfile
import zlib
from typing import Any, Iterator, Mapping, Optional, Sequence

import numpy as np

from algebranets import errors

SPLITS = ("train", "valid", "test")

ENWIK8_URL = "http://mattmahoney.net/dc/enwik8.zip"
ENWIK8_MEMBER = "enwik8"
ENWIK8_SPLITS = (90_000_000, 5_000_000, 5_000_000)
NEWLINE = 10  # the byte the reference preparation turns into a line break (dropped)

WIKITEXT103_URL = "https://wikitext.smerity.com/wikitext-103-v1.zip"
WIKITEXT103_MEMBERS = {s: f"wikitext-103/wiki.{s}.tokens" for s in SPLITS}
EOS = "<eos>"
UNK = "<unk>"

DEFAULT_FRACTIONS = (0.9, 0.05, 0.05)
# Directories left out of the embedded corpus: installed packages, and the test suites (large,
# generated-looking data files that are not representative source).
STDLIB_EXCLUDED_DIRS = frozenset(
    {"site-packages", "dist-packages", "test", "tests", "idle_test", "__pycache__"})

_CHUNK = 1 << 24  # bytes streamed at a time out of archives


@dataclasses.dataclass(frozen=True)
class TextDataset:
  """A tokenised corpus with train/valid/test splits, batched Transformer-XL style.

  Attributes:
    name: registry name of the corpus.
    splits: split name -> 1-D token array [N] (a read-only memmap).
    vocab_size: V; token ids are in [0, V).
    seq_len: T for training segments.
    eval_seq_len: T for evaluation segments.
    description: one line saying what the corpus is and where it came from.
    info: sizes, source, hashes: what a run should record about its data.
    vocab: the word of every id for word corpora; None for bytes (id = byte value).
    symbols: the byte of every id for byte corpora with their own numbering (enwik8 with
      reference_tokens); None when id = byte value or for word corpora.
    files: split -> the file (or "archive: member") it was read from, for error messages.
  """
  name: str
  splits: Mapping[str, np.ndarray]
  vocab_size: int
  seq_len: int
  eval_seq_len: int
  description: str
  info: Mapping[str, Any]
  vocab: Optional[Sequence[str]] = None
  symbols: Optional[Sequence[int]] = None
  train_split: str = "train"
  eval_splits: tuple[str, ...] = ("valid", "test")
  files: Optional[Mapping[str, str]] = None

  def check_batch_size(self, batch_size: int) -> None:
    """A DataError naming the file unless the training split fills `batch_size` rows of one
    `seq_len` segment each (what `train_batches` needs): a check to run before building a model.
    """
    n = len(self.splits[self.train_split])
    need = batch_size * self.seq_len + 1
    if n < need:
      raise errors.DataError(
          f"{self._file(self.train_split)}: the {self.train_split!r} split has {n:,} tokens, too "
          f"few for {batch_size} rows of {self.seq_len}-token segments (train.batch_size x "
          f"data.seq_len): it needs at least {need:,}; use a smaller train.batch_size or "
          "data.seq_len, or a longer file")

  def _file(self, split: str) -> str:
    return (self.files or {}).get(split) or str(self.info.get("source", self.name))

  def train_batches(self, batch_size: int, *, process_index: int = 0, process_count: int = 1,
                    start_step: int = 0, seed: int = 0) -> Iterator[dict]:
    """Endless {"inputs", "targets"} int32 [Bh, T] batches from `start_step` on.

    `seed` is accepted for a uniform interface and unused: stream batching does not shuffle.
    """
    del seed
    for inputs, targets in stream_batches(
        self.splits[self.train_split], batch_size, self.seq_len, process_index=process_index,
        process_count=process_count, start_step=start_step):
      yield {"inputs": inputs, "targets": targets}

  def eval_batches(self, split: str, batch_size: int, *, process_index: int = 0,
                   process_count: int = 1) -> Iterator[dict]:
    """{"inputs", "targets" int32 [Bh, T], "mask" bool [Bh, T]}; every target once."""
    if split not in self.splits:
      raise ValueError(f"{self.name} has no split {split!r}; splits: {sorted(self.splits)}")
    for inputs, targets, mask in eval_stream_batches(
        self.splits[split], batch_size, self.eval_seq_len, process_index=process_index,
        process_count=process_count):
      yield {"inputs": inputs, "targets": targets, "mask": mask}

  def steps_per_epoch(self, batch_size: int) -> int:
    return steps_per_epoch(len(self.splits[self.train_split]), batch_size, self.seq_len)

  def num_eval_steps(self, split: str, batch_size: int, process_count: int = 1) -> int:
    """Batches every host yields in one pass over `split` (the same for any process_count)."""
    del process_count
    return num_eval_steps(len(self.splits[split]), batch_size, self.eval_seq_len)


# ----------------------------------------------------------------------------- batching
def _check_batch(num_tokens: int, batch_size: int, seq_len: int, process_index: int,
                 process_count: int) -> int:
  """Validates the batch geometry and returns Bh, the rows per host."""
  if seq_len < 1:
    raise ValueError(f"seq_len must be >= 1, got {seq_len}")
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index must be in [0, process_count), got {process_index} of {process_count}")
  if batch_size < 1 or batch_size % process_count:
    raise ValueError(f"batch_size {batch_size} must be a positive multiple of the "
                     f"process count {process_count}: every host reads batch_size / "
                     "process_count rows of each global batch")
  if num_tokens < 2:
    raise ValueError(f"a split of {num_tokens} tokens has nothing to predict (needs >= 2)")
  return batch_size // process_count


def steps_per_epoch(num_tokens: int, batch_size: int, seq_len: int) -> int:
  """S, the full training segments per row in one pass over a split of N tokens."""
  return ((num_tokens - 1) // batch_size) // seq_len


def num_eval_steps(num_tokens: int, batch_size: int, seq_len: int) -> int:
  """Segments an eval pass takes to cover every target of a split of N tokens."""
  return math.ceil(math.ceil((num_tokens - 1) / batch_size) / seq_len)


def stream_batches(tokens: np.ndarray, batch_size: int, seq_len: int, process_index: int = 0,
                   process_count: int = 1, start_step: int = 0,
                   ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """Endless training batches (inputs, targets), int32 [Bh, T], Transformer-XL style.

  Row r of the global batch is the stream tokens[r·L : r·L + L + 1], L = (N - 1) // B; step s
  reads its segment s mod S (S = L // T), so consecutive steps continue each row and epochs
  repeat the same layout (as the reference). targets = inputs shifted by one token. This host
  yields rows [p·Bh, (p+1)·Bh). The batch at step s depends only on s: `start_step` resumes.

  Args:
    tokens: 1-D token array [N] (a memmap is read only where the batches need it).
    batch_size: B, the global number of rows; a multiple of process_count.
    seq_len: T.
    process_index: p, this host.
    process_count: P, the hosts.
    start_step: the first step yielded.
  """
  tokens = np.asarray(tokens)
  rows_per_host = _check_batch(len(tokens), batch_size, seq_len, process_index, process_count)
  if start_step < 0:
    raise ValueError(f"start_step must be >= 0, got {start_step}")
  row_len = (len(tokens) - 1) // batch_size
  steps = row_len // seq_len
  if steps < 1:
    raise ValueError(
        f"a split of {len(tokens):,} tokens is too short for {batch_size} rows of {seq_len}-token "
        f"segments: it needs at least {batch_size * seq_len + 1:,} tokens; use a smaller batch "
        "size or seq_len")
  first = process_index * rows_per_host
  row_starts = (first + np.arange(rows_per_host)) * row_len
  step = start_step
  while True:
    offset = (step % steps) * seq_len
    # [Bh, T + 1]: each row's window; inputs and targets are its two shifted views.
    window = np.stack([tokens[s + offset:s + offset + seq_len + 1] for s in row_starts])
    window = window.astype(np.int32)
    yield window[:, :-1], window[:, 1:]
    step += 1


def eval_stream_batches(tokens: np.ndarray, batch_size: int, seq_len: int,
                        process_index: int = 0, process_count: int = 1,
                        ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
  """Finite eval batches (inputs, targets int32 [Bh, T], mask bool [Bh, T]).

  Row r is tokens[r·L : r·L + L + 1] with L = ceil((N - 1) / B); positions past a row's L targets
  or past the end of the split are padded with token 0 and masked. Over all hosts and steps,
  every token but the first is an unmasked target exactly once. All hosts yield the same number
  of batches (`num_eval_steps`), as a sharded eval step needs.
  """
  tokens = np.asarray(tokens)
  n = len(tokens)
  rows_per_host = _check_batch(n, batch_size, seq_len, process_index, process_count)
  row_len = math.ceil((n - 1) / batch_size)
  rows = process_index * rows_per_host + np.arange(rows_per_host)
  for step in range(num_eval_steps(n, batch_size, seq_len)):
    offset = step * seq_len
    window = np.zeros((rows_per_host, seq_len + 1), np.int32)  # [Bh, T + 1]
    mask = np.zeros((rows_per_host, seq_len), bool)  # [Bh, T]
    for i, r in enumerate(rows):
      start = r * row_len + offset
      # Targets t = 1..T sit at start + t; keep those inside this row and inside the split.
      stop = min(start + seq_len + 1, r * row_len + row_len + 1, n)
      if stop > start:
        window[i, :stop - start] = tokens[start:stop]
        mask[i, :max(stop - start - 1, 0)] = True
    yield window[:, :-1], window[:, 1:], mask


# ----------------------------------------------------------------------------- files, caches
def default_cache_dir() -> pathlib.Path:
  """$ALGEBRANETS_CACHE, else $XDG_CACHE_HOME/algebranets, else ~/.cache/algebranets."""
  if os.environ.get("ALGEBRANETS_CACHE"):
    return pathlib.Path(os.environ["ALGEBRANETS_CACHE"])
  xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(xdg) / "algebranets"


def _tmp_name(path: pathlib.Path) -> pathlib.Path:
  # Unique per writer, so hosts sharing a file system never write into each other's file.
  return path.with_name(f"{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _publish(tmp: pathlib.Path, path: pathlib.Path) -> None:
  os.replace(tmp, path)  # atomic: readers see the old state or the whole new file


def _memmap(path: pathlib.Path, dtype=np.uint8) -> np.ndarray:
  if path.stat().st_size == 0:
    return np.zeros((0,), dtype)
  return np.memmap(path, dtype=dtype, mode="r")


def _stream_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: pathlib.Path,
                   archive: pathlib.Path, how_to_get: str) -> None:
  """Copies one archive member to `dest` (a path the caller chose), checking its CRC."""
  dest.parent.mkdir(parents=True, exist_ok=True)
  tmp = _tmp_name(dest)
  try:
    with zf.open(info) as src, open(tmp, "wb") as out:
      shutil.copyfileobj(src, out, _CHUNK)  # zipfile checks the CRC at the end of the member
    _publish(tmp, dest)
  except (zipfile.BadZipFile, EOFError, zlib.error) as e:
    tmp.unlink(missing_ok=True)
    raise errors.DataError(f"{archive}: member {info.filename!r} is corrupt ({e}); "
                           f"{how_to_get}") from e
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def _open_zip(path: pathlib.Path, how_to_get: str) -> zipfile.ZipFile:
  try:
    return zipfile.ZipFile(path)
  except zipfile.BadZipFile as e:
    raise errors.DataError(f"{path} is not a valid zip archive ({e}): a truncated or damaged "
                           f"download?; {how_to_get}") from e


def _looks_like_zip(path: pathlib.Path) -> bool:
  """Whether `path` starts with a zip local file header (or is named *.zip)."""
  with open(path, "rb") as f:
    return f.read(4) == b"PK\x03\x04" or path.suffix.lower() == ".zip"


def _find_members(zf: zipfile.ZipFile, names: Sequence[str], archive: pathlib.Path,
                  how_to_get: str) -> list:
  """The ZipInfo of each expected member name (exact match); a ValueError if any is missing."""
  by_name = {info.filename: info for info in zf.infolist()}
  missing = [n for n in names if n not in by_name]
  if missing:
    found = sorted(by_name)[:8]
    raise errors.DataError(f"{archive} lacks the expected member(s) {missing} (found {found}"
                     f"{' ...' if len(by_name) > 8 else ''}); {how_to_get}")
  return [by_name[n] for n in names]


def _split_by_sizes(data: np.ndarray, sizes: Sequence[int]) -> dict:
  bounds = np.cumsum([0, *sizes])
  return {s: data[bounds[i]:bounds[i + 1]] for i, s in enumerate(SPLITS)}


def _proportional_sizes(n: int, weights: Sequence[float]) -> tuple[int, int, int]:
  total = float(sum(weights))
  train = int(n * weights[0] / total)
  valid = int(n * weights[1] / total)
  return train, valid, n - train - valid


def _text_dataset(name, splits, vocab_size, seq_len, eval_seq_len, description, info,
                  vocab=None, symbols=None, files=None, total=None) -> TextDataset:
  """The TextDataset, after checking that every split can be batched at all (`_check_splits`)."""
  info = dict(info, sizes={s: int(len(a)) for s, a in splits.items()})
  files = {s: str(f) for s, f in (files or {}).items()}
  _check_splits(splits, files, info.get("source", name), total)
  return TextDataset(name=name, splits=splits, vocab_size=vocab_size, seq_len=seq_len,
                     eval_seq_len=eval_seq_len or seq_len, description=description, info=info,
                     vocab=vocab, symbols=symbols, files=files or None)


def _check_splits(splits, files, source, total: Optional[int]) -> None:
  """A DataError naming the file and the split if a split has nothing to predict (< 2 tokens).
  Runs when the corpus is built, before any model; whether the training split fills a batch is
  `TextDataset.check_batch_size`, run when the batch size is known (the task's resolve)."""
  for split, tokens in splits.items():
    if len(tokens) < 2:
      where = files.get(split) or str(source)
      size = f" ({total:,} bytes)" if total is not None else ""
      raise errors.DataError(
          f"{where}{size}: its {split!r} split has {len(tokens):,} token(s), nothing to "
          "predict (it needs at least 2); use a longer file")


# ----------------------------------------------------------------------------- enwik8
def enwik8(path, *, cache_dir=None, split_sizes: Sequence[int] = ENWIK8_SPLITS,
           proportional: bool = False, reference_tokens: bool = False, seq_len: int = 512,
           eval_seq_len: Optional[int] = None) -> TextDataset:
  """enwik8 split 90M / 5M / 5M: as bytes (V = 256), or as the Transformer-XL reference's tokens.

  Args:
    path: `enwik8.zip`, the raw `enwik8` file, or a directory holding either.
    cache_dir: where a zip's member is unpacked (as `enwik8-<crc>.bytes`) and the reference
      tokens are written (`enwik8-reference-<key>/`); default: beside the zip or raw file. The
      raw file's bytes need no cache: they are memory-mapped in place.
    split_sizes: bytes of train, valid and test; the file must hold exactly their sum.
    proportional: split the file in the ratio of `split_sizes` whatever its size (for
      truncated or test copies).
    reference_tokens: False: every byte is a token, V = 256. True: the reference's token
      stream (module docstring): newline bytes dropped after splitting, the other bytes
      numbered by frequency over all splits (V = 204 on enwik8; `symbols` maps ids to bytes),
      so bits per token are the published bits per character.
    seq_len, eval_seq_len: T for training and evaluation segments.
  """
  how = (f"download {ENWIK8_URL} with scripts/download_enwik8.sh (the zip can be used as it "
         "is, or unzipped to the raw file 'enwik8')")
  path = pathlib.Path(path)
  if path.is_dir():
    for candidate in (path / ENWIK8_MEMBER, path / "enwik8.zip"):
      if candidate.is_file():
        path = candidate
        break
    else:
      raise FileNotFoundError(f"expected enwik8.zip or the raw file enwik8 in {path}; {how}")
  if not path.is_file():
    raise FileNotFoundError(f"expected enwik8.zip or the raw file enwik8 at {path}; {how}")
  info = {"source": str(path)}
  cache = pathlib.Path(cache_dir) if cache_dir is not None else path.parent
  if not zipfile.is_zipfile(path) and _looks_like_zip(path):
    raise errors.DataError(
        f"{path} is a truncated or damaged zip archive (it starts as one but has no complete "
        f"directory of members); {how}")
  if zipfile.is_zipfile(path):
    with _open_zip(path, how) as zf:
      (member,) = _find_members(zf, [ENWIK8_MEMBER], path, how)
      raw = cache / f"enwik8-{member.CRC:08x}.bytes"
      if not (raw.is_file() and raw.stat().st_size == member.file_size):
        _stream_member(zf, member, raw, path, how)
      info.update(cache=str(raw), crc32=f"{member.CRC:08x}")
      identity = f"crc32 {member.CRC:08x} size {member.file_size}"
  else:
    raw = path
    st = raw.stat()
    identity = f"size {st.st_size} mtime {st.st_mtime_ns}"
  data = _memmap(raw)
  if proportional:
    sizes = _proportional_sizes(len(data), split_sizes)
  elif len(data) != sum(split_sizes):
    raise ValueError(
        f"{path} holds {len(data):,} bytes but the split {tuple(split_sizes)} needs exactly "
        f"{sum(split_sizes):,} (enwik8 is 100,000,000 bytes: a truncated or different file?); "
        f"{how}; or pass proportional=True to split any file 90/5/5")
  else:
    sizes = tuple(split_sizes)
  splits = _split_by_sizes(data, sizes)
  split_text = f"split {sizes[0]:,}/{sizes[1]:,}/{sizes[2]:,}"
  if not reference_tokens:
    return _text_dataset("enwik8", splits, 256, seq_len, eval_seq_len,
                         f"enwik8 bytes from {path}, {split_text}", info, total=len(data))
  key = hashlib.sha256(f"{identity}\t{tuple(int(x) for x in sizes)}".encode()).hexdigest()
  out_dir = cache / f"enwik8-reference-{key[:16]}"
  if not (out_dir / "meta.json").is_file():
    _publish_dir(lambda tmp: _write_reference_tokens(splits, tmp), out_dir)
  meta = json.loads((out_dir / "meta.json").read_text())
  symbols = tuple(int(b) for b in meta["symbols"])
  tokens = {s: _memmap(out_dir / f"{s}.ids") for s in SPLITS}
  info.update(reference_tokens=str(out_dir), newlines_dropped=meta["newlines_dropped"],
              bytes=meta["bytes"])
  return _text_dataset(
      "enwik8", tokens, len(symbols), seq_len, eval_seq_len,
      f"enwik8 reference tokens (Transformer-XL prep: newlines dropped, {len(symbols)} symbols "
      f"by frequency) from {path}, bytes {split_text}", info, symbols=symbols, total=len(data))


def reference_token_vocabulary(splits: Mapping[str, np.ndarray]) -> np.ndarray:
  """The reference `Vocab`'s symbols, as bytes: id -> byte value.

  The distinct bytes other than the newline over the splits taken in SPLITS order, by
  decreasing count, ties by first appearance in that order (the order of the reference's
  `Counter.most_common`, a stable sort by count of the symbols in first-seen order).
  """
  counts = np.zeros(256, np.int64)
  first = np.full(256, np.iinfo(np.int64).max)
  offset = 0  # position in the newline-free stream of all splits
  for split in SPLITS:
    data = splits[split]
    for start in range(0, len(data), _CHUNK):
      chunk = np.asarray(data[start:start + _CHUNK])
      chunk = chunk[chunk != NEWLINE]
      here = np.bincount(chunk, minlength=256)
      for byte in np.flatnonzero((here > 0) & (counts == 0)):
        first[byte] = offset + int(np.argmax(chunk == byte))
      counts += here
      offset += len(chunk)
  present = np.flatnonzero(counts)
  return present[np.lexsort((first[present], -counts[present]))]


def _write_reference_tokens(splits: Mapping[str, np.ndarray], out_dir: pathlib.Path) -> None:
  """{split}.ids (uint8 ids, newlines dropped) and meta.json (symbols, counts) in out_dir."""
  symbols = reference_token_vocabulary(splits)
  ids = np.zeros(256, np.uint8)
  ids[symbols] = np.arange(len(symbols))
  sizes, dropped = {}, {}
  for split in SPLITS:
    data, n = splits[split], 0
    with open(out_dir / f"{split}.ids", "wb") as out:
      for start in range(0, len(data), _CHUNK):
        chunk = np.asarray(data[start:start + _CHUNK])
        chunk = ids[chunk[chunk != NEWLINE]]
        out.write(chunk.tobytes())
        n += len(chunk)
    sizes[split], dropped[split] = n, int(len(data) - n)
  meta = {"symbols": [int(b) for b in symbols], "sizes": sizes, "newlines_dropped": dropped,
          "bytes": {s: int(len(splits[s])) for s in SPLITS}}
  (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))


def _publish_dir(build, out_dir: pathlib.Path) -> None:
  """Runs build(tmp) in a fresh folder and renames it to out_dir (another writer may win)."""
  tmp = _tmp_name(out_dir)
  tmp.mkdir(parents=True)
  try:
    build(tmp)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  try:
    os.rename(tmp, out_dir)
  except OSError:  # another host finished first: its copy is identical
    shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- byte files
def byte_file(path, *, fractions: Sequence[float] = DEFAULT_FRACTIONS, seq_len: int = 512,
              eval_seq_len: Optional[int] = None) -> TextDataset:
  """Any file as a byte corpus (V = 256), memory-mapped, split by position in `fractions`."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(
        f"expected a text or byte file at {path} (any file: its bytes are the corpus, split "
        f"{'/'.join(str(f) for f in fractions)} by position)")
  data = _memmap(path)
  sizes = _proportional_sizes(len(data), fractions)
  return _text_dataset(
      "byte_file", _split_by_sizes(data, sizes), 256, seq_len, eval_seq_len,
      f"bytes of {path}, split {sizes[0]:,}/{sizes[1]:,}/{sizes[2]:,}", {"source": str(path)},
      total=len(data))


# ----------------------------------------------------------------------------- stdlib
def stdlib_files(root=None) -> list:
  """The embedded corpus's files: (relative POSIX path, absolute path), sorted by the former.

  Every `*.py` file under `root` (default: `sysconfig.get_paths()["stdlib"]`, the running
  Python's standard library), skipping directories named in `STDLIB_EXCLUDED_DIRS` and symlinks.
  """
  root = pathlib.Path(root if root is not None else sysconfig.get_paths()["stdlib"])
  if not root.is_dir():
    raise FileNotFoundError(f"the Python standard library was expected at {root} "
                            "(sysconfig.get_paths()['stdlib']); is this a full Python install?")
  files = []
  for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = [d for d in dirnames if d not in STDLIB_EXCLUDED_DIRS]
    for f in filenames:
      full = pathlib.Path(dirpath) / f
      if f.endswith(".py") and not full.is_symlink():
        files.append((full.relative_to(root).as_posix(), full))
  return sorted(files)


def stdlib(*, cache_dir=None, root=None, fractions: Sequence[float] = DEFAULT_FRACTIONS,
           seq_len: int = 512, eval_seq_len: Optional[int] = None) -> TextDataset:
  """The embedded default byte corpus: this Python's standard library sources (V = 256).

  The files of `stdlib_files(root)` are concatenated as bytes in that order (about 12 MB on
  CPython 3.11) and split by position in `fractions`. Different Python versions give different
  corpora: `description` and `info` name the version, file count, size and sha256 of the bytes.
  The concatenation is cached in `cache_dir` (default `default_cache_dir()`) under a key of the
  Python version and the files' names, sizes and mtimes.
  """
  root = pathlib.Path(root if root is not None else sysconfig.get_paths()["stdlib"])
  files = stdlib_files(root)
  if not files:
    raise FileNotFoundError(f"no .py files under {root}")
  version = sys.version.split()[0]
  key = hashlib.sha256(version.encode())
  for rel, full in files:
    st = full.stat()
    key.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
  cache = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
  raw = cache / f"stdlib-py{version}-{key.hexdigest()[:16]}.bytes"
  meta_path = raw.with_suffix(".json")
  if not (raw.is_file() and meta_path.is_file()):
    cache.mkdir(parents=True, exist_ok=True)
    digest, size = hashlib.sha256(), 0
    tmp = _tmp_name(raw)
    with open(tmp, "wb") as out:
      for _, full in files:
        chunk = full.read_bytes()
        digest.update(chunk)
        out.write(chunk)
        size += len(chunk)
    meta = {"python": version, "root": str(root), "files": len(files), "bytes": size,
            "sha256": digest.hexdigest()}
    tmp_meta = _tmp_name(meta_path)
    tmp_meta.write_text(json.dumps(meta, indent=1))
    _publish(tmp, raw)
    _publish(tmp_meta, meta_path)
  meta = json.loads(meta_path.read_text())
  data = _memmap(raw)
  sizes = _proportional_sizes(len(data), fractions)
  description = (f"Python {version} standard library: {meta['files']} .py files, "
                 f"{meta['bytes']:,} bytes, sha256 {meta['sha256'][:16]}, split "
                 f"{sizes[0]:,}/{sizes[1]:,}/{sizes[2]:,}")
  return _text_dataset("stdlib", _split_by_sizes(data, sizes), 256, seq_len, eval_seq_len,
                       description, dict(meta, cache=str(raw), source=str(raw)), total=len(data))


# ----------------------------------------------------------------------------- WikiText-103
def _wikitext_source(path: pathlib.Path, how: str):
  """('zip', zip path) or ('dir', directory holding wiki.{train,valid,test}.tokens)."""
  if path.is_file():
    return "zip", path
  if path.is_dir():
    for d in (path, path / "wikitext-103"):
      if all((d / f"wiki.{s}.tokens").is_file() for s in SPLITS):
        return "dir", d
    if (path / "wikitext-103-v1.zip").is_file():
      return "zip", path / "wikitext-103-v1.zip"
  raise FileNotFoundError(
      f"expected wikitext-103-v1.zip, or a directory with wiki.train.tokens, wiki.valid.tokens "
      f"and wiki.test.tokens, at {path}; {how}")


def _wikitext_file(kind: str, source: pathlib.Path, split: str) -> str:
  """Where `split` is read from: "archive: member" or the file, for messages."""
  if kind == "zip":
    return f"{source}: member {WIKITEXT103_MEMBERS[split]!r}"
  return str(source / f"wiki.{split}.tokens")


def _lines(kind: str, source: pathlib.Path, split: str, zf, how: str) -> Iterator[str]:
  """The lines of `split`; a DataError naming the archive, member and split if it is damaged."""
  try:
    if kind == "zip":
      with zf.open(WIKITEXT103_MEMBERS[split]) as raw:
        yield from io.TextIOWrapper(raw, encoding="utf-8")
    else:
      with open(source / f"wiki.{split}.tokens", encoding="utf-8") as f:
        yield from f
  except (zipfile.BadZipFile, EOFError, zlib.error, UnicodeDecodeError) as e:
    what = "is corrupt" if kind == "zip" else "is not UTF-8 text"
    raise errors.DataError(f"{_wikitext_file(kind, source, split)} (the {split} split) {what} "
                           f"({type(e).__name__}: {e}); {how}") from e


def _encode_split(lines: Iterator[str], index: dict, grow: bool, out_path: pathlib.Path,
                  dtype) -> int:
  """Writes the ids of every word, and `<eos>` per line, to out_path; returns the count.

  With `grow`, unseen words get the next id (first-occurrence order); else they must be known.
  """
  count, buf = 0, []
  eos = index[EOS]
  unk = index.get(UNK)
  with open(out_path, "wb") as out:
    for line in lines:
      words = line.split()
      if grow:
        buf.extend([index.setdefault(w, len(index)) for w in words])
      else:
        ids = [index.get(w, unk) for w in words]
        if unk is None and None in ids:
          word = words[ids.index(None)]
          raise ValueError(f"word {word!r} is not in the training vocabulary, which has no "
                           f"{UNK}: is this WikiText-103 (wikitext-103-v1, not -raw)?")
        buf.extend(ids)
      buf.append(eos)
      if len(buf) >= 1 << 20:
        out.write(np.asarray(buf, dtype).tobytes())
        count += len(buf)
        buf = []
    out.write(np.asarray(buf, dtype).tobytes())
    count += len(buf)
  return count


def _build_word_corpus(kind, source, zf, out_dir: pathlib.Path, how: str) -> None:
  """Encodes every split into out_dir: vocab.txt, {split}.ids, meta.json (written last)."""
  # One pass over train: provisional ids in first-occurrence order (<eos> first), then counts,
  # then a permutation to the final order: <eos>, then by count descending, ties by first
  # occurrence -- the reference Vocab's order (Counter.most_common is a stable sort).
  index = {EOS: 0}
  provisional = out_dir / "train.provisional"
  n_train = _encode_split(_lines(kind, source, "train", zf, how), index, True, provisional,
                          np.uint32)
  counts = np.zeros(len(index), np.int64)
  ids = _memmap(provisional, np.uint32)
  for start in range(0, len(ids), _CHUNK):
    counts += np.bincount(ids[start:start + _CHUNK], minlength=len(index))
  order = np.lexsort((np.arange(len(index)), -counts))  # by -count, then first occurrence
  order = np.concatenate([[0], order[order != 0]])  # <eos> first
  remap = np.empty(len(index), np.int64)
  remap[order] = np.arange(len(index))
  words = list(index)
  vocab = [words[i] for i in order]
  dtype = np.uint16 if len(vocab) <= 1 << 16 else np.uint32
  with open(out_dir / "train.ids", "wb") as out:
    for start in range(0, len(ids), _CHUNK):
      out.write(remap[ids[start:start + _CHUNK]].astype(dtype).tobytes())
  del ids
  provisional.unlink()
  final = {w: i for i, w in enumerate(vocab)}
  sizes = {"train": n_train}
  for split in SPLITS[1:]:
    sizes[split] = _encode_split(_lines(kind, source, split, zf, how), final, False,
                                 out_dir / f"{split}.ids", dtype)
  (out_dir / "vocab.txt").write_text("".join(w + "\n" for w in vocab), encoding="utf-8")
  meta = {"source": str(source), "dtype": np.dtype(dtype).name, "vocab_size": len(vocab),
          "sizes": sizes}
  (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))


def wikitext103(path, *, cache_dir=None, seq_len: int = 150,
                eval_seq_len: Optional[int] = None) -> TextDataset:
  """WikiText-103 word-level (V = 267,735 on the real data), encoded once into a cache.

  Args:
    path: `wikitext-103-v1.zip`, the extracted `wikitext-103/` directory (with
      wiki.{train,valid,test}.tokens), or a directory holding either.
    cache_dir: where the vocabulary and the id arrays are written, in a folder named after a
      hash of the source's member CRCs (zip) or file sizes and mtimes (directory); default:
      beside the source.
    seq_len, eval_seq_len: T for training and evaluation segments.
  """
  how = (f"download {WIKITEXT103_URL} with scripts/download_wikitext103.sh (the word-level "
         "'wikitext-103-v1', not '-raw-v1'; the zip can be used as it is)")
  kind, source = _wikitext_source(pathlib.Path(path), how)
  zf = None
  key = hashlib.sha256()
  if kind == "zip":
    zf = _open_zip(source, how)
    for info in _find_members(zf, [WIKITEXT103_MEMBERS[s] for s in SPLITS], source, how):
      key.update(f"{info.filename}\t{info.file_size}\t{info.CRC}\n".encode())
  else:
    for s in SPLITS:
      st = (source / f"wiki.{s}.tokens").stat()
      key.update(f"{s}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
  cache = pathlib.Path(cache_dir) if cache_dir is not None else source.parent
  out_dir = cache / f"wikitext103-{key.hexdigest()[:16]}"
  try:
    if not (out_dir / "meta.json").is_file():
      tmp = _tmp_name(out_dir)
      tmp.mkdir(parents=True)
      try:
        _build_word_corpus(kind, source, zf, tmp, how)
      except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, (zipfile.BadZipFile, UnicodeDecodeError, EOFError)):
          raise errors.DataError(f"{source} is malformed ({e}); {how}") from e
        raise
      try:
        os.rename(tmp, out_dir)
      except OSError:  # another host finished first: its copy is identical
        shutil.rmtree(tmp, ignore_errors=True)
  finally:
    if zf is not None:
      zf.close()
  meta = json.loads((out_dir / "meta.json").read_text())
  vocab = (out_dir / "vocab.txt").read_text(encoding="utf-8").split("\n")[:-1]
  splits = {s: _memmap(out_dir / f"{s}.ids", np.dtype(meta["dtype"])) for s in SPLITS}
  return _text_dataset(
      "wikitext103", splits, len(vocab), seq_len, eval_seq_len,
      f"WikiText-103 words from {source}, vocabulary {len(vocab):,} from train",
      {"source": str(source), "cache": str(out_dir)}, vocab=tuple(vocab),
      files={s: _wikitext_file(kind, source, s) for s in SPLITS})

