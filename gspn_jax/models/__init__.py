"""Model registries named as in the papers: GSPN_models["GSPN-XL/2"], DiT_models["DiT-XL/2"],
DiffuSSM_models["DiffuSSM-XL"]."""

from gspn_jax.models.diffussm import DiffuSSM, DiffuSSM_models
from gspn_jax.models.dit import DiT, DiT_models
from gspn_jax.models.gspn import GSPN, GSPN_models

ARCHITECTURES = {"GSPN": GSPN, "DiT": DiT, "DiffuSSM": DiffuSSM}


def create_model(name, **kwargs):
  """A registry entry ("GSPN-S/2", "DiT-XL/2", "DiffuSSM-XL", ...) or a bare architecture ("GSPN", "DiT", "DiffuSSM")
  with its sizes in kwargs."""
  registry = {**GSPN_models, **DiT_models, **DiffuSSM_models, **ARCHITECTURES}
  if name not in registry:
    raise ValueError(f"unknown model {name!r}; choose one of {sorted(registry)}")
  return registry[name](**kwargs)


def count_params(model):
  """Number of parameters, fixed positional embeddings included (as DiT's and GSPN's counts do)."""
  import jax
  from flax import nnx

  from gspn_jax.models.dit import PosEmbed

  state = nnx.state(model, nnx.Any(nnx.Param, PosEmbed))
  return sum(x.size for x in jax.tree.leaves(state))


__all__ = ["GSPN", "GSPN_models", "DiT", "DiT_models", "DiffuSSM", "DiffuSSM_models", "create_model", "count_params"]
