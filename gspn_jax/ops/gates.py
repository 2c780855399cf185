"""Stability-context condition: make every row of the tridiagonal operator row-stochastic."""

import jax
import jax.numpy as jnp


def normalize_gates(gl, gc, gr, line_axis):
  """sigmoid, then divide by the sum over the neighbours that exist on the line.

  gl connects to the previous element of the line (index - 1), gr to the next one
  (index + 1), gc to the same index. The first element has no gl neighbour and the
  last none through gr, so their sums leave those gates out (GSPN section 3.2).
  Computed in fp32; returned in the gates' dtype.
  """
  dtype = gl.dtype
  gl, gc, gr = (jax.nn.sigmoid(g.astype(jnp.float32)) for g in (gl, gc, gr))
  n = gl.shape[line_axis]
  shape = [1] * gl.ndim
  shape[line_axis] = n
  idx = jnp.arange(n).reshape(shape)
  has_prev = (idx > 0).astype(jnp.float32)
  has_next = (idx < n - 1).astype(jnp.float32)
  s = jnp.maximum(gl * has_prev + gc + gr * has_next, 1e-7)
  return tuple((g / s).astype(dtype) for g in (gl, gc, gr))
