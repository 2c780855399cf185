"""SiT's transport objective and the flow samplers, on problems with known answers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gspn_jax.transport import Transport
from gspn_jax.transport.integrators import dopri5, euler_maruyama, ode_fixed
from gspn_jax.transport.sampling import flow_sample, guided_model

MU, S = 0.7, 0.4  # toy data x_1 ~ N(MU, S^2) per element


def _pair(shape=(3, 4, 4, 2)):
  x0 = jax.random.normal(jax.random.key(0), shape)
  x1 = jax.random.normal(jax.random.key(1), shape) * 0.5 + 0.2
  return x0, x1


@pytest.mark.parametrize("path_type", ["Linear", "GVP"])
def test_path_velocity_is_the_time_derivative(path_type):
  path = Transport(path_type=path_type).path
  x0, x1 = _pair()
  t, h = jnp.array([0.2, 0.5, 0.9]), 1e-3
  _, ut = path.plan(t, x0, x1)
  numeric = (path.plan(t + h, x0, x1)[0] - path.plan(t - h, x0, x1)[0]) / (2 * h)
  np.testing.assert_allclose(ut, numeric, atol=2e-3)
  xt, _ = path.plan(jnp.array([0.0, 1.0, 1.0]), x0, x1)
  np.testing.assert_allclose(xt[0], x0[0], atol=1e-6)  # t = 0 is noise, t = 1 is data
  np.testing.assert_allclose(xt[1], x1[1], atol=1e-6)


@pytest.mark.parametrize("path_type", ["Linear", "GVP"])
@pytest.mark.parametrize("prediction", ["velocity", "noise", "score", "data"])
def test_each_prediction_is_zero_loss_for_its_target_and_converts_to_the_path_velocity(path_type, prediction):
  tr = Transport(path_type=path_type, prediction=prediction)
  x0, x1 = _pair()
  t = jnp.array([0.1, 0.5, 0.8])
  xt, ut = tr.path.plan(t, x0, x1)
  sigma = tr.path.sigma(t)[0][:, None, None, None]
  target = {"velocity": ut, "noise": x0, "score": -x0 / sigma, "data": x1}[prediction]
  terms = tr.training_losses(lambda x, tt: target, x1, t, noise=x0)
  np.testing.assert_allclose(terms["loss"], 0.0, atol=1e-10)
  wrong = tr.training_losses(lambda x, tt: target + 0.1, x1, t, noise=x0)["loss"]
  assert np.all(np.asarray(wrong) > 1e-4)
  np.testing.assert_allclose(tr.velocity(target, xt, t), ut, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(tr.score(target, xt, t), -x0 / sigma, rtol=1e-4, atol=1e-4)


def test_logit_normal_times_and_the_interval():
  tr = Transport(prediction="noise", time_sampling="logit_normal", logit_mean=0.5, logit_std=0.8)
  t = np.asarray(tr.sample_timesteps(jax.random.key(0), 20000))
  assert t.min() >= 1e-3 and t.max() <= 1 - 1e-3  # SiT's train_eps for noise prediction
  logit = np.log((t - 1e-3) / (1 - 1e-3 - t))
  assert abs(logit.mean() - 0.5) < 0.03 and abs(logit.std() - 0.8) < 0.03
  u = np.asarray(Transport().sample_timesteps(jax.random.key(1), 20000))
  assert 0 <= u.min() and u.max() <= 1 and abs(u.mean() - 0.5) < 0.01
  assert Transport().interval(sde=True, eval=True, last_step_size=0.04) == (0.0, 0.96)


def test_velocity_direction_term():
  tr = Transport(cosine_weight=0.5)
  x0, x1 = _pair()
  t = jnp.array([0.2, 0.5, 0.7])
  _, ut = tr.path.plan(t, x0, x1)
  same_direction = tr.training_losses(lambda x, tt: 2 * ut, x1, t, noise=x0)
  np.testing.assert_allclose(same_direction["cos"], 0.0, atol=1e-6)
  opposite = tr.training_losses(lambda x, tt: -ut, x1, t, noise=x0)
  np.testing.assert_allclose(opposite["cos"], 2.0, rtol=1e-6)
  np.testing.assert_allclose(opposite["loss"], opposite["mse"] + 0.5 * opposite["cos"], rtol=1e-6)
  with pytest.raises(ValueError, match="velocity"):
    Transport(prediction="noise", cosine_weight=0.1)


def test_fixed_step_orders_and_dopri5_on_a_known_solution():
  f = lambda x, t: jnp.cos(3 * t)[:, None] * x  # x(t) = x(0) exp(sin(3 t) / 3)
  x = jnp.array([[1.0], [-2.0]])
  exact = x * np.exp(np.sin(3.0) / 3)
  err = {}
  for method in ("euler", "heun"):
    for n in (40, 80):
      out, nfe = ode_fixed(f, x, 0.0, 1.0, n, method)
      err[method, n] = float(jnp.abs(out - exact).max())
      assert nfe == n * (1 if method == "euler" else 2)
  assert 1.8 < err["euler", 40] / err["euler", 80] < 2.2  # first order
  assert 3.5 < err["heun", 40] / err["heun", 80] < 5.0   # second order
  out, nfe = jax.jit(lambda x: dopri5(f, x, 0.0, 1.0, atol=1e-9, rtol=1e-7))(x)
  np.testing.assert_allclose(out, exact, rtol=1e-5)
  assert 10 < int(nfe) < 300
  loose, loose_nfe = jax.jit(lambda x: dopri5(f, x, 0.0, 1.0, atol=1e-6, rtol=1e-3))(x)
  np.testing.assert_allclose(loose, exact, rtol=1e-3)
  assert int(loose_nfe) < int(nfe)


def _gaussian_velocity(x, t):
  """The exact velocity field of the linear path for x_1 ~ N(MU, S^2): E[x_1 - x_0 | x_t]."""
  t = t.reshape((-1,) + (1,) * (x.ndim - 1))
  var = t ** 2 * S ** 2 + (1 - t) ** 2
  return MU + (t * S ** 2 - (1 - t)) / var * (x - t * MU)


@pytest.mark.parametrize("sampler,steps,kw,tol", [
    ("euler", 50, {}, 0.1), ("heun", 10, {}, 0.015), ("heun", 40, {}, 1e-3),  # second order: 4x steps, 1/16
    ("dopri5", 0, {}, 0.03), ("dopri5", 0, dict(atol=1e-8, rtol=1e-6), 2e-6)])
def test_ode_samplers_follow_the_exact_flow_of_a_gaussian(sampler, steps, kw, tol):
  z = jax.random.normal(jax.random.key(0), (256, 2, 2, 1))
  out, _ = jax.jit(lambda z: flow_sample(Transport(), _gaussian_velocity, z, None, sampler=sampler,
                                         num_steps=steps, **kw))(z)
  np.testing.assert_allclose(out, MU + S * z, atol=tol)  # the ODE maps z to MU + S z


def test_sde_sampler_reaches_the_data_distribution():
  z = jax.random.normal(jax.random.key(0), (1024, 2, 2, 1))
  out, nfe = jax.jit(lambda z, k: flow_sample(Transport(), _gaussian_velocity, z, k, sampler="sde",
                                              num_steps=100))(z, jax.random.key(1))
  out = np.asarray(out).ravel()
  assert int(nfe) == 100  # 99 Euler-Maruyama steps and the last "Mean" step
  assert abs(out.mean() - MU) < 0.03 and abs(out.std() - S) < 0.03
  assert np.corrcoef(out, np.asarray(z).ravel())[0, 1] < 0.9  # stochastic: not the ODE's map


def test_euler_maruyama_without_drift_is_brownian_motion():
  out, _ = euler_maruyama(lambda x, t: jnp.zeros_like(x), lambda x, t: jnp.full_like(x, 0.5),
                          jnp.zeros((4000, 1)), jax.random.key(0), 0.0, 1.0, 11)
  assert abs(float(out.var()) - 1.0) < 0.08  # 2 w t = 1


def test_guidance_interval():
  model = lambda x, t, y: jnp.where((y == 10)[:, None, None, None], 0.0, 1.0) * jnp.ones_like(x)
  fn = guided_model(model, jnp.array([3, 4]), num_classes=10, cfg_scale=2.0, cfg_channels=1, interval=(0.3, 0.6))
  x = jnp.zeros((2, 1, 1, 1))
  np.testing.assert_array_equal(fn(x, jnp.array([0.5, 0.5])), 2.0)  # uncond 0 + 2 (cond 1 - 0)
  np.testing.assert_array_equal(fn(x, jnp.array([0.1, 0.9])), 1.0)  # outside: the conditional output


def test_dopri5_out_of_steps_returns_nan_not_a_short_solve():
  out, _ = dopri5(lambda x, t: jnp.cos(30 * t)[:, None] * x, jnp.ones((2, 1)), 0.0, 1.0, atol=1e-9, rtol=1e-9,
                  max_steps=3)
  assert np.isnan(np.asarray(out)).all()
