"""The DiT matched in training FLOPs to configs/digits_xs1.py's GSPN (bench/equal_compute.py's XS/1)."""

from configs import digits_xs1


def get_config():
  c = digits_xs1.get_config()
  c.model.name = "DiT"
  c.model.kwargs = dict(hidden_size=28, depth=4, num_heads=2, patch_size=1)
  return c
