"""Moving between real and algebra-valued features, and token embeddings.

Shapes (F real features, C channels, D = algebra.dim, V vocabulary):
  Lift     x [..., F]       -> [..., C, D]
  Project  x [..., C, D]    -> [..., output_size]
  Embed    ids [...] (int)  -> [..., C, D];   embeddings [V, C, D]

A network in the paper is algebra-valued between its input and its logits;
these are the choices for the two crossings (each a config option):

Lift modes (real -> algebra):
  "linear"    learned real linear map F -> C·D, reshaped to [..., C, D]
              (hk.Linear, Haiku's default init). Works for any F and algebra.
  "identity"  each real feature x_f becomes x_f·1, the identity element
              (C == F). Needs an algebra with an identity (not cross3).
  "split"     consecutive groups of D real features become one element
              (C == F / D): no parameters, no wasted components.

Project modes (algebra -> real):
  "linear"    learned real linear map on the flattened C·D components
              (hk.Linear, Haiku's default init) -> output_size.
  "flatten"   reshape to [..., C·D] (output_size must be C·D or None).
  "component" take component `component` (an index or a name such as "re")
              -> [..., C] (output_size must be C or None).
  "norm"      element norms |x_c| -> [..., C] (output_size C or None);
              invariant to rotations of the components.
"""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
import jax.numpy as jnp
import haiku as hk

from algebranets import algebras as algebras_lib
from algebranets.nn.activations import safe_norm
from algebranets.nn._checks import check_algebra_input, positive_int

__all__ = ["Lift", "Project", "Embed", "LIFT_MODES", "PROJECT_MODES"]

LIFT_MODES = ("linear", "identity", "split")
PROJECT_MODES = ("linear", "flatten", "component", "norm")


class Lift(hk.Module):
  """Real features [..., F] -> algebra elements [..., C, D] (see module doc)."""

  def __init__(self, channels: int, *, algebra, mode: str = "linear", with_bias: bool = True,
               w_init: Optional[hk.initializers.Initializer] = None,
               name: Optional[str] = None):
    """Constructs the module.

    Args:
      channels: C, output elements.
      algebra: an Algebra or a registered name.
      mode: one of LIFT_MODES.
      with_bias, w_init: for mode "linear" (hk.Linear's arguments).
      name: module name.
    """
    super().__init__(name=name)
    self.algebra = algebras_lib.get(algebra)
    self.channels = positive_int(channels, "channels")
    if mode not in LIFT_MODES:
      raise ValueError(f"Unknown lift mode {mode!r}; valid modes: {', '.join(LIFT_MODES)}.")
    if mode == "identity" and self.algebra.identity is None:
      raise ValueError(f"Lift mode 'identity' needs an algebra with an identity element; "
                       f"algebra {self.algebra.name!r} has none. Use mode 'linear' or 'split'.")
    if mode != "linear" and (w_init is not None or not with_bias):
      raise ValueError(f"with_bias and w_init apply to mode 'linear' only, not {mode!r}.")
    self.mode = mode
    self.with_bias = with_bias
    self.w_init = w_init

  def __call__(self, inputs):
    """Lifts real inputs [..., F]; returns [..., C, D]."""
    x = jnp.asarray(inputs)
    alg, c, d = self.algebra, self.channels, self.algebra.dim
    if x.ndim < 1:
      raise ValueError("Lift expects real inputs [..., F], got a scalar.")
    f = x.shape[-1]
    if self.mode == "linear":
      y = hk.Linear(c * d, with_bias=self.with_bias, w_init=self.w_init, name="linear")(x)
      return y.reshape(x.shape[:-1] + (c, d))                        # [..., C, D]
    if self.mode == "identity":
      if f != c:
        raise ValueError(f"Lift mode 'identity' maps each of the F real features to one "
                         f"element, so channels must equal F; got channels={c}, inputs "
                         f"{tuple(x.shape)}.")
      return x[..., None] * alg.one(x.dtype)                         # [..., C, D]
    if f != c * d:
      raise ValueError(f"Lift mode 'split' groups D={d} real features per element of "
                       f"{alg.name!r}, so F must be channels·D = {c * d}; got inputs "
                       f"{tuple(x.shape)}.")
    return x.reshape(x.shape[:-1] + (c, d))                          # [..., C, D]


class Project(hk.Module):
  """Algebra elements [..., C, D] -> real features [..., output_size]."""

  def __init__(self, output_size: Optional[int], *, algebra, mode: str = "linear",
               component: Union[int, str] = 0, with_bias: bool = True,
               w_init: Optional[hk.initializers.Initializer] = None,
               name: Optional[str] = None):
    """Constructs the module.

    Args:
      output_size: real outputs; required for "linear"; for the other modes
        None or the size they produce (checked).
      algebra: an Algebra or a registered name.
      mode: one of PROJECT_MODES.
      component: for mode "component": an index in [0, D) or a component name.
      with_bias, w_init: for mode "linear" (hk.Linear's arguments).
      name: module name.
    """
    super().__init__(name=name)
    self.algebra = alg = algebras_lib.get(algebra)
    if mode not in PROJECT_MODES:
      raise ValueError(f"Unknown project mode {mode!r}; valid modes: "
                       f"{', '.join(PROJECT_MODES)}.")
    if output_size is not None:
      output_size = positive_int(output_size, "output_size")
    elif mode == "linear":
      raise ValueError("Project mode 'linear' needs an output_size.")
    if isinstance(component, str):
      if component not in alg.component_names:
        raise ValueError(f"Unknown component {component!r} of algebra {alg.name!r}; valid: "
                         f"{', '.join(alg.component_names)} or an index in [0, {alg.dim}).")
      component = alg.component_names.index(component)
    if (isinstance(component, bool) or not isinstance(component, (int, np.integer))
        or not 0 <= component < alg.dim):
      raise ValueError(f"component must be an index in [0, {alg.dim}) or one of "
                       f"{', '.join(alg.component_names)} for algebra {alg.name!r}; "
                       f"got {component!r}.")
    if mode != "linear" and (w_init is not None or not with_bias):
      raise ValueError(f"with_bias and w_init apply to mode 'linear' only, not {mode!r}.")
    self.output_size = output_size
    self.mode = mode
    self.component = int(component)
    self.with_bias = with_bias
    self.w_init = w_init

  def __call__(self, inputs):
    """Projects inputs [..., C, D]; returns [..., output_size]."""
    x = jnp.asarray(inputs)
    alg = self.algebra
    check_algebra_input(x, alg, "Project", "[..., C, D]")
    c, d = x.shape[-2:]
    flat = x.reshape(x.shape[:-2] + (c * d,))                        # [..., C·D]
    if self.mode == "linear":
      return hk.Linear(self.output_size, with_bias=self.with_bias, w_init=self.w_init,
                       name="linear")(flat)
    if self.mode == "flatten":
      y = flat
    elif self.mode == "component":
      y = x[..., self.component]                                     # [..., C]
    else:
      y = safe_norm(x)                                               # [..., C]
    if self.output_size is not None and y.shape[-1] != self.output_size:
      raise ValueError(f"Project mode {self.mode!r} produces {y.shape[-1]} features from "
                       f"inputs {tuple(x.shape)}, but output_size={self.output_size}.")
    return y


class Embed(hk.Module):
  """Algebra-valued token embedding: ids [...] -> [..., C, D].

  Parameter "embeddings" [V, C, D], default init truncated normal with
  stddev 1 per component (as hk.Embed): unit-variance components, the input
  statistics the variance-scaling initialisers assume.
  """

  def __init__(self, vocab_size: int, embed_dim: int, *, algebra,
               w_init: Optional[hk.initializers.Initializer] = None,
               name: Optional[str] = None):
    super().__init__(name=name)
    self.algebra = algebras_lib.get(algebra)
    self.vocab_size = positive_int(vocab_size, "vocab_size")
    self.embed_dim = positive_int(embed_dim, "embed_dim")
    self.w_init = w_init or hk.initializers.TruncatedNormal(stddev=1.0)

  @property
  def embeddings(self):
    """The table [V, C, D] (creates it if needed; inside hk.transform)."""
    return hk.get_parameter("embeddings", [self.vocab_size, self.embed_dim, self.algebra.dim],
                            init=self.w_init)

  def __call__(self, ids):
    """Looks up integer ids [...]; returns [..., C, D]."""
    ids = jnp.asarray(ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
      raise ValueError(f"Embed expects integer token ids, got dtype {ids.dtype}.")
    return jnp.take(self.embeddings, ids, axis=0)                  # [..., C, D]
