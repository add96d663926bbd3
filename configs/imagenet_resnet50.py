r"""ResNet-50 (v1.5) on ImageNet: the standard 90-epoch recipe, in any algebra.

  python -m algebranets.train --config=configs/imagenet_resnet50.py:m2r,match=params \
      --workdir=/tmp/rn50_m2r --config.data.data_dir=$DATA/tensorflow_datasets

(ImageNet through TFDS imagenet2012, prepared from the manual download: see
scripts/prepare_imagenet.md.) Argument: <algebra>[,debug][,match=none|params|macs][,width=W]
[,folder=PATH] (width: the real reference's width multiplier before matching, default 1;
folder: an image folder PATH/{train,val}/<label>/*.JPEG instead of TFDS).

Recipe (He et al. 2016; Goyal et al. 2017; "Bag of Tricks", He et al. 2019): SGD with Nesterov
momentum 0.9, batch 1024, lr 0.1·batch/256 with a 5-epoch linear warm-up and cosine decay to 0
over 90 epochs, label smoothing 0.1, weight decay 1e-4 on conv and fc weights (not on
batch-norm parameters or biases: selected by name, "/w$"), zero-initialised last BN scale of
every residual branch. Inception-style random-resized crop (8-100% area) + flip at 224 for
training; resize (shorter side 256) + central 224 crop for eval on the 50,000 validation images.
Batch norm statistics are over the whole global batch (the step is one SPMD program).
Reference result (real): about 76-77% top-1.

debug: a ResNet-18 at width 1/16 on 32x32 images, 4 steps (well under a minute on two CPU
cores, most of it compiling); point data.data_dir at a prepared imagenet2012 or use
folder=PATH (the tests use a folder of JPEGs).
"""

from algebranets.training import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, keys=config_lib.IMAGE_KEYS)
  data, eval_splits = config_lib.image_data(
      args, tfds_name="imagenet2012", tfds_eval_split="validation", image_size=224,
      recipe="inception", manual_dir="")
  c = config_lib.base_config(
      experiment="imagenet_resnet50", args=args,
      task=dict(name="classification", label_smoothing=0.1),
      model=dict(name="resnet50", width=args.get("width", 1.0), zero_init_last_bn=True),
      data=data)
  c.train.update(batch_size=1024, num_epochs=90.0, log_every=100, eval_every=2_500,
                 checkpoint_every=2_500)
  c.eval.update(batch_size=1024, splits=eval_splits)
  c.optimizer.update(name="sgd", lr=0.1, lr_batch_scale=256, momentum=0.9, nesterov=True,
                     schedule="cosine", warmup_epochs=5.0, weight_decay=1e-4,
                     weight_decay_include=r"/w$")
  if args["debug"]:
    c.model.update(name="resnet18", width=args.get("width", 0.0625))
    c.data.update(image_size=32)
    c.train.update(batch_size=8, num_epochs=0.0, num_steps=4, log_every=1, eval_every=2,
                   checkpoint_every=2, partitionable_rng=False)
    c.eval.update(batch_size=8)
    c.optimizer.update(warmup_epochs=0.0, warmup_steps=1)
  return c
