"""Data errors a user can act on: they name the file and the split, and come before the model.

Small files in the real formats, damaged on purpose: a class only in the test split, empty and
too-short text files, zip archives with a corrupt or truncated member, JPEGs with garbage bytes.
"""

import zipfile

import numpy as np
import pytest

from algebranets import data
from algebranets import errors
from algebranets.data import text


def _zip(path, members, compression=zipfile.ZIP_DEFLATED):
  with zipfile.ZipFile(path, "w", compression=compression) as zf:
    for name, payload in members.items():
      zf.writestr(name, payload)
  return path


# ----------------------------------------------------------------------------- image folders
@pytest.fixture
def tf():
  return pytest.importorskip("tensorflow")


def _png(tf, path, value=0):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(tf.io.encode_png(np.full((8, 8, 3), value, np.uint8)).numpy())


def _jpeg(tf, path, value=0):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(tf.io.encode_jpeg(np.full((8, 8, 3), value, np.uint8)).numpy())


def test_a_class_only_in_the_test_split_is_an_error_naming_it(tf, tmp_path):
  # Before: "dog" became label 2 of 3, a class no training example has, without a word.
  for split, labels in {"train": ("ant", "cat"), "test": ("ant", "cat", "dog")}.items():
    for label in labels:
      _png(tf, tmp_path / split / label / "0.png")
  with pytest.raises(errors.DataError, match=r"'dog'.*only in.*test.*no training"):
    data.build("image_folder", root=tmp_path, image_size=8, recipe="cifar")
  # A class missing from the test split is fine: it is trained, just not tested.
  (tmp_path / "test" / "dog" / "0.png").unlink()
  (tmp_path / "test" / "dog").rmdir()
  (tmp_path / "test" / "cat" / "0.png").unlink()
  (tmp_path / "test" / "cat").rmdir()
  ds = data.build("image_folder", root=tmp_path, image_size=8, recipe="cifar")
  assert ds.class_names == ("ant", "cat") and ds.num_classes == 2


def test_a_training_subset_that_leaves_a_class_out_is_an_error_naming_it(tf, tmp_path):
  for label in ("ant", "bee", "cat"):
    _png(tf, tmp_path / "train" / label / "0.png")
    _png(tf, tmp_path / "test" / label / "0.png")
  with pytest.raises(errors.DataError, match=r"train_examples=2.*'cat'.*at least 3"):
    data.build("image_folder", root=tmp_path, image_size=8, recipe="cifar", train_examples=2)


# ----------------------------------------------------------------------------- text files
def test_an_empty_text_file_names_the_file_and_split_when_built(tmp_path):
  empty = tmp_path / "empty.txt"
  empty.write_bytes(b"")
  with pytest.raises(errors.DataError, match=r"empty\.txt.*0 bytes.*'train' split"):
    data.build("byte_file", path=empty, seq_len=16)
  tiny = tmp_path / "tiny.txt"  # 90/5/5 of 40 bytes: valid and test get 2 tokens each
  tiny.write_bytes(b"x" * 30)
  with pytest.raises(errors.DataError, match=r"tiny\.txt.*'valid' split.*1 token"):
    data.build("byte_file", path=tiny, seq_len=4)


def test_a_text_file_too_short_for_its_batch_is_refused_before_the_model_is_built(
    tmp_path, monkeypatch):
  from algebranets.training import tasks  # pylint: disable=g-import-not-at-top
  from algebranets.training import train  # pylint: disable=g-import-not-at-top
  from tests.training import training_testlib  # pylint: disable=g-import-not-at-top
  short = tmp_path / "short.txt"
  short.write_bytes(b"abcdefgh" * 50)  # 400 bytes: train 360, needs 16 x 16 + 1 = 257 per row
  config = training_testlib.load_config("char_transformer_xl", f"r,debug,path={short}")
  config.unlock()
  config.train.batch_size = 32  # 32 rows of 16 tokens need 513 training bytes
  built = []
  monkeypatch.setattr(tasks.LanguageModelTask, "__init__",
                      lambda self, *a, **k: built.append(1) or _no_model())
  with pytest.raises(errors.DataError,
                     match=r"short\.txt.*'train' split.*360 tokens.*32 rows of 16.*513"):
    train.train_and_evaluate(config, tmp_path / "w")
  assert not built
  assert not (tmp_path / "w" / "checkpoints").exists()


def _no_model():
  raise AssertionError("the model was built before the data was checked")


def _corrupt(path, payload):
  """Flips bytes in the middle of `payload`'s compressed data in the zip at `path`."""
  raw = bytearray(path.read_bytes())
  start = raw.index(b"PK\x03\x04") + 30 + len(payload)  # past the local header and name
  for i in range(start + 200, start + 260):
    raw[i] ^= 0x5A
  path.write_bytes(bytes(raw))
  return path


def _words(n, seed=0):
  rng = np.random.default_rng(seed)
  vocab = [f"w{i}" for i in range(50)]
  return "".join(" ".join(rng.choice(vocab, 12)) + "\n" for _ in range(n))


def test_enwik8_corrupt_compressed_member_names_archive_and_member(tmp_path):
  payload = np.random.default_rng(0).integers(0, 8, 30_000, dtype=np.uint8).tobytes()
  archive = _corrupt(_zip(tmp_path / "enwik8.zip", {"enwik8": payload}), "enwik8")
  with pytest.raises(errors.DataError, match=r"enwik8\.zip: member 'enwik8' is corrupt"):
    text.enwik8(archive, cache_dir=tmp_path / "cache", proportional=True)
  assert not list((tmp_path / "cache").glob("*"))  # no partial cache file


def test_enwik8_truncated_archive_is_not_read_as_raw_bytes(tmp_path):
  payload = np.random.default_rng(0).integers(0, 8, 30_000, dtype=np.uint8).tobytes()
  archive = _zip(tmp_path / "enwik8.zip", {"enwik8": payload})
  archive.write_bytes(archive.read_bytes()[:5000])  # the download stopped half-way
  # Before: not a zip by its (missing) directory, so its 5,000 bytes became the corpus.
  with pytest.raises(errors.DataError, match=r"enwik8\.zip.*truncated or damaged zip"):
    text.enwik8(archive, cache_dir=tmp_path / "cache", proportional=True)


def test_wikitext103_corrupt_member_names_archive_member_and_split(tmp_path):
  members = {f"wikitext-103/wiki.{s}.tokens": _words(300 if s == "train" else 60, i)
             for i, s in enumerate(text.SPLITS)}
  archive = _zip(tmp_path / "wikitext-103-v1.zip", members)
  # Corrupt the valid member: the train split encodes first, then valid fails.
  raw = bytearray(archive.read_bytes())
  name = b"wikitext-103/wiki.valid.tokens"
  start = raw.index(name) + len(name)  # its local header comes first, its data next
  for i in range(start + 100, start + 140):
    raw[i] ^= 0x5A
  archive.write_bytes(bytes(raw))
  with pytest.raises(errors.DataError, match=r"wikitext-103-v1\.zip: member "
                     r"'wikitext-103/wiki\.valid\.tokens' \(the valid split\) is corrupt"):
    text.wikitext103(archive, cache_dir=tmp_path / "cache")
  assert not [p for p in (tmp_path / "cache").glob("*") if p.is_dir()]  # nothing half-built


def test_wikitext103_short_split_names_the_file(tmp_path):
  root = tmp_path / "wikitext-103"
  root.mkdir()
  for s in text.SPLITS:
    (root / f"wiki.{s}.tokens").write_text(_words(50) if s == "train" else "", encoding="utf-8")
  with pytest.raises(errors.DataError, match=r"wiki\.valid\.tokens.*'valid' split.*0 token"):
    text.wikitext103(root, cache_dir=tmp_path / "cache")


# ----------------------------------------------------------------------------- damaged images
def _folder_with_bad_images(tf, root):
  """train: ant 0-3, cat 0-3 (cat/02.jpg: garbage bytes); test: ant 0-1, cat 0-1 (ant/01.jpg:
  a JPEG cut in half)."""
  for split, count in (("train", 4), ("test", 2)):
    for c, label in enumerate(("ant", "cat")):
      for i in range(count):
        _jpeg(tf, root / split / label / f"{i:02d}.jpg", 60 * c + 10 * i)
  (root / "train" / "cat" / "02.jpg").write_bytes(
      np.random.default_rng(0).integers(0, 256, 600, dtype=np.uint8).tobytes())
  half = root / "test" / "ant" / "01.jpg"
  raw = tf.io.encode_jpeg(np.random.default_rng(1).integers(0, 256, (32, 32, 3), np.uint8)
                          ).numpy()
  half.write_bytes(raw[:len(raw) // 2])
  return root


def test_a_corrupt_image_names_the_file_and_the_split(tf, tmp_path):
  root = _folder_with_bad_images(tf, tmp_path / "f")
  ds = data.build("image_folder", root=root, image_size=8, recipe="cifar")
  # Before: tf.errors.InvalidArgumentError "Unknown image file format..." naming no file.
  with pytest.raises(errors.DataError, match=r"train/cat/02\.jpg: this image of the 'train' "
                     r"split of image_folder does not decode \(Unknown image file format.*\);.*"
                     r"--config\.data\.skip_corrupt=True"):
    for _ in zip(range(8), ds.train_batches(4, start_step=0)):
      pass
  with pytest.raises(errors.DataError, match=r"test/ant/01\.jpg.*'test' split"):
    list(ds.eval_batches("test", 2))
  # On two hosts (global batch 4: host 0 reads test examples 0-1, the ants; host 1 the cats),
  # the host whose rows hold the damaged file names it; the other reads its rows.
  with pytest.raises(errors.DataError, match=r"test/ant/01\.jpg"):
    list(ds.eval_batches("test", 4, process_index=0, process_count=2))
  (batch,) = list(ds.eval_batches("test", 4, process_index=1, process_count=2))
  np.testing.assert_array_equal(batch["label"], [1, 1])


def test_skip_corrupt_leaves_unreadable_images_out_and_counts_them(tf, tmp_path, caplog):
  root = _folder_with_bad_images(tf, tmp_path / "f")
  with caplog.at_level("WARNING", logger="algebranets"):
    ds = data.build("image_folder", root=root, image_size=8, recipe="cifar", skip_corrupt=True)
  assert ds.num_examples("train") == 7 and ds.num_examples("test") == 3
  assert "skipped 1 unreadable" in ds.description
  warned = " ".join(r.getMessage() for r in caplog.records)
  assert "train/cat/02.jpg" in warned and "test/ant/01.jpg" in warned
  batches = list(zip(range(4), ds.train_batches(4)))
  assert len(batches) == 4
  (batch,) = list(ds.eval_batches("test", 4))
  assert batch["mask"].tolist() == [True, True, True, False]
  np.testing.assert_array_equal(batch["label"][:3], [0, 1, 1])  # ant/00, cat/00, cat/01
