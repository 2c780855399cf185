"""DPM-Solver++(2M) and SDE-DPM-Solver++(2M) on Gaussian data, where the optimal denoiser and the ODE's
solution are exact; their first-order steps against DDIM and the DDPM posterior; diffusers' scheduler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gspn_jax.diffusion import create_diffusion
from gspn_jax.diffusion import dpm_solver
from gspn_jax.diffusion.dpm_solver import dpm_solver_pp_2m, dpm_solver_schedule, threshold

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
  ts, abar, c_x, c_d, c_z, w = dpm_solver_schedule(ABAR, 10)
  assert ts[0] == 999 and ts[-1] == 0 and np.all(np.diff(ts) < 0)
  np.testing.assert_allclose(abar[[0, -1]], ABAR[[999, 0]], rtol=1e-12)
  lam = 0.5 * np.log(abar / (1 - abar))
  np.testing.assert_allclose(np.diff(lam), np.diff(lam)[0], rtol=5e-3)  # uniform in logSNR (up to the interpolation)
  assert c_x[-1] == 0 and c_d[-1] == 1 and not c_z.any()  # last step: x = the data prediction
  assert w[0] == 0 and w[-1] == 0 and w[-2] == 0 and np.all(w[1:-2] > 0)  # first order at the ends
  assert dpm_solver_schedule(ABAR, 20)[5][-2] > 0  # lower_order_final only below 15 steps
  assert dpm_solver_schedule(ABAR, 10, lower_order_final=False)[5][-2] > 0
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


def _respaced(monkeypatch, n):
  """The solver's steps put on the n-step respaced diffusion's timesteps (DDIM's and the DDPM sampler's)."""
  d = create_diffusion(str(n))
  ts = np.asarray(d.timestep_map, np.float64)[::-1]
  monkeypatch.setattr(dpm_solver, "timesteps", lambda a, k, s="logSNR": (ts, ABAR[ts.astype(int)]))
  return d


def test_first_order_steps_are_ddim_and_the_ddpm_posterior(monkeypatch):
  d = _respaced(monkeypatch, 10)
  k = np.arange(9, 0, -1)  # respaced step k goes from timestep_map[k] to timestep_map[k - 1]
  _, abar, c_x, c_d, _, _ = dpm_solver_schedule(ABAR, 10, algorithm="dpmsolver++")
  np.testing.assert_allclose(c_x[:-1], np.sqrt((1 - d.alphas_cumprod_prev[k]) / (1 - d.alphas_cumprod[k])), rtol=1e-12)
  np.testing.assert_allclose(c_d[:-1], np.sqrt(d.alphas_cumprod_prev[k]) - c_x[:-1] * np.sqrt(abar[:-1]), rtol=1e-12)
  # SDE-DPM-Solver++'s first-order step samples q(x_{t-1} | x_t, x0): DDPM's posterior mean and variance
  _, _, c_x, c_d, c_z, _ = dpm_solver_schedule(ABAR, 10, algorithm="sde-dpmsolver++")
  np.testing.assert_allclose(c_x[:-1], d.posterior_mean_coef2[k], rtol=1e-12)
  np.testing.assert_allclose(c_d[:-1], d.posterior_mean_coef1[k], rtol=1e-12)
  np.testing.assert_allclose(c_z[:-1] ** 2, d.posterior_variance[k], rtol=1e-10)


def test_sde_dpm_solver_samples_the_data_distribution():
  x_T = jax.random.normal(jax.random.key(0), (4096, 2, 2, 1))
  run = jax.jit(lambda x, k: dpm_solver_pp_2m(_optimal_eps, ABAR, x, 20, algorithm="sde-dpmsolver++", key=k))
  x = np.asarray(run(x_T, jax.random.key(1)), np.float64)
  ab0 = ABAR[0]
  std = np.sqrt(ab0) * S ** 2 / np.sqrt(ab0 * S ** 2 + 1 - ab0)  # of the denoised mean at t = 0
  # measured: mean off by 0.003, std by +3.4 % (16,384 values: standard errors 0.004 and 0.6 %)
  assert abs(x.mean() - MU) < 0.015 and abs(x.std() / std - 1) < 0.06
  assert np.abs(x - _exact(x_T)).max() > 1  # the noise is re-drawn: not the ODE's sample
  np.testing.assert_array_equal(x, np.asarray(run(x_T, jax.random.key(1)), np.float64))
  with pytest.raises(ValueError, match="random key"):
    dpm_solver_pp_2m(_optimal_eps, ABAR, x_T, 4, algorithm="sde-dpmsolver++")


def test_thresholding():
  x0 = jnp.asarray(np.linspace(-3, 3, 2 * 400).reshape(2, 20, 20, 1) * np.array([1.0, 0.2])[:, None, None, None])
  np.testing.assert_array_equal(threshold(x0, "static"), np.clip(x0, -1, 1))
  s = np.maximum(np.quantile(np.abs(np.asarray(x0)).reshape(2, -1), 0.995, axis=1), 1.0)[:, None, None, None]
  np.testing.assert_allclose(threshold(x0, "dynamic"), np.clip(x0, -s, s) / s, rtol=1e-6)
  assert s[0] > 2.9 and s[1] == 1  # the second sample, inside [-1, 1], is left alone
  with pytest.raises(ValueError, match="thresholding"):
    threshold(x0, "percentile")


@pytest.mark.parametrize("algorithm", ["dpmsolver++", "sde-dpmsolver++"])
def test_against_diffusers_scheduler(monkeypatch, algorithm):
  """Step by step against diffusers' DPMSolverMultistepScheduler on its timesteps, with the same noise."""
  torch = pytest.importorskip("torch", reason="the reference needs torch")
  diffusers = pytest.importorskip("diffusers", reason="the reference is diffusers' DPMSolverMultistepScheduler")
  sch = diffusers.DPMSolverMultistepScheduler(beta_schedule="linear", algorithm_type=algorithm, solver_order=2,
                                              final_sigmas_type="zero", timestep_spacing="linspace")
  sch.alphas_cumprod = torch.tensor(ABAR)  # DiT's float64 schedule (diffusers' betas are float32)
  sch.set_timesteps(20)
  ts = sch.timesteps.numpy().astype(np.float64)  # 999, 949, ..., 50; then a last step to sigma = 0
  x_T = jax.random.normal(jax.random.key(0), (256, 2, 2, 1))
  key = jax.random.key(1)
  zs = [jax.random.normal(k, x_T.shape) for k in jax.random.split(key, 20)]  # the solver's noise draws
  x = torch.tensor(np.asarray(x_T, np.float64))
  eps_fn = jax.jit(lambda x, t: _optimal_eps(x, jnp.full((x.shape[0],), t))[..., :1])
  for t, z in zip(sch.timesteps, zs):
    eps = eps_fn(jnp.asarray(x.numpy(), jnp.float32), float(t))
    x = sch.step(torch.tensor(np.asarray(eps, np.float64)), t, x, variance_noise=torch.tensor(np.asarray(z))).prev_sample
  monkeypatch.setattr(dpm_solver, "timesteps", lambda a, k, s="logSNR": (ts, np.exp(np.interp(ts, np.arange(1000),
                                                                                              np.log(ABAR)))))
  ours = jax.jit(lambda x: dpm_solver_pp_2m(_optimal_eps, ABAR, x, 20, algorithm=algorithm, key=key))(x_T)
  np.testing.assert_allclose(np.asarray(ours), x.numpy(), atol=1e-5)  # measured 9e-7 (float32 against float64)
