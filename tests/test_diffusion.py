import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gspn_jax.diffusion import create_diffusion, space_timesteps
from gspn_jax.diffusion.gaussian_diffusion import discretized_gaussian_log_likelihood, normal_kl


@pytest.fixture(scope="module")
def diffusion():
  return create_diffusion("")


def test_linear_betas_and_full_schedule(diffusion):
  assert diffusion.num_timesteps == 1000
  np.testing.assert_allclose(diffusion.betas[[0, -1]], [1e-4, 0.02])
  np.testing.assert_array_equal(diffusion.timestep_map, np.arange(1000))
  assert diffusion.betas.dtype == np.float64


def test_respaced_betas_keep_the_cumulative_alphas(diffusion):
  spaced = create_diffusion("250")
  kept = sorted(space_timesteps(1000, "250"))
  assert len(kept) == 250 and kept[0] == 0 and kept[-1] == 999 and kept[:4] == [0, 4, 8, 12]
  np.testing.assert_array_equal(spaced.timestep_map, kept)
  np.testing.assert_allclose(spaced.alphas_cumprod, diffusion.alphas_cumprod[kept], rtol=1e-12)
  # beta'_i = 1 - abar[k_i] / abar[k_{i-1}]
  abar = diffusion.alphas_cumprod[kept]
  np.testing.assert_allclose(spaced.betas[1:], 1 - abar[1:] / abar[:-1], rtol=1e-12)
  assert sorted(space_timesteps(1000, "ddim25")) == list(range(0, 1000, 40))
  assert sorted(space_timesteps(300, "10,15,20"))[:3] == [0, 11, 22]
  with pytest.raises(ValueError, match="divide"):
    space_timesteps(10, "20")


def test_posterior_is_bayes_rule(diffusion):
  t = jnp.array([1, 10, 500, 999])
  x0 = jax.random.normal(jax.random.key(0), (4, 3, 3, 2))
  xt = jax.random.normal(jax.random.key(1), (4, 3, 3, 2))
  mean, var, logvar = diffusion.q_posterior_mean_variance(x0, xt, t)
  tn = np.asarray(t)
  ab_prev = diffusion.alphas_cumprod[tn - 1]
  alpha, beta = 1 - diffusion.betas[tn], diffusion.betas[tn]
  # q(x_{t-1}|x_0) = N(sqrt(ab_prev) x0, 1 - ab_prev); q(x_t|x_{t-1}) = N(sqrt(alpha) x_{t-1}, beta)
  prec = 1 / (1 - ab_prev) + alpha / beta
  b = lambda a: a[:, None, None, None]
  want_mean = b(1 / prec) * (b(np.sqrt(ab_prev) / (1 - ab_prev)) * x0 + b(np.sqrt(alpha) / beta) * xt)
  np.testing.assert_allclose(mean, want_mean, rtol=1e-4, atol=1e-5)
  np.testing.assert_allclose(var[:, 0, 0, 0], 1 / prec, rtol=1e-5)
  np.testing.assert_allclose(logvar[:, 0, 0, 0], np.log(1 / prec), rtol=1e-5)


def test_q_sample_is_the_closed_form(diffusion):
  x0 = jax.random.normal(jax.random.key(0), (2, 4, 4, 1))
  noise = jax.random.normal(jax.random.key(1), x0.shape)
  t = jnp.array([0, 700])
  ab = diffusion.alphas_cumprod[np.asarray(t)][:, None, None, None]
  np.testing.assert_allclose(diffusion.q_sample(x0, t, noise), np.sqrt(ab) * x0 + np.sqrt(1 - ab) * noise,
                             rtol=1e-5, atol=1e-6)


def test_normal_kl_closed_form():
  m1, m2, lv1, lv2 = 0.3, -0.5, np.log(0.7), np.log(1.9)
  want = np.log(np.sqrt(1.9) / np.sqrt(0.7)) + (0.7 + (m1 - m2) ** 2) / (2 * 1.9) - 0.5
  np.testing.assert_allclose(normal_kl(m1, lv1, m2, lv2), want, rtol=1e-6)
  np.testing.assert_allclose(normal_kl(m1, lv1, m1, lv1), 0.0, atol=1e-7)


def test_discretized_likelihood_is_a_distribution_over_256_bins():
  bins = jnp.linspace(-1, 1, 256)
  for mean, log_scale in ((0.1, np.log(0.3)), (-0.9, np.log(0.05))):
    lp = discretized_gaussian_log_likelihood(bins, means=mean, log_scales=log_scale)
    np.testing.assert_allclose(jnp.exp(lp).sum(), 1.0, rtol=2e-3)


def _perfect_model(diffusion, x0, noise):
  """Returns the true noise and v = -1 (posterior variance) for x_t = q_sample(x0, t, noise)."""
  def model(x, t):
    return jnp.concatenate([noise, -jnp.ones_like(noise)], axis=-1)
  return model


def test_training_loss_is_zero_for_the_true_posterior_and_vb_ignores_eps(diffusion):
  x0 = jax.random.uniform(jax.random.key(0), (3, 4, 4, 2), minval=-1, maxval=1)
  noise = jax.random.normal(jax.random.key(1), x0.shape)
  t = jnp.array([1, 300, 999])
  terms = diffusion.training_losses(_perfect_model(diffusion, x0, noise), x0, t, noise=noise)
  np.testing.assert_allclose(terms["mse"], 0.0, atol=1e-10)
  np.testing.assert_allclose(terms["vb"], 0.0, atol=1e-4)
  np.testing.assert_allclose(terms["loss"], terms["mse"] + terms["vb"])

  def vb_of(out):
    return diffusion.training_losses(lambda x, t: out, x0, t, noise=noise)["vb"].sum()

  out = jax.random.normal(jax.random.key(2), x0.shape[:-1] + (4,))
  g = jax.grad(vb_of)(out)
  np.testing.assert_array_equal(g[..., :2], 0.0)  # vb trains only the variance channels
  assert float(jnp.abs(g[..., 2:]).sum()) > 0


def test_decoder_nll_at_t0(diffusion):
  x0 = jnp.zeros((1, 2, 2, 1))
  noise = jnp.zeros_like(x0)
  model = lambda x, t: jnp.concatenate([noise, -jnp.ones_like(x)], axis=-1)
  vb = diffusion.training_losses(model, x0, jnp.array([0]), noise=noise)["vb"]
  # Mean exactly 0, std = sqrt(posterior variance clipped at t=1): -log2 P(bin around 0).
  std = np.sqrt(np.exp(diffusion.posterior_log_variance_clipped[0]))
  from scipy.stats import norm
  p = norm.cdf(1 / 255, scale=std) - norm.cdf(-1 / 255, scale=std)
  np.testing.assert_allclose(vb, -np.log2(p), rtol=1e-2)


def test_p_sample_adds_no_noise_at_t0(diffusion):
  x = jax.random.normal(jax.random.key(0), (2, 3, 3, 1))
  model = lambda x, t: jnp.zeros(x.shape[:-1] + (2,))
  t = jnp.zeros((2,), jnp.int32)
  a = diffusion.p_sample(model, x, t, jax.random.key(1))["sample"]
  b = diffusion.p_sample(model, x, t, jax.random.key(2))["sample"]
  np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_samplers_recover_a_point_mass_with_the_optimal_denoiser(sampler):
  spaced = create_diffusion("50")
  x_star = jnp.array([0.5, -0.25, 0.0, 0.75]).reshape(1, 2, 2, 1)

  def model(x, t):  # t arrives as the original timestep index
    ab = jnp.asarray(create_diffusion("").alphas_cumprod, jnp.float32)[t][:, None, None, None]
    eps = (x - jnp.sqrt(ab) * x_star) / jnp.sqrt(1 - ab)
    return jnp.concatenate([eps, -jnp.ones_like(x)], axis=-1)

  loop = spaced.p_sample_loop if sampler == "ddpm" else spaced.ddim_sample_loop
  out = jax.jit(lambda k: loop(model, (3, 2, 2, 1), k))(jax.random.key(0))
  np.testing.assert_allclose(out, jnp.broadcast_to(x_star, out.shape), atol=1e-3)
