r"""Element-level magnitude pruning: masks, schedules, optimiser pieces, reports and export.

The paper's sparse AlgebraNets prune whole algebra ELEMENTS: an element of a weight
[..., D] is its D real components, and it is kept or zeroed as one (score = the element's norm
over the components). Sparse kernels then load one index per d parameters and do the algebra's
multiplies per parameter on it (PAPER.md: 2 for M2(R), 4 for H and M4(R)). Real networks get the
matching baselines: unstructured sparsity and block sparsity whose blocks hold as many real
weights as one algebra element.

Everything here is pure functions of arrays (no Haiku state); `training` calls them inside the
jitted train step. Shapes: a pruned weight is viewed as [..., A, B, T] -- A, B its last two
non-algebra axes (dense [Cin, Cout, D]; conv [KH, KW, Cin, Cout, D]: per kernel tap; an
embedding [V, E, D]) and T its trailing algebra axis (T = D; T = 1, added, for a real array
without one, e.g. the hk.Linear of a Lift/Project, named by `REAL_WEIGHTS`).

Kinds (KINDS) and their pruning units:
  element       one algebra element (its D components); for the real algebra r this is plain
                unstructured sparsity
  unstructured  every real component on its own, also in an algebra model
  block         real networks only: a bh x bw block of the [A, B] = [Cin, Cout] matrix (per tap
                of a conv), bh·bw = d of `block_algebra`: "1xd" (1 input row, d output columns),
                "dx1" (d rows, 1 column) or "nxn" (n = sqrt(d) square; m2r -> 2x2, m4r -> 4x4)

Masks are bool arrays, True = kept. A weight [..., D] has the mask [..., 1] (one entry per
element or block unit, broadcast over the D components) for "element" and "block" and
[..., D] for "unstructured"; a real weight without an algebra axis has a mask of its own shape.
The masks of a model are a nested dict like the Haiku params holding only the pruned weights
({module: {name: mask}}); `apply_masks(params, masks)` zeroes the pruned components.

Scores: the unit's norm (NORMS: l2 default, l1, linf). Pruning k units keeps the others: per
weight ("layer" scope: uniform allocation, k = round(s·n) of its n units), over all pruned
weights together ("global" scope, one threshold, k = round(s·N) of all N units), or per weight
at the sparsity that Erdős-Rényi-Kernel allocation gives it ("erk" scope, `erk_sparsities`).
Ties are broken deterministically: units already pruned go first, then the lower score, then
the lower flat index (a stable sort), so the masks of a rising schedule only grow and repeat
exactly.

ERK allocation (`masks.erk_sparsities`: Evci et al. 2020) sizes each weight's sparsity from
its unit grid, never the algebra axis. Along a rising schedule every weight's sparsity is its
final ERK value times s_t / s_f.

N:M over elements (`nm`, kind "element", scope "layer"): in every group of M consecutive
units along the A axis (Cin: the axis a matmul reduces over, per output and kernel tap) keep
the N of largest score -- 2:4 elements along Cin is the pattern of sparse tensor cores, here
with algebra elements as the unit. The sparsity is 1 - N/M; along a rising schedule each group
prunes round((M - N)·s_t / s_f) units. A must be a multiple of M.

Modules, by idea, in dependency order (everything public is also here, `sparsity.X`):

  spec        `spec_from_config`: a config.sparsity block checked and resolved into a `Spec`;
              KINDS, BLOCKS, SCHEDULES, SCOPES, NORMS, the default include/exclude rules
  schedule    SCHEDULES: the sparsity after t steps (`sparsity_at`), the mask update steps
  masks       units, scores, keep-the-largest, ERK allocation, `apply_masks`, `flat_masks`
  transforms  optax pieces: `keep_pruned_zero` (pruned weights get +0 updates),
              `zero_pruned_state` (the optimiser forgets newly pruned components)
  pruner      `Pruner`: the pruned weights of a model and the jittable mask updates
  report      non-zero params and MACs per layer (`sparse_costs`) and their table
  export      the compact block-compressed format (`compress`, `decompress`, `save`, `load`)

Command line (`algebranets.sparse_export`, which sits above the trainer whose checkpoints it
restores; this package imports neither the models nor the trainer):

  python -m algebranets.sparsity export --workdir=RUN --out=model.npz [--step=N]

loads RUN's checkpoint (latest or --step), writes the compact model and prints its non-zero
parameters and multiply-adds per layer.
"""

from algebranets.sparsity.export import compress, decompress, load, save
from algebranets.sparsity.masks import (
    apply_masks, erk_sparsities, flat_masks, mask_params_tree, select)
from algebranets.sparsity.pruner import Pruner
from algebranets.sparsity.report import format_costs, nonzero_counts, sparse_costs
from algebranets.sparsity.schedule import is_update_step, sparsity_at
from algebranets.sparsity.spec import (
    BLOCKS, DEFAULT_EXCLUDE, DEFAULT_INCLUDE, KINDS, NORMS, REAL_WEIGHTS, SCHEDULES, SCOPES, Spec,
    block_shape, parse_nm, resolve_steps, spec_from_config)
from algebranets.sparsity.transforms import keep_pruned_zero, zero_pruned_state

__all__ = [
    "BLOCKS", "DEFAULT_EXCLUDE", "DEFAULT_INCLUDE", "KINDS", "NORMS", "REAL_WEIGHTS", "SCHEDULES",
    "SCOPES", "Pruner", "Spec", "apply_masks", "block_shape", "compress", "decompress",
    "erk_sparsities", "flat_masks", "format_costs", "is_update_step", "keep_pruned_zero", "load",
    "mask_params_tree", "nonzero_counts", "parse_nm", "resolve_steps", "save", "select",
    "sparse_costs", "sparsity_at", "spec_from_config", "zero_pruned_state",
]
