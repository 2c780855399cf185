"""GSPN propagation for XLA, in the image frame: the fast path of `gspn_core(impl="xla")`.

The reference (reference.py) brings every direction to a canonical stacked layout and
runs lax.scan; each of those layouts is a transposed, flipped or padded copy, and XLA:CPU
runs a scan's steps without fusing across them. Here a segment's n steps are unrolled
in Python and every step is a strided view of the NHWC arrays: the scan axis is split
into (segments, n) by a reshape, step j is one index of the n axis (counted from the
end for "rl"/"bt"), and all segments advance together. Neighbours along the line are
one `lax.pad` each (a shift with zero fill), so a step is a single elementwise fusion.
The backward is the reference's analytic adjoint (a reverse recurrence with the
transposed tridiagonal operator), written the same way.
"""

import functools

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


class _Steps:
  """A direction's segments as strided views: split an (B, H, W, C) array into its n
  scan steps (each (B, L, nseg, C) or (B, nseg, L, C), all segments at once) and join
  per-step arrays back. The last segment in scan order is zero-padded when short."""

  def __init__(self, shape, direction, chunk):
    self.shape = shape
    self.axis, self.line = scan_axes(direction)
    self.s = shape[self.axis]
    self.n = segment_length(self.s, chunk)
    self.reverse = direction in ("rl", "bt")
    nseg = -(-self.s // self.n)
    self.pad = nseg * self.n - self.s
    self.split_shape = shape[:self.axis] + (nseg, self.n) + shape[self.axis + 1:]

  def split(self, a):
    """The n steps of a in scan order, fp32."""
    if self.pad:
      spec = [(0, 0)] * a.ndim
      spec[self.axis] = (self.pad, 0) if self.reverse else (0, self.pad)
      a = jnp.pad(a, spec)
    a = a.reshape(self.split_shape)
    return [jax.lax.index_in_dim(a, self._index(j), self.axis + 1, keepdims=False).astype(jnp.float32)
            for j in range(self.n)]

  def join(self, steps, dtype):
    """Inverse of split: per-step arrays in scan order -> (B, H, W, C) in dtype."""
    order = [steps[self._index(i)] for i in range(self.n)]  # storage order
    out = jnp.stack(order, axis=self.axis + 1)
    out = out.reshape(self.split_shape[:self.axis] + (-1,) + self.shape[self.axis + 1:])
    if self.pad:
      start = self.pad if self.reverse else 0
      out = jax.lax.slice_in_dim(out, start, start + self.s, axis=self.axis)
    return out.astype(dtype)

  def _index(self, j):
    return self.n - 1 - j if self.reverse else j


def scan(x, gl, gc, gr, lam, direction, chunk):
  """h of gspn_scan in fp32 (gates already normalised, any dtype in): the unrolled form."""
  if segment_length(x.shape[scan_axes(direction)[0]], chunk) > MAX_UNROLL:
    return gspn_scan_reference(*(a.astype(jnp.float32) for a in (x, gl, gc, gr, lam)), direction, chunk)
  return _scan(x, gl, gc, gr, lam, direction, chunk)


def _forward(x, gl, gc, gr, lam, direction, chunk):
  st = _Steps(x.shape, direction, chunk)
  hs, h = [], None
  for x_j, gl_j, gc_j, gr_j, lam_j in zip(*(st.split(a) for a in (x, gl, gc, gr, lam))):
    u = lam_j * x_j
    h = u if h is None else u + gl_j * shift(h, st.line, 1) + gc_j * h + gr_j * shift(h, st.line, -1)
    hs.append(h)
  return st.join(hs, jnp.float32)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _scan(x, gl, gc, gr, lam, direction, chunk):
  return _forward(x, gl, gc, gr, lam, direction, chunk)


def _scan_fwd(x, gl, gc, gr, lam, direction, chunk):
  h = _forward(x, gl, gc, gr, lam, direction, chunk)
  return h, (x, gl, gc, gr, lam, h)


def _scan_bwd(direction, chunk, residuals, dh):
  """The reference's adjoint, step by step in the image frame: g[j] = dh[j] + T[j+1]^T g[j+1].
  Each g[j] is materialised once (an optimization barrier): it feeds the next step and
  five gradients, which XLA would otherwise re-evaluate through the whole chain."""
  x, gl, gc, gr, lam, h = residuals
  st = _Steps(x.shape, direction, chunk)
  xs, gls, gcs, grs, lams, hs, dhs = (st.split(a) for a in (x, gl, gc, gr, lam, h, dh))
  gs, carry = [None] * st.n, None
  for j in reversed(range(st.n)):
    g = jax.lax.optimization_barrier(dhs[j] if carry is None else dhs[j] + carry)
    gs[j] = g
    carry = gcs[j] * g + shift(gls[j] * g, st.line, -1) + shift(grs[j] * g, st.line, 1)
  zero = jnp.zeros_like(gs[0])
  prev = [zero] + hs[:-1]  # zero state before each segment's first step
  grads = (
      [lam_j * g for lam_j, g in zip(lams, gs)],                         # dx
      [g * shift(p, st.line, 1) for g, p in zip(gs, prev)],              # dgl
      [g * p for g, p in zip(gs, prev)],                                 # dgc
      [g * shift(p, st.line, -1) for g, p in zip(gs, prev)],             # dgr
      [x_j * g for x_j, g in zip(xs, gs)],                               # dlam
  )
  return tuple(st.join(d, a.dtype) for d, a in zip(grads, (x, gl, gc, gr, lam)))


_scan.defvjp(_scan_fwd, _scan_bwd)
