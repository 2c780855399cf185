"""The equal-compute study's XS/1 GSPN (patch 1, 8x8 tokens) trained 3x longer than in it.

  python main.py --config configs/digits_xs1.py --workdir runs/xs1_gspn                 # lr 1e-2
  python main.py --config configs/digits_xs1_dit.py --config.optim.lr=0.03 --config.optim.min_lr=3e-5 \
      --workdir runs/xs1_dit                                                             # its DiT

GSPN-adaln-norm of bench/equal_compute.py (adaLN-Zero, a LayerNorm on each core's output);
the digits recipe, 1,200 steps, judged as the study judges (raw weights, 100 samples, 20-step
DDIM, cfg 1.5): does GSPN at patch 1 learn its labels later than DiT?
"""

from configs import digits


def get_config():
  c = digits.get_config()
  c.model.kwargs.update(patch_size=1, hidden_size=32, depth=4, core_norm=True)
  c.num_steps = 1200
  c.optim.decay_epochs = 1200 * 32 / 1437
  c.ema_decay = 0.0  # the EMA is the raw weights, judged as in the study
  c.sample.sampler, c.sample.num_sampling_steps = "ddim", "20"
  c.eval.samples_per_class = 10
  c.ckpt_every, c.sample_every = 100000, 100000
  return c
