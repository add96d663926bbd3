"""Image pipelines: image folders written by the test, TFDS datasets written by the test, TFDS
CIFAR-10 under `mock_data`, and the TFDS failure messages. (The real TFDS imagenet2012 and
cifar10 builders: test_tfds_builders.py.)"""

import itertools
import pathlib
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
tfds = pytest.importorskip("tensorflow_datasets")

from algebranets import data  # pylint: disable=g-import-not-at-top
from algebranets.data import images

ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)  # normalisation that leaves pixel / 255


def _write(path, pixels, fmt):
  encoded = tf.io.encode_png(pixels) if fmt == "png" else tf.io.encode_jpeg(pixels, quality=95)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(encoded.numpy())


@pytest.fixture
def id_folder(tmp_path):
  """8 x 8 constant PNGs whose grey level is (example id + 1) * 20; ids in file order."""
  root = tmp_path / "folder"
  layout = {"train": {"cat": 3, "ant": 2, "bee": 4}, "test": {"bee": 3, "ant": 2, "cat": 2}}
  ids = {}
  for split, classes in layout.items():
    i = 0
    for label in sorted(classes):
      for k in range(classes[label]):
        _write(root / split / label / f"{k:02d}.png", np.full((8, 8, 3), (i + 1) * 20, np.uint8),
               "png")
        i += 1
    ids[split] = i
  return root, ids


def _ids(batch):
  """The example id of every image (pixel / 255 = (id + 1) * 20 / 255); -1 for zero padding."""
  grey = batch["image"].max(axis=(1, 2, 3)) * 255
  return np.rint(grey / 20).astype(int) - 1


def test_image_folder_labels_follow_sorted_class_names(id_folder):
  root, ids = id_folder
  ds = data.build("image_folder", root=root, image_size=8, recipe="cifar", mean=ZERO, std=ONE)
  assert ds.class_names == ("ant", "bee", "cat") and ds.num_classes == 3
  assert ds.eval_splits == ("test",)
  assert ds.num_examples("train") == 9 and ds.num_examples("test") == 7
  (batch,) = list(ds.eval_batches("test", 8))
  assert batch["mask"].tolist() == [True] * 7 + [False]
  np.testing.assert_array_equal(batch["label"][:7], [0, 0, 1, 1, 1, 2, 2])
  np.testing.assert_array_equal(_ids(batch)[:7], np.arange(7))  # file order, unaugmented


def test_image_folder_subsets_are_class_balanced_and_the_first_files(id_folder):
  root, _ = id_folder  # train: ant 2, bee 4, cat 3 (ids 0-1, 2-5, 6-8); test: ant 2, bee 3, cat 2
  ds = data.build("image_folder", root=root, image_size=8, recipe="cifar", mean=ZERO, std=ONE,
                  train_examples=7, eval_examples=4)
  # train: 7 = 3 labels x 2 + 1, the extra one for ant, which has only 2 files: 6 in all.
  # test: 4 = 3 x 1 + 1: ant 2, bee 1, cat 1.
  expected = {"train": ([0, 0, 1, 1, 2, 2], [0, 1, 2, 3, 6, 7]),
              "test": ([0, 0, 1, 2], [0, 1, 2, 5])}
  for split, (labels, ids) in expected.items():
    assert ds.num_examples(split) == len(labels)
    (batch,) = list(ds.eval_batches(split, 8))
    np.testing.assert_array_equal(batch["label"][:len(labels)], labels)
    np.testing.assert_array_equal(_ids(batch)[:len(ids)], ids)
  with pytest.raises(ValueError, match="train_examples must be an int >= 0"):
    data.build("image_folder", root=root, train_examples=-1)


def test_image_folder_eval_pads_masks_and_covers_each_example_once_over_two_hosts(id_folder):
  root, _ = id_folder
  ds = data.build("image_folder", root=root, image_size=8, recipe="cifar", mean=ZERO, std=ONE)
  steps = ds.num_eval_steps("test", 4, process_count=2)
  assert steps == 2  # 7 examples in global batches of 4
  seen = []
  for p in range(2):
    batches = list(ds.eval_batches("test", 4, process_index=p, process_count=2))
    assert len(batches) == steps
    for b in batches:
      assert b["image"].shape == (2, 8, 8, 3) and b["mask"].dtype == bool
      seen += _ids(b)[b["mask"]].tolist()
  assert sorted(seen) == list(range(7))
  assert sum(int(b["mask"].sum()) for b in ds.eval_batches("test", 4, process_index=1,
                                                           process_count=2)) == 3


def test_image_folder_training_is_sharded_resumable_and_covers_each_epoch(id_folder):
  root, _ = id_folder
  ds = data.build("image_folder", root=root, image_size=8, recipe="cifar", mean=ZERO, std=ONE)
  single = list(itertools.islice(ds.train_batches(6, seed=3), 6))  # 4 epochs of 9 examples
  for b in single:
    assert b["image"].shape == (6, 8, 8, 3) and b["label"].dtype == np.int32
  order = np.concatenate([_ids(b) for b in single])
  for epoch in range(4):
    assert sorted(order[9 * epoch:9 * (epoch + 1)]) == list(range(9))
  assert not np.array_equal(order[:9], order[9:18])  # reshuffled per epoch
  # Hosts' batches concatenate to the global batch, and resuming replays exactly.
  hosts = [ds.train_batches(6, seed=3, process_index=p, process_count=2, start_step=2)
           for p in range(2)]
  for want in single[2:5]:
    got = [next(h) for h in hosts]
    for key in ("image", "label"):
      np.testing.assert_array_equal(np.concatenate([g[key] for g in got]), want[key])
  other_seed = next(ds.train_batches(6, seed=4))
  assert not np.array_equal(other_seed["image"], single[0]["image"])


def test_inception_augmentation_shapes_and_ranges(tmp_path):
  rng = np.random.default_rng(0)
  root = tmp_path / "folder"
  for split in ("train", "val"):
    for label, (h, w, fmt) in {"a": (40, 30, "jpg"), "b": (24, 50, "png")}.items():
      for k in range(2):
        _write(root / split / label / f"{k}.{fmt}",
               rng.integers(0, 256, (h, w, 3), dtype=np.uint8), fmt)
  ds = data.build("image_folder", root=root, image_size=16)  # ImageNet mean/std
  low = (0 - np.array(images.IMAGENET_MEAN)) / np.array(images.IMAGENET_STD)
  high = (1 - np.array(images.IMAGENET_MEAN)) / np.array(images.IMAGENET_STD)
  train = next(ds.train_batches(4))
  (evals,) = list(ds.eval_batches("val", 4))
  for b in (train, evals):
    assert b["image"].shape == (4, 16, 16, 3) and b["image"].dtype == np.float32
    assert np.all(b["image"] >= low - 1e-5) and np.all(b["image"] <= high + 1e-5)
  assert evals["mask"].all()
  assert not np.allclose(train["image"], next(ds.train_batches(4, seed=1))["image"])
  # The fast JPEG path (decode only the crop) equals decoding first, then cropping.
  jpeg = tf.io.encode_jpeg(rng.integers(0, 256, (37, 51, 3), dtype=np.uint8),
                          chroma_downsampling=False).numpy()  # 4:4:4: crops decode exactly
  for train_mode in (True, False):
    kwargs = dict(recipe="inception", train=train_mode, image_size=16, mean=ZERO, std=ONE,
                  seed=(5, 7))
    np.testing.assert_allclose(images.preprocess(jpeg, kind="jpeg", **kwargs),
                               images.preprocess(jpeg, kind="encoded", **kwargs), atol=1e-6)


def test_cifar_augmentation_pads_crops_and_flips():
  image = np.arange(32 * 32 * 3, dtype=np.float32).reshape(32, 32, 3) % 251
  out = [images.preprocess(image.astype(np.uint8), recipe="cifar", train=True, image_size=32,
                           mean=ZERO, std=ONE, seed=(0, s)).numpy() * 255 for s in range(20)]
  for o in out:
    assert o.shape == (32, 32, 3)
    # Every output is a 32 x 32 window of the zero-padded (maybe flipped) image.
    found = False
    for src in (image, image[:, ::-1]):
      padded = np.pad(src, [(4, 4), (4, 4), (0, 0)])
      found |= any(np.allclose(padded[i:i + 32, j:j + 32], o, atol=1e-3)
                   for i in range(9) for j in range(9))
    assert found
  assert len({o.tobytes() for o in out}) > 1
  plain = images.preprocess(image.astype(np.uint8), recipe="cifar", train=False, image_size=32,
                            mean=ZERO, std=ONE).numpy() * 255
  np.testing.assert_allclose(plain, image, atol=1e-3)


def test_image_folder_errors_say_what_was_expected_and_where(tmp_path):
  with pytest.raises(FileNotFoundError, match=r"root/<split>/<label>.*does not exist"):
    data.build("image_folder", root=tmp_path / "none")
  (tmp_path / "f" / "train" / "cat").mkdir(parents=True)
  with pytest.raises(ValueError, match=r"train/cat holds no images"):
    data.build("image_folder", root=tmp_path / "f")
  _write(tmp_path / "f" / "train" / "cat" / "0.png", np.zeros((4, 4, 3), np.uint8), "png")
  with pytest.raises(FileNotFoundError,
                     match=r"split directory .*f/val .*found splits \['train'\]"):
    data.build("image_folder", root=tmp_path / "f", eval_splits=["val"])
  with pytest.raises(ValueError, match=r"Unknown recipe 'autoaugment'; valid: .*cifar"):
    data.build("image_folder", root=tmp_path / "f", recipe="autoaugment")


def test_tfds_cifar10_under_mock_data(tmp_path):
  with tfds.testing.mock_data(num_examples=10):
    ds = data.build("cifar10", data_dir=tmp_path)
    assert ds.num_classes == 10 and len(ds.class_names) == 10
    batch = next(ds.train_batches(4, process_index=1, process_count=2))
    assert batch["image"].shape == (2, 32, 32, 3) and batch["image"].dtype == np.float32
    assert np.all((batch["label"] >= 0) & (batch["label"] < 10))
    evals = list(ds.eval_batches("test", 4))
    assert len(evals) == 3 and sum(int(b["mask"].sum()) for b in evals) == 10


class _TinyJpegs(tfds.core.GeneratorBasedBuilder, skip_registration=True):
  """A real (prepared, TFRecord) TFDS dataset of constant JPEGs: grey level (id + 1) * 20."""
  VERSION = tfds.core.Version("1.0.0")

  def _info(self):
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(8, 8, 3), encoding_format="jpeg"),
        "label": tfds.features.ClassLabel(num_classes=3)}))

  def _split_generators(self, dl_manager):
    del dl_manager
    return {"train": self._generate_examples(9), "validation": self._generate_examples(7)}

  def _generate_examples(self, n):
    for i in range(n):
      yield i, {"image": np.full((8, 8, 3), (i + 1) * 20, np.uint8), "label": i % 3}


def test_tfds_streamed_shards_per_host_and_eval_covers_each_example_once(tmp_path):
  builder = _TinyJpegs(data_dir=tmp_path)
  builder.download_and_prepare()
  ds = images.tfds_streamed(builder, image_size=8, recipe="cifar", mean=ZERO, std=ONE,
                            shuffle_buffer=4)
  assert ds.num_examples("validation") == 7 and ds.num_classes == 3
  steps = ds.num_eval_steps("validation", 4, process_count=2)
  assert steps == 2  # hosts hold 4 and 3 examples, 2 per batch
  seen = []
  for p in range(2):
    batches = list(ds.eval_batches("validation", 4, process_index=p, process_count=2))
    assert len(batches) == steps
    for b in batches:
      assert b["image"].shape == (2, 8, 8, 3)
      ids = _ids(b)
      np.testing.assert_array_equal(b["label"][b["mask"]], ids[b["mask"]] % 3)
      seen += ids[b["mask"]].tolist()
  assert sorted(seen) == list(range(7))
  # Training: each host streams its own part of the split (TFDS shuffled the ids on writing).
  unshuffled = images.tfds_streamed(builder, image_size=8, recipe="cifar", mean=ZERO, std=ONE,
                                    shuffle_buffer=1)
  parts = []
  for p in range(2):
    batches = itertools.islice(unshuffled.train_batches(4, process_index=p, process_count=2), 5)
    parts.append(set(np.concatenate([_ids(b) for b in batches]).tolist()))
  assert sorted(map(len, parts)) == [4, 5] and parts[0] | parts[1] == set(range(9))
  inception = images.tfds_streamed(builder, image_size=16)
  assert next(inception.train_batches(2))["image"].shape == (2, 16, 16, 3)


def test_tfds_streamed_training_reshuffles_files_per_epoch_and_resumes_exactly(tmp_path):
  builder = _TinyJpegs(data_dir=tmp_path)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=3))
  assert builder.info.splits["train"].num_shards == 3
  # Buffer 1: the order within an epoch comes from the file order alone.
  ds = images.tfds_streamed(builder, image_size=8, recipe="cifar", mean=ZERO, std=ONE,
                            shuffle_buffer=1)
  stream = list(itertools.islice(ds.train_batches(3, seed=2), 15))  # 5 epochs of 9
  order = np.concatenate([_ids(b) for b in stream]).reshape(5, 9)
  for epoch in order:
    assert sorted(epoch) == list(range(9))
  assert len({tuple(e) for e in order}) > 1
  for start in (2, 3, 7):  # mid-epoch, at an epoch boundary, in the third epoch
    resumed = list(itertools.islice(ds.train_batches(3, seed=2, start_step=start), 4))
    for want, got in zip(stream[start:], resumed):
      np.testing.assert_array_equal(got["image"], want["image"])
      np.testing.assert_array_equal(got["label"], want["label"])
  with pytest.raises(ValueError, match=r"host 9 of 10 gets no example of the 9.*fewer hosts"):
    next(ds.train_batches(10, process_index=9, process_count=10))


# ----------------------------------------------------------------------------- TFDS failures
class _FailingBuilder:
  """Stands in for a TFDS builder whose preparation raises `error`."""

  def __init__(self, error, data_dir):
    self.error, self.data_dir, self.data_dir_root = error, f"{data_dir}/cifar10/3.0.2", data_dir
    self.name = "cifar10"

  def is_prepared(self):
    return False

  def download_and_prepare(self, **kwargs):
    del kwargs
    raise self.error


def _raised(error, cause=None):
  """`error`, raised from `cause` (so its __cause__ is set as TFDS's wrappers set it)."""
  try:
    raise error from cause
  except Exception as e:  # pylint: disable=broad-except
    return e


def _prepare_error(monkeypatch, tmp_path, error):
  monkeypatch.setattr(tfds, "builder", lambda name, data_dir: _FailingBuilder(error, data_dir))
  with pytest.raises(Exception) as info:
    data.build("cifar10", data_dir=str(tmp_path))
  return info.value, str(info.value)


def test_tfds_missing_module_is_named_with_its_install_not_blamed_on_the_network(
    monkeypatch, tmp_path):
  missing = ModuleNotFoundError("No module named 'importlib_resources'",
                                name="importlib_resources")
  # Raised as such, or wrapped by TFDS (its extractor and lazy imports chain the cause).
  for error in (missing, _raised(RuntimeError("Error while generating"), missing)):
    e, message = _prepare_error(monkeypatch, tmp_path, error)
    assert isinstance(e, ModuleNotFoundError) and e.name == "importlib_resources"
    assert "'importlib_resources'" in message and "network" not in message
    assert "pip install -e .[images]" in message and "requirements-lock.txt" in message
    assert "cifar10" in message
  e, message = _prepare_error(monkeypatch, tmp_path, ModuleNotFoundError(
      "No module named 'apache_beam'", name="apache_beam"))
  assert "'apache_beam' is missing" in message and "not in the image extra" in message


def test_tfds_network_failure_says_network_and_the_offline_routes(monkeypatch, tmp_path):
  import socket  # pylint: disable=g-import-not-at-top
  import requests  # pylint: disable=g-import-not-at-top
  gai = socket.gaierror(-2, "Name or service not known")
  for error in (_raised(requests.exceptions.ConnectionError("Max retries exceeded"), gai),
                ConnectionRefusedError("refused"), TimeoutError("timed out"),
                tfds.download.DownloadError("Failed to get url. HTTP code: 503.")):
    e, message = _prepare_error(monkeypatch, tmp_path, error)
    assert isinstance(e, FileNotFoundError)
    assert "network" in message and "tfds build cifar10 --data_dir=DIR" in message
    assert f"{tmp_path}/downloads/manual" in message and "cifar-10-binary.tar.gz" in message
    assert str(error) in message


def test_tfds_damaged_download_or_data_dir_says_what_to_delete(monkeypatch, tmp_path):
  # pylint: disable=g-import-not-at-top
  import tarfile
  from tensorflow_datasets.core.download import download_manager, extractor
  for error in (download_manager.NonMatchingChecksumError("has wrong checksum"),
                _raised(extractor.ExtractError("Error while extracting"),
                        tarfile.ReadError("unexpected end of data")),
                EOFError("Compressed file ended before the end-of-stream marker was reached")):
    e, message = _prepare_error(monkeypatch, tmp_path, error)
    assert isinstance(e, FileNotFoundError) and "network" not in message
    assert "damaged or incomplete" in message and f"{tmp_path}/downloads" in message
    assert str(error) in message


def test_tfds_other_preparation_errors_say_what_tfds_raised_and_where(monkeypatch, tmp_path):
  e, message = _prepare_error(monkeypatch, tmp_path, KeyError("label"))
  assert isinstance(e, RuntimeError) and "network" not in message
  assert "KeyError: 'label'" in message and str(tmp_path) in message
  assert isinstance(e.__cause__, KeyError)


def test_tfds_streamed_damaged_files_say_what_to_delete(tmp_path):
  builder = _TinyJpegs(data_dir=tmp_path)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=2))
  ds = images.tfds_streamed(builder, image_size=8, recipe="cifar", shuffle_buffer=1)
  train_files = sorted(pathlib.Path(builder.data_dir).glob("*-train.tfrecord-*"))
  validation_files = sorted(pathlib.Path(builder.data_dir).glob("*-validation.tfrecord-*"))
  data_ = train_files[1].read_bytes()
  train_files[1].write_bytes(data_[:len(data_) // 2])  # truncated
  validation_files[0].unlink()  # missing
  for batches in (ds.train_batches(3), ds.eval_batches("validation", 4)):
    with pytest.raises(FileNotFoundError,
                       match=r"damaged or incomplete \((DataLoss|NotFound)Error.*delete .*tiny"):
      list(itertools.islice(batches, 10))


def test_a_missing_image_extra_is_named_with_its_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails
  with pytest.raises(ModuleNotFoundError,
                     match=r"module 'tensorflow_datasets'.*pip install -e \.\[images\]"):
    data.build("cifar10")
