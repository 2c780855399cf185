"""DiT-XL/2 on ImageNet 256 latents: DiT's recipe (facebookresearch/DiT train.py).

  python main.py --config configs/dit_xl2.py --workdir runs/dit_xl2

AdamW lr 1e-4 constant, no weight decay, betas (0.9, 0.999), no warm-up, no clipping,
global batch 256, EMA 0.9999 every step. DiT-XL/2's published FID-50K of 9.62 (no
guidance) is at 7M steps; GSPN's comparison table uses 400K.
"""

from gspn_jax.config_lib import base_config


def get_config(size="XL"):
  c = base_config()
  c.data.name = "imagenet_latents"
  c.data.image_size = 32
  c.data.channels = 4
  c.data.num_classes = 1000

  c.model.name = f"DiT-{size}/2"
  c.compute_dtype = "float32"

  c.batch_size = 256
  c.num_steps = 400_000
  c.optim.lr = 1e-4
  c.optim.schedule = "constant"
  c.optim.grad_clip = 0.0
  c.ema_decay = 0.9999

  c.log_every = 100
  c.ckpt_every = 50_000
  c.sample_every = 10000
  c.sample.num_sampling_steps = "250"
  c.sample.cfg_scale = 1.5
  c.sample.cfg_channels = 3
  return c
