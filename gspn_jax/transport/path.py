"""Interpolants of SiT (Ma et al. 2024): x_t = alpha_t x_1 + sigma_t x_0.

SiT's time runs from noise (t = 0, x_0 ~ N(0, I)) to data (t = 1, x_1); the model is
fed t in [0, 1]. Each path gives (alpha_t, d alpha_t / dt), (sigma_t, d sigma_t / dt)
and the conversions between velocity, score and noise that the samplers need.
"""

import math

import jax.numpy as jnp


def expand_t_like_x(t, x):
  """(B,) -> (B, 1, ..., 1), broadcastable to x."""
  t = jnp.asarray(t, x.dtype)
  return t.reshape(t.shape + (1,) * (x.ndim - t.ndim))


class LinearPath:
  """Rectified flow / stochastic interpolant: alpha_t = t, sigma_t = 1 - t."""

  def alpha(self, t):
    return t, jnp.ones_like(t)

  def sigma(self, t):
    return 1 - t, -jnp.ones_like(t)

  def d_alpha_alpha_ratio(self, t):
    return 1 / t

  # ---- the SDE whose marginals are the path's (written with the score) -------------

  def drift(self, x, t):
    """(-f, D) as SiT's compute_drift, with f = (alpha_t' / alpha_t) x and
    D = (alpha_t' / alpha_t) sigma_t^2 - sigma_t sigma_t': the velocity is f + D * score."""
    t = expand_t_like_x(t, x)
    ratio = self.d_alpha_alpha_ratio(t)
    sigma_t, d_sigma_t = self.sigma(t)
    return -ratio * x, ratio * sigma_t ** 2 - sigma_t * d_sigma_t

  def diffusion(self, x, t, form="sigma", norm=1.0):
    """The diffusion coefficient w_t of the reverse SDE (SiT's forms; "sigma" is its default)."""
    t = expand_t_like_x(t, x)
    if form == "constant":
      return jnp.full_like(t, norm)
    if form == "SBDM":
      return norm * self.drift(x, t)[1]
    if form == "sigma":
      return norm * self.sigma(t)[0]
    if form == "linear":
      return norm * (1 - t)
    if form == "decreasing":
      return 0.25 * (norm * jnp.cos(math.pi * t) + 1) ** 2
    if form == "increasing-decreasing":
      return norm * jnp.sin(math.pi * t) ** 2
    raise ValueError(f"diffusion form {form!r}; use one of {DIFFUSION_FORMS}")

  # ---- conversions --------------------------------------------------------------------

  def score_from_velocity(self, velocity, x, t):
    t = expand_t_like_x(t, x)
    alpha_t, d_alpha_t = self.alpha(t)
    sigma_t, d_sigma_t = self.sigma(t)
    reverse_ratio = alpha_t / d_alpha_t
    var = sigma_t ** 2 - reverse_ratio * d_sigma_t * sigma_t
    return (reverse_ratio * velocity - x) / var

  def velocity_from_score(self, score, x, t):
    drift_mean, drift_var = self.drift(x, t)
    return drift_var * score - drift_mean

  def plan(self, t, x0, x1):
    """(x_t, u_t): the point on the path and its velocity d x_t / dt."""
    t = expand_t_like_x(t, x1)
    alpha_t, d_alpha_t = self.alpha(t)
    sigma_t, d_sigma_t = self.sigma(t)
    return alpha_t * x1 + sigma_t * x0, d_alpha_t * x1 + d_sigma_t * x0


class GVPPath(LinearPath):
  """Generalised variance preserving: alpha_t = sin(pi t / 2), sigma_t = cos(pi t / 2)."""

  def alpha(self, t):
    return jnp.sin(t * math.pi / 2), math.pi / 2 * jnp.cos(t * math.pi / 2)

  def sigma(self, t):
    return jnp.cos(t * math.pi / 2), -math.pi / 2 * jnp.sin(t * math.pi / 2)

  def d_alpha_alpha_ratio(self, t):
    return math.pi / (2 * jnp.tan(t * math.pi / 2))


PATHS = {"Linear": LinearPath, "GVP": GVPPath}
DIFFUSION_FORMS = ("constant", "SBDM", "sigma", "linear", "decreasing", "increasing-decreasing")
