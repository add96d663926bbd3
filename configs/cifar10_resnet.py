r"""CIFAR-10 ResNets (He et al. 2016, Sec. 4.2) in any algebra.

  python -m algebranets.train --config=configs/cifar10_resnet.py:m2r,depth=56,match=params \
      --workdir=/tmp/cifar_m2r

Argument: <algebra>[,debug][,depth=20|32|44|56|110 (any 6n+2)][,match=none|params|macs|flops]
[,width=W][,folder=PATH][,preset=full|small][,steps=N][,train_examples=N][,eval_examples=N]
[,bn=component|whitening][,init=NAME]. Data: TFDS cifar10 (downloaded on first use where a
network is available), or folder=PATH, an image folder PATH/{train,test}/<label>/*.jpg|png
(any folder in that layout, e.g. the CIFAR-10 images written out as PNG files).

Recipe (preset=full, the paper's): depth 6n+2 with 16/32/64 channels, option-A (zero-padding)
shortcuts, 3x3 convs padded 1 on each side (model.padding="symmetric", as the paper's Torch/Caffe
models: the stride-2 convs then sample the grid the option-A shortcut x[::2, ::2] subsamples;
TensorFlow's "SAME" would pad them (0, 1), one pixel off), SGD momentum 0.9, batch 128, lr 0.1
divided by 10 at 32k and 48k of 64k steps (fractions 0.5 and 0.75), weight decay 1e-4 on conv and
fc weights (selected by name), standard augmentation: pad 4, random 32x32 crop, random flip; eval
on the 10,000 test images as they are. Reference results (real): ResNet-20 8.75%, ResNet-56
6.97% test error. For ResNets match=flops and match=macs are the same size (every multiply-add is
in a weight layer).

preset=small: what fits a few minutes of two CPU cores (experiments/sweeps.py "cifar10_small"):
ResNet-20 at width 0.5 (the real reference has ~68k parameters), batch 32, `steps` steps (default
SMALL_STEPS) of SGD with lr 0.05, a short linear warm-up and cosine decay, on a class-balanced
subset of the training images (train_examples, default SMALL_TRAIN_EXAMPLES; image folders only)
and evaluated once at the end on a class-balanced subset of the test images (eval_examples,
default SMALL_EVAL_EXAMPLES). Matched widths may miss the reference by up to 10%
(match_tolerance 0.1): one channel of a 4-channel M4(R) stage is worth more than 2%. It keeps
TensorFlow's "SAME" padding (model.padding="same"), the setting its recorded results in
docs/results/cifar10 were measured with; --config.model.padding=symmetric switches.

Variants (the paper's C and H ablations): bn=whitening uses the D x D whitening batch norm of
Trabelsi et al. instead of per-component normalisation; init=polar draws conv weights with the
polar initialiser (c and h only) instead of He truncated-normal (any name of
nn.initializers.INITIALIZERS).

debug: ResNet-20 at width 1/4, 4 steps of 8 images (under a minute on two CPU cores, mostly
compiling).
"""

from algebranets import common
from algebranets.data import images
from algebranets.training import config_lib

PRESETS = ("full", "small")
BATCH_NORMS = ("component", "whitening")
SMALL_STEPS = 300
SMALL_TRAIN_EXAMPLES = 10_000
SMALL_EVAL_EXAMPLES = 2_000


def get_config(arg=None):
  args = config_lib.parse_arg(
      arg, keys=dict(config_lib.IMAGE_KEYS, depth=int, preset=str, steps=int,
                     train_examples=int, eval_examples=int, bn=str, init=str),
      defaults={"depth": 20, "preset": "full", "bn": "component"})
  small = common.check_choice(args["preset"], PRESETS, "preset") == "small"
  data, eval_splits = config_lib.image_data(
      args, tfds_name="cifar10", tfds_eval_split="test", image_size=32, recipe="cifar",
      mean=images.CIFAR10_MEAN, std=images.CIFAR10_STD)
  model = dict(width=args.get("width", 0.5 if small else 1.0), shortcut="pad",
               padding="same" if small else "symmetric")
  if common.check_choice(args["bn"], BATCH_NORMS, "bn") == "whitening":
    model["bn_config"] = {"whitening": True}
  if "init" in args:
    model["w_init"] = args["init"]
  if data["name"] == "image_folder":
    data.update(train_examples=args.get("train_examples", SMALL_TRAIN_EXAMPLES if small else 0),
                eval_examples=args.get("eval_examples", SMALL_EVAL_EXAMPLES if small else 0))
  elif "train_examples" in args or "eval_examples" in args:
    raise ValueError("train_examples and eval_examples need folder=PATH (an image folder)")
  c = config_lib.base_config(
      experiment="cifar10_resnet", args=args,
      task=dict(name="classification", label_smoothing=0.0),
      model_name=f"cifar_resnet{args['depth']}", model=model, data=data)
  c.train.update(batch_size=128, num_steps=args.get("steps", 64_000), log_every=100,
                 eval_every=2_000, checkpoint_every=2_000)
  c.eval.update(batch_size=1000, splits=eval_splits)
  c.optimizer.update(name="sgd", lr=0.1, momentum=0.9, nesterov=False, schedule="piecewise",
                     decay_boundaries=(0.5, 0.75), decay_factor=0.1, weight_decay=1e-4,
                     weight_decay_include=r"/w$")
  if small:
    c.match_tolerance = 0.1
    steps = args.get("steps", SMALL_STEPS)
    c.train.update(batch_size=32, num_steps=steps, log_every=50, eval_every=0,
                   checkpoint_every=100_000)
    c.eval.update(batch_size=500)
    c.optimizer.update(lr=0.05, schedule="cosine", warmup_steps=min(50, steps // 10))
  if args["debug"]:
    c.model_name = "cifar_resnet20"
    c.model.update(width=args.get("width", 0.25))
    c.train.update(batch_size=8, num_steps=args.get("steps", 4), log_every=1, eval_every=2,
                   checkpoint_every=2, partitionable_rng=False)
    c.eval.update(batch_size=8)
  return c
