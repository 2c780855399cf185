"""SiT's transport objective in JAX: interpolant, prediction, loss and time sampling.

`Transport.training_losses` is SiT's loss for a velocity, noise or score model, plus a
data (x_1) prediction; `velocity` and `score` turn any of these outputs into the ODE
drift and the score the samplers integrate. Two additions of later work are options:
logit-normal t (Esser et al. 2024, as in LightningDiT) and LightningDiT's
velocity-direction term, 1 - cos(v_pred, u_t) over the channels at each position.
"""

import jax
import jax.numpy as jnp

from gspn_jax.transport.path import PATHS, expand_t_like_x

PREDICTIONS = ("velocity", "noise", "score", "data")
LOSS_WEIGHTS = (None, "velocity", "likelihood")
TIME_SAMPLINGS = ("uniform", "logit_normal")


def mean_flat(x):
  return jnp.mean(x, axis=tuple(range(1, x.ndim)))


class Transport:

  def __init__(self, *, path_type="Linear", prediction="velocity", loss_weight=None, train_eps=None,
               sample_eps=None, time_sampling="uniform", logit_mean=0.0, logit_std=1.0, cosine_weight=0.0):
    if path_type not in PATHS:
      raise ValueError(f"path_type={path_type!r}; use one of {sorted(PATHS)}")
    if prediction not in PREDICTIONS:
      raise ValueError(f"prediction={prediction!r}; use one of {PREDICTIONS}")
    if loss_weight not in LOSS_WEIGHTS:
      raise ValueError(f"loss_weight={loss_weight!r}; use one of {LOSS_WEIGHTS}")
    if time_sampling not in TIME_SAMPLINGS:
      raise ValueError(f"time_sampling={time_sampling!r}; use one of {TIME_SAMPLINGS}")
    if cosine_weight and prediction != "velocity":
      raise ValueError(f"cosine_weight={cosine_weight} needs prediction='velocity' (it compares velocity directions)")
    self.path = PATHS[path_type]()
    self.prediction = prediction
    self.loss_weight = loss_weight
    # Velocity on the linear and GVP paths is finite on all of [0, 1]; the other outputs
    # divide by sigma_t or alpha_t, so SiT keeps them 1e-3 away from the ends.
    default_eps = 0.0 if prediction == "velocity" else 1e-3
    self.train_eps = default_eps if train_eps is None else train_eps
    self.sample_eps = default_eps if sample_eps is None else sample_eps
    self.time_sampling, self.logit_mean, self.logit_std = time_sampling, logit_mean, logit_std
    self.cosine_weight = cosine_weight

  def interval(self, *, sde=False, eval=False, diffusion_form="sigma", last_step_size=0.0):
    """(t0, t1): SiT's check_interval for the linear and GVP paths."""
    t0, t1 = 0.0, 1.0
    eps = self.sample_eps if eval else self.train_eps
    if self.prediction != "velocity" or sde:
      t0 = eps if (diffusion_form == "SBDM" and sde) or self.prediction != "velocity" else 0.0
      t1 = 1 - eps if (not sde or last_step_size == 0) else 1 - last_step_size
    return t0, t1

  def sample_timesteps(self, key, n):
    """Training times in [t0, t1]: uniform (SiT) or a logit-normal law stretched onto it."""
    t0, t1 = self.interval()
    if self.time_sampling == "uniform":
      u = jax.random.uniform(key, (n,))
    else:
      u = jax.nn.sigmoid(self.logit_mean + self.logit_std * jax.random.normal(key, (n,)))
    return u * (t1 - t0) + t0

  def training_losses(self, model, x_start, t, key=None, model_kwargs=None, noise=None):
    """Per-example loss of model(x_t, t) for data x_start (x_1) at times t (B,)."""
    x1 = x_start
    x0 = jax.random.normal(key, x1.shape, x1.dtype) if noise is None else noise
    xt, ut = self.path.plan(t, x0, x1)
    out = model(xt, t, **(model_kwargs or {}))
    if out.shape != xt.shape:
      raise ValueError(f"model output {out.shape} must match its input {xt.shape}: build flow models with "
                       "learn_sigma=False")
    terms = {}
    if self.prediction == "velocity":
      terms["mse"] = mean_flat((out - ut) ** 2)
    elif self.prediction == "data":
      terms["mse"] = mean_flat((out - x1) ** 2)
    else:
      _, drift_var = self.path.drift(xt, t)
      sigma_t, _ = self.path.sigma(expand_t_like_x(t, xt))
      weight = {None: 1.0, "velocity": (drift_var / sigma_t) ** 2, "likelihood": drift_var / sigma_t ** 2}[
          self.loss_weight]
      target = (out - x0) if self.prediction == "noise" else (out * sigma_t + x0)
      terms["mse"] = mean_flat(weight * target ** 2)
    terms["loss"] = terms["mse"]
    if self.cosine_weight:
      terms["cos"] = mean_flat(1 - _cosine_similarity(out, ut))
      terms["loss"] = terms["mse"] + self.cosine_weight * terms["cos"]
    return terms

  # ---- what the samplers integrate ------------------------------------------------------

  def velocity(self, out, x, t):
    """The probability-flow ODE's drift dx/dt from the model output at (x, t)."""
    if self.prediction == "velocity":
      return out
    if self.prediction == "data":  # x_0 = (x_t - alpha_t x_1) / sigma_t, then u_t
      tt = expand_t_like_x(t, x)
      (alpha_t, d_alpha_t), (sigma_t, d_sigma_t) = self.path.alpha(tt), self.path.sigma(tt)
      return d_alpha_t * out + d_sigma_t * (x - alpha_t * out) / sigma_t
    drift_mean, drift_var = self.path.drift(x, t)
    return -drift_mean + drift_var * self.score(out, x, t)

  def score(self, out, x, t):
    """grad log p_t(x) from the model output."""
    if self.prediction == "noise":
      return out / -self.path.sigma(expand_t_like_x(t, x))[0]
    if self.prediction == "score":
      return out
    velocity = self.velocity(out, x, t) if self.prediction == "data" else out
    return self.path.score_from_velocity(velocity, x, t)


def _cosine_similarity(a, b, eps=1e-8):
  """Over the channel (last) axis, as torch.nn.functional.cosine_similarity."""
  dot = jnp.sum(a * b, axis=-1)
  na = jnp.maximum(jnp.linalg.norm(a, axis=-1), eps)
  nb = jnp.maximum(jnp.linalg.norm(b, axis=-1), eps)
  return dot / (na * nb)
