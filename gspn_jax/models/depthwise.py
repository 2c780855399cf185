"""'SAME' depthwise convolution whose forward and backward both cost what they should.

XLA:CPU lowers a grouped convolution, and above all its gradient w.r.t. the kernel,
~20x slower than the arithmetic requires. Off GPUs the convolution is therefore a sum
of shifted multiply-adds with an analytic backward: dx is the same tap sum with the
flipped kernel, dkernel[i, j] the sum over (b, h, w) of the shifted input times the
output gradient. On small token grids (H W <= 2 kh kw, e.g. 4x4 and 8x8 under a 7x7
kernel) it is instead a dense per-channel mixing of the H W pixels: most of a padded
tap sum multiplies zeros there, and the dense form fuses into one loop. GPUs keep the
library (cuDNN) convolution.
"""

import jax
import jax.numpy as jnp
import numpy as np

from gspn_jax.ops.barrier import after


def _pad_same(x, kh, kw):
  return jnp.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))


def _taps(xp, kernel, h, w):
  """sum over taps (i, j) of the shifted padded input times kernel[i, j].

  A loop over kernel rows (a fusion boundary) keeps XLA from fusing the tap sum into
  its consumers, which would re-evaluate every tap for each use of the output, and its
  producers into it, re-evaluated for each tap."""
  kh, kw = kernel.shape[:2]

  def row(i, out):
    rows = jax.lax.dynamic_slice_in_dim(xp, i, h, axis=1)
    k = jax.lax.dynamic_index_in_dim(kernel, i, axis=0, keepdims=False)
    return out + sum(rows[:, :, j:j + w, :] * k[j, 0] for j in range(kw))

  out = jnp.zeros(xp.shape[:1] + (h, w) + xp.shape[3:], jnp.result_type(xp, kernel))
  return jax.lax.fori_loop(0, kh, row, out)


def _filter_grad(xp, g, kh, kw):
  """dkernel[i, j, 0, c] = sum_{b, h, w} xp[b, h + i, w + j, c] g[b, h, w, c], in fp32.

  One reduction per tap, inside a loop over kernel rows so that g is read from memory
  rather than its producers being re-evaluated per tap."""
  h, w = g.shape[1:3]
  g = g.astype(jnp.float32)

  def row(i, dk):
    rows = jax.lax.dynamic_slice_in_dim(xp, i, h, axis=1).astype(jnp.float32)
    taps = jnp.stack([jnp.sum(rows[:, :, j:j + w, :] * g, axis=(0, 1, 2)) for j in range(kw)])
    return jax.lax.dynamic_update_index_in_dim(dk, taps, i, axis=0)

  dk = jax.lax.fori_loop(0, kh, row, jnp.zeros((kh, kw, g.shape[-1]), jnp.float32))
  return dk[:, :, None, :]


@jax.custom_vjp
def depthwise_taps(x, kernel):
  """The tap-sum depthwise convolution of NHWC x with an odd (kh, kw, 1, C) kernel."""
  return _taps(_pad_same(x, *kernel.shape[:2]), kernel, *x.shape[1:3])


def _fwd(x, kernel):
  return depthwise_taps(x, kernel), (x, kernel)


def _bwd(res, g):
  # Tied to g, the backward's padded copy of x is not merged with the forward's (which
  # would keep that larger copy alive from the forward on, in place of x).
  x, kernel = after(res, g)
  (kh, kw), (h, w) = kernel.shape[:2], x.shape[1:3]
  dx = _taps(_pad_same(g, kh, kw), kernel[::-1, ::-1], h, w)  # the adjoint: flipped taps
  dk = _filter_grad(_pad_same(x, kh, kw), g, kh, kw)
  return after(dx.astype(x.dtype), dk), dk.astype(kernel.dtype)  # dk first (see barrier.after)


depthwise_taps.defvjp(_fwd, _bwd)


def _tap_matrix(h, w, kh, kw):
  """(H W * H W, kh kw) one-hot: row (p, q) picks the tap that carries input pixel q to
  output pixel p (all zeros where q is beyond the kernel's reach of p)."""
  p = np.arange(h * w)
  di = p[None, :] // w - p[:, None] // w + kh // 2
  dj = p[None, :] % w - p[:, None] % w + kw // 2
  tap = np.where((di >= 0) & (di < kh) & (dj >= 0) & (dj < kw), di * kw + dj, kh * kw)
  return np.eye(kh * kw + 1, kh * kw, dtype=np.float32)[tap.reshape(-1)]


def _mixing(kernel, h, w):
  """The (H W, H W, C) per-channel matrix t[p, q] of the convolution on an h x w grid."""
  kh, kw, _, c = kernel.shape
  t = jnp.dot(_tap_matrix(h, w, kh, kw).astype(kernel.dtype), kernel.reshape(kh * kw, c))
  return t.reshape(h * w, h * w, c)


def _mix(t, x):
  """y[b, p, c] = sum_q t[p, q, c] x[b, q, c]: H W broadcast multiply-adds, one fusion."""
  return sum(x[:, q, None, :] * t[None, :, q, :] for q in range(x.shape[1]))


@jax.custom_vjp
def depthwise_dense(x, kernel):
  """depthwise_taps as a dense per-channel mixing of the pixels (for small grids)."""
  b, h, w, c = x.shape
  return _mix(_mixing(kernel, h, w), x.reshape(b, h * w, c)).reshape(x.shape)


def _dense_fwd(x, kernel):
  return depthwise_dense(x, kernel), (x, kernel)


def _dense_bwd(res, g):
  x, kernel = after(res, g)
  b, h, w, c = x.shape
  g = g.reshape(b, h * w, c)
  dx = _mix(jnp.swapaxes(_mixing(kernel, h, w), 0, 1), g)
  dt = jnp.einsum("bpc,bqc->pqc", g, x.reshape(b, h * w, c), preferred_element_type=jnp.float32)
  dk = jnp.dot(_tap_matrix(h, w, *kernel.shape[:2]).T, dt.reshape(-1, c)).reshape(kernel.shape)
  return after(dx.reshape(x.shape).astype(x.dtype), dk), dk.astype(kernel.dtype)


depthwise_dense.defvjp(_dense_fwd, _dense_bwd)


def library_depthwise_conv(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=x.shape[-1])


def depthwise_conv(x, kernel):
  """'SAME' depthwise conv of NHWC x with an odd (kh, kw, 1, C) kernel (PyTorch's
  Conv2d(C, C, k, groups=C, padding=k // 2) in NHWC/HWIO): off GPUs the dense mixing on
  grids of at most 2 kh kw pixels (measured faster there) and tap sums beyond; the
  library convolution on GPUs."""
  kh, kw = kernel.shape[:2]
  if kh % 2 == 0 or kw % 2 == 0 or kernel.shape[2:] != (1, x.shape[-1]):
    raise ValueError(f"depthwise_conv: kernel {kernel.shape} for {x.shape[-1]} channels; "
                     f"expected (odd, odd, 1, {x.shape[-1]})")
  if jax.default_backend() == "gpu":
    return library_depthwise_conv(x, kernel)
  if x.shape[1] * x.shape[2] <= 2 * kh * kw:
    return depthwise_dense(x, kernel)
  return depthwise_taps(x, kernel)
