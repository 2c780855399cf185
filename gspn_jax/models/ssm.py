"""S4D (Gu et al., 2022): a diagonal state space model applied as a long convolution via FFT.

DiffuSSM's long-range block is a bidirectional S4D layer. S4D is linear and time
invariant, so its whole effect on a length-L sequence is a causal convolution with the
kernel K[l] = 2 Re(sum_n C_n Bbar_n Abar_n^l); the paper costs it as an FFT convolution
(O(L log L), the "alpha L log L" term of its FLOP count), which is what this module does:
no recurrence is run. A scan would need an N-wide complex state per channel and position;
the FFT needs only the (H, L) kernel and is one batched transform on accelerators.

Per channel h (H = model width) and mode n (N complex modes, conjugate pairs implied):
  A = -exp(log_A_real) + i A_imag   (S4D-Lin init: A = -1/2 + i pi n)
  Abar = exp(dt A),  Bbar = (Abar - 1) / A   (zero-order hold, B = 1 folded into C)
  x_l = Abar x_{l-1} + Bbar u_l,  y_l = 2 Re(C x_l) + D u_l
The kernel is built in fp32 (complex64) and the convolution runs in fp32 whatever the
compute dtype. The backward direction is the same operator on the reversed sequence.
"""

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P


def s4d_kernel(log_dt, log_A_real, A_imag, C, length):
  """(H, length) real convolution kernel of the diagonal SSM; log_dt is (H, 1), C (H, N, 2) (re, im)."""
  dt = jnp.exp(log_dt)
  A = -jnp.exp(log_A_real) + 1j * A_imag
  dtA = dt * A
  Cb = (C[..., 0] + 1j * C[..., 1]) * (jnp.exp(dtA) - 1.0) / A  # C Bbar
  powers = jnp.exp(dtA[..., None] * jnp.arange(length, dtype=jnp.float32))  # (H, N, L): Abar^l
  return 2.0 * jnp.einsum("hn,hnl->hl", Cb, powers).real


# The (H, N, L) Vandermonde intermediate is large (XL: 1152 x 32 x 1024 complex per direction
# and layer) and independent of the batch: recompute it in the backward pass, keep only the kernel.
s4d_kernel = jax.checkpoint(s4d_kernel, static_argnums=(4,))


def _fft_conv(u, kernel):
  length = u.shape[1]
  n = 2 * length  # zero padding: no wrap-around
  uf = jnp.fft.rfft(u.astype(jnp.float32), n=n, axis=1)
  kf = jnp.fft.rfft(kernel.T, n=n, axis=0)
  return jnp.fft.irfft(uf * kf[None], n=n, axis=1)[:, :length]


def causal_conv(u, kernel):
  """y_l = sum_{k <= l} kernel[:, l - k] u_k along axis 1 of u (B, L, H), via FFT.

  Under a mesh it runs on each device's examples (jax.shard_map): XLA's partitioner
  would otherwise gather the whole batch for the FFT."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1 or u.shape[0] % mesh.size:
    return _fft_conv(u, kernel)
  batch = P(mesh.axis_names, None, None)
  return jax.shard_map(_fft_conv, in_specs=(batch, P()), out_specs=batch, check_vma=False)(u, kernel)


class S4D(nnx.Module):
  """One direction: (B, L, H) -> (B, L, H), causal (forward) or anti-causal (reverse=True)."""

  def __init__(self, channels, state_size=32, *, reverse=False, dt_min=1e-3, dt_max=1e-1, rngs):
    h, n = channels, state_size
    self.reverse = reverse
    # Every parameter has a mode or unit axis: the sharding rules replicate them (they are
    # small), so the kernel is built whole on every device and no activation is resharded.
    u = jax.random.uniform(rngs.params(), (h, 1))
    self.log_dt = nnx.Param(u * (jnp.log(dt_max) - jnp.log(dt_min)) + jnp.log(dt_min))
    self.log_A_real = nnx.Param(jnp.full((h, n), jnp.log(0.5)))
    self.A_imag = nnx.Param(jnp.broadcast_to(jnp.pi * jnp.arange(n, dtype=jnp.float32), (h, n)))
    self.C = nnx.Param(jax.random.normal(rngs.params(), (h, n, 2)) * 0.5 ** 0.5)  # complex normal, var 1
    self.D = nnx.Param(jax.random.normal(rngs.params(), (h, 1)))

  def kernel(self, length):
    return s4d_kernel(self.log_dt[...], self.log_A_real[...], self.A_imag[...], self.C[...], length)

  def __call__(self, u):
    v = u[:, ::-1] if self.reverse else u
    y = causal_conv(v, self.kernel(u.shape[1])) + self.D[..., 0] * v.astype(jnp.float32)
    return y[:, ::-1] if self.reverse else y
