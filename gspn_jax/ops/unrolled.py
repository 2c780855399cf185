"""GSPN propagation for XLA, in the image frame: the fast path of `gspn_core(impl="xla")`.

The reference (reference.py) brings every direction to a canonical stacked layout and
runs lax.scan; each of those layouts is a transposed, flipped or padded copy, and XLA:CPU
runs a scan's steps without fusing across them. Here a segment's n steps are unrolled
in Python and every step is a strided view of the NHWC arrays: the scan axis is split
into (segments, n) by a reshape, step j is one index of the n axis (counted from the
end for "rl"/"bt"), and all segments advance together. Neighbours along the line are
one `lax.pad` each (a shift with zero fill), so a step is a single elementwise fusion.

A channel group is one direction's share of a GSPN layer: its projections
xp @ w_gl, w_gc, w_gr, w_lam, w_u, w_d, each step's computed from that step's view of xp
(one small dot per block and step), the gates normalised inside the step's fusion, and
m (u h + d x). Its backward is the reference's analytic adjoint (a reverse recurrence
with the transposed tridiagonal operator) with the normalisation's and sigmoid's
Jacobians written out; each step's block cotangents are contracted where they are
formed (dW_i += xp_j^T dP_ij, dxp_j += dP_ij W_i^T), so no projection or cotangent of
the whole layer is sliced, stacked, concatenated or kept. Where the groups scan x in
place (merge="aligned") a group runs without its d block: gspn_core adds the four groups'
d x terms as one projection (core._merged_d).

Channel-shared gates (gspn_core's gate_channels = G < D): the gate blocks are (R, G); a
step's sigmoids and normaliser are computed at G channels and broadcast over the D/G
channels each serves where they meet the state (`spread`), and the gate cotangents are
summed over those channels before the normaliser's and sigmoid's Jacobians (`gather`).
"""

import jax
import jax.numpy as jnp

from gspn_jax.ops.reference import segment_length

# Longer segments are not unrolled (compile time grows with the unrolled length; GSPN
# models scan at most 64 steps, at 1024 px); gspn_core runs the reference there.
MAX_UNROLL = 64
EPS = 1e-7  # the floor of the gate normaliser, as gates.normalize_gates


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


class Steps:
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

  def split(self, a, dtype=jnp.float32):
    """The n steps of a in scan order, in dtype."""
    if self.pad:
      spec = [(0, 0)] * a.ndim
      spec[self.axis] = (self.pad, 0) if self.reverse else (0, self.pad)
      a = jnp.pad(a, spec)
    a = a.reshape(self.split_shape[:-1] + a.shape[-1:])
    return [jax.lax.index_in_dim(a, self._index(j), self.axis + 1, keepdims=False).astype(dtype)
            for j in range(self.n)]

  def join(self, steps, dtype):
    """Inverse of split: per-step arrays in scan order -> (B, H, W, C) in dtype."""
    order = [steps[self._index(i)] for i in range(self.n)]  # storage order
    out = jnp.stack(order, axis=self.axis + 1)
    out = out.reshape(self.split_shape[:self.axis] + (-1,) + self.shape[self.axis + 1:-1] + out.shape[-1:])
    if self.pad:
      start = self.pad if self.reverse else 0
      out = jax.lax.slice_in_dim(out, start, start + self.s, axis=self.axis)
    return out.astype(dtype)

  def _index(self, j):
    return self.n - 1 - j if self.reverse else j


def spread(a, d):
  """(..., G) -> (..., D): each of G channels repeated over D/G consecutive ones (a
  broadcast inside the step's fusion; nothing for G = D)."""
  g = a.shape[-1]
  return a if g == d else jnp.broadcast_to(a[..., None], a.shape + (d // g,)).reshape(a.shape[:-1] + (d,))


def gather(a, g):
  """The transpose of spread: (..., D) summed over each gate channel's D/G channels."""
  d = a.shape[-1]
  return a if g == d else a.reshape(a.shape[:-1] + (g, d // g)).sum(-1)


def _gates(p, line):
  """A step's sigmoid gates (a, b, c), the line masks, the normaliser before (t) and
  after (s) its floor; the normalised gates are a/s, b/s, c/s (gates.normalize_gates)."""
  a, b, c = (jax.nn.sigmoid(logits) for logits in p[:3])
  hp, hn = line_masks(a.shape, line)
  t = a * hp + b + c * hn
  return (a, b, c), (hp, hn), t, jnp.maximum(t, EPS)


def _project(xps, wk):
  """Per step, the six blocks xp_j @ wk[i] (fp32), from the step's view of xp: one dot
  per block and step, so that the step's fusions read whole dot outputs, not channel
  slices or step views of a 6D-wide projection (which XLA copies out)."""
  return [[jnp.dot(xp_j, w_i).astype(jnp.float32) for w_i in wk] for xp_j in xps]


def _states(st, xs, ps):
  """h of every step (fp32), each step one fusion of its gate logits."""
  hs, h = [], None
  for x_j, p_j in zip(xs, ps):
    u = p_j[3] * x_j
    if h is not None:
      (a, b, c), _, _, s = _gates(p_j, st.line)
      a, b, c, s = (spread(v, h.shape[-1]) for v in (a, b, c, s))
      u = u + (a * shift(h, st.line, 1) + b * h + c * shift(h, st.line, -1)) / s
    h = u
    hs.append(h)
  return hs


def _epilogue(p, h, x):
  """u h + d x of a step, or u h where the group has no d block (its d x term is merged)."""
  return p[4] * h + p[5] * x if len(p) > 5 else p[4] * h


def group_forward(xk, xp, wk, mk, direction, chunk):
  """m_k (u h + d x) of one channel group, fp32, in xk's frame. wk: the group's six
  (R, D) weight blocks gl, gc, gr, lam, u, d in xk's dtype, or the first five (then
  m_k u h: the caller adds the d x terms of all groups at once); mk: fp32 scalar."""
  st = Steps(xk.shape, direction, chunk)
  xs, ps = st.split(xk), _project(st.split(xp, dtype=xp.dtype), wk)
  hs = _states(st, xs, ps)
  return st.join([mk * _epilogue(p, h, x) for x, p, h in zip(xs, ps, hs)], jnp.float32)


def group_backward(xk, xp, wk, mk, dy, direction, chunk):
  """Cotangents (dxk fp32, dxp fp32, the blocks' dwk fp32, dmk) of group_forward for dy (fp32)."""
  st = Steps(xk.shape, direction, chunk)
  xps = st.split(xp, dtype=xp.dtype)
  xs, ps, dys = st.split(xk), _project(xps, wk), st.split(dy)
  hs = _states(st, xs, ps)
  dxs, dxps, dws, dm, carry = [None] * st.n, [None] * st.n, [0] * len(wk), 0, None
  for j in reversed(range(st.n)):
    x, p, h, dy_j = xs[j], ps[j], hs[j], dys[j]
    dh = mk * p[4] * dy_j
    # g is materialised once: it feeds the next step and every gradient, which XLA
    # would otherwise re-evaluate through the whole chain.
    g = jax.lax.optimization_barrier(dh if carry is None else dh + carry)
    dp = [None] * 3 + [x * g, mk * dy_j * h, mk * dy_j * x][:len(wk) - 3]  # the column blocks' cotangents
    if j > 0:  # the step's gates act on the previous state (none at a segment's first step)
      prev = hs[j - 1]
      (a, b, c), (hp, hn), t, s = _gates(p, st.line)
      dn = (g * shift(prev, st.line, 1), g * prev, g * shift(prev, st.line, -1))  # normalised gates'
      dn = [gather(dn_i, a.shape[-1]) for dn_i in dn]  # a shared gate's: summed over its channels
      ds = jnp.where(t > EPS, -(dn[0] * a + dn[1] * b + dn[2] * c) / (s * s), 0)
      dp[:3] = [(dn_i / s + ds * m_i) * v * (1 - v) for dn_i, m_i, v in zip(dn, (hp, 1, hn), (a, b, c))]
      a, b, c, s = (spread(v, g.shape[-1]) for v in (a, b, c, s))
      gn = g / s  # the transposed operator: each gate at its own position, applied to g
      carry = b * gn + shift(a * gn, st.line, -1) + shift(c * gn, st.line, 1)
    dxs[j] = p[3] * g + mk * p[5] * dy_j if len(p) > 5 else p[3] * g
    dm = dm + jnp.sum(dy_j * _epilogue(p, h, x))
    # Each block's cotangent contracted as formed, one dot each: a concatenation of the
    # six would copy all 6D channels once more.
    dxp_j = 0
    for i, dp_i in enumerate(dp):
      if dp_i is None:
        continue
      dp_i, w_i = dp_i.astype(wk[i].dtype), wk[i]
      dws[i] = dws[i] + jnp.einsum("...r,...c->rc", xps[j], dp_i, preferred_element_type=jnp.float32)
      dxp_j = dxp_j + jnp.dot(dp_i, w_i.T, preferred_element_type=jnp.float32)
    dxps[j] = dxp_j
  dws = [jnp.zeros(w_i.shape, jnp.float32) if isinstance(dw, int) else dw for dw, w_i in zip(dws, wk)]
  return st.join(dxs, jnp.float32), st.join(dxps, jnp.float32), dws, dm
