"""The Stable Diffusion VAE (AutoencoderKL: sd-vae-ft-ema / sd-vae-ft-mse) in Flax NNX.

Module names follow diffusers' state-dict keys, so a diffusers-format folder
(config.json + diffusion_pytorch_model.safetensors) loads by a name map. Latents are
NHWC; DiT and GSPN scale them by 0.18215.
"""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

SCALE = 0.18215
WEIGHTS = "diffusion_pytorch_model.safetensors"


class ResnetBlock2D(nnx.Module):
  def __init__(self, cin, cout, groups, *, rngs):
    self.norm1 = nnx.GroupNorm(cin, num_groups=groups, epsilon=1e-6, rngs=rngs)
    self.conv1 = nnx.Conv(cin, cout, (3, 3), padding=1, rngs=rngs)
    self.norm2 = nnx.GroupNorm(cout, num_groups=groups, epsilon=1e-6, rngs=rngs)
    self.conv2 = nnx.Conv(cout, cout, (3, 3), padding=1, rngs=rngs)
    self.conv_shortcut = nnx.Conv(cin, cout, (1, 1), rngs=rngs) if cin != cout else None

  def __call__(self, x):
    h = self.conv1(nnx.silu(self.norm1(x)))
    h = self.conv2(nnx.silu(self.norm2(h)))
    return (x if self.conv_shortcut is None else self.conv_shortcut(x)) + h


class Attention(nnx.Module):
  """Single-head self-attention over all positions, GroupNorm first, residual added."""

  def __init__(self, channels, groups, *, rngs):
    self.group_norm = nnx.GroupNorm(channels, num_groups=groups, epsilon=1e-6, rngs=rngs)
    self.to_q = nnx.Linear(channels, channels, rngs=rngs)
    self.to_k = nnx.Linear(channels, channels, rngs=rngs)
    self.to_v = nnx.Linear(channels, channels, rngs=rngs)
    self.to_out = nnx.List([nnx.Linear(channels, channels, rngs=rngs)])

  def __call__(self, x):
    b, h, w, c = x.shape
    z = self.group_norm(x).reshape(b, 1, h * w, c).transpose(0, 2, 1, 3)  # (B, T, heads=1, C)
    out = jax.nn.dot_product_attention(self.to_q(z), self.to_k(z), self.to_v(z))
    return x + self.to_out[0](out.reshape(b, h, w, c))


class MidBlock(nnx.Module):
  def __init__(self, channels, groups, *, rngs):
    self.resnets = nnx.List([ResnetBlock2D(channels, channels, groups, rngs=rngs) for _ in range(2)])
    self.attentions = nnx.List([Attention(channels, groups, rngs=rngs)])

  def __call__(self, x):
    return self.resnets[1](self.attentions[0](self.resnets[0](x)))


class Sampler(nnx.Module):
  """Downsample2D (pad right/bottom by 1, 3x3 stride-2 conv) or Upsample2D (nearest 2x, 3x3 conv)."""

  def __init__(self, channels, down, *, rngs):
    self.down = down
    self.conv = nnx.Conv(channels, channels, (3, 3), strides=2 if down else 1, padding="VALID" if down else 1,
                         rngs=rngs)

  def __call__(self, x):
    if self.down:
      return self.conv(jnp.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0))))
    return self.conv(jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2))


class Block(nnx.Module):
  """DownEncoderBlock2D / UpDecoderBlock2D: resnets, then an optional resampler."""

  def __init__(self, cin, cout, layers, groups, resample, *, rngs):
    self.resnets = nnx.List([ResnetBlock2D(cin if i == 0 else cout, cout, groups, rngs=rngs) for i in range(layers)])
    key = "downsamplers" if resample == "down" else "upsamplers"
    setattr(self, key, nnx.List([Sampler(cout, resample == "down", rngs=rngs)]) if resample else None)
    self._key = key

  def __call__(self, x):
    for r in self.resnets:
      x = r(x)
    samplers = getattr(self, self._key)
    return x if samplers is None else samplers[0](x)


class Coder(nnx.Module):
  """The Encoder (down=True) or Decoder of AutoencoderKL."""

  def __init__(self, cin, cout, channels, layers, groups, down, *, rngs):
    chans = list(channels) if down else list(reversed(channels))
    self.conv_in = nnx.Conv(cin, chans[0], (3, 3), padding=1, rngs=rngs)
    n = len(chans)
    blocks = [Block(chans[max(i - 1, 0)], chans[i], layers if down else layers + 1, groups,
                    ("down" if down else "up") if i < n - 1 else None, rngs=rngs) for i in range(n)]
    self.mid_block = MidBlock(chans[-1] if down else chans[0], groups, rngs=rngs)
    setattr(self, "down_blocks" if down else "up_blocks", nnx.List(blocks))
    self.down = down
    self.conv_norm_out = nnx.GroupNorm(chans[-1], num_groups=groups, epsilon=1e-6, rngs=rngs)
    self.conv_out = nnx.Conv(chans[-1], cout, (3, 3), padding=1, rngs=rngs)

  def __call__(self, x):
    x = self.conv_in(x)
    if self.down:
      for b in self.down_blocks:
        x = b(x)
      x = self.mid_block(x)
    else:
      x = self.mid_block(x)
      for b in self.up_blocks:
        x = b(x)
    return self.conv_out(nnx.silu(self.conv_norm_out(x)))


class AutoencoderKL(nnx.Module):
  def __init__(self, *, in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
               layers_per_block=2, norm_num_groups=32, scaling_factor=SCALE, rngs=None):
    rngs = rngs or nnx.Rngs(0)
    self.scaling_factor = scaling_factor
    self.encoder = Coder(in_channels, 2 * latent_channels, block_out_channels, layers_per_block, norm_num_groups,
                         True, rngs=rngs)
    self.decoder = Coder(latent_channels, out_channels, block_out_channels, layers_per_block, norm_num_groups,
                         False, rngs=rngs)
    self.quant_conv = nnx.Conv(2 * latent_channels, 2 * latent_channels, (1, 1), rngs=rngs)
    self.post_quant_conv = nnx.Conv(latent_channels, latent_channels, (1, 1), rngs=rngs)

  def encode(self, images):
    """[-1, 1] NHWC images -> (mean, std) of the diagonal Gaussian posterior (unscaled latents)."""
    moments = self.quant_conv(self.encoder(images))
    mean, logvar = jnp.split(moments, 2, axis=-1)
    return mean, jnp.exp(0.5 * jnp.clip(logvar, -30.0, 20.0))

  def decode(self, latents):
    """Unscaled latents -> [-1, 1] (unclipped) images."""
    return self.decoder(self.post_quant_conv(latents))


def from_config(config, rngs=None):
  return AutoencoderKL(in_channels=config.get("in_channels", 3), out_channels=config.get("out_channels", 3),
                       latent_channels=config.get("latent_channels", 4),
                       block_out_channels=tuple(config.get("block_out_channels", (128, 256, 512, 512))),
                       layers_per_block=config.get("layers_per_block", 2),
                       norm_num_groups=config.get("norm_num_groups", 32),
                       scaling_factor=config.get("scaling_factor", SCALE), rngs=rngs)


_LEGACY_ATTENTION = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}


def load_state_dict(model, state_dict):
  """Fill the VAE from a diffusers state dict (either attention naming)."""
  renamed = {}
  for key, value in state_dict.items():
    parts = key.split(".")
    if len(parts) > 2 and parts[-2] in _LEGACY_ATTENTION:
      parts[-2:-1] = _LEGACY_ATTENTION[parts[-2]].split(".")
    renamed[".".join(parts)] = np.asarray(value, np.float32)
  updated = []
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    *module, leaf = map(str, path)
    key = ".".join(module + ["weight" if leaf in ("kernel", "scale") else leaf])
    if key not in renamed:
      raise KeyError(f"VAE weights lack {key!r}: is this a diffusers AutoencoderKL checkpoint?")
    value = renamed[key]
    if leaf == "kernel":
      value = value.transpose(2, 3, 1, 0) if len(var.shape) == 4 else value.reshape(value.shape[0], -1).T
    if value.shape != tuple(var.shape):
      raise ValueError(f"VAE weight {key!r} has shape {value.shape}, expected {tuple(var.shape)}")
    updated.append((path, var.replace(jnp.asarray(value))))
  nnx.update(model, nnx.from_flat_state(updated))
  return model


def resolve(path_or_repo):
  """A local diffusers-format folder; or, for a hub id such as stabilityai/sd-vae-ft-ema,
  its download (needs network and huggingface_hub)."""
  path = pathlib.Path(path_or_repo)
  if path.is_dir():
    missing = [f for f in ("config.json", WEIGHTS) if not (path / f).exists()]
    if missing:
      raise FileNotFoundError(f"VAE folder {path} lacks {missing}: expected a diffusers AutoencoderKL folder")
    return path
  if path.exists() or str(path_or_repo).count("/") != 1:
    raise FileNotFoundError(f"VAE {path_or_repo} not found: pass a diffusers-format folder "
                            f"(config.json + {WEIGHTS}) or a hub id such as stabilityai/sd-vae-ft-ema")
  try:
    from huggingface_hub import snapshot_download
  except ImportError as e:
    raise FileNotFoundError(f"VAE folder {path_or_repo} not found locally, and downloading it from the hub "
                            "needs `pip install huggingface_hub`") from e
  return pathlib.Path(snapshot_download(str(path_or_repo), allow_patterns=["config.json", WEIGHTS]))


def load_vae(path_or_repo):
  from safetensors.numpy import load_file

  folder = resolve(path_or_repo)
  model = from_config(json.loads((folder / "config.json").read_text()))
  return load_state_dict(model, load_file(str(folder / WEIGHTS)))


def _jitted(model, method):
  graphdef, state = nnx.split(model)
  return functools.partial(jax.jit(lambda state, x: getattr(nnx.merge(graphdef, state), method)(x)), state)


def scaled_decoder(vae):
  """scaled latents (N, h, w, 4) -> images in [-1, 1] (N, 8h, 8w, 3), jitted."""
  decode = _jitted(vae, "decode")
  return lambda latents: decode(latents / vae.scaling_factor)


def scaled_encoder(vae):
  """[-1, 1] images -> (mean, std) of the scaled latent posterior, jitted."""
  encode = _jitted(vae, "encode")

  def fn(images):
    mean, std = encode(images)
    return mean * vae.scaling_factor, std * vae.scaling_factor

  return fn


def load_decoder(path_or_repo):
  return scaled_decoder(load_vae(path_or_repo))


def load_encoder(path_or_repo):
  return scaled_encoder(load_vae(path_or_repo))
