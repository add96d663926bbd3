"""Image classification input: TFDS ImageNet/CIFAR and image folders, through tf.data.

Sources, each returned as an `ImageDataset`:
  imagenet2012   TFDS `imagenet2012`, prepared from the manual download (ILSVRC2012_img_train.tar
                 and ILSVRC2012_img_val.tar in `manual_dir`); streamed from its TFRecords, JPEGs
                 decoded only inside the crop window.
  cifar10/100    TFDS `cifar10` / `cifar100`, held in memory (50,000 x 32 x 32 x 3 bytes).
  image_folder   any `root/<split>/<label>/*.{jpg,jpeg,png}`; labels are the sorted class names.

Preprocessing recipes (`RECIPES`), applied per example, then (x / 255 - mean) / std:
  inception  train: Inception random-resized-crop (area 8%-100%, aspect 3/4-4/3) to S x S,
             bicubic, random left-right flip. eval: the central S / (S + 32) of the shorter side,
             resized to S x S (the usual resize-256-crop-224 at S = 224).
  cifar      train: zero-pad 4, random S x S crop, random flip. eval: the image as it is.
             (Images of another size are first resized to S x S.)

Batches are numpy dicts per host: {"image": float32 [Bh, S, S, 3], "label": int32 [Bh]}, and for
eval also "mask": bool [Bh] (False on padding). B is the global batch; process p of P yields
Bh = B / P examples of each global batch.

Training order: a batch is a function of (seed, step), so `start_step` replays a run exactly,
for every source (TFDS streams: on the same number of hosts, which splits their data).
  random access (folders, in-memory CIFAR): indices are shuffled per epoch with a permutation
    keyed by (seed, epoch); global batch s holds stream positions [s·B, (s+1)·B) and host p
    takes its slice of each.
  TFDS streams (ImageNet): each host reads its part of the split (`tfds.split_for_jax_process`)
    once per epoch, its files and a `shuffle_buffer` of examples shuffled with a seed keyed by
    (seed, epoch); host p's rows of global batch s are positions [s·Bh, (s+1)·Bh) of its own
    stream. Resuming at step s starts at the epoch of s and skips the examples of that epoch
    already used: they are read and parsed again (not decoded or augmented) before the first
    batch, up to one epoch of the host's part; for ImageNet up to 1.28M / P records (~140 GB / P),
    minutes on one host (BENCHMARKS.md, "Resuming a TFDS-streamed dataset").
Augmentation randomness is keyed by (seed, position), positions distinct over the hosts.

Eval covers every example exactly once: the split is padded to whole global batches (random
access: global batch s holds examples [s·B, (s+1)·B); streams: each host's slice is padded to
the same number of batches) and the padding masked. All hosts yield the same number of batches.

TensorFlow is imported inside the functions, so `algebranets.data` imports without it; it is
told not to take any GPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import os
import pathlib
import re
import sys
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from algebranets import common
from algebranets import errors
from algebranets import logs

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
IMAGENET_MANUAL_FILES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")
CIFAR_HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
CIFAR_ARCHIVES = {"cifar10": "cifar-10-binary.tar.gz", "cifar100": "cifar-100-binary.tar.gz"}
_log = logging.getLogger("algebranets")

CROP_PADDING = 32  # eval crop keeps S / (S + 32) of the shorter side
SHUFFLE_BUFFER = 16_384  # examples per host, for streamed (TFDS) training data


def _missing_extra(e: ImportError) -> ModuleNotFoundError:
  return ModuleNotFoundError(
      f"the image pipelines need the Python module {e.name!r} ({e}); the image extra installs "
      "it: `pip install -e .[images]`, or at the tested versions `pip install -r "
      "requirements-lock.txt`", name=e.name)


def _quiet_import(module: str):
  """Holds back TensorFlow's C++ start-up lines (logs.quiet_stderr) on its first import."""
  if module in sys.modules:
    return contextlib.nullcontext()
  logs.quiet_startup()
  return logs.quiet_stderr()


def _tf():
  """TensorFlow, imported on first use and kept off the accelerators JAX uses."""
  try:
    with _quiet_import("tensorflow"):
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise _missing_extra(e) from e
  try:
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # devices were initialised already; they were hidden then, or are wanted
    pass
  return tf


def _tfds():
  try:
    with _quiet_import("tensorflow_datasets"):
      import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise _missing_extra(e) from e
  return tfds


# ----------------------------------------------------------------------------- preprocessing
# An example's image arrives as `kind`: "raw" (uint8 [H, W, 3]), "encoded" (JPEG/PNG bytes) or
# "jpeg" (JPEG bytes: only the crop window is decoded).
def _decode_crop(tf, data, kind: str, window: Callable):
  """Decodes `data` and crops it to window(shape [3]) = (top, left, height, width)."""
  if kind == "jpeg":
    top, left, h, w = window(tf.image.extract_jpeg_shape(data))
    return tf.image.decode_and_crop_jpeg(data, tf.stack([top, left, h, w]), channels=3)
  image = data if kind == "raw" else tf.io.decode_image(data, channels=3, expand_animations=False)
  top, left, h, w = window(tf.shape(image))
  return image[top:top + h, left:left + w]


def _decode(tf, data, kind: str):
  if kind == "raw":
    return data
  return tf.io.decode_image(data, channels=3, expand_animations=False)


def _resize(tf, image, size: int):
  return tf.image.resize(image, [size, size], method="bicubic")


def _resize_if_needed(tf, image, size: int):
  image = tf.cast(image, tf.float32)
  shape = tf.shape(image)
  same = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
  image = tf.cond(same, lambda: image, lambda: _resize(tf, image, size))
  return tf.ensure_shape(image, [size, size, 3])


def inception_train(tf, data, kind: str, size: int, seed):
  """Random-resized-crop (Szegedy et al. 2015) to [S, S, 3] and a random flip; float in [0, 255]."""
  box_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))

  def window(shape):
    begin, crop, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape, tf.constant([0.0, 0.0, 1.0, 1.0], shape=[1, 1, 4]), seed=box_seed,
        min_object_covered=0.1, aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    return begin[0], begin[1], crop[0], crop[1]

  image = _resize(tf, _decode_crop(tf, data, kind, window), size)
  image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return tf.clip_by_value(image, 0.0, 255.0)


def inception_eval(tf, data, kind: str, size: int, seed=None):
  """The central S / (S + 32) of the shorter side, resized to [S, S, 3]; float in [0, 255]."""
  del seed

  def window(shape):
    h, w = shape[0], shape[1]
    side = tf.cast(size / (size + CROP_PADDING) * tf.cast(tf.minimum(h, w), tf.float64),
                   tf.int32)
    return (h - side + 1) // 2, (w - side + 1) // 2, side, side

  image = _resize(tf, _decode_crop(tf, data, kind, window), size)
  return tf.clip_by_value(image, 0.0, 255.0)


def cifar_train(tf, data, kind: str, size: int, seed):
  """Zero-pad 4, random [S, S] crop, random flip (He et al. 2016); float in [0, 255]."""
  crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
  image = _resize_if_needed(tf, _decode(tf, data, kind), size)
  image = tf.pad(image, [[4, 4], [4, 4], [0, 0]])  # [S + 8, S + 8, 3]
  image = tf.image.stateless_random_crop(image, [size, size, 3], crop_seed)
  return tf.image.stateless_random_flip_left_right(image, flip_seed)


def cifar_eval(tf, data, kind: str, size: int, seed=None):
  del seed
  return _resize_if_needed(tf, _decode(tf, data, kind), size)


# recipe -> (train preprocessing, eval preprocessing)
RECIPES = {
    "inception": (inception_train, inception_eval),
    "cifar": (cifar_train, cifar_eval),
}


def preprocess(data, *, recipe: str, train: bool, image_size: int, mean: Sequence[float],
               std: Sequence[float], kind: str = "raw", seed=(0, 0)):
  """One example through a recipe and normalisation: float32 [S, S, 3] (a tf.Tensor).

  `seed`, a pair of ints (or an int64 [2] tensor), keys the training augmentation.
  """
  tf = _tf()
  fn = RECIPES[common.check_choice(recipe, sorted(RECIPES), "recipe")][0 if train else 1]
  image = fn(tf, data, kind, image_size, tf.cast(seed, tf.int64))
  image = tf.ensure_shape(tf.cast(image, tf.float32), [image_size, image_size, 3])
  return (image / 255.0 - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)


# ----------------------------------------------------------------------------- sources
@dataclasses.dataclass(frozen=True)
class IndexSource:
  """Examples by index: per split, `data` (file paths or uint8 images) and int labels."""
  data: Mapping[str, np.ndarray]
  labels: Mapping[str, np.ndarray]
  kind: str  # "encoded" for file paths, "raw" for image arrays

  def num_examples(self, split: str) -> int:
    return len(self.labels[split])

  def loader(self, tf, split: str):
    data = tf.constant(self.data[split])
    labels = tf.constant(self.labels[split], tf.int32)

    def load(index):
      item = tf.gather(data, index)
      if self.kind == "encoded":
        item = tf.io.read_file(item)
      return item, tf.gather(labels, index)

    return load


@dataclasses.dataclass(frozen=True)
class TFDSSource:
  """A prepared TFDS builder streamed from its files; `kind` of its "image" feature."""
  builder: Any
  kind: str  # "jpeg": decoded in the pipeline (SkipDecoding); "raw": decoded by TFDS
  split_sizes: Mapping[str, int]

  def num_examples(self, split: str) -> int:
    if split not in self.split_sizes:
      raise ValueError(f"the TFDS dataset {self.builder.name} records no size for split "
                       f"{split!r} (recorded: {dict(self.split_sizes)}); is it prepared?")
    return self.split_sizes[split]

  def host_part(self, split: str, process_index: int, process_count: int) -> tuple[Any, int]:
    """Host p's part of `split` (`tfds.split_for_jax_process`) and its number of examples."""
    part = _tfds().split_for_jax_process(split, process_index=process_index,
                                         process_count=process_count)
    self.num_examples(split)  # a known split
    return part, self.builder.info.splits[part].num_examples

  def read(self, split, *, shuffle_seed=None):
    """(image, label) of `split` (a name or a TFDS sub-split); `shuffle_seed` (an int or an
    int64 tensor) shuffles the order of the files, None reads them in order."""
    tf, tfds = _tf(), _tfds()
    decoders = {"image": tfds.decode.SkipDecoding()} if self.kind == "jpeg" else None
    read_config = tfds.ReadConfig(shuffle_seed=shuffle_seed)
    ds = self.builder.as_dataset(split=split, shuffle_files=shuffle_seed is not None,
                                 decoders=decoders, read_config=read_config)
    return ds.map(lambda ex: (ex["image"], tf.cast(ex["label"], tf.int32)))


# ----------------------------------------------------------------------------- datasets
@dataclasses.dataclass(frozen=True)
class ImageDataset:
  """An image classification dataset with its preprocessing; yields per-host numpy batches.

  Attributes:
    name: registry name.
    num_classes: labels are in [0, num_classes).
    image_size: S, the side of the square images yielded.
    class_names: name of every label, when known.
    source: an IndexSource or TFDSSource.
    recipe: key of RECIPES.
    mean, std: per-channel normalisation of images scaled to [0, 1].
    train_split, eval_splits: split names.
    description: one line saying what the data is and where it came from.
  """
  name: str
  num_classes: int
  image_size: int
  source: Any
  recipe: str
  mean: tuple[float, float, float]
  std: tuple[float, float, float]
  train_split: str
  eval_splits: tuple[str, ...]
  description: str
  class_names: Optional[tuple[str, ...]] = None
  shuffle_buffer: int = SHUFFLE_BUFFER

  def __post_init__(self):
    common.check_choice(self.recipe, sorted(RECIPES), "recipe")

  @property
  def info(self) -> dict:
    sizes = (dict(self.source.split_sizes) if isinstance(self.source, TFDSSource) else
             {s: self.num_examples(s) for s in self.splits})
    return {"num_classes": self.num_classes, "image_size": self.image_size,
            "recipe": self.recipe, "sizes": sizes}

  @property
  def splits(self) -> tuple[str, ...]:
    return (self.train_split, *self.eval_splits)

  def num_examples(self, split: str) -> int:
    return self.source.num_examples(split)

  def _map_fn(self, tf, train: bool, seed: int):
    fn = RECIPES[self.recipe][0 if train else 1]
    mean, std = tf.constant(self.mean, tf.float32), tf.constant(self.std, tf.float32)
    kind, size = self.source.kind, self.image_size

    def apply(position, data, label):
      example_seed = tf.stack([tf.constant(seed, tf.int64), tf.cast(position, tf.int64)])
      image = tf.ensure_shape(tf.cast(fn(tf, data, kind, size, example_seed), tf.float32),
                              [size, size, 3])
      return {"image": (image / 255.0 - mean) / std, "label": label}

    return apply

  def train_batches(self, batch_size: int, *, process_index: int = 0, process_count: int = 1,
                    start_step: int = 0, seed: int = 0) -> Iterator[dict]:
    """Endless {"image" float32 [Bh, S, S, 3], "label" int32 [Bh]} from `start_step` on."""
    tf = _tf()
    per_host = _check_batch(batch_size, process_index, process_count)
    if start_step < 0:
      raise ValueError(f"start_step must be >= 0, got {start_step}")
    split = self.train_split
    if isinstance(self.source, IndexSource):
      n = self.num_examples(split)
      load = self.source.loader(tf, split)
      start = start_step * batch_size
      first_epoch = start // n

      def epoch_order(epoch):  # a permutation of [0, n) keyed by (seed, epoch)
        keys = tf.random.stateless_uniform([n], tf.stack([tf.constant(seed, tf.int64), epoch]),
                                           dtype=tf.int64, minval=None, maxval=None)
        return tf.argsort(keys, stable=True)

      order = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(
          lambda e: tf.data.Dataset.from_tensor_slices(epoch_order(e)))
      order = order.skip(start - first_epoch * n)
      positions = tf.data.Dataset.range(start, np.iinfo(np.int64).max)
      ds = _host_slice(tf, tf.data.Dataset.zip((positions, order)), batch_size, process_index,
                       per_host)
      ds = ds.map(lambda g, i: (g, *load(i)))

      def batch_indices(k):  # the examples of this host's batch k (to name a damaged file)
        first = start + k * batch_size + process_index * per_host
        return [int(epoch_order(tf.constant(q // n, tf.int64))[q % n])
                for q in range(first, first + per_host)]
    else:
      batch_indices = None
      # This host's part of the split, read once per epoch in an order keyed by (seed, epoch);
      # host p's stream positions [s·Bh, (s+1)·Bh) make its rows of global batch s.
      host_split, n = self.source.host_part(split, process_index, process_count)
      if n < 1:
        raise ValueError(f"host {process_index} of {process_count} gets no example of the "
                         f"{self.num_examples(split)} in {self.name}'s {split!r} split; use "
                         "fewer hosts")
      start = start_step * per_host
      first_epoch = start // n

      def epoch_examples(epoch):  # the host's part: files and a buffer shuffled by (seed, epoch)
        epoch_seed = tf.random.stateless_uniform(
            [], tf.stack([tf.constant(seed, tf.int64), epoch]), dtype=tf.int64, minval=None,
            maxval=None)
        examples = self.source.read(host_split, shuffle_seed=epoch_seed)
        return examples.shuffle(self.shuffle_buffer, seed=epoch_seed)

      # Resuming skips the examples of the first epoch already seen: they are read and parsed
      # again, but not decoded or augmented.
      ds = tf.data.Dataset.range(first_epoch, np.iinfo(np.int64).max).flat_map(epoch_examples)
      ds = ds.skip(start - first_epoch * n)
      positions = tf.data.Dataset.range(start, np.iinfo(np.int64).max)
      # Augmentation is keyed by (seed, position · P + p): distinct over the hosts' streams.
      ds = tf.data.Dataset.zip((positions, ds)).map(
          lambda g, ex: (g * process_count + process_index, *ex))
    ds = ds.map(self._map_fn(tf, True, seed), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(per_host, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    yield from self._numpy(tf, ds, split, batch_indices)

  def _numpy(self, tf, ds, split: str, batch_indices=None) -> Iterator[dict]:
    """`ds` as numpy. A TFDS source's missing or damaged files stop it with what to do; an
    image file that does not decode stops it with a DataError naming the file and the split
    (`batch_indices(k)`: the examples of this host's batch k, searched for the culprit)."""
    if not isinstance(self.source, TFDSSource):
      k = 0
      iterator = ds.as_numpy_iterator()
      while True:
        try:
          batch = next(iterator)
        except StopIteration:
          return
        except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as e:
          if batch_indices is None or self.source.kind != "encoded":
            raise
          paths = self.source.data[split]
          bad = [str(paths[i]) for i in sorted(set(batch_indices(k)))
                 if not _decodable(tf, [paths[i]])[0]]
          if not bad:
            raise
          why = re.sub(r"\{\{.*?\}\}|\[\[.*", "", e.message.splitlines()[0]).strip()
          raise errors.DataError(
              f"{bad[0]}: this image of the {split!r} split of {self.name} does not decode "
              f"({why})" + (f" (nor {len(bad) - 1} more of the same batch: {bad[1:4]})"
                            if len(bad) > 1 else "") +
              "; replace or delete it, or leave unreadable images out (each named in the log): "
              "skip_corrupt=True, on the command line --config.data.skip_corrupt=True") from e
        except tf.errors.NotFoundError as e:
          raise FileNotFoundError(f"reading the {split!r} split of {self.name}: {e.message}; "
                                  "was the folder changed after the dataset was built?") from e
        yield batch
        k += 1
    try:
      yield from ds.as_numpy_iterator()
    except (tf.errors.NotFoundError, tf.errors.DataLossError) as e:
      where = self.source.builder.data_dir
      raise FileNotFoundError(
          f"reading TFDS {self.name} from {where} failed: its prepared files are damaged or "
          f"incomplete ({type(e).__name__}: {e.message}); delete {where} and prepare it "
          "again") from e

  def num_eval_steps(self, split: str, batch_size: int, process_count: int = 1) -> int:
    """Batches every host yields in one pass over `split`."""
    per_host = _check_batch(batch_size, 0, process_count)
    n = self.num_examples(split)
    if isinstance(self.source, IndexSource):
      return math.ceil(n / batch_size)
    return math.ceil(math.ceil(n / process_count) / per_host)

  def eval_batches(self, split: str, batch_size: int, *, process_index: int = 0,
                   process_count: int = 1) -> Iterator[dict]:
    """{"image", "label", "mask" bool [Bh]} covering `split` once; padding has mask False."""
    tf = _tf()
    if split not in self.splits:
      raise ValueError(f"{self.name} has no split {split!r}; splits: {list(self.splits)}")
    per_host = _check_batch(batch_size, process_index, process_count)
    n = self.num_examples(split)
    steps = self.num_eval_steps(split, batch_size, process_count)
    preprocess_fn = self._map_fn(tf, False, 0)
    if isinstance(self.source, IndexSource):
      load = self.source.loader(tf, split)
      ds = _host_slice(tf, tf.data.Dataset.range(steps * batch_size), batch_size, process_index,
                       per_host)

      def batch_indices(k):  # the examples of this host's batch k (to name a damaged file)
        first = k * batch_size + process_index * per_host
        return [min(g, n - 1) for g in range(first, first + per_host)]

      # Padding positions (>= n) repeat the last example, masked out.
      ds = ds.map(lambda g: dict(preprocess_fn(g, *load(tf.minimum(g, n - 1))), mask=g < n),
                  num_parallel_calls=tf.data.AUTOTUNE)
    else:
      host_split, _ = self.source.host_part(split, process_index, process_count)
      ds = self.source.read(host_split)
      ds = ds.map(lambda data, label: dict(preprocess_fn(0, data, label), mask=tf.constant(True)),
                  num_parallel_calls=tf.data.AUTOTUNE)
      size = self.image_size
      pad = {"image": tf.zeros([size, size, 3]), "label": tf.constant(0, tf.int32),
             "mask": tf.constant(False)}
      ds = ds.concatenate(tf.data.Dataset.from_tensors(pad).repeat()).take(steps * per_host)
      batch_indices = None
    ds = ds.batch(per_host).prefetch(tf.data.AUTOTUNE)
    yield from self._numpy(tf, ds, split, batch_indices)


def _check_batch(batch_size: int, process_index: int, process_count: int) -> int:
  if process_count < 1 or not 0 <= process_index < process_count:
    raise ValueError(
        f"process_index must be in [0, process_count), got {process_index} of {process_count}")
  if batch_size < 1 or batch_size % process_count:
    raise ValueError(f"batch_size {batch_size} must be a positive multiple of the process "
                     f"count {process_count}: every host reads batch_size / process_count "
                     "examples of each global batch")
  return batch_size // process_count


def _host_slice(tf, ds, batch_size: int, process_index: int, per_host: int):
  """Host p's elements [p·Bh, (p+1)·Bh) of every B consecutive elements of `ds`."""
  lo, hi = process_index * per_host, (process_index + 1) * per_host
  ds = ds.batch(batch_size, drop_remainder=True)
  return ds.map(lambda *xs: tuple(x[lo:hi] for x in xs) if len(xs) > 1 else xs[0][lo:hi]
                ).unbatch()


def _decodable(tf, paths: Sequence[str]) -> np.ndarray:
  """bool [len(paths)]: whether each image file reads and decodes as the pipelines decode it
  (tf.io.decode_image, 3 channels), checked in parallel by tf.data."""
  paths = [str(p) for p in paths]
  ok = np.zeros(len(paths), bool)
  if not paths:
    return ok
  files = tf.constant(paths)

  def check(i):
    image = tf.io.decode_image(tf.io.read_file(files[i]), channels=3, expand_animations=False)
    return i, tf.shape(image)  # the decoded shape: the decode cannot be skipped

  ds = tf.data.Dataset.range(len(paths)).map(check, num_parallel_calls=tf.data.AUTOTUNE,
                                             deterministic=False)
  for i, _ in ds.ignore_errors().as_numpy_iterator():
    ok[i] = True
  return ok


# ----------------------------------------------------------------------------- builders
def image_folder(root, *, image_size: int = 224, recipe: str = "inception",
                 train_split: str = "train", eval_splits: Optional[Sequence[str]] = None,
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, train_examples: int = 0,
                 eval_examples: int = 0, skip_corrupt: bool = False) -> ImageDataset:
  """Images in `root/<split>/<label>/*.{jpg,jpeg,png}`; labels index the sorted class names.

  The class names are the union of the label directories of all the splits used, so every split
  numbers them alike. Files are ordered by (label, file name).

  `train_examples` / `eval_examples` (0: all) keep a class-balanced subset of the training split
  / of each eval split, for short runs on small machines: the first n // K files (by name) of
  each of the K labels, one more for the first n % K labels (a label with fewer files gives all
  of them). The subset is a function of the folder alone, so every run sees the same examples.

  An image that does not decode stops the pipeline with a DataError naming the file and the
  split. With `skip_corrupt`, every image used is decoded once here (in parallel; a full pass
  over the files) and those that do not decode are left out, each named in a warning and counted
  in `description`; the rest keep their order, so runs stay reproducible.

  Args:
    root: the folder holding one directory per split.
    image_size: S.
    recipe: "inception" (ImageNet-like) or "cifar" (small images).
    train_split: the training split's directory.
    eval_splits: evaluation splits; default every other directory under root, sorted.
    mean, std: per-channel normalisation.
    skip_corrupt: leave out the images that do not decode (see above).
  """
  root = pathlib.Path(root)
  layout = "root/<split>/<label>/<image>.jpg|jpeg|png"
  for key, value in (("train_examples", train_examples), ("eval_examples", eval_examples)):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise ValueError(f"{key} must be an int >= 0 (0: every example), got {value!r}")
  if not root.is_dir():
    raise FileNotFoundError(f"expected an image folder {layout} at {root}; it does not exist")
  found = sorted(d.name for d in root.iterdir() if d.is_dir())
  if eval_splits is None:
    eval_splits = tuple(s for s in found if s != train_split)
  splits = (train_split, *eval_splits)
  for split in splits:
    if split not in found:
      raise FileNotFoundError(f"expected the split directory {root / split} ({layout}); "
                              f"found splits {found}")
  labels_in = {s: {d.name for d in (root / s).iterdir() if d.is_dir()} for s in splits}
  class_names = sorted(set().union(*labels_in.values()))
  if not class_names:
    raise FileNotFoundError(f"no label directories under {root}/{{{','.join(splits)}}} ({layout})")
  # A class no training image has would be an output the model never learns (and every test
  # image of it an error): refuse it rather than count it.
  untrained = {s: sorted(labels_in[s] - labels_in[train_split]) for s in eval_splits}
  if any(untrained.values()):
    where = "; ".join(f"{names} only in {root / s}" for s, names in untrained.items() if names)
    raise errors.DataError(
        f"image folder {root}: class(es) {where}, with no training images in "
        f"{root / train_split}; add their training images, or remove them from the eval "
        "split(s)")
  label_of = {name: i for i, name in enumerate(class_names)}
  data, labels = {}, {}
  for split in splits:
    files, split_labels = [], []
    for label_dir in sorted(d for d in (root / split).iterdir() if d.is_dir()):
      images = sorted(f.name for f in os.scandir(label_dir)
                      if f.is_file() and f.name.lower().endswith(IMAGE_EXTENSIONS))
      if not images:
        raise ValueError(f"{label_dir} holds no images (expected *{', *'.join(IMAGE_EXTENSIONS)})")
      files.append([str(label_dir / f) for f in images])
      split_labels.append(label_of[label_dir.name])
    limit = train_examples if split == train_split else eval_examples
    if limit:
      files = _balanced_subset(files, limit)
      left_out = [class_names[label] for label, fs in zip(split_labels, files) if not fs]
      if split == train_split and left_out:
        raise errors.DataError(
            f"image folder {root}: train_examples={limit} keeps no training image of class(es) "
            f"{left_out} (it takes limit // K of each of the K={len(files)} classes, one more "
            f"for the first limit % K); set train_examples to at least {len(files)}, or 0 for "
            "all")
    split_labels = [label for label, fs in zip(split_labels, files) for _ in fs]
    files = [f for fs in files for f in fs]
    if not files:
      raise FileNotFoundError(f"{root / split} has no label directories ({layout})")
    data[split] = np.array(files)
    labels[split] = np.array(split_labels, np.int32)
  skipped = {}
  if skip_corrupt:
    tf = _tf()
    for split in splits:
      ok = _decodable(tf, data[split])
      if not ok.all():
        bad = data[split][~ok]
        skipped[split] = len(bad)
        _log.warning("image folder %s: skipped %d unreadable image(s) of the %r split: %s%s",
                     root, len(bad), split, ", ".join(bad[:10]),
                     f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        data[split], labels[split] = data[split][ok], labels[split][ok]
        if not len(data[split]):
          raise errors.DataError(f"image folder {root}: no image of the {split!r} split decodes")
  sizes = ", ".join(f"{s} {len(labels[s]):,}" for s in splits)
  if skipped:
    sizes += " (skipped " + ", ".join(f"{n} unreadable of {s}" for s, n in skipped.items()) + ")"
  return ImageDataset(
      name="image_folder", num_classes=len(class_names), image_size=image_size,
      source=IndexSource(data, labels, "encoded"), recipe=recipe, mean=tuple(mean),
      std=tuple(std), train_split=train_split, eval_splits=tuple(eval_splits),
      description=f"image folder {root}: {len(class_names)} classes, {sizes}",
      class_names=tuple(class_names))


def _balanced_subset(files_per_label: Sequence[Sequence[str]], n: int) -> list:
  """The first n // K files of each of the K labels (+1 for the first n % K labels)."""
  k = len(files_per_label)
  return [list(fs[:n // k + (i < n % k)]) for i, fs in enumerate(files_per_label)]


# ----------------------------------------------------------------------------- TFDS failures
# Preparing a TFDS dataset fails for four kinds of reasons, and each needs a different remedy:
# a Python module missing from the environment, no network, damaged or partial files (a bad
# download, a wrong archive in the manual directory, a truncated prepared directory), or
# something else. `_tfds_error` tells them apart by the exception TFDS raised and its causes.
IMAGES_EXTRA_MODULES = ("tensorflow", "tensorflow_datasets", "importlib_resources")


def _causes(error: BaseException) -> list:
  """`error` and the exceptions it was raised from or while handling, outermost first."""
  chain = []
  while error is not None and all(error is not e for e in chain):
    chain.append(error)
    error = error.__cause__ or error.__context__
  return chain


def _network_errors() -> tuple:
  """Exception types meaning a download could not reach its server."""
  # pylint: disable=g-import-not-at-top
  import socket
  import urllib.error
  errors = [ConnectionError, TimeoutError, socket.gaierror, socket.herror, urllib.error.URLError,
            _tfds().download.DownloadError]
  try:  # TFDS downloads with requests (over urllib3), both its own dependencies
    import requests
    import urllib3
    errors += [requests.exceptions.RequestException, urllib3.exceptions.HTTPError]
  except ImportError:
    pass
  return tuple(errors)


def _damaged_errors() -> tuple:
  """Exception types meaning a downloaded, manual or prepared file is damaged or partial."""
  # pylint: disable=g-import-not-at-top
  import gzip
  import tarfile
  import zipfile
  import zlib
  from tensorflow_datasets.core.download import download_manager
  from tensorflow_datasets.core.download import extractor
  tf = _tf()
  return (download_manager.NonMatchingChecksumError, extractor.ExtractError, tarfile.TarError,
          zipfile.BadZipFile, gzip.BadGzipFile, zlib.error, EOFError, tf.errors.DataLossError,
          tf.errors.NotFoundError)


def _tfds_error(error: BaseException, *, what: str, where, network_hint: str,
                damaged_hint: str) -> Exception:
  """The exception to raise, from `error`, when TFDS failed to `what` (e.g. "prepare cifar10").

  ModuleNotFoundError naming the missing module and its install; FileNotFoundError for a
  network failure (with `network_hint`, how to do without one) and for damaged or partial files
  (with `damaged_hint`, what to delete); RuntimeError saying what TFDS raised otherwise.
  `where` is the directory the message names.
  """
  chain = _causes(error)
  described = f"{type(error).__name__}: {error}"
  for e in chain:
    if isinstance(e, ImportError):
      module = e.name or str(e)
      if module.split(".")[0] in IMAGES_EXTRA_MODULES:
        install = ("the image extra installs it: `pip install -e .[images]`, or at the tested "
                   "versions `pip install -r requirements-lock.txt`")
      else:
        install = "it is not in the image extra; `pip install` the package that provides it"
      return ModuleNotFoundError(
          f"TFDS could not {what} in {where}: the Python module {module!r} is missing "
          f"({described}); {install}", name=e.name)
  if any(isinstance(e, _network_errors()) for e in chain):
    return FileNotFoundError(
        f"TFDS could not {what} in {where}: the download failed ({described}); it needs a "
        f"network. Without one: {network_hint}")
  if any(isinstance(e, _damaged_errors()) for e in chain):
    return FileNotFoundError(
        f"TFDS could not {what} in {where}: a file is damaged or incomplete ({described}); "
        f"{damaged_hint}")
  return RuntimeError(f"TFDS could not {what} in {where}: {described}")


def _tfds_builder(name: str, data_dir):
  try:
    return _tfds().builder(name, data_dir=data_dir)
  except Exception as e:  # pylint: disable=broad-except
    raise _tfds_error(
        e, what=f"make the builder {name!r}", where=data_dir or "~/tensorflow_datasets",
        network_hint="pass a data_dir where the dataset is prepared",
        damaged_hint=f"delete the damaged files under {data_dir} and prepare it again") from e


def _tfds_labels(builder) -> tuple[int, tuple[str, ...]]:
  label = builder.info.features["label"]
  return label.num_classes, tuple(label.names)


def cifar(name: str, *, data_dir=None, download: bool = True, image_size: int = 32,
          recipe: str = "cifar", mean=None, std=None) -> ImageDataset:
  """TFDS `cifar10` or `cifar100`, loaded into memory (train 50,000, test 10,000)."""
  common.check_choice(name, ("cifar10", "cifar100"), "CIFAR variant")
  _tf()
  tfds = _tfds()
  builder = _tfds_builder(name, data_dir)
  root = pathlib.Path(builder.data_dir_root)
  archive = CIFAR_ARCHIVES[name]
  if not builder.is_prepared():
    if not download:
      raise FileNotFoundError(
          f"TFDS {name} is not prepared in {builder.data_dir}; run `tfds build {name} "
          f"--data_dir={data_dir or '~/tensorflow_datasets'}` where a network is available, or "
          "pass download=True")
    try:
      builder.download_and_prepare()
    except Exception as e:  # pylint: disable=broad-except
      raise _tfds_error(
          e, what=f"download and prepare {name}", where=builder.data_dir,
          network_hint=(f"copy the official {archive} (from {CIFAR_HOMEPAGE}) into "
                        f"{root / 'downloads' / 'manual'} (TFDS checks its checksum), or run "
                        f"`tfds build {name} --data_dir=DIR` where a network is available and "
                        f"copy DIR/{name} into {root}"),
          damaged_hint=(f"delete the damaged download under {root / 'downloads'} (or the "
                        f"wrong {archive} in {root / 'downloads' / 'manual'}) and prepare "
                        "again")) from e
  data, labels = {}, {}
  try:
    for split in ("train", "test"):
      images, split_labels = [], []
      for batch in tfds.as_numpy(builder.as_dataset(split=split).batch(10_000)):
        images.append(batch["image"])
        split_labels.append(batch["label"])
      data[split] = np.concatenate(images).astype(np.uint8)
      labels[split] = np.concatenate(split_labels).astype(np.int32)
  except Exception as e:  # pylint: disable=broad-except
    raise _tfds_error(
        e, what=f"read the prepared {name}", where=builder.data_dir,
        network_hint=f"copy the prepared {builder.data_dir} to a local data_dir",
        damaged_hint=f"delete {builder.data_dir} and prepare it again") from e
  num_classes, class_names = _tfds_labels(builder)
  default_mean, default_std = ((CIFAR10_MEAN, CIFAR10_STD) if name == "cifar10" else
                               (CIFAR100_MEAN, CIFAR100_STD))
  return ImageDataset(
      name=name, num_classes=num_classes, image_size=image_size,
      source=IndexSource(data, labels, "raw"), recipe=recipe,
      mean=tuple(mean or default_mean), std=tuple(std or default_std), train_split="train",
      eval_splits=("test",), class_names=class_names,
      description=(f"TFDS {name} {builder.version} from {builder.data_dir}: train "
                   f"{len(labels['train']):,}, test {len(labels['test']):,}"))


def cifar10(**kwargs) -> ImageDataset:
  return cifar("cifar10", **kwargs)


def cifar100(**kwargs) -> ImageDataset:
  return cifar("cifar100", **kwargs)


def imagenet2012(*, data_dir=None, manual_dir=None, image_size: int = 224,
                 recipe: str = "inception", shuffle_buffer: int = SHUFFLE_BUFFER,
                 mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD) -> ImageDataset:
  """TFDS `imagenet2012` (train 1,281,167, validation 50,000), streamed.

  If the dataset is not prepared in `data_dir`, it is prepared from `manual_dir` (default
  `data_dir/downloads/manual`), which must hold ILSVRC2012_img_train.tar and
  ILSVRC2012_img_val.tar (see scripts/prepare_imagenet.md). Preparing takes hours.
  """
  _tf()
  tfds = _tfds()
  builder = _tfds_builder("imagenet2012", data_dir)
  if not builder.is_prepared():
    manual = pathlib.Path(manual_dir) if manual_dir else (
        pathlib.Path(builder.data_dir_root) / "downloads" / "manual")
    missing = [f for f in IMAGENET_MANUAL_FILES if not (manual / f).is_file()]
    if missing:
      raise FileNotFoundError(
          f"TFDS imagenet2012 is not prepared in {builder.data_dir_root} and the manual "
          f"download directory {manual} lacks {missing}; download them from "
          "https://image-net.org/download-images (ILSVRC2012, after accepting the terms) into "
          "that directory, see scripts/prepare_imagenet.md")
    try:
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(manual_dir=str(manual)))
    except Exception as e:  # pylint: disable=broad-except
      raise _tfds_error(
          e, what=f"prepare imagenet2012 from {manual}", where=builder.data_dir,
          network_hint=("imagenet2012 is prepared from the manual files alone; see "
                        "scripts/prepare_imagenet.md"),
          damaged_hint=(f"check {', '.join(IMAGENET_MANUAL_FILES)} in {manual} (their sizes: "
                        "scripts/prepare_imagenet.md) and prepare again")) from e
  return tfds_streamed(builder, kind="jpeg", image_size=image_size, recipe=recipe,
                       train_split="train", eval_splits=("validation",), mean=mean, std=std,
                       shuffle_buffer=shuffle_buffer, name="imagenet2012")


def tfds_streamed(builder, *, image_size: int, recipe: str = "inception", kind: str = "jpeg",
                  train_split: str = "train", eval_splits: Sequence[str] = ("validation",),
                  mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                  shuffle_buffer: int = SHUFFLE_BUFFER, name: Optional[str] = None,
                  ) -> ImageDataset:
  """Any prepared TFDS builder with "image" and "label" features, streamed from its files.

  `kind` is "jpeg" for JPEG-encoded images (decoded here, only inside the crop window) or "raw"
  to let TFDS decode them.
  """
  splits = builder.info.splits
  sizes = {s: splits[s].num_examples for s in splits.keys()} if splits else {}
  num_classes, class_names = _tfds_labels(builder)
  return ImageDataset(
      name=name or builder.name, num_classes=num_classes, image_size=image_size,
      source=TFDSSource(builder, kind, sizes), recipe=recipe, mean=tuple(mean), std=tuple(std),
      train_split=train_split, eval_splits=tuple(eval_splits), class_names=class_names,
      shuffle_buffer=shuffle_buffer,
      description=f"TFDS {builder.name} {builder.version} from {builder.data_dir}")
