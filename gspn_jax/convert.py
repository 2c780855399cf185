"""Load PyTorch state dicts (values as numpy arrays) into the NNX models.

Keys are renamed to NNX paths by a short rule table per model; layouts follow from the
target parameter: Linear (out, in) -> (in, out), Conv2d (O, I, kh, kw) -> (kh, kw, I, O),
1x1 Conv2d -> Linear, LayerNorm weight -> scale. Every key must be used and every
parameter filled, with shapes checked, so a wrong checkpoint fails loudly.
"""

import pathlib
import re

import jax.numpy as jnp
import numpy as np
from flax import nnx

from gspn_jax.models.dit import PosEmbed

_COMMON = [
    (r"^t_embedder\.mlp\.(0|2)\.", r"t_embedder.mlp_\1."),
    (r"\.adaLN_modulation\.1\.", ".adaLN_modulation."),
    (r"\.embedding_table\.weight$", ".embedding_table.embedding"),
    (r"(norm|norm_f)\.weight$", r"\1.scale"),
]
_GSPN = [
    (r"\.(x_conv_down|w_conv_up|l_conv_up|u_conv_up|d_conv)\.weight$", r".spn.\1.weight"),
    (r"\.m_conv\.weight$", ".spn.m_conv"),
]
_DIT = [
    (r"\.mlp\.(fc1|fc2)\.", r".mlp_\1."),
]


def read_torch_state_dict(path):
  """{name: numpy array} from a PyTorch checkpoint: a plain state dict (the official
  DiT-XL-2-256x256.pt), or a DiT training checkpoint ({"model", "ema", ...}: its EMA).
  An .npz of the same names needs no torch."""
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(f"checkpoint {path} not found")
  if path.suffix == ".npz":
    with np.load(path) as f:
      return {k: f[k] for k in f.files}
  try:
    import torch
  except ImportError as e:
    raise ImportError(f"reading {path} needs torch (pip install torch), or an .npz of its state dict") from e
  obj = torch.load(path, map_location="cpu", weights_only=True)
  if "ema" in obj and isinstance(obj["ema"], dict):
    obj = obj["ema"]
  return {k: v.float().numpy() for k, v in obj.items()}


def gspn_from_torch(model, state_dict):
  """Load the released PyTorch GSPN generation model's state dict into a `GSPN`.

  For outputs equal to the released model, build with merge="released" and
  global_last_blocks=False (the released code's effective segment settings).
  """
  return _apply(model, match_state_dict(model, state_dict, "gspn"))


def dit_from_torch(model, state_dict):
  """Load an official DiT state dict (e.g. DiT-XL-2-256x256.pt) into a `DiT`."""
  return _apply(model, match_state_dict(model, state_dict, "dit"))


def match_state_dict(model, state_dict, arch):
  """{parameter path: value in the model's layout} for every parameter, with names and
  shapes checked; `model` may be abstract (nnx.eval_shape) and the values zero-stride
  views (np.broadcast_to), so whole checkpoints can be checked without the memory."""
  rules = {"gspn": _GSPN, "dit": _DIT}[arch] + _COMMON
  targets = dict(nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, PosEmbed))))
  by_name = {".".join(map(str, path)): path for path in targets}
  filled = {}
  for key, value in state_dict.items():
    name = key
    for pattern, repl in rules:
      name = re.sub(pattern, repl, name)
    name = re.sub(r"\.weight$", ".kernel", name)
    if name not in by_name:
      raise KeyError(f"checkpoint key {key!r} (as {name!r}) has no counterpart in {type(model).__name__}; "
                     "is this the right model size and options?")
    path = by_name[name]
    filled[path] = _layout(key, np.asarray(value), targets[path])
  missing = sorted(".".join(map(str, p)) for p in targets if p not in filled)
  if missing:
    raise KeyError(f"checkpoint lacks {len(missing)} parameters of {type(model).__name__}, e.g. {missing[:5]}")
  return filled


def _apply(model, filled):
  targets = dict(nnx.to_flat_state(nnx.state(model, nnx.Any(nnx.Param, PosEmbed))))
  nnx.update(model, nnx.from_flat_state([(p, targets[p].replace(jnp.asarray(v, targets[p].dtype)))
                                         for p, v in filled.items()]))
  return model


def _layout(key, value, target):
  shape = tuple(target.shape)
  if key.endswith(".weight") and len(shape) == 4:  # Conv2d (O, I, kh, kw) -> (kh, kw, I, O)
    value = value.transpose(2, 3, 1, 0)
  elif key.endswith(".weight") and len(shape) == 2 and "embedding_table" not in key:
    value = value.reshape(value.shape[0], -1).T  # Linear, or a 1x1 Conv2d, -> (in, out)
  elif value.size == np.prod(shape):  # m_conv (1, 4, 1, 1), pos_embed (1, T, D)
    value = value.reshape(shape)
  if value.shape != shape:
    raise ValueError(f"checkpoint key {key!r} has shape {value.shape} after layout change, "
                     f"the model expects {shape}")
  return value
