"""The digits default trained with SiT's flow objective instead of DiT's diffusion.

  python main.py --config configs/digits_flow.py --workdir runs/digits_flow
  python sample.py --workdir runs/digits_flow --sampler dopri5

Linear path, velocity prediction, uniform t (SiT-XL/2's recipe), the same model, budget
and optimizer as configs/digits.py; the report samples with 50 Heun steps (100 model
evaluations, as the digits default's 100 DDPM steps). Not yet measured as `make demo`;
bench/flow.py compares both objectives at a reduced budget.
Any backbone trains with it: --config.objective=flow on any config (set a flow sampler).
"""

from configs import digits


def get_config():
  c = digits.get_config()
  c.objective = "flow"
  c.transport.path_type = "Linear"
  c.transport.prediction = "velocity"
  c.sample.sampler = "heun"
  c.sample.num_sampling_steps = "50"
  return c
