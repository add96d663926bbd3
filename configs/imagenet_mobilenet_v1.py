r"""MobileNet-v1 (Howard et al. 2017) on ImageNet: GluonCV's mobilenet1.0 recipe, in any algebra.

  python -m algebranets.train --config=configs/imagenet_mobilenet_v1.py:m2r,match=params \
      --workdir=/tmp/mbv1_m2r --config.data.data_dir=$DATA/tensorflow_datasets

Argument: <algebra>[,debug][,match=none|params|macs|flops][,width=α][,folder=PATH]; width is the
paper's width multiplier α of the real reference (1.0, 0.75, 0.5, 0.25), folder an image folder
PATH/{train,val}/<label>/*.JPEG used instead of TFDS imagenet2012. match=flops and match=macs
are the same size here: every multiply-add is in a weight layer.

Reference. The paper trained with RMSProp and asynchronous updates in TensorFlow and publishes
no complete schedule (its result: 70.6% top-1 at α = 1). This config follows one published,
synchronous run instead: GluonCV's mobilenet1.0 (dmlc/web-data gluoncv/logs/classification/
imagenet/mobilenet1.0.sh and .log: 72.96% top-1 after its last epoch), whose hyper-parameters are
all matched here:
  * architecture: the paper's Table 1 (MobileNet1.0 of GluonCV is the same network), 3x3 convs
    padded 1 on each side (MXNet's pad=1: model.padding="symmetric"), no dropout;
  * SGD with Nesterov momentum 0.9 (GluonCV's "nag"), global batch 1024 (128 per GPU x 8),
    lr 0.4 = 0.1 per 256 images (lr_batch_scale=256), a linear warm-up from 0 over 5 epochs,
    then a cosine decay to 0 over the remaining 115 of 120 epochs;
  * weight decay 1e-4, coupled, on the conv (depthwise included) and fc weights and on nothing
    else (GluonCV's --no-wd: no decay on BN scales and offsets or biases);
  * label smoothing 0.1; BN momentum 0.9 (decay 0.9), eps 1e-5;
  * data: random-resized crop (8-100% of the area, aspect 3/4-4/3) to 224 + random flip;
    evaluation on the central 224/256 of the shorter side at 224; ImageNet mean/std.

Remaining differences (also in docs/reproducing.md):
  1. Colour augmentation: GluonCV also jitters brightness, contrast and saturation by up to 40%
     and adds AlexNet-style PCA lighting noise (0.1); this pipeline has neither.
  2. BatchNorm statistics over the global batch of 1024 (GluonCV: per GPU, 128 images).
  3. Precision: GluonCV trains in float16 with float32 master weights; here float32, or bfloat16
     with --config.mixed_precision.compute_dtype=bfloat16 (pool, classifier and logits float32).
  4. Initialisation: conv weights truncated normal with variance 2 / fan_in (nn.initializers.
     he_normal), the fc layer Haiku's default; GluonCV draws every weight from MXNet's MSRAPrelu,
     an untruncated normal with variance 2 / ((fan_in + fan_out) / 2).
  5. Pre-processing: TensorFlow JPEG decoding, bicubic resize and
     tf.image.sample_distorted_bounding_box crops from the original JPEGs (GluonCV: MXNet
     ImageRecordIter on RecordIO files); the TFDS stream is shuffled with a 16,384-example buffer
     per host; the lr schedule is per step, as GluonCV's.
(The TF-slim RMSProp is available: optimizer.name="rmsprop", decay 0.9, momentum 0.9, eps=1.0.)
An earlier version of this config trained 200 epochs with weight decay 4e-5 and none on the
depthwise filters: a mix that matched no single published run.

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
      model_name="mobilenet_v1",
      model=dict(width=args.get("width", 1.0), padding="symmetric"),
      data=data)
  c.train.update(batch_size=1024, num_epochs=120.0, log_every=100, eval_every=2_500,
                 checkpoint_every=2_500)
  c.eval.update(batch_size=1024, splits=eval_splits)
  c.optimizer.update(name="sgd", lr=0.1, lr_batch_scale=256, momentum=0.9, nesterov=True,
                     schedule="cosine", warmup_epochs=5.0, weight_decay=1e-4,
                     weight_decay_include=r"/w$", weight_decay_exclude="")
  if args["debug"]:
    c.model.update(width=args.get("width", 0.0625))
    c.data.update(image_size=32)
    c.train.update(batch_size=8, num_epochs=0.0, num_steps=4, log_every=1, eval_every=2,
                   checkpoint_every=2, partitionable_rng=False)
    c.eval.update(batch_size=8)
    c.optimizer.update(warmup_epochs=0.0, warmup_steps=1)
  return c
