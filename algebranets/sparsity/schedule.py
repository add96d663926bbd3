"""The pruning schedules (SCHEDULES): the sparsity after t optimiser steps and the steps that
recompute the masks.

  gradual   Zhu & Gupta (2017): s_t = s_f + (s_i - s_f)·(1 - (t - t0)/(t1 - t0))³ for
            t0 <= t <= t1, s_f after; the masks are recomputed at t0, t0 + f, t0 + 2f, ... and
            at t1 (f = frequency); no pruning before t0
  one_shot  all of s_f at t0, masks fixed after

Both are jittable functions of the (traced) step.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from algebranets.sparsity.spec import Spec

def sparsity_at(spec: Spec, step) -> jax.Array:
  """The scheduled sparsity after `step` optimiser steps (float32; 0 before begin_step)."""
  t = jnp.asarray(step, jnp.float32)
  t0, t1 = float(spec.begin_step), float(spec.end_step)
  s_f, s_i = spec.target, spec.initial
  if spec.schedule == "one_shot" or t1 <= t0:
    s = jnp.float32(s_f)
  else:
    frac = jnp.clip((t - t0) / (t1 - t0), 0.0, 1.0)
    s = s_f + (s_i - s_f) * (1.0 - frac) ** 3
  return jnp.where(t >= t0, s, 0.0).astype(jnp.float32)


def is_update_step(spec: Spec, step) -> jax.Array:
  """Whether the masks are recomputed after `step` steps (see the module docstring)."""
  t = jnp.asarray(step, jnp.int32)
  t0, t1 = spec.begin_step, spec.end_step
  if spec.schedule == "one_shot":
    return t == t0
  return (t >= t0) & (t <= t1) & (((t - t0) % spec.frequency == 0) | (t == t1))
