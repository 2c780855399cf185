"""Jit-compiled ODE and SDE integrators for drifts f(x, t), t a (B,) array.

Fixed-step loops are lax.fori_loop; the adaptive Dormand-Prince 5(4) solver is a
lax.while_loop with the usual PI-free step-size control (as torchdiffeq's dopri5, which
SiT uses): the error of the embedded 4th-order solution, in a root-mean-square norm
scaled by atol + rtol * max(|y0|, |y1|), accepts or rejects each step. The whole batch
is one state, as in SiT. Each returns (x, number of drift evaluations).
"""

import jax
import jax.numpy as jnp
import numpy as np

ODE_METHODS = ("euler", "heun", "dopri5")


def _full(t, x):
  return jnp.full((x.shape[0],), t, x.dtype)


def ode_fixed(drift, x, t0, t1, num_steps, method="euler"):
  """num_steps equal steps from t0 to t1; Euler (1 evaluation a step) or Heun (2)."""
  dt = (t1 - t0) / num_steps

  def body(i, x):
    t = t0 + i * dt
    k1 = drift(x, _full(t, x))
    if method == "euler":
      return x + dt * k1
    k2 = drift(x + dt * k1, _full(t + dt, x))
    return x + 0.5 * dt * (k1 + k2)

  x = jax.lax.fori_loop(0, num_steps, body, x)
  return x, num_steps * (1 if method == "euler" else 2)


# Dormand & Prince (1980): nodes, stages, 5th-order weights, and 5th minus 4th-order weights.
_C = np.array([0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1, 1])
_A = [[], [1 / 5], [3 / 40, 9 / 40], [44 / 45, -56 / 15, 32 / 9],
      [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
      [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
      [35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84]]
_B = np.array([35 / 384, 0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84, 0])
_B4 = np.array([5179 / 57600, 0, 7571 / 16695, 393 / 640, -92097 / 339200, 187 / 2100, 1 / 40])
_E = _B - _B4


def dopri5(drift, x, t0, t1, atol=1e-6, rtol=1e-3, max_steps=1000):
  """Adaptive Dormand-Prince 5(4) from t0 to t1 (t1 > t0); the FSAL stage is reused. A solve
  that has not reached t1 after max_steps attempted steps returns NaN, never a short state."""
  span = t1 - t0
  k0 = drift(x, _full(t0, x))
  # Hairer, Norsett & Wanner's starting step, one extra evaluation.
  scale = atol + rtol * jnp.abs(x)
  d0, d1 = _rms(x / scale), _rms(k0 / scale)
  h0 = jnp.where((d0 < 1e-5) | (d1 < 1e-5), 1e-6, 0.01 * d0 / d1)
  d2 = _rms((drift(x + h0 * k0, _full(t0 + h0, x)) - k0) / scale) / h0
  h1 = jnp.where(jnp.maximum(d1, d2) <= 1e-15, jnp.maximum(1e-6, h0 * 1e-3), (0.01 / jnp.maximum(d1, d2)) ** (1 / 5))
  h = jnp.minimum(jnp.minimum(100 * h0, h1), span)

  unfinished = lambda t: t < t1 - 1e-7 * abs(span)

  def cond(s):
    t, _, _, _, n, steps = s
    return unfinished(t) & (steps < max_steps)

  def body(s):
    t, h, x, k0, n, steps = s
    h = jnp.minimum(h, t1 - t)
    ks = [k0]
    for i in range(1, 7):
      xi = x + h * sum(a * k for a, k in zip(_A[i], ks) if a)
      ks.append(drift(xi, _full(t + _C[i] * h, x)))
    x_new = xi  # stage 7 is evaluated at the 5th-order solution (FSAL)
    err = h * sum(e * k for e, k in zip(_E, ks) if e)
    ratio = _rms(err / (atol + rtol * jnp.maximum(jnp.abs(x), jnp.abs(x_new))))
    accept = ratio <= 1
    factor = jnp.clip(0.9 * jnp.where(ratio > 0, ratio, 1e-10) ** (-1 / 5), 0.2, 10.0)
    pick = lambda a, b: jnp.where(accept, a, b)
    return (pick(t + h, t), h * factor, pick(x_new, x), pick(ks[6], k0), n + 6, steps + 1)

  t, _, x, _, n, _ = jax.lax.while_loop(cond, body, (jnp.asarray(t0, jnp.float32), h, x, k0, 2, 0))
  return jnp.where(unfinished(t), jnp.nan, x), n


def _rms(x):
  return jnp.sqrt(jnp.mean(jnp.square(x)))


def em_step(drift, diffusion, x, t, dt, w):
  """One Euler-Maruyama step dx = f dt + sqrt(2 w_t) dW with dW = sqrt(dt) w."""
  return x + drift(x, t) * dt + jnp.sqrt(2 * diffusion(x, t)) * w * jnp.sqrt(dt)


def euler_maruyama(drift, diffusion, x, key, t0, t1, num_steps):
  """SiT's loop: num_steps - 1 steps over linspace(t0, t1, num_steps). Returns (x, evaluations)."""
  dt = (t1 - t0) / (num_steps - 1)

  def body(i, x):
    w = jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)
    return em_step(drift, diffusion, x, _full(t0 + i * dt, x), dt, w)

  return jax.lax.fori_loop(0, num_steps - 1, body, x), num_steps - 1
