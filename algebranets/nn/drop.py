"""Dropout on algebra-valued activations: per real component or per whole element.

x [..., C, D] has C elements of D real components each. `dropout(rng, rate, x, unit)`:

  component  every real component is kept (and scaled by 1/(1 - rate)) or zeroed on its
             own: `hk.dropout` on the array, what a real network's dropout does to a real
             unit. An element then survives in part, e.g. a quaternion loses its j
             component: a different element, not a smaller one.
  element    one Bernoulli draw per element (mask [..., C, 1], broadcast over D): the
             element is kept whole, scaled by 1/(1 - rate), or zeroed whole -- the
             algebra's analogue of dropping a unit.

Default ("component", `DEFAULT_UNIT`): what every model here did before the option existed, so
existing results and checkpoints replay unchanged, and for the real algebra the two are the
same. At equal rate, element dropout removes D real components at once and so is a stronger
(noisier) regulariser of a D-component model; which unit trains better is an empirical
question per algebra, left to the configs (`dropout_unit`).

Both keep E[output] = x. Tensors without an algebra axis (Transformer-XL's attention
probabilities) always use component dropout.
"""

from __future__ import annotations

import haiku as hk
import jax
import jax.numpy as jnp

__all__ = ["dropout", "DROPOUT_UNITS", "DEFAULT_UNIT", "check_unit"]

DROPOUT_UNITS = ("component", "element")
DEFAULT_UNIT = "component"


def check_unit(unit: str) -> str:
  """`unit` after checking it is one of DROPOUT_UNITS."""
  if unit not in DROPOUT_UNITS:
    raise ValueError(f"Unknown dropout_unit {unit!r}; valid: {', '.join(DROPOUT_UNITS)}.")
  return unit


def dropout(rng, rate: float, x, unit: str = DEFAULT_UNIT):
  """x [..., C, D] with components ("component") or whole elements ("element") dropped."""
  check_unit(unit)
  if not 0.0 <= rate < 1.0:
    raise ValueError(f"dropout rate must be in [0, 1), got {rate!r}.")
  if rate == 0.0:
    return x
  if unit == "component":
    return hk.dropout(rng, rate, x)
  keep_rate = 1.0 - rate
  keep = jax.random.bernoulli(rng, keep_rate, x.shape[:-1] + (1,))      # [..., C, 1]
  return jnp.where(keep, x / keep_rate, jnp.zeros((), x.dtype))
