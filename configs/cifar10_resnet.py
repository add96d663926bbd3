r"""CIFAR-10 ResNets (He et al. 2016, Sec. 4.2) in any algebra.

  python -m algebranets.train --config=configs/cifar10_resnet.py:m2r,depth=56,match=params \
      --workdir=/tmp/cifar_m2r

Argument: <algebra>[,debug][,depth=20|32|44|56|110 (any 6n+2)][,match=none|params|macs]
[,width=W][,folder=PATH]. Data: TFDS cifar10 (downloaded on first use where a network is
available), or folder=PATH, an image folder PATH/{train,test}/<label>/*.png (e.g. the
project's shared/data/cifar10).

Recipe (the paper's): depth 6n+2 with 16/32/64 channels, option-A (zero-padding) shortcuts,
SGD momentum 0.9, batch 128, lr 0.1 divided by 10 at 32k and 48k of 64k steps (fractions 0.5
and 0.75), weight decay 1e-4 on conv and fc weights (selected by name), standard augmentation:
pad 4, random 32x32 crop, random flip; eval on the 10,000 test images as they are.
Reference results (real): ResNet-20 8.75%, ResNet-56 6.97% test error.

debug: ResNet-20 at width 1/4, 4 steps of 8 images (under a minute on two CPU cores, mostly
compiling).
"""

from algebranets.data import images
from algebranets.training import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, keys=dict(config_lib.IMAGE_KEYS, depth=int),
                              defaults={"depth": 20})
  data, eval_splits = config_lib.image_data(
      args, tfds_name="cifar10", tfds_eval_split="test", image_size=32, recipe="cifar",
      mean=images.CIFAR10_MEAN, std=images.CIFAR10_STD)
  c = config_lib.base_config(
      experiment="cifar10_resnet", args=args,
      task=dict(name="classification", label_smoothing=0.0),
      model=dict(name=f"cifar_resnet{args['depth']}", width=args.get("width", 1.0),
                 shortcut="pad"),
      data=data)
  c.train.update(batch_size=128, num_steps=64_000, log_every=100, eval_every=2_000,
                 checkpoint_every=2_000)
  c.eval.update(batch_size=1000, splits=eval_splits)
  c.optimizer.update(name="sgd", lr=0.1, momentum=0.9, nesterov=False, schedule="piecewise",
                     decay_boundaries=(0.5, 0.75), decay_factor=0.1, weight_decay=1e-4,
                     weight_decay_include=r"/w$")
  if args["debug"]:
    c.model.update(name="cifar_resnet20", width=args.get("width", 0.25))
    c.train.update(batch_size=8, num_steps=4, log_every=1, eval_every=2, checkpoint_every=2,
                   partitionable_rng=False)
    c.eval.update(batch_size=8)
  return c
