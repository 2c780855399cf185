"""DPM-Solver++(2M) on Gaussian data, where the optimal denoiser and the ODE's solution are exact."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gspn_jax.diffusion import create_diffusion
from gspn_jax.diffusion.dpm_solver import dpm_solver_pp_2m, dpm_solver_schedule

MU, S = 0.3, 0.5  # x_0 ~ N(MU, S^2) per element
ABAR = create_diffusion("").alphas_cumprod


def _optimal_eps(x, t):
  """E[eps | x_t] for Gaussian data, with DiT's variance channels appended; t may fall between
  the training timesteps (log alpha-bar interpolated, as the solver does)."""
  log_abar = jnp.interp(t.astype(jnp.float32), jnp.arange(len(ABAR), dtype=jnp.float32),
                        jnp.asarray(np.log(ABAR), jnp.float32))
  ab = jnp.exp(log_abar)[:, None, None, None]
  a, sig2 = jnp.sqrt(ab), 1 - ab
  x0 = MU + a * S ** 2 / (ab * S ** 2 + sig2) * (x - a * MU)
  return jnp.concatenate([(x - a * x0) / jnp.sqrt(sig2), jnp.zeros_like(x)], axis=-1)


def _exact(x_T):
  """The probability-flow ODE from t = T-1 to 0 (x_t = a_t MU + sqrt(a_t^2 S^2 + sigma_t^2) z),
  then the denoised mean at t = 0, as every sampler here ends."""
  ab_T, ab_0 = ABAR[-1], ABAR[0]
  z = (np.asarray(x_T, np.float64) - np.sqrt(ab_T) * MU) / np.sqrt(ab_T * S ** 2 + 1 - ab_T)
  x_0 = np.sqrt(ab_0) * MU + np.sqrt(ab_0 * S ** 2 + 1 - ab_0) * z
  return MU + np.sqrt(ab_0) * S ** 2 / (ab_0 * S ** 2 + 1 - ab_0) * (x_0 - np.sqrt(ab_0) * MU)


def _error(x, x_T):
  return float(np.abs(np.asarray(x, np.float64) - _exact(x_T)).max())


def test_schedule_ends_at_the_clean_image_with_first_order_ends():
  ts, abar, c_x, c_d, w = dpm_solver_schedule(ABAR, 10)
  assert ts[0] == 999 and ts[-1] == 0 and np.all(np.diff(ts) < 0)
  np.testing.assert_allclose(abar[[0, -1]], ABAR[[999, 0]], rtol=1e-12)
  lam = 0.5 * np.log(abar / (1 - abar))
  np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=5e-3)  # uniform in logSNR (up to the interpolation)
  assert c_x[-1] == 0 and c_d[-1] == 1  # last step: x = the data prediction
  assert w[0] == 0 and w[-1] == 0 and w[-2] == 0 and np.all(w[1:-2] > 0)  # first order at the ends
  assert dpm_solver_schedule(ABAR, 20)[4][-2] > 0  # lower_order_final only below 15 steps
  with pytest.raises(ValueError, match="spacing"):
    dpm_solver_schedule(ABAR, 10, "karras")


def test_dpm_solver_pp_2m_converges_to_the_ode_solution_faster_than_ddim():
  x_T = jax.random.normal(jax.random.key(0), (64, 2, 2, 1))
  dpm = {n: _error(jax.jit(lambda x: dpm_solver_pp_2m(_optimal_eps, ABAR, x, n))(x_T), x_T) for n in (10, 20, 40, 80)}
  ddim = {}
  for n in (10, 20):
    d = create_diffusion(str(n))
    ddim[n] = _error(jax.jit(lambda x: d.ddim_sample_loop(_optimal_eps, x.shape, jax.random.key(1), noise=x))(x_T),
                     x_T)
  # measured: dpm++ 0.021, 0.019, 0.0049, 0.0012; ddim 0.37, 0.18
  assert dpm[10] < 0.25 * ddim[10] and dpm[20] < 0.25 * ddim[20]
  assert dpm[20] / dpm[40] > 3 and dpm[40] / dpm[80] > 3  # second order: 4 in the limit
  assert dpm[80] < 2e-3
