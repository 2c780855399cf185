"""Pure-JAX GSPN propagation: the specification every kernel is tested against.

Every direction is brought to one canonical layout (B, L, S, C): L is the line axis,
S the scan axis in scan order. The scan axis is cut into segments of n steps
counted from the scan's first element (zero carry at each segment start), padded at
the end to a whole number of segments, and laid out as (n, B, L, nseg, C), so that
lax.scan runs only n sequential steps with all segments in parallel.

The backward pass is the analytic adjoint (a reverse scan with the transposed
tridiagonal operator), not autodiff through the forward scan. The state is fp32
whatever the input dtype.
"""

import functools

import jax
import jax.numpy as jnp

DIRECTIONS = ("lr", "rl", "tb", "bt")
# XLA:CPU runs a rolled while loop step by step without fusion: unrolling short
# scans (local mode has n = 2) makes them ~7x faster; long scans are unrolled partly.
MAX_UNROLL = 8


def to_canonical(a, direction):
  """(B, H, W, C) image frame -> (B, L, S, C) with S in scan order."""
  if direction == "lr":
    return a
  if direction == "rl":
    return a[:, :, ::-1]
  if direction == "tb":
    return jnp.swapaxes(a, 1, 2)
  return jnp.swapaxes(a[:, ::-1], 1, 2)  # "bt"


def from_canonical(a, direction):
  """Inverse of to_canonical."""
  if direction == "lr":
    return a
  if direction == "rl":
    return a[:, :, ::-1]
  if direction == "tb":
    return jnp.swapaxes(a, 1, 2)
  return jnp.swapaxes(a, 1, 2)[:, ::-1]  # "bt"


def segment_length(scan_len, chunk):
  return scan_len if chunk is None else min(chunk, scan_len)


def _to_steps(a, n):
  """(B, L, S, C) -> (n, B, L, nseg, C), zero-padding S up to nseg * n."""
  b, l, s, c = a.shape
  nseg = -(-s // n)
  a = jnp.pad(a, ((0, 0), (0, 0), (0, nseg * n - s), (0, 0)))
  return jnp.moveaxis(a.reshape(b, l, nseg, n, c), 3, 0)


def _from_steps(a, s):
  """(n, B, L, nseg, C) -> (B, L, S, C)."""
  n, b, l, nseg, c = a.shape
  return jnp.moveaxis(a, 0, 3).reshape(b, l, nseg * n, c)[:, :, :s]


def _prev(a, axis=1):
  """a[l - 1] along the line axis, zero at l = 0."""
  n = a.shape[axis]
  return jax.lax.slice_in_dim(jnp.pad(a, _pad_spec(a, axis, (1, 0))), 0, n, axis=axis)


def _next(a, axis=1):
  """a[l + 1] along the line axis, zero at l = L - 1."""
  n = a.shape[axis]
  return jax.lax.slice_in_dim(jnp.pad(a, _pad_spec(a, axis, (0, 1))), 1, n + 1, axis=axis)


def _pad_spec(a, axis, pad):
  spec = [(0, 0)] * a.ndim
  spec[axis] = pad
  return spec


def _f32_steps(arrays, direction, n):
  return [_to_steps(to_canonical(a, direction).astype(jnp.float32), n) for a in arrays]


def _forward_steps(x, gl, gc, gr, lam):
  """h[j] = lam x + gl h[j-1][l-1] + gc h[j-1][l] + gr h[j-1][l+1]; h[-1] = 0."""

  def step(h_prev, inputs):
    x_j, gl_j, gc_j, gr_j, lam_j = inputs
    h = lam_j * x_j + gl_j * _prev(h_prev) + gc_j * h_prev + gr_j * _next(h_prev)
    return h, h

  init = jnp.zeros(x.shape[1:], jnp.float32)
  _, h = jax.lax.scan(step, init, (x, gl, gc, gr, lam), unroll=min(x.shape[0], MAX_UNROLL))
  return h


def _forward(x, gl, gc, gr, lam, direction, chunk):
  s = to_canonical(x, direction).shape[2]
  n = segment_length(s, chunk)
  steps = _f32_steps((x, gl, gc, gr, lam), direction, n)
  h = _forward_steps(*steps)
  out = from_canonical(_from_steps(h, s), direction).astype(x.dtype)
  return out, h


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def gspn_scan_reference(x, gl, gc, gr, lam, direction, chunk):
  return _forward(x, gl, gc, gr, lam, direction, chunk)[0]


def _fwd(x, gl, gc, gr, lam, direction, chunk):
  out, h = _forward(x, gl, gc, gr, lam, direction, chunk)
  return out, (x, gl, gc, gr, lam, h)


def _bwd(direction, chunk, residuals, dout):
  x, gl, gc, gr, lam, h = residuals
  s = to_canonical(x, direction).shape[2]
  n = h.shape[0]
  xs, gls, gcs, grs, lams, dh = _f32_steps((x, gl, gc, gr, lam, dout), direction, n)

  # g[j] = dh[j] + T[j+1]^T g[j+1]: step j+1's gates carry its gradient back one line.
  def step(carry, inputs):
    dh_j, gl_j, gc_j, gr_j = inputs
    g = dh_j + carry
    back = gc_j * g + _next(gl_j * g) + _prev(gr_j * g)
    return back, g

  init = jnp.zeros(dh.shape[1:], jnp.float32)
  _, g = jax.lax.scan(step, init, (dh, gls, gcs, grs), reverse=True, unroll=min(n, MAX_UNROLL))

  h_prev = jnp.concatenate([jnp.zeros_like(h[:1]), h[:-1]], axis=0)  # zero at segment start
  grads = (
      lams * g,                   # dx
      g * _prev(h_prev, axis=2),    # dgl
      g * h_prev,                 # dgc
      g * _next(h_prev, axis=2),    # dgr
      xs * g,                     # dlam
  )
  return tuple(
      from_canonical(_from_steps(d, s), direction).astype(a.dtype)
      for d, a in zip(grads, (x, gl, gc, gr, lam))
  )


gspn_scan_reference.defvjp(_fwd, _bwd)
