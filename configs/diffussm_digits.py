"""A small DiffuSSM on the embedded digits, at the size and budget of the GSPN default.

  python main.py --config configs/diffussm_digits.py --workdir runs/diffussm_digits

Hidden 64, 3 layers (M = 2: the SSM runs over all 64 pixels, the dense parts over 32),
trained with configs/digits.py's recipe (3,000 steps at batch 32, lr 1e-2 cosine, EMA
0.998) and judged the same way (conditional accuracy and feature FID of cfg-1.5 samples).
"""

from configs import digits


def get_config():
  c = digits.get_config()
  c.model.name = "DiffuSSM"
  c.model.kwargs = {"hidden_size": 64, "depth": 3}
  return c
