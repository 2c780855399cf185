"""SiT's transport (flow matching) objective beside DiT's diffusion: create_objective(config)."""

from gspn_jax.transport.path import GVPPath, LinearPath
from gspn_jax.transport.transport import Transport


def create_objective(config):
  """The training objective of a config: DiT's diffusion ("ddpm") or SiT's transport ("flow")."""
  from gspn_jax.diffusion import create_diffusion
  from gspn_jax.transport.sampling import create_transport, objective_of

  if objective_of(config) == "flow":
    return create_transport(config)
  return create_diffusion("", noise_schedule=config.diffusion.schedule, diffusion_steps=config.diffusion.steps)


__all__ = ["GVPPath", "LinearPath", "Transport", "create_objective"]
