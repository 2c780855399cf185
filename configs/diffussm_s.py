"""DiffuSSM-S on ImageNet 256 latents with the DiffuSSM-XL recipe: a small model for ablations.

  python main.py --config configs/diffussm_s.py --workdir runs/diffussm_s

Not yet measured.
"""

from configs import diffussm_xl


def get_config():
  c = diffussm_xl.get_config(size="S")
  c.compute_dtype = "float32"
  return c
