"""Weights prepared once for inference: what decoding at batch 1 needs.

At batch 1 a layer's time is the time to read its weights, and every op path
first turns the weight into its own layout (expanded D×D blocks, a folded or
transposed copy). `prepare_params` does that once for every `nn.Linear` of a
Haiku model, replacing its "w" by an `ops.PreparedWeight` (which keeps the
parameter's shape, so the model runs unchanged on the result). Call it outside
the decoding loop: inside `jit` it is computed once per call, not per step.

    prepare = make_preparer(forward_fn, params, tokens)   # discovers the layers
    fast_params = prepare(params)                         # jit-able, pure

Learned algebras: the layer's structure tensor T is multiplied into the prepared
weight here (`ops.prepare_dense(..., structure=T)`), so a generation builds each
layer's learned weight once, not once per token.

Pruned models: `make_preparer(..., sparse_batch=B)` stores the weights of
layers with enough zero algebra elements to run faster sparse at batch B
(`sparse_ops.should_use_sparse`) in block-CSR form; that reads the weights'
values, so that preparer runs on the host, outside jit, on concrete params.
"""

from __future__ import annotations

from typing import Callable, Optional

import haiku as hk
import jax

from algebranets import ops
from algebranets import sparse_ops
from algebranets.nn import learned
from algebranets.nn.linear import Linear

__all__ = ["make_preparer", "linear_layers"]


def linear_layers(fn: Callable, params, *args, **kwargs) -> dict[str, tuple]:
  """{module name: (algebra, path)} of every nn.Linear that `fn` calls.

  Runs `hk.transform(fn).apply` abstractly (jax.eval_shape, no compute).
  """
  return {name: found[:2] for name, found in _find_linears(fn, params, *args, **kwargs).items()}


def _find_linears(fn: Callable, params, *args, **kwargs) -> dict[str, tuple]:
  """{module name: (algebra, path, plain)}; plain: the module is an nn.Linear, not a subclass
  (subclasses may read their weight outside their call, e.g. through a transpose)."""
  found = {}

  def interceptor(next_f, f_args, f_kwargs, context):
    module = context.module
    if isinstance(module, Linear) and context.method_name == "__call__":
      found[module.module_name] = (module.algebra, module.path, type(module) is Linear)
    return next_f(*f_args, **f_kwargs)

  def run(params, *args, **kwargs):
    with hk.intercept_methods(interceptor):
      return hk.transform(fn).apply(params, None, *args, **kwargs)

  shapes = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype), params)
  jax.eval_shape(lambda p: run(p, *args, **kwargs), shapes)
  return found


def make_preparer(fn: Callable, params, *args, sparse_batch: Optional[int] = None,
                  rows_kernel: Optional[bool] = None, **kwargs) -> Callable:
  """A pure function params -> params with every nn.Linear weight prepared.

  The layers are found once from `fn(*args, **kwargs)` (see `linear_layers`);
  a layer built with an explicit `path` keeps it, the others get the batch-1
  path `ops.default_path(algebra, "decode")`. Weights that are already a
  `PreparedWeight` pass through unchanged.

  With `sparse_batch` (the batch the model will run at), a layer without an
  explicit path whose weight is sparse enough for the element-sparse path to
  be faster at that batch gets it; the returned function then reads the
  weights' values and must be called outside jit.

  rows_kernel: passed to `ops.prepare_dense` for plain `nn.Linear` layers
  (None: the batch-1 rows kernel where it runs, i.e. on CPU in float32);
  subclasses (the adaptive softmax's projections) keep XLA's matmul.
  """
  layers = _find_linears(fn, params, *args, **kwargs)

  def prepare(params):
    params = {name: dict(bundle) for name, bundle in params.items()}
    for name, (algebra, path, plain) in layers.items():
      if name in params and "w" in params[name]:
        w = params[name]["w"]
        if isinstance(w, ops.PreparedWeight):
          continue
        structure = None
        if algebra.learned:
          module, param = learned.structure_key(algebra, name)
          structure = params[module][param]
        elif (path is None and sparse_batch is not None
              and sparse_ops.should_use_sparse(w, algebra, sparse_batch)):
          path = ops.ELEMENT_SPARSE
        # The rows kernel has no transpose rule: only plain Linear layers, whose weight is
        # read by their call alone, get it (the adaptive softmax transposes its projections).
        params[name]["w"] = ops.prepare_dense(w, algebra, path, structure=structure,
                                              rows_kernel=rows_kernel if plain else False)
    return params
  return prepare
