"""DiT-S/2 on ImageNet 256 latents with DiT's recipe.

  python main.py --config configs/dit_s2.py --workdir runs/dit_s2
"""

from configs import dit_xl2


def get_config():
  return dit_xl2.get_config(size="S")
