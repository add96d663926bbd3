r"""Transformer-XL on WikiText-103 (word-level perplexity): the base recipe of Dai et al.

  python -m algebranets.train --config=configs/wikitext103_transformer_xl.py:m2r,match=params \
      --workdir=/tmp/wt103_m2r --config.data.path=data/wikitext103/wikitext-103-v1.zip

(the zip: bash scripts/download_wikitext103.sh; its extracted wikitext-103/ folder works too.)
Argument: <algebra>[,debug][,match=none|params|macs|width]. CPU smoke test on any small folder
with wiki.{train,valid,test}.tokens (more than 16 word types):

  python -m algebranets.train --config=configs/wikitext103_transformer_xl.py:m2r,debug \
      --workdir=/tmp/wt103_debug --config.data.path=DIR

Reference: the authors' PyTorch base script, kimiyoung/transformer-xl pytorch/run_wt103_base.sh
with pytorch/train.py's defaults, pytorch/mem_transformer.py, pytorch/utils/
proj_adaptive_softmax.py and pytorch/eval.py. Matched:
  model     16 layers, d_model 410, 10 heads of 41, d_inner 2100, post-norm, dropout 0.1,
            dropatt 0; adaptive input and softmax with cutoffs [20000, 40000, 200000], div_val 1,
            d_embed = d_model (so no projections: tie_projs [False, True, True, True] has
            nothing to tie), tied tables, output bias, cluster head; u and v shared by all
            layers; clamp_len -1 and same_length off in training; scores scaled 1/sqrt(d_head)
  init      weights N(0, 0.02), LayerNorm scales N(1, 0.02), biases 0, embedding table, u, v
            and the cluster head's weights N(0, 0.02), cluster bias 0 (train.py weights_init;
            proj_init_std 0.01 would apply to projections, which this model has none of)
  training  tgt_len = mem_len = 150, batch 60, 200,000 steps, Adam (0.9, 0.999, eps 1e-8) lr
            2.5e-4, no warm-up, cosine to 0 (eta_min 0), global-norm clipping 0.25, no weight
            decay
  data      vocabulary of the training split, <eos> first then by count (ties by first
            occurrence), <eos> at every line end (267,735 words)
  eval      eval.py: tgt_len 64, mem_len 640, clamp_len 400, same_length
Remaining differences (also in docs/reproducing.md):
  * memories start as zeros of full length (train and eval) and are carried across epoch
    boundaries; the reference starts each epoch and eval pass with an empty memory
  * training rows hold (N-1)//60 tokens, full 150-token segments only (the reference: N//60,
    and a shorter last segment per epoch)
  * every validation uses the eval.py settings above (the reference validates during training
    with eval_tgt_len 150, mem_len 150, and uses eval.py for the final test number);
    validation every 4,000 steps as the reference
  * eval batch 10 as the reference (padded with masked streams to a multiple of the devices;
    on several hosts it must divide by the host count); every target but the split's first is
    scored once (the reference: 10·(N//10 - 1))
  * the reference reads cluster i's log-probability from head column -i (reversed cluster
    order); here column V_0 + i - 1. With i.i.d. initial rows this only relabels parameters
  * algebra models only: the algebra form of N(0, 0.02) for weight layers
    (nn.initializers.RealEquivalentNormal), attention real over each head's Ch·D components,
    logits real dot products with the tied algebra embeddings; width matching
Reference result (real base): 24.0 test perplexity.
"""

from algebranets.models import transformer_xl
from algebranets.training import config_lib


def get_config(arg=None):
  args = config_lib.parse_arg(arg, match_kinds=config_lib.LM_MATCH_KINDS)
  model = dict(transformer_xl.PRESETS["wt103_base"], init="reference", init_std=0.02,
               proj_init_std=0.01)
  c = config_lib.base_config(
      experiment="wikitext103_transformer_xl", args=args,
      task=dict(name="language_model", eval_mem_len=640, eval_clamp_len=400,
                eval_same_length=True),
      model_name="transformer_xl", model=model,
      data=dict(name="wikitext103", path="data/wikitext103/wikitext-103-v1.zip", seq_len=150,
                eval_seq_len=64))
  c.train.update(batch_size=60, num_steps=200_000, log_every=200, eval_every=4_000,
                 checkpoint_every=4_000)
  c.eval.update(batch_size=10, splits=("valid",))
  c.optimizer.update(name="adam", lr=2.5e-4, b1=0.9, b2=0.999, eps=1e-8, schedule="cosine",
                     warmup_steps=0, end_lr_ratio=0.0, grad_clip_norm=0.25, weight_decay=0.0)
  if args["debug"]:
    c.model.update(d_model=16, n_layers=2, n_heads=2, d_head=8, d_inner=32, mem_len=8,
                   cutoffs=(8, 16))
    c.task.update(eval_mem_len=16, eval_clamp_len=12)
    c.data.update(seq_len=8, eval_seq_len=8)
    c.train.update(batch_size=4, num_steps=6, log_every=1, eval_every=3, checkpoint_every=3,
                   partitionable_rng=False)
    c.eval.update(batch_size=4)
    c.optimizer.update(lr=1e-3)
  return c
