r"""Transformer-XL on enwik8 (bits per character): the base recipe of Dai et al. (2019).

  python -m algebranets.train --config=configs/enwik8_transformer_xl.py:m2r,match=params \
      --workdir=/tmp/enwik8_m2r --config.data.path=data/enwik8/enwik8.zip

(enwik8.zip: bash scripts/download_enwik8.sh.) Argument: <algebra>[,debug][,match=...]
(match: none | params | macs | width, see training/config_lib.py). CPU smoke test:

  python -m algebranets.train --config=configs/enwik8_transformer_xl.py:m2r,debug \
      --workdir=/tmp/enwik8_debug --config.data.path=SOME_FILE   (any file; split 90/5/5)

Reference: the authors' PyTorch base script, kimiyoung/transformer-xl pytorch/run_enwik8_base.sh
with pytorch/train.py's defaults, pytorch/mem_transformer.py and pytorch/eval.py. Matched:
  model     12 layers, d_model 512, 8 heads of 64, d_inner 2048, post-norm, dropout 0.1 (on
            embeddings, encodings, attention output, both FFN layers and the last hidden
            state), dropatt 0, tied input/output embedding with an output bias, no adaptive
            softmax, u and v shared by all layers (PyTorch has no untie_r), clamp_len -1 and
            same_length off in training, scores scaled by 1/sqrt(d_head)
  init      weights N(0, 0.02), LayerNorm scales N(1, 0.02), biases 0, embedding and u, v
            N(0, 0.02) (train.py weights_init, init_std 0.02; model.init="reference")
  training  tgt_len = mem_len = 512, batch 22, 400,000 steps, Adam (0.9, 0.999, eps 1e-8) lr
            2.5e-4, no warm-up, cosine to 0 (CosineAnnealingLR, eta_min 0), global-norm
            gradient clipping 0.25 over all parameters, no weight decay
  data      the reference tokens (prep_enwik8.py + data_utils.py, add_eos=False):
            data.reference_tokens=True drops newline bytes after the 90M/5M/5M split and
            numbers the remaining symbols by frequency over all splits (204 on enwik8), so bpc
            is per reference token, the published quantity
  eval      eval.py: tgt_len 80, mem_len 2,100, clamp_len 820, same_length
Remaining differences (also in docs/reproducing.md):
  * memories start as zeros of full length (train and eval) and are carried across epoch
    boundaries; the reference starts each epoch and each eval pass with an empty memory
    that grows to mem_len (zero memory is visible to attention with zero keys and values)
  * training rows hold L = (N-1)//22 tokens and only full 512-token segments are trained on;
    the reference's rows hold N//22 and each epoch ends with one shorter segment
  * every validation uses the eval.py settings above; the reference validates during training
    with eval_tgt_len 128, mem_len 896, no clamping, no same_length, and uses eval.py only for
    the final test number. Validation every 4,000 steps as the reference
  * eval batch 10 as the reference (padded with masked streams to a multiple of the devices;
    on several hosts it must divide by the host count, e.g. --config.eval.batch_size=12 on 4),
    but every target of a split except its first is scored once (the reference: 10·(N//10 - 1))
  * algebra models only: weight layers use the algebra form of N(0, 0.02)
    (nn.initializers.RealEquivalentNormal: each component N(0, 0.02²·D/g)), attention is real
    over each head's Ch·D components (scale 1/sqrt(Ch·D)), width matching sets d_model etc.
Reference result (real, 12 layers): 1.06 bpc on test.
"""

from algebranets.models import transformer_xl
from algebranets.training import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, match_kinds=config_lib.LM_MATCH_KINDS)
  model = dict(transformer_xl.PRESETS["enwik8_base"], init="reference", init_std=0.02,
               proj_init_std=0.01)
  c = config_lib.base_config(
      experiment="enwik8_transformer_xl", args=args,
      task=dict(name="language_model", eval_mem_len=2100, eval_clamp_len=820,
                eval_same_length=True),
      model_name="transformer_xl", model=model,
      data=dict(name="enwik8", path="data/enwik8/enwik8.zip", seq_len=512, eval_seq_len=80,
                proportional=False, reference_tokens=True))
  c.train.update(batch_size=22, num_steps=400_000, log_every=200, eval_every=4_000,
                 checkpoint_every=4_000)
  c.eval.update(batch_size=10, splits=("valid",))
  c.optimizer.update(name="adam", lr=2.5e-4, b1=0.9, b2=0.999, eps=1e-8, schedule="cosine",
                     warmup_steps=0, end_lr_ratio=0.0, grad_clip_norm=0.25, weight_decay=0.0)
  if args["debug"]:
    c.model.update(d_model=16, n_layers=2, n_heads=2, d_head=8, d_inner=32, mem_len=8)
    c.task.update(eval_mem_len=16, eval_clamp_len=12)
    c.data.update(seq_len=8, eval_seq_len=8, proportional=True)
    c.train.update(batch_size=4, num_steps=6, log_every=1, eval_every=3, checkpoint_every=3,
                   partitionable_rng=False)
    c.eval.update(batch_size=4)
    c.optimizer.update(lr=1e-3)
  return c
