"""Sampling from a trained run or an official DiT checkpoint: the library side of sample.py."""

import pathlib

import jax
import numpy as np

from gspn_jax import sampling
from gspn_jax.checkpoint import Checkpointer, latest_complete_step, load_config, step_dirs
from gspn_jax.errors import UsageError
from gspn_jax.transport import sampling as objective_sampling
from gspn_jax.train_state import build_model, init_state, learning_rate_fn, make_optimizer, split_model

# DiT's sample.py: its default labels, and its --vae choices as hub ids.
DIT_CLASS_LABELS = (207, 360, 387, 974, 88, 979, 417, 279)
DIT_VAES = {"ema": "stabilityai/sd-vae-ft-ema", "mse": "stabilityai/sd-vae-ft-mse"}
TORCH_SUFFIXES = (".pt", ".pth", ".npz")


def is_torch_checkpoint(ckpt):
  return ckpt is not None and pathlib.Path(ckpt).suffix in TORCH_SUFFIXES


def resolve_checkpoint(workdir=None, ckpt=None):
  """(workdir, step): --ckpt names a step directory (<workdir>/checkpoints/<step>);
  otherwise the newest step in --workdir."""
  if ckpt:
    path = pathlib.Path(ckpt)
    if not (path.is_dir() and path.name.isdigit() and path.parent.name == "checkpoints"):
      raise UsageError(f"--ckpt {ckpt}: expected a step directory <workdir>/checkpoints/<step>, or an official "
                       "DiT checkpoint (DiT-XL-2-256x256.pt, converted by gspn_jax.convert)")
    return path.parent.parent, int(path.name)
  return pathlib.Path(workdir), None


def load_ema(workdir, step=None):
  """(config, graphdef, rest, EMA parameters, step) of a training run: step, or the
  newest step that reads back whole."""
  config = load_config(workdir)
  graphdef, params, rest = split_model(build_model(config))
  tx = make_optimizer(config, learning_rate_fn(config, steps_per_epoch=1))
  abstract = jax.eval_shape(lambda p: init_state(p, tx, config.seed), params)
  if not step_dirs(pathlib.Path(workdir) / "checkpoints"):
    raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints: train first (python main.py --workdir {workdir})")
  ckpt = Checkpointer(workdir, keep=config.keep_checkpoints, read_only=True)
  state, _, step = ckpt.restore(abstract, step)
  ckpt.close()
  return config, graphdef, rest, state["ema"], step


def newest_step(workdir):
  """The step load_ema(workdir) would take, without restoring anything."""
  return latest_complete_step(pathlib.Path(workdir) / "checkpoints")


def load_official_dit(path, model="DiT-XL/2", image_size=256):
  """(graphdef, rest, params, latent shape) of an official DiT checkpoint through the converter."""
  from flax import nnx

  from gspn_jax import convert
  from gspn_jax.models import DiT_models

  if model not in DiT_models:
    raise UsageError(f"--model {model}: not a DiT size; choose one of {sorted(DiT_models)}")
  if image_size % 8:
    raise UsageError(f"--image-size {image_size}: must be a multiple of 8 (the VAE's factor), e.g. 256 or 512")
  latent = image_size // 8
  net = nnx.eval_shape(lambda: DiT_models[model](input_size=latent, in_channels=4, num_classes=1000,
                                                 rngs=nnx.Rngs(0)))
  state_dict = convert.read_torch_state_dict(path)
  try:  # names and shapes checked on the abstract model first: no memory, no time
    convert.match_state_dict(net, state_dict, "dit")
  except (KeyError, ValueError) as e:
    raise UsageError(f"{path} does not fit {model} at {image_size} px ({str(e).strip(chr(39))}); check --model "
                     "and --image-size") from None
  net = convert.dit_from_torch(DiT_models[model](input_size=latent, in_channels=4, num_classes=1000,
                                                 rngs=nnx.Rngs(0)), state_dict)
  graphdef, params, rest = split_model(net)
  return graphdef, rest, params, (latent, latent, 4)


def decoder_for(config, vae=None):
  """Model-space samples -> images in [-1, 1]: identity for pixel-space data, the VAE
  decoder (a diffusers folder or hub id: `vae`, else config.sample.vae) for latents."""
  if config.data.name == "digits":
    return lambda samples: samples
  from gspn_jax.vae import load_decoder

  return load_decoder(vae or config.sample.vae)


def sample_run(workdir, *, step=None, class_labels=None, per_class=None, cfg_scale=None,
               num_sampling_steps=None, sampler=None, seed=0, batch_size=256, vae=None, dpm_spacing=None,
               dpm_thresholding=None):
  """Samples of a run with its stored sampling settings, each overridable.

  Returns (uint8 images (N, H, W, C), labels, the settings used)."""
  stored = load_config(workdir)  # a flow run refuses DDPM samplers (and vice versa) before loading weights
  objective_sampling.check_sampler(objective_sampling.objective_of(stored), sampler or stored.sample.sampler)
  dpm = objective_sampling.dpm_options(sampler or stored.sample.sampler, dpm_spacing, dpm_thresholding)
  config, graphdef, rest, ema, step = load_ema(workdir, step)
  decode = decoder_for(config, vae)
  s = config.sample
  settings = {"step": step, "cfg_scale": s.cfg_scale if cfg_scale is None else cfg_scale,
              "num_sampling_steps": str(num_sampling_steps or s.num_sampling_steps),
              "sampler": sampler or s.sampler, "seed": seed, "cfg_channels": s.cfg_channels, **dpm}
  image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
  labels = grid_labels(class_labels if class_labels is not None else s.grid_classes, per_class or s.grid_per_class,
                       config.data.num_classes)
  return _sample(graphdef, rest, ema, decode, image_shape, config.data.num_classes, labels, settings,
                 config.diffusion.steps, batch_size, objective_sampling.objective_kwargs(config))


def sample_official_dit(path, *, model="DiT-XL/2", image_size=256, vae="ema", class_labels=None, per_class=1,
                        cfg_scale=4.0, num_sampling_steps=250, sampler="ddpm", seed=0, batch_size=256,
                        dpm_spacing=None, dpm_thresholding=None):
  """DiT's sample.py on an official checkpoint: its defaults (cfg 4.0, 250 DDPM steps,
  its eight labels), decoded by the SD VAE (`vae`: "ema", "mse", a folder or hub id)."""
  from gspn_jax.vae import load_decoder

  graphdef, rest, params, image_shape = load_official_dit(path, model, image_size)
  decode = load_decoder(DIT_VAES.get(vae, vae))
  settings = {"ckpt": str(path), "model": model, "cfg_scale": cfg_scale, "num_sampling_steps": str(num_sampling_steps),
              "sampler": sampler, "seed": seed, "cfg_channels": 3,
              **objective_sampling.dpm_options(sampler, dpm_spacing, dpm_thresholding)}
  labels = grid_labels(class_labels if class_labels is not None else DIT_CLASS_LABELS, per_class, 1000)
  return _sample(graphdef, rest, params, decode, image_shape, 1000, labels, settings, 1000, batch_size,
                 {"objective": "ddpm"})


def grid_labels(classes, per_class, num_classes):
  """Each grid row holds every class once."""
  classes = np.asarray(classes, np.int32)
  if classes.min() < 0 or classes.max() >= num_classes:
    raise UsageError(f"--class-labels {','.join(map(str, classes.tolist()))}: must be in 0..{num_classes - 1}")
  return np.tile(classes, per_class)


def _sample(graphdef, rest, params, decode, image_shape, num_classes, labels, settings, diffusion_steps,
            batch_size, objective_kwargs):
  sample_fn = objective_sampling.make_sampler(
      graphdef, rest, image_shape=image_shape, num_classes=num_classes,
      num_sampling_steps=settings["num_sampling_steps"], sampler=settings["sampler"],
      cfg_scale=settings["cfg_scale"], cfg_channels=settings["cfg_channels"], diffusion_steps=diffusion_steps,
      **{k: v for k, v in settings.items() if k.startswith("dpm_")}, **objective_kwargs)
  samples = sampling.sample_in_batches(sample_fn, params, labels, jax.random.key(settings["seed"]), batch_size)
  return sampling.to_uint8(decode(samples)), labels, settings
