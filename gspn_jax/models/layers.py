"""Layers shared by GSPN and DiT: embedders, final layer, patching, drop path, inits.

Everything is NHWC. Initialisers reproduce the PyTorch models' initialisation
(DiT's `initialize_weights`; PyTorch's Conv2d default where the released GSPN keeps it).
"""

import math

import jax
import jax.numpy as jnp
from flax import nnx

from gspn_jax.models.depthwise import depthwise_conv

xavier_uniform = jax.nn.initializers.xavier_uniform()
normal_002 = jax.nn.initializers.normal(stddev=0.02)
zeros = jax.nn.initializers.zeros
# PyTorch's Conv2d default, kaiming_uniform(a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
torch_conv_kernel = jax.nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
# Patch embedding initialised "like nn.Linear": xavier over the flattened (p*p*C, D) kernel.
patch_kernel = jax.nn.initializers.variance_scaling(1.0, "fan_avg", "uniform", in_axis=(0, 1, 2), out_axis=3)


def torch_conv_bias(fan_in):
  """PyTorch's Conv2d default bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  bound = 1 / math.sqrt(fan_in)

  def init(key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -bound, bound)

  return init


class DepthwiseConv(nnx.Module):
  """Conv2d(C, C, k, groups=C, padding=k // 2) with PyTorch's default initialisation."""

  def __init__(self, channels, kernel_size, *, use_bias, dtype, rngs):
    k = kernel_size
    self.dtype = dtype
    self.kernel = nnx.Param(torch_conv_kernel(rngs.params(), (k, k, 1, channels)))
    self.bias = nnx.Param(torch_conv_bias(k * k)(rngs.params(), (channels,))) if use_bias else None

  def __call__(self, x):
    x = x.astype(self.dtype)
    y = depthwise_conv(x, self.kernel[...].astype(self.dtype))
    return y if self.bias is None else y + self.bias[...].astype(self.dtype)


def shard_batch(x):
  """Activations carry the logical axes ("batch", ...): under a mesh (jax.set_mesh) the
  examples are split over every mesh axis and H, W, channels stay whole, so FSDP gathers
  parameters instead of moving activations. No-op without a mesh."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  return jax.lax.with_sharding_constraint(x, jax.sharding.PartitionSpec(mesh.axis_names, *([None] * (x.ndim - 1))))


def modulate(x, shift, scale):
  """adaLN modulation; shift and scale are (B, D), x is (B, H, W, D)."""
  return x * (1 + scale[:, None, None, :]) + shift[:, None, None, :]


class PatchEmbed(nnx.Module):
  """Conv p x p, stride p: (B, H, W, C) -> (B, H/p, W/p, D)."""

  def __init__(self, patch_size, in_channels, hidden_size, *, dtype, rngs):
    self.patch_size = patch_size
    self.proj = nnx.Conv(in_channels, hidden_size, (patch_size, patch_size), strides=patch_size,
                         padding="VALID", kernel_init=patch_kernel, bias_init=zeros,
                         dtype=dtype, rngs=rngs)

  def __call__(self, x):
    h, w = x.shape[1:3]
    p = self.patch_size
    if h % p or w % p:
      raise ValueError(f"input {h}x{w} is not divisible by the patch size {p}; resize or change patch_size")
    return self.proj(x)


def unpatchify(x, patch_size, channels):
  """(B, h, w, p*p*C) -> (B, h*p, w*p, C), with DiT's (p, q, c) order inside a patch."""
  b, h, w, _ = x.shape
  p = patch_size
  x = x.reshape(b, h, w, p, p, channels)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, h * p, w * p, channels)


def timestep_embedding(t, dim, max_period=10000):
  """Sinusoidal [cos, sin] embedding of (possibly fractional) timesteps, (N,) -> (N, dim)."""
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period) * jnp.arange(half, dtype=jnp.float32) / half)
  args = t.astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
  return emb


class TimestepEmbedder(nnx.Module):
  def __init__(self, hidden_size, *, frequency_embedding_size=256, dtype, rngs):
    self.frequency_embedding_size = frequency_embedding_size
    self.mlp_0 = nnx.Linear(frequency_embedding_size, hidden_size, kernel_init=normal_002,
                            bias_init=zeros, dtype=dtype, rngs=rngs)
    self.mlp_2 = nnx.Linear(hidden_size, hidden_size, kernel_init=normal_002, bias_init=zeros,
                            dtype=dtype, rngs=rngs)

  def __call__(self, t):
    t_freq = shard_batch(timestep_embedding(t, self.frequency_embedding_size))
    return shard_batch(self.mlp_2(shard_batch(nnx.silu(self.mlp_0(t_freq)))))


class LabelEmbedder(nnx.Module):
  """Class embedding table with a null class (index num_classes) for classifier-free guidance."""

  def __init__(self, num_classes, hidden_size, dropout_prob, *, rngs):
    self.num_classes = num_classes
    self.dropout_prob = dropout_prob
    self.embedding_table = nnx.Embed(num_classes + int(dropout_prob > 0), hidden_size,
                                     embedding_init=normal_002, rngs=rngs)

  def __call__(self, labels, key=None):
    """Drops labels to the null class with probability dropout_prob when a key is given."""
    if key is not None and self.dropout_prob > 0:
      drop = jax.random.uniform(key, labels.shape) < self.dropout_prob
      labels = jnp.where(drop, self.num_classes, labels)
    return shard_batch(self.embedding_table(shard_batch(labels)))


class FinalLayer(nnx.Module):
  """LayerNorm (no affine) -> adaLN shift/scale from c -> Linear to p*p*out_channels."""

  def __init__(self, hidden_size, patch_size, out_channels, *, dtype, rngs):
    self.norm_final = nnx.LayerNorm(hidden_size, epsilon=1e-6, use_bias=False, use_scale=False, rngs=rngs)
    self.linear = nnx.Linear(hidden_size, patch_size * patch_size * out_channels, kernel_init=zeros,
                             bias_init=zeros, dtype=dtype, rngs=rngs)
    self.adaLN_modulation = nnx.Linear(hidden_size, 2 * hidden_size, kernel_init=zeros,
                                       bias_init=zeros, dtype=dtype, rngs=rngs)

  def __call__(self, x, c):
    shift, scale = jnp.split(shard_batch(self.adaLN_modulation(nnx.silu(c))), 2, axis=-1)
    x = modulate(self.norm_final(x), shift, scale)
    return self.linear(x)


def drop_path(x, rate, key):
  """Stochastic depth: drop whole samples with probability rate, rescale the rest."""
  if key is None or rate == 0.0:
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(key, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / keep, 0).astype(x.dtype)


def split_key(key, num):
  """num keys from key, or num Nones (deterministic call)."""
  return [None] * num if key is None else list(jax.random.split(key, num))


def forward_with_cfg(model, x, t, y, cfg_scale, cfg_channels=3):
  """Classifier-free guidance on a batch [x_cond; x_uncond] with labels [y; null].

  Guidance is applied to the first cfg_channels output channels (3 = DiT's rule kept
  for exact reproduction of published FIDs; in_channels = the clean form); the other
  epsilon channels and the variance channels come from the conditional half.
  """
  half = x[: x.shape[0] // 2]
  out = model(jnp.concatenate([half, half]), t, y)
  eps, rest = out[..., :cfg_channels], out[..., cfg_channels:]
  cond_eps, uncond_eps = jnp.split(eps, 2)
  half_eps = uncond_eps + cfg_scale * (cond_eps - uncond_eps)
  eps = jnp.concatenate([half_eps, half_eps])
  return jnp.concatenate([eps, rest], axis=-1)
