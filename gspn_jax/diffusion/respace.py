"""Timestep respacing: sample with a subset of the training timesteps (e.g. "250")."""

import numpy as np

from gspn_jax.diffusion.gaussian_diffusion import GaussianDiffusion


def space_timesteps(num_timesteps, section_counts):
  """The set of original timesteps to keep.

  section_counts: a list of ints, or a comma-separated string, giving the number of
  steps taken from each of equally sized sections of the original process ("250",
  "10,15,20"); or "ddimN" for the DDIM paper's fixed integer stride.
  """
  if isinstance(section_counts, str):
    if section_counts.startswith("ddim"):
      desired = int(section_counts[len("ddim"):])
      for stride in range(1, num_timesteps):
        if len(range(0, num_timesteps, stride)) == desired:
          return set(range(0, num_timesteps, stride))
      raise ValueError(f"cannot create exactly {desired} steps with an integer stride")
    section_counts = [int(x) for x in section_counts.split(",")]
  size_per, extra = divmod(num_timesteps, len(section_counts))
  start, steps = 0, []
  for i, count in enumerate(section_counts):
    size = size_per + (1 if i < extra else 0)
    if size < count:
      raise ValueError(f"cannot divide a section of {size} steps into {count}")
    stride = 1 if count <= 1 else (size - 1) / (count - 1)
    steps += [start + round(j * stride) for j in range(count)]
    start += size
  return set(steps)


def spaced_diffusion(use_timesteps, betas):
  """A GaussianDiffusion over the kept timesteps, with betas recomputed from the kept
  cumulative alphas and model timesteps mapped back to the original indices."""
  use = set(use_timesteps)
  alphas_cumprod = np.cumprod(1.0 - np.asarray(betas, np.float64))
  last, new_betas, timestep_map = 1.0, [], []
  for i, a in enumerate(alphas_cumprod):
    if i in use:
      new_betas.append(1 - a / last)
      last = a
      timestep_map.append(i)
  return GaussianDiffusion(np.array(new_betas), timestep_map=timestep_map)
