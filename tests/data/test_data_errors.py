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
