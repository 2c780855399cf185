"""DPM-Solver++(2M) (Lu et al. 2022, arXiv 2211.01095) for the DDPM models' epsilon output.

The data prediction x0 = (x_t - sigma_t eps) / alpha_t is integrated in
lambda = log(alpha_t / sigma_t) with the multistep second-order update (Algorithm 2):
  x_{i+1} = (sigma_{i+1} / sigma_i) x_i - alpha_{i+1} (e^{-h_i} - 1) D_i,
  D_i = x0_i + (x0_i - x0_{i-1}) / (2 r_i),  r_i = h_{i-1} / h_i,
first order (DDIM) at the first step. SDE-DPM-Solver++(2M) (the same paper's solver for
the reverse SDE, diffusers' "sde-dpmsolver++") takes the same D_i with
  x_{i+1} = (sigma_{i+1} / sigma_i) e^{-h_i} x_i - alpha_{i+1} (e^{-2 h_i} - 1) D_i
            + sigma_{i+1} sqrt(1 - e^{-2 h_i}) z_i,
which, like the ancestral sampler, re-injects noise and so forgets part of the model's
earlier errors instead of carrying them along the ODE.

The N model evaluations sit at N timesteps from T - 1 down to 0, by default uniform in
lambda (logSNR, the paper's choice for pixel space; time-uniform, its choice for latent
guided sampling, is an option); the last step, from t = 0 to the clean image (sigma = 0),
is the first-order one, x = x0 (the DDPM sampler's last step likewise returns its mean).
Steps fall between the training timesteps: the model sees a float t, as in DPM-Solver's
discrete-time wrapper. Thresholding of x0 (the paper's remedy for pixel-space models with
guidance): "static" clips to [-1, 1]; "dynamic" (Saharia et al. 2022) divides by the
0.995-quantile s of |x0| where s > 1, after clipping to [-s, s].
"""

import jax
import jax.numpy as jnp
import numpy as np


SPACINGS = ("logSNR", "time_uniform", "time_quadratic")
ALGORITHMS = ("dpmsolver++", "sde-dpmsolver++")
THRESHOLDINGS = ("none", "static", "dynamic")
DYNAMIC_RATIO = 0.995  # DPM-Solver++'s (and Imagen's) quantile


def timesteps(alphas_cumprod, num_steps, spacing="logSNR"):
  """N continuous timesteps from T - 1 down to 0, uniform in lambda, in t or in sqrt(t), and
  alpha-bar at them (log alpha-bar interpolated piecewise linearly in t, as DPM-Solver's
  discrete-time schedule does)."""
  T = len(alphas_cumprod)
  if num_steps < 1:
    raise ValueError(f"DPM-Solver++ needs at least 1 step, got {num_steps}")
  log_abar = np.log(np.asarray(alphas_cumprod, np.float64))
  grid = np.arange(T, dtype=np.float64)
  if spacing == "time_uniform":
    ts = np.linspace(T - 1, 0, num_steps)
  elif spacing == "time_quadratic":
    ts = np.linspace(np.sqrt(T - 1), 0, num_steps) ** 2
  elif spacing == "logSNR":
    lam = 0.5 * (log_abar - np.log1p(-np.exp(log_abar)))  # decreasing in t
    ts = np.interp(np.linspace(lam[-1], lam[0], num_steps), lam[::-1], grid[::-1])
  else:
    raise ValueError(f"spacing={spacing!r}; use one of {SPACINGS}")
  return ts, np.exp(np.interp(ts, grid, log_abar))


def dpm_solver_schedule(alphas_cumprod, num_steps, spacing="logSNR", algorithm="dpmsolver++",
                        lower_order_final=True):
  """(timesteps (N,), alpha-bar at them, x coefficients, D coefficients, noise coefficients,
  1/(2r) weights)."""
  if algorithm not in ALGORITHMS:
    raise ValueError(f"algorithm={algorithm!r}; use one of {ALGORITHMS}")
  ts, abar = timesteps(alphas_cumprod, num_steps, spacing)
  alpha, sigma = np.sqrt(abar), np.sqrt(1 - abar)
  lam = np.log(alpha) - np.log(sigma)
  h = np.append(lam[1:] - lam[:-1], np.inf)  # the last step ends at sigma = 0
  alpha_next, sigma_next = np.append(alpha[1:], 1.0), np.append(sigma[1:], 0.0)
  if algorithm == "dpmsolver++":
    c_x, c_d, c_z = sigma_next / sigma, -alpha_next * np.expm1(-h), np.zeros(num_steps)
  else:
    c_x = sigma_next / sigma * np.exp(-h)
    c_d, c_z = -alpha_next * np.expm1(-2 * h), sigma_next * np.sqrt(-np.expm1(-2 * h))
  w = np.zeros(num_steps)
  if num_steps > 2:  # second order at steps 1..N-2
    w[1:-1] = 1 / (2 * (h[:-2] / h[1:-1]))
  if lower_order_final and num_steps < 15:  # the paper's lower_order_final: first order into t = 0 at few steps
    w[-2] = 0.0
  return ts, abar, c_x, c_d, c_z, w


def threshold(x0, thresholding="none"):
  """x0 clipped into [-1, 1] ("static") or by its per-sample 0.995-quantile ("dynamic")."""
  if thresholding == "none":
    return x0
  if thresholding == "static":
    return jnp.clip(x0, -1.0, 1.0)
  if thresholding != "dynamic":
    raise ValueError(f"thresholding={thresholding!r}; use one of {THRESHOLDINGS}")
  flat = jnp.abs(x0).reshape(x0.shape[0], -1)
  s = jnp.maximum(jnp.quantile(flat, DYNAMIC_RATIO, axis=1), 1.0).reshape((-1,) + (1,) * (x0.ndim - 1))
  return jnp.clip(x0, -s, s) / s


def dpm_solver_pp_2m(model, alphas_cumprod, noise, num_steps, model_kwargs=None, spacing="logSNR",
                     algorithm="dpmsolver++", thresholding="none", lower_order_final=True, key=None):
  """Samples from noise x_T with N = num_steps evaluations of model(x, t, **kw) ->
  (B, ..., C) or (B, ..., 2C) (epsilon first); t is a float timestep in [0, T - 1].
  key: the SDE solver's noise (required for algorithm="sde-dpmsolver++")."""
  if thresholding not in THRESHOLDINGS:
    raise ValueError(f"thresholding={thresholding!r}; use one of {THRESHOLDINGS}")
  if algorithm == "sde-dpmsolver++" and key is None:
    raise ValueError("sde-dpmsolver++ needs a random key for its noise")
  sched = dpm_solver_schedule(alphas_cumprod, num_steps, spacing, algorithm, lower_order_final)
  ts, abar, c_x, c_d, c_z, w = (jnp.asarray(a, jnp.float32) for a in sched)
  c = noise.shape[-1]
  keys = jax.random.split(key if key is not None else jax.random.key(0), num_steps)

  def body(i, carry):
    x, x0_prev = carry
    eps = model(x, jnp.full((x.shape[0],), ts[i]), **(model_kwargs or {}))[..., :c]
    x0 = threshold((x - jnp.sqrt(1 - abar[i]) * eps) / jnp.sqrt(abar[i]), thresholding)
    d = x0 + w[i] * (x0 - x0_prev)
    x = c_x[i] * x + c_d[i] * d
    if algorithm == "sde-dpmsolver++":
      x = x + c_z[i] * jax.random.normal(keys[i], x.shape, x.dtype)
    return x, x0

  x, _ = jax.lax.fori_loop(0, num_steps, body, (noise, noise))
  return x
