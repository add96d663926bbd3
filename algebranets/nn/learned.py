"""Learned algebras in the layers: the structure tensor T as a Haiku parameter.

A `algebras.LearnedAlgebra` (config name "learned:4", "learned:h",
"learned:4:network", ...) has no fixed product: T [D, D, D] with
e_a · e_b = Σ_k T[a, b, k] e_k is learned with the weights. `Linear` and
`Conv2D` call `structure(algebra, dtype)` and compute with it
(`ops.dense(..., structure=T)`, the expanded path):

  share "layer"    every weight layer has its own T, the parameter
                   "<layer>/structure" beside its "w" (PHM: Zhang et al. 2021);
  share "network"  one T for the whole network, the parameter
                   "learned_algebra/structure" (a module of that absolute name,
                   `hk.force_name`, whichever layer creates it first).

Initial value (`structure_init`): the tensor of the algebra the name starts
from ("learned:h": the quaternions' T, so the network starts as an H network),
or for "learned:N" N(0, 1/N) per entry from the network's rng, which makes
the expected Σ_abk T² / N equal to N, the gain of a dense algebra such as H
(so `initializers.lecun_normal` keeps the activation variance; see
`algebras.LearnedAlgebra.gain`).

Cost: a layer call builds its expanded weight [Cin·D, Cout·D] once from w and T
(Cin·Cout·D³ multiply-adds, independent of the batch; `ops.expand_weight`), so
a training step builds it once per layer call, and `inference.make_preparer`
builds it once for a whole generation (the prepared weight holds it). T is an
ordinary parameter: trained by the optimiser (not weight-decayed or pruned by
the default name patterns, which select "w"), saved in checkpoints, exported
with the model, and counted by `costs` (D³ real parameters per layer or once).
"""

from __future__ import annotations

import haiku as hk
import jax.numpy as jnp
import numpy as np

from algebranets import algebras as algebras_lib

__all__ = ["structure", "structure_init", "structure_key", "LearnedStructure", "NETWORK_MODULE",
           "PARAM"]

# Where T lives: the parameter name in a layer, and the module of a network-wide T.
PARAM = "structure"
NETWORK_MODULE = "learned_algebra"


def structure_init(algebra) -> hk.initializers.Initializer:
  """The initialiser of T [D, D, D]: the starting algebra's tensor, or N(0, 1/D) at random."""
  alg = algebras_lib.get(algebra)
  if not alg.learned:
    raise ValueError(f"structure_init needs a learned algebra, got {alg.name!r}.")
  if alg.init == "random":
    return hk.initializers.RandomNormal(stddev=1.0 / np.sqrt(alg.dim))
  start = np.asarray(alg.structure)
  return lambda shape, dtype: jnp.asarray(start, dtype).reshape(shape)


class LearnedStructure(hk.Module):
  """Holds a network-wide T (created under the absolute name NETWORK_MODULE)."""

  def __call__(self, algebra, dtype=jnp.float32):
    d = algebra.dim
    return hk.get_parameter(PARAM, [d, d, d], dtype, init=structure_init(algebra))


def structure(algebra, dtype=jnp.float32):
  """T [D, D, D] of a learned algebra, read (or created) from inside a layer's call."""
  alg = algebras_lib.get(algebra)
  if alg.share == "network":
    return LearnedStructure(name=hk.force_name(NETWORK_MODULE))(alg, dtype)
  d = alg.dim
  return hk.get_parameter(PARAM, [d, d, d], dtype, init=structure_init(alg))


def structure_key(algebra, layer: str) -> tuple[str, str]:
  """(module, parameter) of the T used by the layer module `layer` (a params key)."""
  alg = algebras_lib.get(algebra)
  return (NETWORK_MODULE if alg.share == "network" else layer), PARAM
