r"""Transformer-XL on WikiText-103 (word-level perplexity): the base recipe of Dai et al.

  python -m algebranets.train --config=configs/wikitext103_transformer_xl.py:m2r,match=params \
      --workdir=/tmp/wt103_m2r --config.data.path=data/wikitext103/wikitext-103-v1.zip

(the zip: bash scripts/download_wikitext103.sh; its extracted wikitext-103/ folder works too.)
Argument: <algebra>[,debug][,match=none|params|macs|width]. CPU smoke test on any small folder
with wiki.{train,valid,test}.tokens (more than 16 word types):

  python -m algebranets.train --config=configs/wikitext103_transformer_xl.py:m2r,debug \
      --workdir=/tmp/wt103_debug --config.data.path=DIR

Recipe (kimiyoung/transformer-xl, run_wt103_base.sh): 16 layers, d_model 410, 10 heads of 41,
d_inner 2100, dropout 0.1, dropatt 0, adaptive input and softmax with cutoffs
[20000, 40000, 200000] (div_val 1, tied), tgt_len = mem_len = 150, batch 60, 200k steps, Adam
lr 2.5e-4, cosine decay to 0.004·lr, gradient clipping 0.25; a 2,000-step linear warm-up
(1%; the reference has none: optimizer.warmup_steps=0). Vocabulary from the training split
(267,735 words, <eos> at line ends). Evaluation as the reference eval script: tgt_len 64,
mem_len 640, clamp_len 400, same_length. Reference result (real base): 24.0 test perplexity.
"""

from algebranets.models import transformer_xl
from algebranets.training import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, match_kinds=config_lib.LM_MATCH_KINDS)
  model = dict(transformer_xl.PRESETS["wt103_base"], name="transformer_xl")
  c = config_lib.base_config(
      experiment="wikitext103_transformer_xl", args=args,
      task=dict(name="language_model", eval_mem_len=640, eval_clamp_len=400,
                eval_same_length=True),
      model=model,
      data=dict(name="wikitext103", path="data/wikitext103/wikitext-103-v1.zip", seq_len=150,
                eval_seq_len=64))
  c.train.update(batch_size=60, num_steps=200_000, log_every=200, eval_every=10_000,
                 checkpoint_every=4_000)
  c.eval.update(batch_size=16, splits=("valid",))
  c.optimizer.update(name="adam", lr=2.5e-4, schedule="cosine", warmup_steps=2_000,
                     end_lr_ratio=0.004, grad_clip_norm=0.25, weight_decay=0.0)
  if args["debug"]:
    c.model.update(d_model=16, n_layers=2, n_heads=2, d_head=8, d_inner=32, mem_len=8,
                   cutoffs=(8, 16))
    c.task.update(eval_mem_len=16, eval_clamp_len=12)
    c.data.update(seq_len=8, eval_seq_len=8)
    c.train.update(batch_size=4, num_steps=6, log_every=1, eval_every=3, checkpoint_every=3,
                   partitionable_rng=False)
    c.eval.update(batch_size=4)
    c.optimizer.update(warmup_steps=1, lr=1e-3)
  return c
