"""GSPN propagation for XLA, in the image frame: the fast path of `gspn_core(impl="xla")`.

The reference (reference.py) brings every direction to a canonical stacked layout and
runs lax.scan; each of those layouts is a transposed, flipped or padded copy, and XLA:CPU
runs a scan's steps without fusing across them. Here a segment's n steps are unrolled
in Python and every step is a strided view of the NHWC arrays: the scan axis is split
into (segments, n) by a reshape, step j is one index of the n axis (counted from the
end for "rl"/"bt"), and all segments advance together. Neighbours along the line are
one `lax.pad` each (a shift with zero fill), so a step is a single elementwise fusion.
Differentiated by autodiff of the unrolled steps, which is the same reverse recurrence
as the reference's analytic adjoint.
"""

import jax
import jax.numpy as jnp

from gspn_jax.ops.reference import gspn_scan_reference, segment_length

# Segments longer than this run through the reference's lax.scan (compile time grows
# with the unrolled length; GSPN models scan at most 64 steps, at 1024 px).
MAX_UNROLL = 64


def scan_axes(direction):
  """(scan axis, line axis) of NHWC arrays for a direction."""
  return (2, 1) if direction in ("lr", "rl") else (1, 2)


def shift(a, axis, offset):
  """a[l - 1] (offset=+1) or a[l + 1] (offset=-1) along axis, zero where it does not exist."""
  config = [(0, 0, 0)] * a.ndim
  config[axis] = (offset, -offset, 0)
  return jax.lax.pad(a, jnp.zeros((), a.dtype), config)


def line_masks(shape, line_axis, dtype=jnp.float32):
  """1 where the previous / next element of the line exists, broadcastable to shape."""
  n = shape[line_axis]
  bshape = [1] * len(shape)
  bshape[line_axis] = n
  idx = jax.lax.broadcasted_iota(jnp.int32, bshape, line_axis)
  return (idx > 0).astype(dtype), (idx < n - 1).astype(dtype)


def normalized_gates(gl, gc, gr, line_axis):
  """normalize_gates in fp32, returned in fp32 (fused into the scan's steps by XLA)."""
  gl, gc, gr = (jax.nn.sigmoid(g.astype(jnp.float32)) for g in (gl, gc, gr))
  has_prev, has_next = line_masks(gl.shape, line_axis)
  s = jnp.maximum(gl * has_prev + gc + gr * has_next, 1e-7)
  return gl / s, gc / s, gr / s


def scan(x, gl, gc, gr, lam, direction, chunk):
  """h of gspn_scan in fp32 (gates already normalised, any dtype in): the unrolled form."""
  axis, line = scan_axes(direction)
  s = x.shape[axis]
  n = segment_length(s, chunk)
  if n > MAX_UNROLL:
    return gspn_scan_reference(*(a.astype(jnp.float32) for a in (x, gl, gc, gr, lam)), direction, chunk)
  reverse = direction in ("rl", "bt")
  nseg = -(-s // n)
  pad = nseg * n - s
  split_shape = x.shape[:axis] + (nseg, n) + x.shape[axis + 1:]

  def split(a):
    if pad:  # the last segment in scan order is the short one
      spec = [(0, 0)] * a.ndim
      spec[axis] = (pad, 0) if reverse else (0, pad)
      a = jnp.pad(a, spec)
    return a.reshape(split_shape)

  xs, gls, gcs, grs, lams = (split(a) for a in (x, gl, gc, gr, lam))
  order = range(n - 1, -1, -1) if reverse else range(n)
  hs, h = {}, None
  for j in order:
    x_j, gl_j, gc_j, gr_j, lam_j = (jax.lax.index_in_dim(a, j, axis + 1, keepdims=False).astype(jnp.float32)
                                    for a in (xs, gls, gcs, grs, lams))
    u = lam_j * x_j
    h = u if h is None else u + gl_j * shift(h, line, 1) + gc_j * h + gr_j * shift(h, line, -1)
    hs[j] = h
  out = jnp.stack([hs[j] for j in range(n)], axis=axis + 1).reshape(x.shape[:axis] + (nseg * n,) + x.shape[axis + 1:])
  if pad:
    out = jax.lax.slice_in_dim(out, pad, pad + s, axis=axis) if reverse else jax.lax.slice_in_dim(out, 0, s, axis=axis)
  return out
