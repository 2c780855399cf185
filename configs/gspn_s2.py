"""GSPN-S/2 on ImageNet 256 latents with the GSPN-XL/2 recipe: a small model for ablations.

  python main.py --config configs/gspn_s2.py --workdir runs/gspn_s2
"""

from configs import gspn_xl2


def get_config():
  c = gspn_xl2.get_config(size="S")
  c.compute_dtype = "float32"
  return c
