"""'SAME' depthwise convolution whose forward and backward both cost what they should.

XLA:CPU lowers a grouped convolution, and above all its gradient w.r.t. the kernel,
~20x slower than the arithmetic requires. Off GPUs the convolution is therefore a sum
of shifted multiply-adds with an analytic backward: dx is the same tap sum with the
flipped kernel, dkernel[i, j] the sum over (b, h, w) of the shifted input times the
output gradient. GPUs keep the library (cuDNN) convolution.
"""

import jax
import jax.numpy as jnp

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


def library_depthwise_conv(x, kernel):
  return jax.lax.conv_general_dilated(x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                      feature_group_count=x.shape[-1])


def depthwise_conv(x, kernel):
  """'SAME' depthwise conv of NHWC x with an odd (kh, kw, 1, C) kernel (PyTorch's
  Conv2d(C, C, k, groups=C, padding=k // 2) in NHWC/HWIO): tap sums off GPUs, the
  library convolution on GPUs."""
  kh, kw = kernel.shape[:2]
  if kh % 2 == 0 or kw % 2 == 0 or kernel.shape[2:] != (1, x.shape[-1]):
    raise ValueError(f"depthwise_conv: kernel {kernel.shape} for {x.shape[-1]} channels; "
                     f"expected (odd, odd, 1, {x.shape[-1]})")
  if jax.default_backend() == "gpu":
    return library_depthwise_conv(x, kernel)
  return depthwise_taps(x, kernel)
