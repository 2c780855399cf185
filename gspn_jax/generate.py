"""Sampling from a trained run: the library side of sample.py."""

import pathlib

import jax
import numpy as np

from gspn_jax import sampling
from gspn_jax.checkpoint import Checkpointer, load_config
from gspn_jax.transport import sampling as objective_sampling
from gspn_jax.train_state import build_model, init_state, learning_rate_fn, make_optimizer, split_model


def resolve_checkpoint(workdir=None, ckpt=None):
  """(workdir, step): --ckpt names a step directory (<workdir>/checkpoints/<step>);
  otherwise the newest step in --workdir."""
  if ckpt:
    path = pathlib.Path(ckpt)
    if not (path.is_dir() and path.name.isdigit() and path.parent.name == "checkpoints"):
      raise FileNotFoundError(f"--ckpt {ckpt}: expected a step directory <workdir>/checkpoints/<step>")
    return path.parent.parent, int(path.name)
  return pathlib.Path(workdir), None


def load_ema(workdir, step=None):
  """(config, graphdef, rest, EMA parameters, step) of a training run."""
  config = load_config(workdir)
  graphdef, params, rest = split_model(build_model(config))
  tx = make_optimizer(config, learning_rate_fn(config, steps_per_epoch=1))
  abstract = jax.eval_shape(lambda p: init_state(p, tx, config.seed), params)
  ckpt = Checkpointer(workdir, keep=config.keep_checkpoints)
  if ckpt.latest_step() is None:
    raise FileNotFoundError(f"no checkpoint in {ckpt.directory}: train first (python main.py --workdir {workdir})")
  step = ckpt.latest_step() if step is None else step
  state, _ = ckpt.restore(abstract, step)
  ckpt.close()
  return config, graphdef, rest, state["ema"], step


def decoder_for(config, vae=None):
  """Model-space samples -> images in [-1, 1]: identity for pixel-space data, the VAE
  decoder (a diffusers folder or hub id: `vae`, else config.sample.vae) for latents."""
  if config.data.name == "digits":
    return lambda samples: samples
  from gspn_jax.vae import load_decoder

  return load_decoder(vae or config.sample.vae)


def sample_run(workdir, *, step=None, class_labels=None, per_class=None, cfg_scale=None,
               num_sampling_steps=None, sampler=None, seed=0, batch_size=256, vae=None):
  """Samples of a run with its stored sampling settings, each overridable.

  Returns (uint8 images (N, H, W, C), labels, the settings used)."""
  stored = load_config(workdir)  # a flow run refuses DDPM samplers (and vice versa) before loading weights
  objective_sampling.check_sampler(objective_sampling.objective_of(stored), sampler or stored.sample.sampler)
  config, graphdef, rest, ema, step = load_ema(workdir, step)
  decode = decoder_for(config, vae)
  s = config.sample
  classes = np.asarray(class_labels if class_labels is not None else s.grid_classes, np.int32)
  if classes.min() < 0 or classes.max() >= config.data.num_classes:
    raise ValueError(f"class labels must be in 0..{config.data.num_classes - 1}, got {classes.tolist()}")
  labels = np.tile(classes, per_class or s.grid_per_class)  # each grid row holds every class once
  settings = {"step": step, "cfg_scale": s.cfg_scale if cfg_scale is None else cfg_scale,
              "num_sampling_steps": str(num_sampling_steps or s.num_sampling_steps),
              "sampler": sampler or s.sampler, "seed": seed, "cfg_channels": s.cfg_channels}
  image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
  sample_fn = objective_sampling.make_sampler(
      graphdef, rest, image_shape=image_shape, num_classes=config.data.num_classes,
      num_sampling_steps=settings["num_sampling_steps"], sampler=settings["sampler"],
      cfg_scale=settings["cfg_scale"], cfg_channels=s.cfg_channels, diffusion_steps=config.diffusion.steps,
      **objective_sampling.objective_kwargs(config))
  samples = sampling.sample_in_batches(sample_fn, ema, labels, jax.random.key(seed), batch_size)
  return sampling.to_uint8(decode(samples)), labels, settings
