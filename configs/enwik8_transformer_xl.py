r"""Transformer-XL on enwik8 (bits per character): the base recipe of Dai et al. (2019).

  python -m algebranets.train --config=configs/enwik8_transformer_xl.py:m2r,match=params \
      --workdir=/tmp/enwik8_m2r --config.data.path=data/enwik8/enwik8.zip

(enwik8.zip: bash scripts/download_enwik8.sh.) Argument: <algebra>[,debug][,match=...]
(match: none | params | macs | width, see training/config_lib.py). CPU smoke test:

  python -m algebranets.train --config=configs/enwik8_transformer_xl.py:m2r,debug \
      --workdir=/tmp/enwik8_debug --config.data.path=SOME_FILE   (any file; split 90/5/5)

Recipe (kimiyoung/transformer-xl, run_enwik8_base.sh and tf/scripts/enwik8_base_gpu.sh):
12 layers, d_model 512, 8 heads of 64, d_inner 2048, dropout 0.1, dropatt 0, post-norm,
tgt_len = mem_len = 512, batch 24, 400k steps, Adam lr 2.5e-4 with cosine decay to 0.004·lr
(the TF reference's min_lr_ratio), global-norm gradient clipping 0.25. The reference uses no
warm-up; here a linear warm-up of 4,000 steps (1% of training) guards the algebra models
(set optimizer.warmup_steps=0 for the reference). Bytes are tokens (V = 256); split
90M/5M/5M. Evaluation as the reference eval script: tgt_len 80, mem_len 2,100,
clamp_len 820, same_length, every target byte of the split once.
Reference result (real, 12 layers): 1.06 bpc on test.
"""

from algebranets.models import transformer_xl
from algebranets.training import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, match_kinds=config_lib.LM_MATCH_KINDS)
  model = dict(transformer_xl.PRESETS["enwik8_base"], name="transformer_xl")
  c = config_lib.base_config(
      experiment="enwik8_transformer_xl", args=args,
      task=dict(name="language_model", eval_mem_len=2100, eval_clamp_len=820,
                eval_same_length=True),
      model=model,
      data=dict(name="enwik8", path="data/enwik8/enwik8.zip", seq_len=512, eval_seq_len=80,
                proportional=False))
  c.train.update(batch_size=24, num_steps=400_000, log_every=200, eval_every=20_000,
                 checkpoint_every=4_000)
  c.eval.update(batch_size=16, splits=("valid",))
  c.optimizer.update(name="adam", lr=2.5e-4, schedule="cosine", warmup_steps=4_000,
                     end_lr_ratio=0.004, grad_clip_norm=0.25, weight_decay=0.0)
  if args["debug"]:
    c.model.update(d_model=16, n_layers=2, n_heads=2, d_head=8, d_inner=32, mem_len=8)
    c.task.update(eval_mem_len=16, eval_clamp_len=12)
    c.data.update(seq_len=8, eval_seq_len=8, proportional=True)
    c.train.update(batch_size=4, num_steps=6, log_every=1, eval_every=3, checkpoint_every=3,
                   partitionable_rng=False)
    c.eval.update(batch_size=4)
    c.optimizer.update(warmup_steps=1, lr=1e-3)
  return c
