"""GSPN diffusion model: U-ViT-style stack of GSPN blocks, no positional embedding.

Follows the released generation model (NVlabs/GSPN generation/gspn.py) in NHWC,
with its two defects made selectable rather than copied (see `GSPN` options).
"""

import functools

import jax.numpy as jnp
import numpy as np
from flax import nnx

from gspn_jax.models.block_vjp import call_block
from gspn_jax.models.dit import PosEmbed, get_2d_sincos_pos_embed
from gspn_jax.models.layers import (DepthwiseConv, FinalLayer, LabelEmbedder, PatchEmbed, TimestepEmbedder,
                                    drop_path, forward_with_cfg, modulate, shard_batch, split_key,
                                    torch_conv_kernel, unpatchify, xavier_uniform, zeros)
from gspn_jax.ops import gspn_core
from gspn_jax.ops.core import MERGES

# "additive": the released design, c = t + y added to the input tokens and used by the
# final layer only. "adaln": additionally DiT's adaLN-Zero in every block (shift/scale of
# the block's LayerNorm output, gate on its output, zero-initialised).
CONDITIONINGS = ("additive", "adaln")


class GSPNCore(nnx.Module):
  """Four-direction GSPN with a shared low-rank bottleneck for gates, lambda, u, d
  (the layers of the released code, applied by the `gspn_core` op). With cond, c enters that
  bottleneck through a zero-initialised projection: the propagation itself is conditioned."""

  def __init__(self, hidden_size, *, chunk, merge, impl, dtype, rngs, rank=None, gate_channels=None, cond=False):
    if merge not in MERGES:
      raise ValueError(f"merge={merge!r}; use one of {MERGES}")
    d, ds = hidden_size, rank or hidden_size // 16
    self.chunk, self.merge, self.impl, self.gate_channels = chunk, merge, impl, gate_channels
    lin = functools.partial(nnx.Linear, use_bias=False, kernel_init=torch_conv_kernel, dtype=dtype,
                            rngs=rngs)  # 1x1 Conv2d layers of the released code
    self.x_conv_down = lin(d, ds)
    self.w_conv_up = lin(ds, 12 * (gate_channels or d))
    self.l_conv_up = lin(ds, 4 * d)
    self.u_conv_up = lin(ds, 4 * d)
    self.d_conv = lin(ds, 4 * d)
    self.m_conv = nnx.Param(torch_conv_kernel(rngs.params(), (4, 1))[:, 0])  # Conv2d(4, 1, 1x1)
    self.c_proj = nnx.Linear(d, ds, kernel_init=zeros, bias_init=zeros, dtype=dtype, rngs=rngs) if cond else None

  def __call__(self, x, c=None):
    xp = shard_batch(self.x_conv_down(x))
    if self.c_proj is not None:
      xp = xp + self.c_proj(nnx.silu(c))[:, None, None, :]
    weights = (self.w_conv_up, self.l_conv_up, self.u_conv_up, self.d_conv)
    return gspn_core(x, xp, *(f.kernel[...] for f in weights), self.m_conv[...], chunk=self.chunk,
                     merge=self.merge, impl=self.impl, gate_channels=self.gate_channels)


class Block(nnx.Module):
  """Mamba-style (hidden, residual) block: LN -> in_proj -> dw7x7 -> GSPN -> 1x1 -> dw3x3
  -> squared ReLU -> out_proj; decoder blocks first fuse the U-ViT long skip. With
  adaLN conditioning the LN output is modulated by c and the block output gated by it;
  with core_norm the GSPN output is layer-normalised before the 1x1."""

  def __init__(self, hidden_size, *, chunk, drop_path, skip, merge, impl, dtype, rngs, adaln=False,
               core_norm=False, core_rank=None, gate_channels=None, core_cond=False):
    d = hidden_size
    self.drop_path = drop_path
    self.dtype = dtype
    xav = functools.partial(nnx.Linear, kernel_init=xavier_uniform, bias_init=zeros, dtype=dtype, rngs=rngs)
    self.skip_linear = xav(2 * d, d) if skip else None
    self.norm = nnx.LayerNorm(d, epsilon=1e-5, rngs=rngs)
    self.in_proj = xav(d, d, use_bias=False)
    self.conv2d = DepthwiseConv(d, 7, use_bias=True, dtype=dtype, rngs=rngs)
    self.spn = GSPNCore(d, chunk=chunk, merge=merge, impl=impl, dtype=dtype, rngs=rngs, rank=core_rank,
                       gate_channels=gate_channels, cond=core_cond)
    self.core_norm = nnx.LayerNorm(d, epsilon=1e-5, rngs=rngs) if core_norm else None
    self.out_conv = nnx.Linear(d, d, use_bias=False, kernel_init=torch_conv_kernel, dtype=dtype, rngs=rngs)
    self.out_dconv = DepthwiseConv(d, 3, use_bias=False, dtype=dtype, rngs=rngs)
    self.out_proj = xav(d, d, use_bias=False)
    self.adaLN_modulation = nnx.Linear(d, 3 * d, kernel_init=zeros, bias_init=zeros, dtype=dtype,
                                       rngs=rngs) if adaln else None

  def __call__(self, hidden, residual, skip=None, key=None, c=None):
    if self.skip_linear is not None:
      hidden = self.skip_linear(jnp.concatenate([hidden, skip], axis=-1))
    if residual is None:
      residual = hidden.astype(jnp.float32)
    else:
      residual = residual + drop_path(hidden, self.drop_path, key).astype(jnp.float32)
    z = self.norm(residual).astype(self.dtype)
    if self.adaLN_modulation is not None:
      shift, scale, gate = jnp.split(shard_batch(self.adaLN_modulation(nnx.silu(c))), 3, axis=-1)
      z = modulate(z, shift, scale)
    z = self.conv2d(self.in_proj(z))
    z = self.spn(z, c)
    if self.core_norm is not None:
      z = self.core_norm(z).astype(self.dtype)
    z = self.out_dconv(self.out_conv(z))
    z = self.out_proj(z * nnx.relu(z))
    if self.adaLN_modulation is not None:
      z = gate[:, None, None, :] * z
    return shard_batch(z), shard_batch(residual)


class GSPN(nnx.Module):
  """Class-conditional GSPN diffusion backbone: model(x, t, y) -> (B, H, W, 2C).

  Options beyond the sizes:
    segment_length: GSPN segment length n (2 in the paper and release).
    global_last_blocks: the paper's design makes the last two decoder blocks global;
      the released code never passes that setting through (False = released).
    merge: "aligned" (each direction scanned in place, outputs in the image frame) or
      "released" (input transposed/flipped, outputs merged unmapped; square grids only).
    drop_path_rate: stochastic depth, linear over blocks; class_dropout_prob: CFG label drop.
    remat: rematerialise each block in the backward pass (only its inputs are saved;
      see models/block_vjp.py).
    dtype: compute dtype (e.g. jnp.bfloat16); parameters stay fp32.
    scan_impl: gspn_core implementation ("auto", "xla", "reference", "triton").
    conditioning: "additive" (released: c added to the input tokens and used by the final
      layer) or "adaln" (also adaLN-Zero shift/scale/gate from c in every block, as DiT;
      adds 3D^2 + 3D parameters per block).
    core_norm: LayerNorm on each GSPN core's output (2D parameters per block; not in the
      release, off = released). The core is cubic in its input (u * h(lambda * x), all three
      projections of it) and the block squares it again (z * ReLU(z)); the norm fixes the
      scale of that product, which at a large lr otherwise grows ~100x within tens of steps
      (bench/stability.py).
    core_rank: rank of the bottleneck that all of a core's gates, lambda, u and d come from
      (None = the release's hidden_size // 16; 2 at hidden 32).
    pos_embed: add DiT's fixed 2-D sin-cos embedding to the input tokens (not in the release,
      which has none; fixes the resolution to input_size).
    gate_channels: channel-shared gates (GSPN-2's compressive channels): G gate triples per
      pixel and direction group, each shared by hidden_size / G consecutive channels; 1 is
      GSPN-2's one triple per pixel and group. The gate projection shrinks from 12D to 12G
      columns (None = the release: one gate per channel).
    core_cond: c = t + y also enters each core's gate/lambda/u/d bottleneck through a
      zero-initialised projection (not in the release): the label steers the propagation.
  """

  def __init__(self, *, input_size=32, patch_size=2, in_channels=4, hidden_size=1152, depth=28,
               num_classes=1000, class_dropout_prob=0.1, learn_sigma=True, drop_path_rate=0.1,
               segment_length=2, global_last_blocks=True, merge="aligned", remat=False,
               dtype=jnp.float32, scan_impl="auto", conditioning="additive", core_norm=False, core_rank=None,
               pos_embed=False, gate_channels=None, core_cond=False, rngs):
    if conditioning not in CONDITIONINGS:
      raise ValueError(f"conditioning={conditioning!r}; use one of {CONDITIONINGS}")
    if core_rank is not None and not 1 <= core_rank <= hidden_size:
      raise ValueError(f"core_rank={core_rank}; use 1..hidden_size ({hidden_size}) or None (hidden_size // 16)")
    if gate_channels is not None and (not isinstance(gate_channels, int) or gate_channels < 1
                                      or hidden_size % gate_channels):
      raise ValueError(f"gate_channels={gate_channels!r}; use a divisor of hidden_size ({hidden_size}), e.g. 1, "
                       "or None (one gate per channel)")
    self.input_size = input_size  # default sampling resolution; the model itself is resolution-free
    self.in_channels = in_channels
    self.out_channels = in_channels * 2 if learn_sigma else in_channels
    self.patch_size = patch_size
    self.num_classes = num_classes
    self.depth = depth
    self.remat = remat
    self.drop_path_rate = drop_path_rate
    self.dtype = dtype
    d = hidden_size
    self.x_embedder = PatchEmbed(patch_size, in_channels, d, dtype=dtype, rngs=rngs)
    grid = input_size // patch_size
    self.pos_embed = PosEmbed(jnp.asarray(get_2d_sincos_pos_embed(d, grid), jnp.float32).reshape(grid, grid, d)
                              ) if pos_embed else None
    self.t_embedder = TimestepEmbedder(d, dtype=dtype, rngs=rngs)
    self.y_embedder = LabelEmbedder(num_classes, d, class_dropout_prob, rngs=rngs)
    # Block i drops the previous block's output: rates [0] + linspace(0, rate, depth).
    rates = [0.0] + [float(r) for r in np.linspace(0, drop_path_rate, depth)]
    half = depth // 2
    block = functools.partial(Block, d, merge=merge, impl=scan_impl, dtype=dtype, rngs=rngs,
                              adaln=conditioning == "adaln", core_norm=core_norm, core_rank=core_rank,
                              gate_channels=gate_channels, core_cond=core_cond)
    self.in_blocks = nnx.List([block(chunk=segment_length, drop_path=rates[i], skip=False) for i in range(half)])
    self.mid_block = block(chunk=segment_length, drop_path=rates[half], skip=False)
    self.out_blocks = nnx.List([
        block(chunk=None if (global_last_blocks and i >= half - 2) else segment_length,
              drop_path=rates[half + 1 + i], skip=True)
        for i in range(half)])
    self.norm_f = nnx.LayerNorm(d, epsilon=1e-5, rngs=rngs)
    self.final_layer = FinalLayer(d, patch_size, self.out_channels, dtype=dtype, rngs=rngs)

  def __call__(self, x, t, y, key=None):
    """x: (B, H, W, C) noisy input; t: (B,) timesteps; y: (B,) labels.
    key: enables training-time randomness (label drop, stochastic depth)."""
    keys = split_key(key, self.depth + 3)
    c = shard_batch(self.t_embedder(t) + self.y_embedder(y, keys[-1]))
    hidden = self.x_embedder(x.astype(self.dtype)) + c[:, None, None, :].astype(self.dtype)
    if self.pos_embed is not None:
      if hidden.shape[1:3] != self.pos_embed.shape[:2]:
        raise ValueError(f"GSPN(pos_embed=True) built for input_size={self.input_size} got {x.shape[1]}x"
                         f"{x.shape[2]}; the embedding fixes the resolution (or use pos_embed=False)")
      hidden = hidden + self.pos_embed[...].astype(self.dtype)
    hidden = shard_batch(hidden)
    call = functools.partial(call_block, remat=self.remat)
    cb = c.astype(self.dtype)
    residual, skips = None, []
    for i, blk in enumerate(self.in_blocks):
      hidden, residual = call(blk, hidden, residual, None, keys[i], cb)
      skips.append(hidden)
    hidden, residual = call(self.mid_block, hidden, residual, None, keys[len(skips)], cb)
    for i, blk in enumerate(self.out_blocks):
      hidden, residual = call(blk, hidden, residual, skips.pop(), keys[len(self.in_blocks) + 1 + i], cb)
    residual = residual + drop_path(hidden, self.drop_path_rate, keys[-2]).astype(jnp.float32)
    out = shard_batch(self.final_layer(self.norm_f(residual), c.astype(jnp.float32)))
    return unpatchify(out, self.patch_size, self.out_channels).astype(jnp.float32)

  def forward_with_cfg(self, x, t, y, cfg_scale, cfg_channels=3):
    return forward_with_cfg(self, x, t, y, cfg_scale, cfg_channels)


def _size(hidden_size, depth, patch_size):
  return functools.partial(GSPN, hidden_size=hidden_size, depth=depth, patch_size=patch_size)


_SIZES = {"S": (368, 24), "B": (900, 30), "L": (1200, 56), "XL": (1500, 56)}
GSPN_models = {f"GSPN-{s}/{p}": _size(d, n, p) for s, (d, n) in _SIZES.items() for p in (2, 4)}
