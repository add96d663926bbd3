"""The real TFDS builders, offline, on tiny inputs in the official formats.

Not `tfds.testing.mock_data`: the builders' own code runs (archive reading, label files,
TFRecord writing), so a missing runtime dependency of TFDS or a change of its API fails here.
tensorflow and tensorflow-datasets are imported, not skipped: the "test" extra installs them.

  imagenet2012  a manual directory in the layout of the two official tar files, prepared by
                `data.build("imagenet2012", manual_dir=...)`, then streamed.
  cifar10       an archive in the official binary format, put where TFDS caches its download
                (TFDS trusts a cached file by its name), prepared by `data.build("cifar10")`.

Images are constant-grey, grey level (id + 1) * 20, so an example's id survives decoding,
cropping and resizing; with mean 0 and std 1 the pipelines yield pixel / 255.
"""

import io
import itertools
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from tensorflow_datasets.core.download import resource

from algebranets import data

ZERO, ONE = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

# ImageNet: training images per class (labels 0, 1, 2: the first synsets of labels.txt) and the
# labels of the official validation images ILSVRC2012_val_00000001..5 (sea snake, alp, Shetland
# sheepdog, soup bowl, cradle), which the builder reads from its own validation_labels.txt.
IMAGENET_TRAIN = {"n01440764": 3, "n01443537": 2, "n01484850": 2}
IMAGENET_VAL_LABELS = (65, 970, 230, 809, 516)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck")


def _ids(batch):
  """The example id of every image (grey = (id + 1) * 20); -1 for zero padding."""
  grey = batch["image"].mean(axis=(1, 2, 3)) * 255
  return np.rint(grey / 20).astype(int) - 1


def _add(tar, name, payload: bytes):
  info = tarfile.TarInfo(name)
  info.size = len(payload)
  tar.addfile(info, io.BytesIO(payload))


def _grey_jpeg(example_id, height, width):
  pixels = np.full((height, width, 3), (example_id + 1) * 20, np.uint8)
  return tf.io.encode_jpeg(pixels, quality=100).numpy()


def write_imagenet_manual_dir(manual):
  """ILSVRC2012_img_train.tar (one <synset>.tar of <synset>_<n>.JPEG per class) and
  ILSVRC2012_img_val.tar (ILSVRC2012_val_<8 digits>.JPEG), as downloaded from image-net.org.

  Returns {split: labels by example id}. Images are 30-44 x 36-48, not square.
  """
  manual.mkdir(parents=True)
  train_labels = []
  with tarfile.open(manual / "ILSVRC2012_img_train.tar", "w") as train:
    for label, (synset, count) in enumerate(IMAGENET_TRAIN.items()):
      inner = io.BytesIO()
      with tarfile.open(fileobj=inner, mode="w") as per_class:
        for k in range(count):
          i = len(train_labels)
          _add(per_class, f"{synset}_{10026 + 7 * k}.JPEG", _grey_jpeg(i, 30 + 2 * i, 48 - i))
          train_labels.append(label)
      _add(train, f"{synset}.tar", inner.getvalue())
  with tarfile.open(manual / "ILSVRC2012_img_val.tar", "w") as val:
    for i in range(len(IMAGENET_VAL_LABELS)):
      _add(val, f"ILSVRC2012_val_{i + 1:08d}.JPEG", _grey_jpeg(i, 44 - 3 * i, 36 + i))
  return {"train": train_labels, "validation": list(IMAGENET_VAL_LABELS)}


def cifar10_archive(path, train_images, train_labels, test_images, test_labels):
  """cifar-10-binary.tar.gz: cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin (records of
  a label byte and 3 x 32 x 32 channel-major pixels) and batches.meta.txt (the class names)."""
  def records(pixels, labels):
    return b"".join(bytes([label]) + image.transpose(2, 0, 1).tobytes()
                    for image, label in zip(pixels, labels))

  with tarfile.open(path, "w:gz") as tar:
    prefix = "cifar-10-batches-bin/"
    _add(tar, prefix + "batches.meta.txt", ("\n".join(CIFAR10_NAMES) + "\n\n").encode())
    for k, part in enumerate(np.array_split(np.arange(len(train_labels)), 5)):
      _add(tar, f"{prefix}data_batch_{k + 1}.bin", records(train_images[part], train_labels[part]))
    _add(tar, prefix + "test_batch.bin", records(test_images, test_labels))


def put_in_tfds_download_cache(data_dir, archive, url):
  """Places `archive` where `tfds build` would have cached the download of `url` in data_dir.

  TFDS names a cached download by the url and the checksum it registered for it, and trusts a
  file of that name with its .INFO beside it; the content's own checksum is not recomputed.
  """
  url_info = tfds.builder_cls("cifar10").url_infos[url]
  path = data_dir / "downloads" / resource.get_dl_fname(url, url_info.checksum)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(archive.read_bytes())
  resource.write_info_file(url=url, path=path, dataset_name="cifar10",
                           original_fname=url.rsplit("/", 1)[-1], url_info=url_info)


@pytest.fixture(scope="module")
def cifar10_files(tmp_path_factory):
  """A tiny CIFAR-10 archive: 10 train and 4 test random images; ids are positions."""
  rng = np.random.default_rng(0)
  arrays = dict(train_images=rng.integers(0, 256, (10, 32, 32, 3), dtype=np.uint8),
                train_labels=np.array([3, 1, 4, 1, 5, 9, 2, 6, 5, 3], np.uint8),
                test_images=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
                test_labels=np.array([2, 7, 1, 8], np.uint8))
  archive = tmp_path_factory.mktemp("cifar") / "cifar-10-binary.tar.gz"
  cifar10_archive(archive, **arrays)
  return archive, arrays


@pytest.fixture(scope="module")
def imagenet(tmp_path_factory):
  root = tmp_path_factory.mktemp("imagenet")
  labels = write_imagenet_manual_dir(root / "manual")
  ds = data.build("imagenet2012", data_dir=str(root / "tfds"), manual_dir=str(root / "manual"),
                  image_size=16, mean=ZERO, std=ONE, shuffle_buffer=4)
  return ds, labels, root


# ----------------------------------------------------------------------------- imagenet2012
def test_imagenet2012_is_prepared_from_the_official_tar_layout(imagenet):
  ds, _, root = imagenet
  assert ds.num_classes == 1000 and ds.class_names[:3] == tuple(IMAGENET_TRAIN)
  assert ds.num_examples("train") == 7 and ds.num_examples("validation") == 5
  assert (root / "tfds" / "imagenet2012").is_dir()
  # Once prepared, the manual files are no longer needed.
  again = data.build("imagenet2012", data_dir=str(root / "tfds"), image_size=16)
  assert again.num_examples("train") == 7


def test_imagenet2012_eval_covers_each_validation_image_once_with_its_label(imagenet):
  ds, labels, _ = imagenet
  for process_count in (1, 2):
    seen = []
    steps = ds.num_eval_steps("validation", 4, process_count)
    assert steps == 2  # 5 images in batches of 4; or hosts of 3 and 2 in batches of 2
    for p in range(process_count):
      batches = list(ds.eval_batches("validation", 4, process_index=p,
                                     process_count=process_count))
      assert len(batches) == steps
      for b in batches:
        assert b["image"].shape == (4 // process_count, 16, 16, 3)
        assert b["image"].dtype == np.float32 and b["mask"].dtype == bool
        ids = _ids(b)
        assert np.all(ids[~b["mask"]] == -1)  # padding is zeros, masked
        np.testing.assert_array_equal(b["label"][b["mask"]],
                                      [labels["validation"][i] for i in ids[b["mask"]]])
        seen += ids[b["mask"]].tolist()
    assert sorted(seen) == list(range(5))


def test_imagenet2012_training_streams_per_host_parts_with_their_labels(imagenet):
  ds, labels, _ = imagenet
  parts = []
  for p in range(2):  # the hosts hold 4 and 3 of the 7 examples
    stream = list(itertools.islice(ds.train_batches(4, process_index=p, process_count=2,
                                                    seed=1), 6))
    ids = np.concatenate([_ids(b) for b in stream])
    for b in stream:
      assert b["image"].shape == (2, 16, 16, 3) and b["label"].dtype == np.int32
      np.testing.assert_array_equal(b["label"], [labels["train"][i] for i in _ids(b)])
    n = 4 if p == 0 else 3
    part = set(ids[:n].tolist())
    assert len(part) == n  # an epoch of this host's part holds each example once
    for epoch in range(1, len(ids) // n):
      assert set(ids[epoch * n:(epoch + 1) * n].tolist()) == part
    parts.append(part)
  assert parts[0] | parts[1] == set(range(7)) and not parts[0] & parts[1]


def test_imagenet2012_resumed_stream_equals_the_uninterrupted_one(imagenet):
  ds, _, _ = imagenet
  for p in range(2):
    kwargs = dict(process_index=p, process_count=2, seed=5)
    full = list(itertools.islice(ds.train_batches(4, **kwargs), 9))  # > 4 epochs of 3 or 4
    for start in (1, 2, 5):  # inside the first epoch, at and across epoch boundaries
      resumed = list(itertools.islice(ds.train_batches(4, start_step=start, **kwargs), 3))
      for want, got in zip(full[start:start + 3], resumed):
        np.testing.assert_array_equal(got["image"], want["image"])
        np.testing.assert_array_equal(got["label"], want["label"])
  orders = [np.concatenate([_ids(b) for b in itertools.islice(
      ds.train_batches(4, seed=seed), 7)]) for seed in (5, 6)]
  epochs = orders[0].reshape(4, 7)
  assert len({tuple(e) for e in epochs}) > 1  # each epoch in its own order
  assert not np.array_equal(orders[0], orders[1])  # and the seed changes them


def test_imagenet2012_without_manual_files_says_where_to_get_them(tmp_path):
  with pytest.raises(FileNotFoundError,
                     match=r"ILSVRC2012_img_train\.tar.*image-net\.org.*prepare_imagenet"):
    data.build("imagenet2012", data_dir=str(tmp_path / "tfds"), manual_dir=str(tmp_path))


# ----------------------------------------------------------------------------- cifar10
def _by_pixels(images_, labels):
  return {image.tobytes(): int(label) for image, label in zip(images_, labels)}


def test_cifar10_is_prepared_by_the_real_builder_from_its_cached_download(cifar10_files,
                                                                          tmp_path):
  archive, arrays = cifar10_files
  put_in_tfds_download_cache(tmp_path, archive, CIFAR10_URL)
  ds = data.build("cifar10", data_dir=str(tmp_path), mean=ZERO, std=ONE)
  assert ds.class_names == CIFAR10_NAMES  # read by the builder from batches.meta.txt
  for split, size in (("train", 10), ("test", 4)):
    assert ds.num_examples(split) == size
    want = _by_pixels(arrays[f"{split}_images"], arrays[f"{split}_labels"])
    got = {}
    for b in ds.eval_batches(split, 4):
      pixels = np.rint(b["image"][b["mask"]] * 255).astype(np.uint8)
      got.update(_by_pixels(pixels, b["label"][b["mask"]]))
    assert got == want  # every image, once, with its label
  batch = next(ds.train_batches(4, seed=0))
  assert batch["image"].shape == (4, 32, 32, 3)
  # Prepared: a second build reads the TFRecords without the download.
  for f in (tmp_path / "downloads").iterdir():
    if f.is_file():
      f.unlink()
  assert data.build("cifar10", data_dir=str(tmp_path), download=False).num_examples("test") == 4
  # A damaged prepared file: what to delete.
  (shard,) = (tmp_path / "cifar10").glob("*/cifar10-train.tfrecord-*")
  shard.write_bytes(shard.read_bytes()[:-100])
  with pytest.raises(FileNotFoundError, match=r"damaged or incomplete.*delete .*cifar10/3"):
    data.build("cifar10", data_dir=str(tmp_path))


def test_cifar10_archive_with_the_wrong_checksum_is_reported_as_damaged(cifar10_files, tmp_path):
  archive, _ = cifar10_files
  manual = tmp_path / "downloads" / "manual"
  manual.mkdir(parents=True)
  (manual / "cifar-10-binary.tar.gz").write_bytes(archive.read_bytes())  # not the official one
  with pytest.raises(FileNotFoundError, match=r"damaged or incomplete.*wrong checksum") as info:
    data.build("cifar10", data_dir=str(tmp_path))
  assert "network" not in str(info.value)


@pytest.mark.slow  # a fresh Python importing TensorFlow: ~10 s
def test_without_importlib_resources_the_error_names_it_not_the_network(cifar10_files,
                                                                        tmp_path):
  """The issue's failure: TFDS 4.9.10 imports importlib_resources (undeclared) when it prepares."""
  archive, _ = cifar10_files
  put_in_tfds_download_cache(tmp_path, archive, CIFAR10_URL)
  code = ("import sys; sys.modules['importlib_resources'] = None\n"
          "from algebranets import data\n"
          "data.build('cifar10', data_dir=sys.argv[1])")
  result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, timeout=300, check=False)
  assert result.returncode != 0
  last = result.stderr.strip().splitlines()[-1]
  assert last.startswith("ModuleNotFoundError: TFDS could not")
  assert "'importlib_resources' is missing" in last and "pip install -e .[images]" in last
  assert "network" not in last
