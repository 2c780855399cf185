"""DiffuSSM-XL on ImageNet 256 latents: the paper's recipe, which is DiT's.

  python main.py --config configs/diffussm_xl.py --workdir runs/diffussm_xl

DiffuSSM-XL (D 1152, 29 layers, hour-glass ratio M = 2, no patchification) with DiT's
training setup as the paper keeps it: AdamW lr 1e-4 constant, no weight decay, global batch
256, EMA 0.9999, mixed precision. The paper reports FID-50K 9.07 without guidance (2.28 with
cfg 1.5) after about 660M training images; not yet measured here.
"""

from configs import dit_xl2


def get_config(size="XL"):
  c = dit_xl2.get_config()
  c.model.name = f"DiffuSSM-{size}"
  c.compute_dtype = "bfloat16"
  return c
