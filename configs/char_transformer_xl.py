r"""Character-level language modelling on any text file with a small Transformer-XL.

  python -m algebranets.train \
      --config=configs/char_transformer_xl.py:m2r,path=data/tinyshakespeare/input.txt \
      --workdir=/tmp/char_m2r
  python -m algebranets.sample --workdir=/tmp/char_m2r --prompt="ROMEO:" --tokens=300

(tinyshakespeare: input.txt of karpathy/char-rnn's data/tinyshakespeare; any text file will do.)

Argument: <algebra>[,debug][,path=FILE][,match=params|macs|width|none][,steps=N]. The corpus is
the bytes of FILE (`byte_file`: V = 256, split 90/5/5 by position into train/valid/test), so
bits per byte = bits per character for ASCII text such as tinyshakespeare (1,115,394 bytes:
train 1,003,854, valid and test 55,770 each). FILE may also be given as --config.data.path.

Sized for a minute or two of two CPU cores per model (experiments/sweeps.py "char_lm_small"):
the real model is configs/quickstart.py's -- 2 layers, d_model 96, 4 heads of 24, d_inner 384,
segments and memory of 64 bytes -- with dropout 0.1 (a million bytes is overfit sooner than the
quickstart's 12 MB). An algebra model is matched to the real one's parameter count by default
(match=params: d_model, d_inner and d_head shrink). Adam, lr 2e-3 with STEPS // 20 warm-up steps
and cosine decay, gradient clipping 0.25, batch 16 x 64 bytes; evaluated once, at the end, on
every byte of the valid and test splits with a 64-byte memory. Uniform guessing is 8 bits per
byte; the character-level bigram entropy of English is ~3.3 bits.

debug: a 1-layer model of width 32 for 20 steps (seconds, plus compilation).
"""

from algebranets.training import config_lib

DEFAULT_STEPS = 500
# Without path=FILE (or --config.data.path), the run stops at its start with byte_file's
# "expected a text or byte file at <this>" message.
MISSING_PATH = "<give path=FILE or --config.data.path=FILE>"


def get_config(arg="r"):
  args = config_lib.parse_arg(arg, keys={"steps": int, "path": str},
                              match_kinds=config_lib.LM_MATCH_KINDS,
                              defaults={"match": "params", "steps": DEFAULT_STEPS, "path": ""})
  c = config_lib.base_config(
      experiment="char_transformer_xl", args=args,
      task=dict(name="language_model", eval_mem_len=64, eval_clamp_len=-1,
                eval_same_length=False),
      model_name="transformer_xl",
      model=dict(vocab_size=256, d_model=96, n_layers=2, n_heads=4,
                 d_head=24, d_inner=384, mem_len=64, dropout=0.1, dropatt=0.0,
                 # The initialisation docs/results/char_lm was measured with (fan-scaled
                 # LeCun); the paper configs use the reference's N(0, 0.02): init="reference".
                 init="lecun"),
      data=dict(name="byte_file", path=args["path"] or MISSING_PATH, seq_len=64, eval_seq_len=64))
  steps = args["steps"]
  c.train.update(batch_size=16, num_steps=steps, log_every=max(1, min(50, steps // 4)),
                 eval_every=0, checkpoint_every=100_000, partitionable_rng=False)
  c.eval.update(batch_size=64, splits=("valid", "test"))
  c.optimizer.update(name="adam", lr=2e-3, schedule="cosine", warmup_steps=max(1, steps // 20),
                     end_lr_ratio=0.05, grad_clip_norm=0.25)
  if args["debug"]:
    c.model.update(d_model=32, n_layers=1, n_heads=2, d_head=16, d_inner=64, mem_len=16)
    c.task.update(eval_mem_len=16)
    c.data.update(seq_len=16, eval_seq_len=16)
    c.train.update(num_steps=min(steps, 20), log_every=5)
    c.eval.update(batch_size=8)
    c.optimizer.update(warmup_steps=2)
  return c
