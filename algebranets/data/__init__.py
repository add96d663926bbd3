"""Input pipelines: per-host numpy batches for training and evaluation.

A dataset is built by name from `DATASETS` (or `build(name, **kwargs)`, e.g. from a config's
`data` block) and offers one interface, whatever it holds:

  ds.train_batches(batch_size, *, process_index=0, process_count=1, start_step=0, seed=0)
      an endless iterator of dicts of numpy arrays, from step `start_step` on
  ds.eval_batches(split, batch_size, *, process_index=0, process_count=1)
      a finite iterator covering every example (token) of `split` once; each dict has a bool
      "mask" that is False on padding; every host yields the same number of batches,
      ds.num_eval_steps(split, batch_size, process_count=1)
  ds.train_split, ds.eval_splits, ds.description, ds.info

`batch_size` is the global batch B; host `process_index` of `process_count` (jax.process_index()
and jax.process_count()) gets its B / P rows of every global batch, so the hosts' batches
concatenated in process order are the global batch.

  text     TextDataset: {"inputs", "targets"}: int32 [Bh, T], Transformer-XL streams;
           attributes vocab_size, vocab, seq_len, eval_seq_len
  images   ImageDataset: {"image": float32 [Bh, S, S, 3], "label": int32 [Bh]};
           attributes num_classes, image_size, class_names

Bad data raises `algebranets.errors.DataError` (a ValueError) naming the file and the split, as
early as it can be known: a text split with nothing to predict when the corpus is built, a
training split too short for its batch (`TextDataset.check_batch_size`) before any model is
built, a corrupt or truncated zip member (archive and member named) while it is read, an image
that does not decode when its batch is read (or, with image_folder's `skip_corrupt=True`, left
out when the folder is built and counted in the log); a class that only an eval split has.

The image pipelines need the "images" extra (tensorflow, tensorflow-datasets), imported only when
an image dataset is built. The default text corpus, "stdlib", needs no download at all.
"""

from typing import Any, Callable, Iterator, Protocol

from algebranets import common
from algebranets.data import images, text
from algebranets.data.images import ImageDataset
from algebranets.data.text import TextDataset, eval_stream_batches, stream_batches


class Dataset(Protocol):
  """What the training loop needs from a dataset."""
  name: str
  description: str
  train_split: str
  eval_splits: tuple[str, ...]

  def train_batches(self, batch_size: int, *, process_index: int = 0, process_count: int = 1,
                    start_step: int = 0, seed: int = 0) -> Iterator[dict[str, Any]]:
    ...

  def eval_batches(self, split: str, batch_size: int, *, process_index: int = 0,
                   process_count: int = 1) -> Iterator[dict[str, Any]]:
    ...

  def num_eval_steps(self, split: str, batch_size: int, process_count: int = 1) -> int:
    ...


# name -> builder(**kwargs) -> Dataset. Paths and sizes are the builders' keyword arguments.
DATASETS: dict[str, Callable[..., Dataset]] = {
    "stdlib": text.stdlib,            # the embedded default text corpus (no download)
    "enwik8": text.enwik8,            # path: enwik8.zip or enwik8
    "wikitext103": text.wikitext103,  # path: wikitext-103-v1.zip or wikitext-103/
    "byte_file": text.byte_file,      # path: any file, as bytes
    "imagenet2012": images.imagenet2012,
    "cifar10": images.cifar10,
    "cifar100": images.cifar100,
    "image_folder": images.image_folder,  # root/<split>/<label>/*.jpg|png
}
DEFAULT_TEXT = "stdlib"


def build(name: str, **kwargs) -> Dataset:
  """DATASETS[name](**kwargs), with a ValueError naming the choices for an unknown name."""
  return DATASETS[common.check_choice(name, sorted(DATASETS), "dataset")](**kwargs)


__all__ = [
    "DATASETS", "DEFAULT_TEXT", "Dataset", "build", "images", "text", "ImageDataset",
    "TextDataset", "stream_batches", "eval_stream_batches",
]
