"""DiffuSSM (Yan, Gu & Rush, "Diffusion Models Without Attention", CVPR 2024), NHWC in and out.

The latent is flattened to L = H W tokens (row-major) and never patchified for the
long-range block. Each layer is the paper's gated bidirectional SSM with an hour-glass
dense part around it: the layer input I is the sequence shortened by M (J = L / M),
  U_l  = s(W^up_m s(W^0 I_j))                     in R^{L x D}, j = floor(l / M), m = l mod M
  Y    = Bidirectional-SSM(U)                     in R^{L x 2D}
  I'_j[D_m m : D_m (m + 1)] = s(W^down_m Y_l)     in R^{J x 2D}, D_m = 2D / M
  O_j  = W^3 (s(W^2 I'_j) * s(W^1 I_j))           in R^{J x D}
with a skip connection around every layer. s is tanh-GELU (DiT's and BiGS's activation).

Choices where the paper's text leaves room (written here because they fix the results):
- Bidirectional-SSM(U) = [W^F S4D_F(U), W^B S4D_B(U)]: per-channel S4D in each direction
  (models/ssm.py, an FFT long convolution) followed by a D x D map per direction, as in the
  authors' gated bidirectional SSM of BiGS (Wang et al., 2022). These two maps make the
  dense cost per layer (2.5 + 1 + 2 + 2) L D^2 = 7.5 L D^2 at M = 2, the paper's figure.
- Linear maps per layer: W^0 D^2, W^up M D^2, W^F and W^B 2 D^2, W^down 4 D^2 (M maps of
  2D x 2D/M), W^1 D^2, W^2 2 D^2, W^3 D^2: (11 + M) D^2, the paper's 9 D^2 + 2 M D^2 = 13 D^2
  at M = 2, the only M it uses (the two expressions differ at other M).
- The other reading of the equations, M maps W^up_m of D x 2D (U 2D wide, half per direction)
  and no W^F, W^B, gives 9 D^2 + 2 M D^2 at every M but runs every map at length J: 6.5 L D^2
  per layer (XL: 256.2 G, 8.5 % under the paper's 280) against its stated 7.5 L D^2. The
  reading kept here matches 7.5 L D^2 and lands nearer 280.
- The residual stream lives at the shortened length J (the layer's input and output I, O
  are J x D): the input embedding maps the M channels-vectors of each group of M tokens to
  one D-vector and the final layer maps back, so only the dense parts see length J.
  Groups are M neighbours along a row (W must be divisible by M).
- Class and timestep conditioning at every position as in DiT: c = t_emb + y_emb drives an
  adaLN-Zero shift, scale (of the layer-normalised input) and gate (of O) in every layer.
- DiT's fixed 2-D sin-cos positional embedding is added on the J grid (H x W/M).
- S4D with N = 32 complex modes per channel (S4D's default state size 64) in each direction.

The paper's figures against this model (DiffuSSM-XL: D 1152, 29 layers, M 2, 256 px so L 1024),
counted as DiT counts (`python -m bench.flops`: matrix-product multiply-adds of one forward at
batch 1 and every parameter with the fixed positional embedding, which reproduce DiT-XL/2's
118.6 G and 675,129,632 exactly):
- The paper states 9 D^2 + 2 M D^2 = 13 D^2 of linear maps per layer, about 7.5 L D^2
  multiply-adds per layer at M = 2, and 673M parameters and 280 GFLOPs in all.
- This model: 630,949,264 parameters (-6.25 %) and 297.90 G multiply-adds (+6.4 %), of which
  the linear maps 29 x 7.5 L D^2 = 295.57 G, the S4D kernels 2.19 G (once per batch).
- The paper's totals contradict its per-layer figures: its own linear maps, 29 x 7.5 x 1024 x
  1152^2 = 295.57 G, exceed its 280 G total by 5.6 %; and 29 x 13 D^2 = 500.3M leaves 172.7M
  where DiT's adaLN-Zero (one residual branch: 3 D^2), its embedders and the S4D here account for
  130.6M. Solved together for the linear maps, the two totals ask for 14.09 D^2 per layer, all
  of it at the shortened length J (x + y = 14.09, x J + y L = 7.05 L: y = 0.00): one D^2 more
  than 9 D^2 + 2 M D^2 and no map at full length, where 7.5 L D^2 needs one (13 J-rate D^2 give
  6.5 L D^2). No equation of the paper describes such a map, so none is added: this model keeps
  the stated per-layer figures, and the residuals above are the paper's inconsistency.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from gspn_jax.models.dit import PosEmbed
from gspn_jax.models.layers import (FinalLayer, LabelEmbedder, TimestepEmbedder, forward_with_cfg, modulate,
                                    shard_batch, split_key, xavier_uniform, zeros)
from gspn_jax.models.ssm import S4D


def gelu(x):
  return nnx.gelu(x, approximate=True)


def sincos_pos_embed(embed_dim, grid_h, grid_w):
  """DiT's 2-D sin-cos embedding on a (grid_h, grid_w) grid: half the channels encode w, half h."""
  def emb_1d(dim, pos):
    omega = 1.0 / 10000 ** (np.arange(dim // 2, dtype=np.float64) / (dim / 2.0))
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)

  gw, gh = np.meshgrid(np.arange(grid_w, dtype=np.float64), np.arange(grid_h, dtype=np.float64))
  emb = np.concatenate([emb_1d(embed_dim // 2, gw), emb_1d(embed_dim // 2, gh)], axis=1)
  return emb.reshape(grid_h, grid_w, embed_dim)


def whole(param):
  """An FSDP-sharded parameter gathered in its stored shape (before it is reshaped). No-op without a mesh."""
  if jax.sharding.get_abstract_mesh().empty:
    return param
  return jax.lax.with_sharding_constraint(param, jax.sharding.PartitionSpec())


class HourglassDown(nnx.Module):
  """W^down_m, m < M: token l = jM + m of Y (2D channels) -> channels [D_m m, D_m (m+1)) of I'_j.

  One (M * 2D, D_m) kernel holds the M maps stacked, so it shards like any Linear."""

  def __init__(self, width, ratio, *, dtype, rngs):
    self.ratio, self.dtype = ratio, dtype
    self.kernel = nnx.Param(jax.vmap(lambda k: xavier_uniform(k, (width, width // ratio)))(
        jax.random.split(rngs.params(), ratio)).reshape(ratio * width, width // ratio))
    self.bias = nnx.Param(jnp.zeros((width,)))

  def __call__(self, y):
    """y: (B, H, W, 2D) full length -> (B, H, W/M, 2D) shortened."""
    b, h, w, c = y.shape
    m = self.ratio
    y = y.reshape(b, h, w // m, m, c).astype(self.dtype)
    kernel = whole(self.kernel[...]).astype(self.dtype).reshape(m, c, c // m)
    out = jnp.einsum("bhjmc,mcd->bhjmd", y, kernel).reshape(b, h, w // m, c)
    return out + self.bias[...].astype(self.dtype)


class DiffuSSMBlock(nnx.Module):
  """I -> I + gate * O(modulate(LN(I), shift, scale)): one gated bidirectional SSM layer."""

  def __init__(self, hidden_size, ratio=2, state_size=32, *, dtype, rngs):
    d, m = hidden_size, ratio
    self.ratio, self.dtype = m, dtype
    lin = functools.partial(nnx.Linear, kernel_init=xavier_uniform, bias_init=zeros, dtype=dtype, rngs=rngs)
    self.norm = nnx.LayerNorm(d, epsilon=1e-6, use_bias=False, use_scale=False, rngs=rngs)
    self.W0 = lin(d, d)
    self.W_up = lin(d, m * d)  # the M maps W^up_m side by side
    self.ssm_forward = S4D(d, state_size, rngs=rngs)
    self.ssm_backward = S4D(d, state_size, reverse=True, rngs=rngs)
    self.W_forward = lin(d, d)
    self.W_backward = lin(d, d)
    self.W_down = HourglassDown(2 * d, m, dtype=dtype, rngs=rngs)
    self.W1 = lin(d, d)
    self.W2 = lin(2 * d, d)
    self.W3 = lin(d, d)
    self.adaLN_modulation = nnx.Linear(d, 3 * d, kernel_init=zeros, bias_init=zeros, dtype=dtype, rngs=rngs)

  def hourglass_up(self, i):
    """I (B, H, W/M, D) -> U (B, H, W, D): each shortened token feeds M full-length tokens."""
    b, h, wj, d = i.shape
    return gelu(self.W_up(gelu(self.W0(i)))).reshape(b, h, wj * self.ratio, d)

  def bidirectional_ssm(self, u):
    """U (B, H, W, D) -> Y (B, H, W, 2D), both directions over the row-major sequence of H W tokens."""
    b, h, w, d = u.shape
    seq = shard_batch(u.reshape(b, h * w, d))
    y_f = self.W_forward(self.ssm_forward(seq).astype(self.dtype))
    y_b = self.W_backward(self.ssm_backward(seq).astype(self.dtype))
    return jnp.concatenate([y_f, y_b], axis=-1).reshape(b, h, w, 2 * d)

  def __call__(self, x, c):
    """x: (B, H, W/M, D) fp32 residual stream at the shortened length; c: (B, D)."""
    shift, scale, gate = jnp.split(shard_batch(self.adaLN_modulation(nnx.silu(c))).astype(jnp.float32), 3, axis=-1)
    i = modulate(self.norm(x), shift, scale).astype(self.dtype)
    y = shard_batch(self.bidirectional_ssm(shard_batch(self.hourglass_up(i))))
    i_short = gelu(self.W_down(y))
    o = self.W3(gelu(self.W2(i_short)) * gelu(self.W1(i)))
    return x + gate[:, None, None, :] * o.astype(jnp.float32)


def _call_block(block, x, c):
  return block(x, c)


class DiffuSSM(nnx.Module):
  """Class-conditional DiffuSSM backbone: model(x, t, y) -> (B, H, W, 2C)."""

  def __init__(self, *, input_size=32, in_channels=4, hidden_size=1152, depth=29, ratio=2, state_size=32,
               num_classes=1000, class_dropout_prob=0.1, learn_sigma=True, remat=False, dtype=jnp.float32,
               rngs):
    if input_size % ratio or (2 * hidden_size) % ratio:
      raise ValueError(f"the hour-glass ratio M={ratio} must divide input_size={input_size} and "
                       f"2 * hidden_size={2 * hidden_size}; change ratio or the sizes")
    self.input_size, self.in_channels, self.ratio = input_size, in_channels, ratio
    self.out_channels = in_channels * 2 if learn_sigma else in_channels
    self.num_classes, self.remat, self.dtype = num_classes, remat, dtype
    # M neighbouring tokens -> one stream vector (and back in the final layer).
    self.x_embedder = nnx.Linear(ratio * in_channels, hidden_size, kernel_init=xavier_uniform, bias_init=zeros,
                                 dtype=dtype, rngs=rngs)
    self.pos_embed = PosEmbed(jnp.asarray(sincos_pos_embed(hidden_size, input_size, input_size // ratio),
                                          jnp.float32))
    self.t_embedder = TimestepEmbedder(hidden_size, dtype=dtype, rngs=rngs)
    self.y_embedder = LabelEmbedder(num_classes, hidden_size, class_dropout_prob, rngs=rngs)
    self.blocks = nnx.List([DiffuSSMBlock(hidden_size, ratio, state_size, dtype=dtype, rngs=rngs)
                            for _ in range(depth)])
    self.final_layer = FinalLayer(hidden_size, 1, ratio * self.out_channels, dtype=dtype, rngs=rngs)

  def __call__(self, x, t, y, key=None):
    """x: (B, H, W, C); t: (B,); y: (B,). key enables label drop (training)."""
    (label_key,) = split_key(key, 1)
    b, h, w, ch = x.shape
    pos = self.pos_embed[...]
    if (h, w // self.ratio) != pos.shape[:2] or w % self.ratio:
      raise ValueError(f"DiffuSSM built for input_size={self.input_size} got {h}x{w}; "
                       "its positional embedding fixes the resolution")
    tokens = x.astype(self.dtype).reshape(b, h, w // self.ratio, self.ratio * ch)
    z = shard_batch(self.x_embedder(tokens).astype(jnp.float32) + pos)
    c = shard_batch((self.t_embedder(t) + self.y_embedder(y, label_key)).astype(jnp.float32))
    call = nnx.remat(_call_block) if self.remat else _call_block
    for blk in self.blocks:
      z = shard_batch(call(blk, z, c))
    out = shard_batch(self.final_layer(z, c))  # (B, H, W/M, M * 2C)
    return out.reshape(b, h, w, self.out_channels).astype(jnp.float32)

  def forward_with_cfg(self, x, t, y, cfg_scale, cfg_channels=3):
    return forward_with_cfg(self, x, t, y, cfg_scale, cfg_channels)


def layer_linear_params(hidden_size, ratio=2):
  """Weights of one layer's linear maps (biases excluded), from the equations: (11 + M) D^2."""
  return (11 + ratio) * hidden_size ** 2


def layer_linear_macs(hidden_size, length, ratio=2):
  """Multiply-adds of one layer's linear maps on L tokens: 5 D^2 at length L/M (W^0, W^1, W^2,
  W^3), W^up L D^2, W^F and W^B 2 L D^2, W^down 4 L D^2 / M; 7.5 L D^2 at M = 2."""
  d, l = hidden_size, length
  return 5 * d * d * l // ratio + l * d * d + 2 * l * d * d + 4 * l * d * d // ratio


# Widths of the paper's scaling study (S 384, L 768, XL 1152); XL has 29 layers (673M
# parameters in the paper). The paper gives no depth for S and L: DiT's depth at that width.
_SIZES = {"S": (384, 12), "L": (768, 24), "XL": (1152, 29)}
DiffuSSM_models = {f"DiffuSSM-{s}": functools.partial(DiffuSSM, hidden_size=d, depth=n)
                   for s, (d, n) in _SIZES.items()}
