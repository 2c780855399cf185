"""Class-conditional sampling with classifier-free guidance, and image grids.

Follows DiT's sample.py: guidance is used when cfg_scale > 1, by running the batch
[z; z] with labels [y; null] through forward_with_cfg and keeping the first half.
"""

import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from gspn_jax.diffusion import create_diffusion


def make_sampler(graphdef, rest, *, image_shape, num_classes, num_sampling_steps="250", sampler="ddpm",
                 cfg_scale=1.5, cfg_channels=3, diffusion_steps=1000):
  """A jitted sample(params, labels, key) -> (N, H, W, C) model-space samples."""
  diffusion = create_diffusion(str(num_sampling_steps), diffusion_steps=diffusion_steps)
  use_cfg = cfg_scale > 1.0

  def sample(params, labels, key):
    model = nnx.merge(graphdef, params, rest)
    n = labels.shape[0]
    k_noise, k_loop = jax.random.split(key)
    z = jax.random.normal(k_noise, (n,) + tuple(image_shape))
    if use_cfg:
      z = jnp.concatenate([z, z])
      y = jnp.concatenate([labels, jnp.full_like(labels, num_classes)])
      fn = lambda x, t, y: model.forward_with_cfg(x, t, y, cfg_scale, cfg_channels)
    else:
      y, fn = labels, lambda x, t, y: model(x, t, y)
    loop = diffusion.p_sample_loop if sampler == "ddpm" else diffusion.ddim_sample_loop
    out = loop(fn, z.shape, k_loop, noise=z, model_kwargs={"y": y})
    return out[:n]

  return jax.jit(sample)


def to_host(x):
  """A (possibly multi-host) jax.Array as one numpy array on every process."""
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def sample_in_batches(sample_fn, params, labels, key, batch_size):
  """Samples for any number of labels, batch by batch; batch i uses fold_in(key, i)."""
  labels = np.asarray(labels, np.int32)
  outs = []
  for i, start in enumerate(range(0, len(labels), batch_size)):
    chunk = labels[start:start + batch_size]
    pad = batch_size - len(chunk)  # keep one compiled shape
    padded = np.concatenate([chunk, np.zeros(pad, np.int32)]) if pad else chunk
    outs.append(to_host(sample_fn(params, jnp.asarray(padded), jax.random.fold_in(key, i)))[:len(chunk)])
  return np.concatenate(outs)


def to_uint8(images):
  """[-1, 1] images -> uint8 as DiT's sample_ddp does: clamp(127.5 x + 128, 0, 255), truncated."""
  return np.clip(127.5 * np.asarray(images, np.float32) + 128.0, 0, 255).astype(np.uint8)


def make_grid(images_uint8, nrow, pad=2):
  """(N, H, W, C) uint8 -> one (rows * (H + pad) + pad, ...) uint8 image, white padding."""
  n, h, w, c = images_uint8.shape
  ncol = -(-n // nrow)
  grid = np.full((ncol * (h + pad) + pad, nrow * (w + pad) + pad, c), 255, np.uint8)
  for i, img in enumerate(images_uint8):
    r, col = divmod(i, nrow)
    grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + col * (w + pad):pad + col * (w + pad) + w] = img
  return grid


def save_png(image_hwc_uint8, path, upscale=1):
  """Writes a PNG (greyscale for one channel), nearest-neighbour upscaled for tiny images."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  img = image_hwc_uint8[..., 0] if image_hwc_uint8.shape[-1] == 1 else image_hwc_uint8
  pil = Image.fromarray(img)
  if upscale > 1:
    pil = pil.resize((pil.width * upscale, pil.height * upscale), Image.NEAREST)
  tmp = path.with_name(path.name + ".tmp")
  pil.save(tmp, format="PNG")
  tmp.replace(path)
