"""DiT (Peebles & Xie, 2023): adaLN-Zero transformer on patch tokens, NHWC in and out."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gspn_jax.models.layers import (FinalLayer, LabelEmbedder, PatchEmbed, TimestepEmbedder,
                                    forward_with_cfg, modulate, shard_batch, split_key, unpatchify,
                                    xavier_uniform, zeros)

ATTENTION_IMPLS = (None, "xla", "cudnn")


def get_2d_sincos_pos_embed(embed_dim, grid_size):
  """MAE's fixed 2-D sin-cos embedding, (grid_size**2, embed_dim), computed in float64.

  Tokens are row-major (h, w); the first half of the channels encodes w, the second h.
  """
  coords = np.arange(grid_size, dtype=np.float64)
  grid_w, grid_h = np.meshgrid(coords, coords)  # grid_w varies along the row

  def emb_1d(dim, pos):
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  return np.concatenate([emb_1d(embed_dim // 2, grid_w), emb_1d(embed_dim // 2, grid_h)], axis=1)


class PosEmbed(nnx.Variable):
  """A fixed (non-trained) positional embedding, stored in checkpoints like DiT's."""


class Attention(nnx.Module):
  def __init__(self, hidden_size, num_heads, *, impl, dtype, rngs):
    self.num_heads = num_heads
    self.impl = impl
    lin = functools.partial(nnx.Linear, kernel_init=xavier_uniform, bias_init=zeros, dtype=dtype, rngs=rngs)
    self.qkv = lin(hidden_size, 3 * hidden_size)
    self.proj = lin(hidden_size, hidden_size)

  def __call__(self, x):
    b, t, d = x.shape
    q, k, v = jnp.split(self.qkv(x).reshape(b, t, 3, self.num_heads, d // self.num_heads), 3, axis=2)
    out = jax.nn.dot_product_attention(q[:, :, 0], k[:, :, 0], v[:, :, 0], implementation=self.impl)
    return self.proj(out.reshape(b, t, d))


class DiTBlock(nnx.Module):
  """x += gate * f(modulate(LN(x), shift, scale)) for f = attention, then MLP (tanh GELU)."""

  def __init__(self, hidden_size, num_heads, mlp_ratio=4.0, *, attn_impl, dtype, rngs):
    d, hidden = hidden_size, int(hidden_size * mlp_ratio)
    self.dtype = dtype
    lin = functools.partial(nnx.Linear, kernel_init=xavier_uniform, bias_init=zeros, dtype=dtype, rngs=rngs)
    self.norm1 = nnx.LayerNorm(d, epsilon=1e-6, use_bias=False, use_scale=False, rngs=rngs)
    self.attn = Attention(d, num_heads, impl=attn_impl, dtype=dtype, rngs=rngs)
    self.norm2 = nnx.LayerNorm(d, epsilon=1e-6, use_bias=False, use_scale=False, rngs=rngs)
    self.mlp_fc1 = lin(d, hidden)
    self.mlp_fc2 = lin(hidden, d)
    self.adaLN_modulation = nnx.Linear(d, 6 * d, kernel_init=zeros, bias_init=zeros, dtype=dtype, rngs=rngs)

  def __call__(self, x, c):
    """x: (B, h, w, D) fp32 residual stream; c: (B, D)."""
    b, h, w, d = x.shape
    mods = jnp.split(shard_batch(self.adaLN_modulation(nnx.silu(c))).astype(jnp.float32), 6, axis=-1)
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mods
    z = modulate(self.norm1(x), shift_msa, scale_msa).astype(self.dtype)
    z = self.attn(z.reshape(b, h * w, d)).reshape(b, h, w, d)
    x = x + gate_msa[:, None, None, :] * z
    z = modulate(self.norm2(x), shift_mlp, scale_mlp).astype(self.dtype)
    z = self.mlp_fc2(nnx.gelu(self.mlp_fc1(z), approximate=True))
    return x + gate_mlp[:, None, None, :] * z


def _call_block(block, x, c):
  return block(x, c)


class DiT(nnx.Module):
  """Class-conditional DiT backbone: model(x, t, y) -> (B, H, W, 2C)."""

  def __init__(self, *, input_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28,
               num_heads=16, mlp_ratio=4.0, num_classes=1000, class_dropout_prob=0.1,
               learn_sigma=True, remat=False, dtype=jnp.float32, attn_impl=None, pos_embed=True, rngs):
    if attn_impl not in ATTENTION_IMPLS:
      raise ValueError(f"attn_impl={attn_impl!r}; use one of {ATTENTION_IMPLS}")
    self.input_size = input_size
    self.in_channels = in_channels
    self.out_channels = in_channels * 2 if learn_sigma else in_channels
    self.patch_size = patch_size
    self.num_classes = num_classes
    self.remat = remat
    self.dtype = dtype
    self.x_embedder = PatchEmbed(patch_size, in_channels, hidden_size, dtype=dtype, rngs=rngs)
    grid = input_size // patch_size
    # pos_embed=False zeroes the fixed embedding (an ablation: how much of DiT's label use is position)
    self.pos_embed = PosEmbed(jnp.asarray(get_2d_sincos_pos_embed(hidden_size, grid) * float(pos_embed), jnp.float32)
                              .reshape(grid, grid, hidden_size))
    self.t_embedder = TimestepEmbedder(hidden_size, dtype=dtype, rngs=rngs)
    self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob, rngs=rngs)
    self.blocks = nnx.List([DiTBlock(hidden_size, num_heads, mlp_ratio, attn_impl=attn_impl, dtype=dtype,
                                     rngs=rngs) for _ in range(depth)])
    self.final_layer = FinalLayer(hidden_size, patch_size, self.out_channels, dtype=dtype, rngs=rngs)

  def __call__(self, x, t, y, key=None):
    """x: (B, H, W, C); t: (B,); y: (B,). key enables label drop (training)."""
    (label_key,) = split_key(key, 1)
    pos = self.pos_embed[...]
    if x.shape[1:3] != (pos.shape[0] * self.patch_size, pos.shape[1] * self.patch_size):
      raise ValueError(f"DiT built for input_size={self.input_size} got {x.shape[1]}x{x.shape[2]}; "
                       "its positional embedding fixes the resolution")
    h = shard_batch(self.x_embedder(x.astype(self.dtype)).astype(jnp.float32) + pos)
    c = shard_batch((self.t_embedder(t) + self.y_embedder(y, label_key)).astype(jnp.float32))
    call = nnx.remat(_call_block) if self.remat else _call_block
    for blk in self.blocks:
      h = shard_batch(call(blk, h, c))
    out = shard_batch(self.final_layer(h, c))
    return unpatchify(out, self.patch_size, self.out_channels).astype(jnp.float32)

  def forward_with_cfg(self, x, t, y, cfg_scale, cfg_channels=3):
    return forward_with_cfg(self, x, t, y, cfg_scale, cfg_channels)


_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}
DiT_models = {
    f"DiT-{s}/{p}": functools.partial(DiT, hidden_size=d, depth=n, num_heads=h, patch_size=p)
    for s, (d, n, h) in _SIZES.items() for p in (2, 4, 8)
}
