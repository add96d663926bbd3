r"""The main job's experiment: a small Transformer-XL on the embedded corpus, in minutes on a CPU.

  python -m algebranets.quickstart               (both models, the table and the plot)
  python -m algebranets.train --config=configs/quickstart.py:m2r --workdir=/tmp/qs_m2r

The corpus is `stdlib` (the running Python's standard-library sources, split 90/5/5: no
download). The real model: 2 layers, d_model 96, 4 heads of 24, d_inner 384, segments and
memory of 64 bytes, no dropout (a short run on millions of bytes does not overfit). An algebra
model is matched to its real parameter count by default (match=params; d_model, d_inner and
d_head shrink). Adam, lr 2e-3, 50 warm-up steps then cosine decay, gradient clipping 0.25, batch
16 x 64 bytes; evaluated once, at the end, on every byte of the valid split.

Argument: <algebra>[,debug][,match=none|params|macs|width][,steps=N]. Uniform guessing is 8 bits
per byte; these models reach well under 3 in their budget. Time on two shared CPU cores
(2026-12-02, under load): r 1 min 45 s, the matched m2r 4 min 48 s (its 2x2 products cost more
per parameter); the quickstart (both) 6 min 38 s.
"""

from algebranets.training import config_lib


def get_config(arg="r"):
  args = config_lib.parse_arg(arg, keys={"steps": int},
                              match_kinds=config_lib.LM_MATCH_KINDS,
                              defaults={"match": "params", "steps": 1000})
  c = config_lib.base_config(
      experiment="quickstart", args=args,
      task=dict(name="language_model", eval_mem_len=64, eval_clamp_len=-1,
                eval_same_length=False),
      model_name="transformer_xl",
      model=dict(vocab_size=256, d_model=96, n_layers=2, n_heads=4,
                 d_head=24, d_inner=384, mem_len=64, dropout=0.0, dropatt=0.0,
                 # Fan-scaled (LeCun) weights, as before the paper configs took the
                 # reference's N(0, 0.02) scheme (init="reference"): a short run at lr 2e-3.
                 init="lecun"),
      data=dict(name="stdlib", seq_len=64, eval_seq_len=64))
  c.train.update(batch_size=16, num_steps=args["steps"], log_every=50, eval_every=0,
                 checkpoint_every=100_000, partitionable_rng=False)
  c.eval.update(batch_size=64, splits=("valid",))
  c.optimizer.update(name="adam", lr=2e-3, schedule="cosine", warmup_steps=50,
                     end_lr_ratio=0.05, grad_clip_norm=0.25)
  if args["debug"]:
    c.model.update(d_model=32, n_layers=1, n_heads=2, d_head=16, d_inner=64, mem_len=16)
    c.data.update(seq_len=16, eval_seq_len=16)
    c.train.update(num_steps=min(args["steps"], 20), log_every=5)
    c.optimizer.update(warmup_steps=2)
  return c
