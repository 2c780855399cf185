"""Recomputation that XLA cannot merge with the forward pass.

`jax.lax.optimization_barrier` does not survive XLA:CPU's pipeline: its barriers are
expanded before common-subexpression elimination, so a backward pass that recomputes
forward values (remat, the custom_vjp ops here) is merged back into the forward, and
the forward's values stay alive until the backward instead of the few saved inputs.
The same holds for `jax.checkpoint`, which relies on the barrier.

`after` makes values depend on a value of the backward (the cotangent) at run time, by a
multiplication by 1 + 0 * t that no compiler pass can fold away (0 * t is NaN for
infinite or NaN t, which then propagates, as the cotangent's own NaN would). It fuses
into the consumers and orders the recomputation after the cotangent.

The same tie orders a backward's weight gradients before its input gradients are used:
otherwise XLA:CPU's memory scheduler defers the weight-gradient dots (each waits on a
transposed copy of its input, which frees nothing) to the end of the step, keeping every
layer's operands and cotangents alive through the whole backward.
"""

import jax
import jax.numpy as jnp


def after(values, tokens):
  """values (a pytree of arrays), made to depend at run time on every array of tokens
  (a pytree). Each token is summed whole: from a single element, XLA would compute
  only the slice of a concatenation or dot that the element comes from. Elsewhere than
  on CPU an optimization barrier, which those backends keep (and no sums, which would be
  cross-device reductions under a mesh)."""
  if jax.default_backend() != "cpu":
    return jax.lax.optimization_barrier((values, tokens))[0]
  t = sum(jnp.sum(a, dtype=jnp.float32) for a in jax.tree.leaves(tokens))
  one = 1 + 0 * t

  def tie(a):
    if not jnp.issubdtype(a.dtype, jnp.inexact):
      return a
    return a * one.astype(a.dtype)

  return jax.tree.map(tie, values)
