"""Class-conditional sampling with classifier-free guidance, and image grids.

Follows DiT's sample.py: guidance is used when cfg_scale > 1, by running the batch
[z; z] with labels [y; null] through forward_with_cfg and keeping the first half.
"""

import contextlib
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from PIL import Image

from gspn_jax.diffusion import create_diffusion
from gspn_jax.progress import Progress


def make_sampler(graphdef, rest, *, image_shape, num_classes, num_sampling_steps="250", sampler="ddpm",
                 cfg_scale=1.5, cfg_channels=3, diffusion_steps=1000, report_steps=True):
  """A Sampler: jitted sample(params, labels, key) -> (N, H, W, C) model-space samples.
  report_steps=False leaves out the host callback that drives the progress bar (a program
  lowered for another platform than the host's cannot hold one)."""
  diffusion = create_diffusion(str(num_sampling_steps), diffusion_steps=diffusion_steps)
  use_cfg = cfg_scale > 1.0
  ticker = Sampler.Ticker()

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
    if report_steps:
      fn = _ticking(fn, ticker.tick)
    loop = diffusion.p_sample_loop if sampler == "ddpm" else diffusion.ddim_sample_loop
    out = loop(fn, z.shape, k_loop, noise=z, model_kwargs={"y": y})
    return out[:n]

  return Sampler(jax.jit(sample), diffusion.num_timesteps, ticker)


class Sampler:
  """A jitted sampling function that reports each sampling step to an optional Progress."""

  class Ticker:
    progress, last = None, None

    def tick(self, t, _):
      # Once per sampling step, also where each device of a sharded batch calls back.
      if self.progress is not None and int(t) != self.last:
        self.last = int(t)
        self.progress.update()

  def __init__(self, fn, num_steps, ticker):
    self.fn, self.num_steps, self._ticker = fn, num_steps, ticker

  def __call__(self, params, labels, key):
    return self.fn(params, labels, key)

  @contextlib.contextmanager
  def reporting(self, desc, batches=1):
    """A progress bar over the sampling steps of `batches` calls (on process 0)."""
    progress = Progress(batches * self.num_steps, desc=desc, unit="step", enabled=jax.process_index() == 0)
    self._ticker.progress, self._ticker.last = progress, None
    try:
      yield progress
      jax.effects_barrier()  # every step's tick delivered before the bar closes
    finally:
      self._ticker.progress = None
      progress.close()


def _ticking(fn, tick):
  """fn that calls tick(t, _) on the host each time it runs (once per sampling step)."""
  def wrapped(x, t, y):
    out = fn(x, t, y)
    jax.debug.callback(tick, t[0], out[0, 0, 0, 0], ordered=False)  # out: called once it is computed
    return out
  return wrapped


def to_host(x):
  """A (possibly multi-host) jax.Array as one numpy array on every process."""
  if jax.process_count() == 1:
    return np.asarray(x)
  from jax.experimental import multihost_utils

  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def sample_in_batches(sample_fn, params, labels, key, batch_size, desc="sampling"):
  """Samples for any number of labels, batch by batch; batch i uses fold_in(key, i).
  Batches hold at most batch_size samples, fewer when fewer are asked for; a progress
  bar counts sampling steps (for a sample_fn from make_sampler)."""
  labels = np.asarray(labels, np.int32)
  batch_size = min(batch_size, len(labels))
  num_batches = -(-len(labels) // batch_size)
  reporting = (sample_fn.reporting(f"{desc} ({len(labels)})", num_batches) if isinstance(sample_fn, Sampler)
               else contextlib.nullcontext())
  outs = []
  with reporting:
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
