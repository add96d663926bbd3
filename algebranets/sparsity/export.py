"""The compact format of a pruned model: block-compressed rows, and back.

`compress(pruner, params, masks)` writes each pruned weight as block-compressed rows (rows: the
weight's leading axes with A flattened; columns: B; block: the pruning unit): indptr
[rows/bh + 1], indices [nnz] and values [nnz, bh, bw, T]; `decompress` rebuilds the dense masked
params exactly; `save` / `load` write and read it as .npz. The command that exports a run is
`algebranets.sparse_export` (`python -m algebranets.sparsity export`), which sits above the
trainer whose checkpoints it restores.
"""

from __future__ import annotations

import json
from typing import Mapping

import numpy as np

from algebranets import common
from algebranets.sparsity.masks import flat_masks, nest
from algebranets.sparsity.pruner import Pruner

_SEP = "::"
_META = "__meta__"


def compress(pruner: Pruner, params, masks) -> dict[str, np.ndarray]:
  """The compact model: pruned weights as block-compressed rows, the rest dense.

  Each pruned weight W (view [..., A, B, T]) becomes the matrix M [R, C, T] with R the
  product of its leading axes and A (rows: input channels, per tap of a conv) and C = B
  (output channels), in blocks (bh, bw) = the pruning unit ((1, 1) for "element", with
  T = D; (1, 1) with T = 1 over the columns B·D for "unstructured"; (bh, bw) for "block"):

    "<name>::indptr"  int64 [R/bh + 1]   the kept blocks of block-row r are
    "<name>::indices" int64 [nnz]        indices[indptr[r]:indptr[r+1]] (block columns)
    "<name>::values"  [nnz, bh, bw, T]   their components
    "<name>::shape"   int64              the weight's shape
    "<name>::matrix"  int64 [3]          (R, C, T)

  Every other parameter is "<name>::dense". Keys hold the parameter path "module/name";
  "__meta__" (JSON) maps each path to its keys, with the kind and block.
  """
  spec = pruner.spec
  flat = flat_masks(masks)
  out: dict[str, np.ndarray] = {}
  for name, (_, leaf) in common.named_leaves(params).items():
    leaf = np.asarray(leaf)
    if name not in pruner.weights:
      out[name + _SEP + "dense"] = leaf
      continue
    w = pruner.weights[name]
    v = np.asarray(w.view(leaf))
    m = np.broadcast_to(np.asarray(w.view(np.asarray(flat[name]))), v.shape)
    _, b, t = v.shape[-3:]
    if spec.kind == "unstructured":  # every real its own unit: columns B·T of one real
      v, m = v.reshape(v.shape[:-2] + (b * t, 1)), m.reshape(m.shape[:-2] + (b * t, 1))
      b, t = b * t, 1
    bh, bw = spec.block
    rows = int(np.prod(v.shape[:-2]))
    blocks = v.reshape(rows // bh, bh, b // bw, bw, t).transpose(0, 2, 1, 3, 4)
    keep = m.reshape(rows // bh, bh, b // bw, bw, t)[:, 0, :, 0, 0]            # [R/bh, C/bw]
    r_idx, c_idx = np.nonzero(keep)
    out[name + _SEP + "indptr"] = np.concatenate([[0], np.cumsum(keep.sum(1))]).astype(np.int64)
    out[name + _SEP + "indices"] = c_idx.astype(np.int64)
    out[name + _SEP + "values"] = blocks[r_idx, c_idx]                        # [nnz, bh, bw, T]
    out[name + _SEP + "shape"] = np.asarray(leaf.shape, np.int64)
    out[name + _SEP + "matrix"] = np.asarray([rows, b, t], np.int64)
  out[_META] = np.asarray(json.dumps({
      "keys": {n: list(k) for n, (k, _) in common.named_leaves(params).items()},
      "kind": spec.kind, "block": list(spec.block)}))
  return out


def decompress(compact: Mapping[str, np.ndarray]) -> dict:
  """The dense params (nested dict of numpy arrays) of a `compress`ed model, pruned entries 0."""
  meta = json.loads(str(compact[_META]))
  items = {}
  for name, keys in meta["keys"].items():
    if name + _SEP + "dense" in compact:
      items[tuple(keys)] = np.asarray(compact[name + _SEP + "dense"])
      continue
    shape = tuple(int(s) for s in compact[name + _SEP + "shape"])
    rows, cols, t = (int(s) for s in compact[name + _SEP + "matrix"])
    indptr, indices = compact[name + _SEP + "indptr"], compact[name + _SEP + "indices"]
    values = np.asarray(compact[name + _SEP + "values"])                  # [nnz, bh, bw, T]
    bh, bw = values.shape[1:3]
    m = np.zeros((rows // bh, cols // bw, bh, bw, t), values.dtype)
    m[np.repeat(np.arange(rows // bh), np.diff(indptr)), indices] = values
    items[tuple(keys)] = m.transpose(0, 2, 1, 3, 4).reshape(shape)     # [R, C, T] -> W
  return nest(items)


def save(path, compact: Mapping[str, np.ndarray]) -> None:
  """Writes a `compress`ed model to an .npz file."""
  np.savez(path, **compact)


def load(path) -> dict:
  """The dense masked params (nested dict of numpy arrays) of an exported .npz file."""
  with np.load(path) as f:
    return decompress({k: f[k] for k in f.files})
