"""What resuming a TFDS-streamed image dataset costs: the skip to the resumed position.

A resumed TFDS stream (algebranets.data.images, e.g. ImageNet) starts at the epoch of its step
and skips the examples of that epoch already seen: it reads and parses them again (images not
decoded or augmented) so that the per-epoch shuffle gives the same order as the uninterrupted
run. This times that skip on a synthetic TFDS dataset of `--records` records of `--record_kb`
KB (ImageNet's JPEGs average about 110 KB) in `--shards` files, as the time to the first batch
at step 0 and at a step `--skip` records later, and extrapolates the rate to one ImageNet epoch
(1,281,167 records) on one host (P hosts: 1 / P of it each, in parallel). The files are read
from the page cache when they were just written: on a disk or a bucket the rate is bounded by
its read bandwidth too.

Usage:
  python scripts/benchmark_tfds_resume.py [--records 12000] [--skip 11000] [--record_kb 110]
      [--shards 16] [--shuffle_buffer 1024] [--repeats 3] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchmark_ops import markdown_header, write_section  # noqa: E402

import tensorflow as tf  # noqa: E402
import tensorflow_datasets as tfds  # noqa: E402

from algebranets.data import images  # noqa: E402

IMAGENET_TRAIN = 1_281_167


def _builder(data_dir, records: int, record_bytes: int, shards: int):
  class Synthetic(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Records of a valid 8 x 8 JPEG padded after its end marker to `record_bytes`."""
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=(8, 8, 3), encoding_format="jpeg"),
          "label": tfds.features.ClassLabel(num_classes=10)}))

    def _split_generators(self, dl_manager):
      del dl_manager
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      rng = np.random.default_rng(0)
      jpeg = tf.io.encode_jpeg(np.zeros((8, 8, 3), np.uint8)).numpy()
      for i in range(records):
        yield i, {"image": jpeg + rng.bytes(record_bytes - len(jpeg)), "label": i % 10}

  builder = Synthetic(data_dir=data_dir)
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=shards))
  return builder


def _first_batch_seconds(ds, start_step: int) -> float:
  t = time.perf_counter()
  next(ds.train_batches(1, start_step=start_step))
  return time.perf_counter() - t


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--records", type=int, default=12000)
  p.add_argument("--skip", type=int, default=11000)
  p.add_argument("--record_kb", type=int, default=110)
  p.add_argument("--shards", type=int, default=16)
  p.add_argument("--shuffle_buffer", type=int, default=1024)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--write", default=None, help="markdown file to write the table into")
  p.add_argument("--section", default="tfds_resume", help="name of the marked block in --write")
  args = p.parse_args(argv)
  if not 0 < args.skip < args.records:
    raise ValueError(f"--skip must be in (0, --records = {args.records}), got {args.skip}")
  with tempfile.TemporaryDirectory() as data_dir:
    builder = _builder(data_dir, args.records, args.record_kb * 1000, args.shards)
    ds = images.tfds_streamed(builder, image_size=8, recipe="cifar",
                              shuffle_buffer=args.shuffle_buffer)
    _first_batch_seconds(ds, 0)  # warm-up: page cache, tf.data start-up
    start, skipped = [], []
    for _ in range(args.repeats):  # round-robin, minimum of each
      start.append(_first_batch_seconds(ds, 0))
      skipped.append(_first_batch_seconds(ds, args.skip))
  seconds = max(min(skipped) - min(start), 1e-9)
  rate = args.skip / seconds
  epoch_minutes = IMAGENET_TRAIN / rate / 60
  lines = [
      markdown_header(argv), "",
      "| records | KB each | shards | shuffle buffer | first batch at step 0 (s) "
      f"| first batch {args.skip:,} records later (s) | skip rate (records/s) | MB/s "
      "| one ImageNet epoch, 1 host (min) |",
      "|---|---|---|---|---|---|---|---|---|",
      f"| {args.records:,} | {args.record_kb} | {args.shards} | {args.shuffle_buffer:,} "
      f"| {min(start):.2f} | {min(skipped):.2f} | {rate:,.0f} "
      f"| {rate * args.record_kb / 1000:,.0f} | {epoch_minutes:.1f} |",
  ]
  text = "\n".join(lines)
  print(text)
  if args.write:
    write_section(args.write, args.section, text)


if __name__ == "__main__":
  main()
