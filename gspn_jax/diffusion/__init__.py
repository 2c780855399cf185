"""DiT's diffusion, in JAX, with DiT's names: create_diffusion("250") etc."""

from gspn_jax.diffusion.gaussian_diffusion import GaussianDiffusion, get_named_beta_schedule
from gspn_jax.diffusion.respace import space_timesteps, spaced_diffusion


def create_diffusion(timestep_respacing, noise_schedule="linear", diffusion_steps=1000):
  """Training: create_diffusion("") (all 1000 steps). Sampling: create_diffusion("250").

  Epsilon prediction with learned-range sigma and the MSE + VLB loss, as in DiT."""
  betas = get_named_beta_schedule(noise_schedule, diffusion_steps)
  if timestep_respacing in (None, ""):
    timestep_respacing = [diffusion_steps]
  return spaced_diffusion(space_timesteps(diffusion_steps, timestep_respacing), betas)


__all__ = ["GaussianDiffusion", "create_diffusion", "space_timesteps", "spaced_diffusion"]
