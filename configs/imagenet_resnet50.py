r"""ResNet-50 (v1.5) on ImageNet: torchvision's reference recipe, in any algebra.

  python -m algebranets.train --config=configs/imagenet_resnet50.py:m2r,match=params \
      --workdir=/tmp/rn50_m2r --config.data.data_dir=$DATA/tensorflow_datasets

(ImageNet through TFDS imagenet2012, prepared from the manual download: see
scripts/prepare_imagenet.md.) Argument: <algebra>[,debug][,match=none|params|macs|flops]
[,width=W][,folder=PATH] (width: the real reference's width multiplier before matching, default
1; folder: an image folder PATH/{train,val}/<label>/*.JPEG instead of TFDS). For ResNets
match=flops and match=macs are the same size: every multiply-add is in a weight layer.

Reference: torchvision's ResNet-50 (weights IMAGENET1K_V1, 76.13% top-1 on the 50,000 validation
images), trained by pytorch/vision references/classification/train.py --model resnet50 with that
script's defaults on 8 GPUs. Its hyper-parameters, all matched here:
  * architecture: ResNet-50 v1.5 (stride 2 on the bottleneck's 3x3 conv), convs padded
    symmetrically by k//2 (model.padding="symmetric"; the 3x3/2 max pool by 1), no zero-init of
    the last BN scale of a block (zero_init_residual=False);
  * SGD, momentum 0.9 (not Nesterov), global batch 256 (32 per GPU x 8), lr 0.1 (= 0.1 per 256
    images: lr_batch_scale=256 keeps the ratio if you change the batch), multiplied by 0.1 after
    30 and 60 of 90 epochs, no warm-up;
  * weight decay 1e-4, coupled (added to the gradient), on every parameter: conv and fc weights,
    the fc bias and the BN scales and offsets ("--norm-weight-decay" unset);
  * no label smoothing; BN momentum 0.1 (decay 0.9) and eps 1e-5;
  * data: random-resized crop (8-100% of the area, aspect 3/4-4/3) to 224 + random flip;
    evaluation on the central 224/256 of the shorter side at 224 (resize 256, center crop 224);
    inputs normalised by the ImageNet mean and std.

Remaining differences (also in docs/reproducing.md):
  1. BatchNorm statistics are over the global batch of 256 (one SPMD program, or its
     micro-batches), torchvision's over each GPU's 32 images (no sync BN).
  2. Initialisation: conv weights truncated normal with variance 2 / fan_in (the algebra-aware He
     rule, nn.initializers.he_normal), torchvision's untruncated normal with variance 2 / fan_out
     (kaiming_normal_, mode="fan_out"); the fc layer Haiku's truncated normal 1/sqrt(fan_in) and a
     zero bias, torchvision's uniform +-1/sqrt(fan_in) for both.
  3. Pre-processing: TensorFlow's JPEG decoding and bicubic resize (torchvision: PIL, bilinear);
     the training crop is drawn by tf.image.sample_distorted_bounding_box (10 attempts, the whole
     image as fallback; torchvision: 10 attempts, then a central crop); the evaluation crop is
     taken first and resized once (torchvision resizes, then crops: the same region).
  4. Order: the TFDS stream is shuffled per host with a 16,384-example buffer (torchvision: a full
     random permutation per epoch); the lr drops at the steps nearest 1/3 and 2/3 of all steps
     (torchvision: at whole epochs, the partial last batch of each epoch counted): < 1 epoch apart.
  5. Running BN variance: the biased batch variance (torchvision stores the unbiased one).
  6. Precision: float32 by default like the reference; --config.mixed_precision.compute_dtype=
     bfloat16 runs the body in bfloat16 (the pool, classifier and logits stay float32).
An earlier version of this config followed a Goyal et al. / "Bag of Tricks" mix (batch 1024,
cosine, label smoothing, Nesterov, zero-init BN) that matched no single published run.

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
      task=dict(name="classification", label_smoothing=0.0),
      model_name="resnet50",
      model=dict(width=args.get("width", 1.0), zero_init_last_bn=False, padding="symmetric"),
      data=data)
  c.train.update(batch_size=256, num_epochs=90.0, log_every=100, eval_every=10_000,
                 checkpoint_every=5_000)
  c.eval.update(batch_size=1024, splits=eval_splits)
  c.optimizer.update(name="sgd", lr=0.1, lr_batch_scale=256, momentum=0.9, nesterov=False,
                     schedule="piecewise", decay_boundaries=(1 / 3, 2 / 3), decay_factor=0.1,
                     warmup_epochs=0.0, weight_decay=1e-4, weight_decay_include=r".*",
                     weight_decay_exclude="")
  if args["debug"]:
    c.model_name = "resnet18"
    c.model.update(width=args.get("width", 0.0625))
    c.data.update(image_size=32)
    c.train.update(batch_size=8, num_epochs=0.0, num_steps=4, log_every=1, eval_every=2,
                   checkpoint_every=2, partitionable_rng=False)
    c.eval.update(batch_size=8)
  return c
