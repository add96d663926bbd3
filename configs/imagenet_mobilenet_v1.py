r"""MobileNet-v1 (Howard et al. 2017) on ImageNet, in any algebra.

  python -m algebranets.train --config=configs/imagenet_mobilenet_v1.py:m2r,match=params \
      --workdir=/tmp/mbv1_m2r --config.data.data_dir=$DATA/tensorflow_datasets

Argument: <algebra>[,debug][,match=none|params|macs][,width=α][,folder=PATH]; width is the
paper's width multiplier α of the real reference (1.0, 0.75, 0.5, 0.25), folder an image folder
PATH/{train,val}/<label>/*.JPEG used instead of TFDS imagenet2012.

Recipe. The paper trained with RMSProp and asynchronous updates and gives no full schedule; this
follows the widely reproduced synchronous recipe that reaches its accuracy (GluonCV's
mobilenet1.0, 72.3% top-1 with label smoothing): SGD with Nesterov momentum 0.9, batch 1024,
lr 0.1·batch/256 with a 5-epoch linear warm-up and cosine decay to 0 over 200 epochs, label
smoothing 0.1, weight decay 4e-5 on conv and fc weights but, as the paper asks, none on the
depthwise filters (nor on batch-norm parameters and biases): include "/w$", exclude
"depthwise". Inception-style random-resized crop + flip at 224; resize + central crop for eval.
(The TF-slim RMSProp is available: optimizer.name="rmsprop", decay 0.9, momentum 0.9,
eps=1.0.) Reference result (real, α = 1): 70.6% top-1 in the paper.

debug: α = 1/16 on 32x32 images, 4 steps (under a minute on two CPU cores, mostly
compiling); needs folder=PATH or a prepared imagenet2012.
"""

from algebranets.training import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, keys=config_lib.IMAGE_KEYS)
  data, eval_splits = config_lib.image_data(
      args, tfds_name="imagenet2012", tfds_eval_split="validation", image_size=224,
      recipe="inception", manual_dir="")
  c = config_lib.base_config(
      experiment="imagenet_mobilenet_v1", args=args,
      task=dict(name="classification", label_smoothing=0.1),
      model=dict(name="mobilenet_v1", width=args.get("width", 1.0)),
      data=data)
  c.train.update(batch_size=1024, num_epochs=200.0, log_every=100, eval_every=2_500,
                 checkpoint_every=2_500)
  c.eval.update(batch_size=1024, splits=eval_splits)
  c.optimizer.update(name="sgd", lr=0.1, lr_batch_scale=256, momentum=0.9, nesterov=True,
                     schedule="cosine", warmup_epochs=5.0, weight_decay=4e-5,
                     weight_decay_include=r"/w$", weight_decay_exclude="depthwise")
  if args["debug"]:
    c.model.update(width=args.get("width", 0.0625))
    c.data.update(image_size=32)
    c.train.update(batch_size=8, num_epochs=0.0, num_steps=4, log_every=1, eval_every=2,
                   checkpoint_every=2, partitionable_rng=False)
    c.eval.update(batch_size=8)
    c.optimizer.update(warmup_epochs=0.0, warmup_steps=1)
  return c
