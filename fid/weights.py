"""Inception weights: pytorch-fid's port of the TF FID graph, from a local file first.

The file is pt_inception-2015-12-05-6726825d.pth (also distributed by torch-fidelity as
weights-inception-2015-12-05-6726825d.pth): a PyTorch state dict. It is looked up at
  1. the path given (--inception),
  2. $FID_INCEPTION_WEIGHTS,
  3. ~/.cache/gspn_jax/pt_inception-2015-12-05-6726825d.pth,
and downloaded into 3. where the machine has network. A .npz with the same keys (no
torch needed to read it) is accepted too; `python -m fid.weights FILE.pth` writes one.
"""

import os
import pathlib
import sys
import urllib.request

import numpy as np
from flax import nnx

from fid.inception import InceptionV3
from gspn_jax.convert import read_torch_state_dict

FILENAME = "pt_inception-2015-12-05-6726825d.pth"
URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FILENAME}"
CACHE = pathlib.Path.home() / ".cache" / "gspn_jax" / FILENAME


def find_weights(path=None, download=True):
  candidates = [p for p in (path, os.environ.get("FID_INCEPTION_WEIGHTS"), CACHE) if p]
  for p in candidates:
    if pathlib.Path(p).exists():
      return pathlib.Path(p)
  if path:
    raise FileNotFoundError(f"Inception weights {path} not found")
  if download:
    try:
      CACHE.parent.mkdir(parents=True, exist_ok=True)
      tmp = CACHE.with_name(CACHE.name + ".part")
      print(f"downloading {URL} -> {CACHE}", file=sys.stderr)
      urllib.request.urlretrieve(URL, tmp)
      tmp.replace(CACHE)
      return CACHE
    except OSError as e:
      reason = f" (download failed: {e})"
  else:
    reason = ""
  raise FileNotFoundError(
      f"Inception weights not found{reason}: put {FILENAME} (pytorch-fid's FID weights, from {URL}) "
      f"at {CACHE}, or pass its path with --inception or $FID_INCEPTION_WEIGHTS")


def load_inception(path=None, download=True):
  """The Flax InceptionV3 with pytorch-fid's weights."""
  model = InceptionV3()
  load_state_dict(model, read_torch_state_dict(find_weights(path, download)))
  return model


def load_state_dict(model, state_dict):
  """Fill the model from a PyTorch-named state dict; every parameter must be present."""
  flat = dict(nnx.to_flat_state(nnx.state(model)))
  updated = []
  for path, var in flat.items():
    *module, leaf = path
    torch_leaf = {"kernel": "weight", "mean": "running_mean", "var": "running_var",
                  "scale": "weight", "bias": "bias"}[leaf]
    key = ".".join(map(str, module + [torch_leaf]))
    if key not in state_dict:
      raise KeyError(f"Inception weights lack {key!r}: is this pytorch-fid's FID Inception file?")
    value = np.asarray(state_dict[key], np.float32)
    if leaf == "kernel":
      value = value.transpose(2, 3, 1, 0) if value.ndim == 4 else value.T
    if value.shape != tuple(var.shape):
      raise ValueError(f"Inception weight {key!r} has shape {value.shape}, expected {tuple(var.shape)}")
    updated.append((path, var.replace(value)))
  nnx.update(model, nnx.from_flat_state(updated))
  return model


def main(argv):
  """python -m fid.weights FILE.pth [OUT.npz]: a torch-free copy of the weights."""
  if len(argv) not in (2, 3) or not pathlib.Path(argv[1]).is_file():
    given = f"{argv[1]}: no such file" if len(argv) in (2, 3) else f"{len(argv) - 1} arguments"
    print(f"error: {given}; usage: python -m fid.weights {FILENAME} [OUT.npz] (writes a torch-free copy of the "
          "Inception weights)", file=sys.stderr)
    sys.exit(2)
  src = pathlib.Path(argv[1])
  out = pathlib.Path(argv[2]) if len(argv) > 2 else src.with_suffix(".npz")
  np.savez(out, **read_torch_state_dict(src))
  print(f"wrote {out}")


if __name__ == "__main__":
  main(sys.argv)
