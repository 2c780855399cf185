"""configs/digits_xs1.py's GSPN with DiT's fixed positional embedding on its tokens.

  python main.py --config configs/digits_xs1_pos.py --config.optim.lr=0.03 --config.optim.min_lr=3e-5 \
      --workdir runs/xs1_gspn_pos_3e-2

The equal-compute study's GSPN-adaln-norm-pos (bench/equal_compute.py) trained 1,200 steps:
does the embedding close the gap to DiT at patch 1 when the labels have time to be learned?
"""

from configs import digits_xs1


def get_config():
  c = digits_xs1.get_config()
  c.model.kwargs.update(pos_embed=True)
  return c
