"""Checks of a run's or a sampling job's settings, before any work, with one-line errors.

check_sampling / check_output serve sample.py and fid.generate (one function per flag
group, so a new sampler brings its own rule here); check_run covers what
config_lib.validate cannot see (the model registry, the dataset, the device count).
"""

import functools
import inspect
import math
import os
import pathlib

from gspn_jax.errors import UsageError

DATASETS = ("digits", "imagenet_latents")


def check_sampling(cfg_scale, num_sampling_steps, diffusion_steps=1000, *, flags=("--cfg-scale",
                                                                                 "--num-sampling-steps")):
  """cfg_scale: finite and >= 1 (1 = no guidance; DiT's sampler guides only above 1).
  num_sampling_steps: a respacing ("250", "ddim50", "10,15,20") of at least 2 steps."""
  from gspn_jax.diffusion import space_timesteps

  if cfg_scale is not None and not (math.isfinite(cfg_scale) and cfg_scale >= 1.0):
    raise UsageError(f"{flags[0]}={cfg_scale}: the guidance scale must be a finite number >= 1 "
                     "(1 = no guidance, 1.5 = DiT's and GSPN's setting)")
  if num_sampling_steps is None:
    return
  try:
    n = len(space_timesteps(diffusion_steps, str(num_sampling_steps)))
  except ValueError as e:
    raise UsageError(f"{flags[1]}={num_sampling_steps}: {e}; use a step count such as 250, or ddim50") from None
  if n < 2:
    raise UsageError(f"{flags[1]}={num_sampling_steps} gives {n} sampling step(s); the samplers need at "
                     f"least 2 (DiT uses 250)")


def check_output(path, flag="--out"):
  """path can be written as a file: not a directory, and its nearest existing folder writable."""
  path = pathlib.Path(path)
  if path.is_dir():
    raise UsageError(f"{flag} {path} is a directory; give a file name such as {path / 'samples.png'}")
  parent = path.parent
  while not parent.exists():
    parent = parent.parent
  if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
    raise UsageError(f"{flag} {path}: {parent} is not a writable folder; choose another path")
  return path


def model_kwargs(model_config, extra):
  """(name, kwargs, ignored) for create_model: config.model.kwargs with `extra` (sizes set by the
  data, dtype, remat). A registry name ("GSPN-S/2") fixes the size, so kwargs that set it
  otherwise are an error; options the model family does not take (a GSPN config's
  drop_path_rate under DiT) are left out, and listed in the returned `ignored`."""
  name = model_config.name
  entry = _registry().get(name)
  if entry is None:
    raise UsageError(f"config.model.name={name!r} is not a model; choose one of {sorted(_registry())}")
  kwargs = dict(model_config.kwargs)
  fixed = getattr(entry, "keywords", {})
  conflicts = {k: (v, fixed[k]) for k, v in kwargs.items() if k in fixed and v != fixed[k]}
  if conflicts:
    have = ", ".join(f"{k}={v}" for k, (v, _) in conflicts.items())
    want = ", ".join(f"{k}={w}" for k, (_, w) in conflicts.items())
    family = name.split("-")[0]
    raise UsageError(f"config.model.name={name!r} fixes {want}, but config.model.kwargs sets {have}: use "
                     f"--config.model.name={family} to size the model by the kwargs, or set them to the "
                     "registry's values")
  target = entry.func if isinstance(entry, functools.partial) else entry
  accepted = inspect.signature(target.__init__ if inspect.isclass(target) else target).parameters
  takes_any = any(p.kind == p.VAR_KEYWORD for p in accepted.values())
  ignored = sorted(k for k in kwargs if not takes_any and k not in accepted)
  kwargs = {k: v for k, v in kwargs.items() if k not in ignored}
  kwargs.update(extra)
  return name, kwargs, ignored


def _registry():
  from gspn_jax import models

  registry = {}
  for attr in dir(models):  # every <Family>_models table and bare architecture
    if attr.endswith("_models") and isinstance(getattr(models, attr), dict):
      registry.update(getattr(models, attr))
  registry.update(getattr(models, "ARCHITECTURES", {}))
  return registry


def check_run(config, num_devices):
  """The settings config_lib.validate cannot judge alone. Returns the warnings to print."""
  warnings = []
  if config.data.name not in DATASETS:
    raise UsageError(f"config.data.name={config.data.name!r} is not a dataset; use one of {DATASETS}")
  if config.data.name == "digits" and config.data.path:
    raise UsageError(f"config.data.path={config.data.path!r} is set, but the digits data is embedded and "
                     "reads no files: leave data.path empty, or set config.data.name=imagenet_latents")
  _, _, ignored = model_kwargs(config.model, {})
  if ignored:
    warnings.append(f"config.model.kwargs {', '.join(ignored)} do not apply to {config.model.name}; ignored")
  per_step = num_devices * config.grad_accum_steps
  if config.batch_size % per_step:
    raise UsageError(f"config.batch_size={config.batch_size} must be divisible by {num_devices} devices x "
                     f"{config.grad_accum_steps} micro-batches; use a multiple of {per_step}")
  if config.sample_every or config.eval.enabled:
    check_sampling(config.sample.cfg_scale, config.sample.num_sampling_steps, config.diffusion.steps,
                   flags=("config.sample.cfg_scale", "config.sample.num_sampling_steps"))
  return warnings
