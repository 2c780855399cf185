"""DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095) for the DDPM models' epsilon output.

The data prediction x0 = (x_t - sigma_t eps) / alpha_t is integrated in
lambda = log(alpha_t / sigma_t) with the multistep second-order update (Algorithm 2):
  x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} (e^{-h_i} - 1) D_i,
  D_i = x0_i + (x0_i - x0_{i-1}) / (2 r_i),  r_i = h_{i-1} / h_i,
first order (DDIM) at the first step. The N model evaluations sit at N integer
timesteps spaced uniformly from T - 1 down to 0 (time-uniform, the paper's choice for
guided sampling); the last step, from t = 0 to the clean image (sigma = 0), is the
first-order one, x = x0 (the DDPM sampler's last step likewise returns its mean).
"""

import jax
import jax.numpy as jnp
import numpy as np


def dpm_solver_schedule(alphas_cumprod, num_steps):
  """(timesteps (N,), x coefficients, D coefficients, 1/(2r) weights), float64 numpy."""
  T = len(alphas_cumprod)
  if not 1 <= num_steps <= T:
    raise ValueError(f"DPM-Solver++ steps must be in 1..{T}, got {num_steps}")
  ts = np.round(np.linspace(T - 1, 0, num_steps)).astype(np.int64)
  abar = np.asarray(alphas_cumprod, np.float64)[ts]
  alpha, sigma = np.sqrt(abar), np.sqrt(1 - abar)
  lam = np.log(alpha) - np.log(sigma)
  h = np.append(lam[1:] - lam[:-1], np.inf)  # the last step ends at sigma = 0
  alpha_next, sigma_next = np.append(alpha[1:], 1.0), np.append(sigma[1:], 0.0)
  c_x = sigma_next / sigma
  c_d = -alpha_next * np.expm1(-h)
  w = np.zeros(num_steps)
  if num_steps > 2:  # second order at steps 1..N-2
    w[1:-1] = 1 / (2 * (h[:-2] / h[1:-1]))
  return ts, c_x, c_d, w


def dpm_solver_pp_2m(model, alphas_cumprod, noise, num_steps, model_kwargs=None):
  """Samples from noise x_T with N = num_steps evaluations of model(x, t, **kw) ->
  (B, ..., C) or (B, ..., 2C) (epsilon first)."""
  ts, c_x, c_d, w = (jnp.asarray(a, jnp.int32 if i == 0 else jnp.float32)
                     for i, a in enumerate(dpm_solver_schedule(alphas_cumprod, num_steps)))
  abar = jnp.asarray(np.asarray(alphas_cumprod, np.float64), jnp.float32)
  c = noise.shape[-1]

  def body(i, carry):
    x, x0_prev = carry
    t = jnp.full((x.shape[0],), ts[i], jnp.int32)
    eps = model(x, t, **(model_kwargs or {}))[..., :c]
    x0 = (x - jnp.sqrt(1 - abar[ts[i]]) * eps) / jnp.sqrt(abar[ts[i]])
    d = x0 + w[i] * (x0 - x0_prev)
    return c_x[i] * x + c_d[i] * d, x0

  x, _ = jax.lax.fori_loop(0, num_steps, body, (noise, noise))
  return x
