"""DiT's Gaussian diffusion in JAX: linear betas, epsilon prediction, learned-range sigma.

Schedules are float64 numpy arrays (as in DiT) gathered per timestep into float32.
Randomness comes from explicit PRNG keys; sampling loops are lax.fori_loop so the whole
loop jit-compiles. A `model` argument is any callable model(x, t, **model_kwargs) ->
(B, H, W, 2C) (epsilon and the variance interpolation v, channels last).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np


def get_named_beta_schedule(schedule_name, num_diffusion_timesteps):
  if schedule_name != "linear":
    raise ValueError(f"unknown beta schedule {schedule_name!r}; DiT and GSPN use 'linear'")
  scale = 1000 / num_diffusion_timesteps  # Ho et al.'s schedule, for any number of steps
  return np.linspace(scale * 0.0001, scale * 0.02, num_diffusion_timesteps, dtype=np.float64)


def mean_flat(x):
  return jnp.mean(x, axis=tuple(range(1, x.ndim)))


def normal_kl(mean1, logvar1, mean2, logvar2):
  """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))), elementwise, in nats."""
  return 0.5 * (-1.0 + logvar2 - logvar1 + jnp.exp(logvar1 - logvar2)
                + (mean1 - mean2) ** 2 * jnp.exp(-logvar2))


def approx_standard_normal_cdf(x):
  return 0.5 * (1.0 + jnp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def discretized_gaussian_log_likelihood(x, *, means, log_scales):
  """Log-likelihood of data in [-1, 1] quantised to 256 bins under a Gaussian."""
  centered = x - means
  inv_stdv = jnp.exp(-log_scales)
  cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered + 1.0 / 255.0))
  cdf_min = approx_standard_normal_cdf(inv_stdv * (centered - 1.0 / 255.0))
  log_cdf_plus = jnp.log(jnp.maximum(cdf_plus, 1e-12))
  log_one_minus_cdf_min = jnp.log(jnp.maximum(1.0 - cdf_min, 1e-12))
  log_probs = jnp.where(
      x < -0.999, log_cdf_plus,
      jnp.where(x > 0.999, log_one_minus_cdf_min, jnp.log(jnp.maximum(cdf_plus - cdf_min, 1e-12))))
  return log_probs


class GaussianDiffusion:
  """Diffusion with epsilon prediction and learned-range variance (DiT's only setting)."""

  def __init__(self, betas, timestep_map=None):
    betas = np.asarray(betas, dtype=np.float64)
    if betas.ndim != 1 or not ((betas > 0).all() and (betas <= 1).all()):
      raise ValueError("betas must be a 1-D array in (0, 1]")
    self.num_timesteps = len(betas)
    # Model timesteps: identity here; the original indices after respacing.
    self.timestep_map = np.arange(self.num_timesteps) if timestep_map is None else np.asarray(timestep_map)
    self.betas = betas
    alphas = 1.0 - betas
    self.alphas_cumprod = np.cumprod(alphas, axis=0)
    self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
    self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)
    self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
    self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
    self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
    self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)
    self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
    # The posterior variance is 0 at t = 0: clip the log with the t = 1 value.
    self.posterior_log_variance_clipped = (
        np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        if len(self.posterior_variance) > 1 else np.array([]))
    self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
    self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

  # ---- forward process -------------------------------------------------------------

  def q_mean_variance(self, x_start, t):
    mean = _extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
    variance = _extract(1.0 - self.alphas_cumprod, t, x_start.shape)
    log_variance = _extract(np.log(1.0 - self.alphas_cumprod), t, x_start.shape)
    return mean, variance, log_variance

  def q_sample(self, x_start, t, noise):
    """Diffuse the data t steps: sample from q(x_t | x_0)."""
    return (_extract(self.sqrt_alphas_cumprod, t, x_start.shape) * x_start
            + _extract(self.sqrt_one_minus_alphas_cumprod, t, x_start.shape) * noise)

  def q_posterior_mean_variance(self, x_start, x_t, t):
    """Mean and variance of q(x_{t-1} | x_t, x_0)."""
    mean = (_extract(self.posterior_mean_coef1, t, x_t.shape) * x_start
            + _extract(self.posterior_mean_coef2, t, x_t.shape) * x_t)
    variance = _extract(self.posterior_variance, t, x_t.shape)
    log_variance_clipped = _extract(self.posterior_log_variance_clipped, t, x_t.shape)
    return mean, variance, log_variance_clipped

  # ---- model posterior ----------------------------------------------------------------

  def _model_output(self, model, x, t, model_kwargs):
    return model(x, jnp.asarray(self.timestep_map)[t], **(model_kwargs or {}))

  def p_mean_variance(self, model, x, t, clip_denoised=False, model_kwargs=None, model_output=None):
    """p(x_{t-1} | x_t): mean, variance, log-variance and the predicted x_0.

    The variance interpolates, in log space, between beta_t and the clipped posterior
    variance with frac = (v + 1) / 2 (learned range)."""
    if model_output is None:
      model_output = self._model_output(model, x, t, model_kwargs)
    c = x.shape[-1]
    if model_output.shape[-1] != 2 * c:
      raise ValueError(f"model output has {model_output.shape[-1]} channels; learned sigma needs 2 x {c}")
    eps, v = model_output[..., :c], model_output[..., c:]
    min_log = _extract(self.posterior_log_variance_clipped, t, x.shape)
    max_log = _extract(np.log(self.betas), t, x.shape)
    frac = (v + 1) / 2
    log_variance = frac * max_log + (1 - frac) * min_log
    pred_xstart = self._predict_xstart_from_eps(x, t, eps)
    if clip_denoised:
      pred_xstart = jnp.clip(pred_xstart, -1, 1)
    mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
    return {"mean": mean, "variance": jnp.exp(log_variance), "log_variance": log_variance,
            "pred_xstart": pred_xstart, "eps": eps}

  def _predict_xstart_from_eps(self, x_t, t, eps):
    return (_extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t
            - _extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape) * eps)

  def _predict_eps_from_xstart(self, x_t, t, pred_xstart):
    return ((_extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - pred_xstart)
            / _extract(self.sqrt_recipm1_alphas_cumprod, t, x_t.shape))

  # ---- training -----------------------------------------------------------------------

  def sample_timesteps(self, key, n):
    """Training timesteps, uniform over the schedule (DiT)."""
    return jax.random.randint(key, (n,), 0, self.num_timesteps)

  def _vb_terms_bpd(self, model_output, x_start, x_t, t, clip_denoised=False):
    """KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t)) in bits per dim; the decoder NLL at t = 0."""
    true_mean, _, true_log_variance = self.q_posterior_mean_variance(x_start, x_t, t)
    out = self.p_mean_variance(None, x_t, t, clip_denoised=clip_denoised, model_output=model_output)
    kl = mean_flat(normal_kl(true_mean, true_log_variance, out["mean"], out["log_variance"])) / np.log(2.0)
    nll = -discretized_gaussian_log_likelihood(x_start, means=out["mean"], log_scales=0.5 * out["log_variance"])
    nll = mean_flat(nll) / np.log(2.0)
    return jnp.where(t == 0, nll, kl)

  def training_losses(self, model, x_start, t, key=None, model_kwargs=None, noise=None):
    """Per-sample loss = MSE(eps) + vb, where vb sees eps stop-gradiented so it trains
    only the variance (DiT's "MSE" loss type with learned sigma)."""
    if noise is None:
      noise = jax.random.normal(key, x_start.shape, x_start.dtype)
    x_t = self.q_sample(x_start, t, noise)
    model_output = self._model_output(model, x_t, t, model_kwargs)
    c = x_t.shape[-1]
    eps, v = model_output[..., :c], model_output[..., c:]
    frozen = jnp.concatenate([jax.lax.stop_gradient(eps), v], axis=-1)
    vb = self._vb_terms_bpd(frozen, x_start, x_t, t)
    mse = mean_flat((noise - eps) ** 2)
    return {"loss": mse + vb, "mse": mse, "vb": vb}

  # ---- sampling -----------------------------------------------------------------------

  def p_sample(self, model, x, t, key, clip_denoised=False, model_kwargs=None):
    """One ancestral step x_t -> x_{t-1}; no noise at t = 0."""
    out = self.p_mean_variance(model, x, t, clip_denoised, model_kwargs)
    noise = jax.random.normal(key, x.shape, x.dtype)
    nonzero = (t != 0).astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
    return {"sample": out["mean"] + nonzero * jnp.exp(0.5 * out["log_variance"]) * noise,
            "pred_xstart": out["pred_xstart"]}

  def ddim_sample(self, model, x, t, key, clip_denoised=False, model_kwargs=None, eta=0.0):
    out = self.p_mean_variance(model, x, t, clip_denoised, model_kwargs)
    eps = self._predict_eps_from_xstart(x, t, out["pred_xstart"])
    alpha_bar = _extract(self.alphas_cumprod, t, x.shape)
    alpha_bar_prev = _extract(self.alphas_cumprod_prev, t, x.shape)
    sigma = eta * jnp.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * jnp.sqrt(1 - alpha_bar / alpha_bar_prev)
    mean = out["pred_xstart"] * jnp.sqrt(alpha_bar_prev) + jnp.sqrt(1 - alpha_bar_prev - sigma ** 2) * eps
    noise = jax.random.normal(key, x.shape, x.dtype)
    nonzero = (t != 0).astype(x.dtype).reshape((-1,) + (1,) * (x.ndim - 1))
    return {"sample": mean + nonzero * sigma * noise, "pred_xstart": out["pred_xstart"]}

  def _loop(self, step_fn, shape, key, noise):
    init_key, loop_key = jax.random.split(key)
    x = jax.random.normal(init_key, shape) if noise is None else noise

    def body(i, x):
      t = jnp.full((shape[0],), self.num_timesteps - 1 - i, jnp.int32)
      return step_fn(x, t, jax.random.fold_in(loop_key, i))["sample"]

    return jax.lax.fori_loop(0, self.num_timesteps, body, x)

  def p_sample_loop(self, model, shape, key, noise=None, clip_denoised=False, model_kwargs=None):
    """Ancestral sampling from pure noise through all (respaced) timesteps."""
    step = lambda x, t, k: self.p_sample(model, x, t, k, clip_denoised, model_kwargs)
    return self._loop(step, shape, key, noise)

  def ddim_sample_loop(self, model, shape, key, noise=None, clip_denoised=False, model_kwargs=None, eta=0.0):
    step = lambda x, t, k: self.ddim_sample(model, x, t, k, clip_denoised, model_kwargs, eta)
    return self._loop(step, shape, key, noise)


def _extract(arr, t, shape):
  """arr[t] as float32, broadcastable to shape (B, ...)."""
  out = jnp.asarray(arr, jnp.float32)[t]
  return out.reshape(out.shape + (1,) * (len(shape) - out.ndim))
