"""DiffuSSM: the S4D long convolution against its recurrence, the hour-glass index maps,
parameter counts against the paper's formula, the model's contract."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gspn_jax.models import DiffuSSM, DiffuSSM_models, count_params, create_model
from gspn_jax.models.diffussm import DiffuSSMBlock, layer_linear_macs, layer_linear_params
from gspn_jax.models.ssm import S4D


def s4d_naive(u, log_dt, log_A_real, A_imag, C, D, reverse):
  """The SSM step by step: x_l = Abar x_{l-1} + Bbar u_l, y_l = 2 Re(C x_l) + D u_l (ZOH, B = 1)."""
  A = -jnp.exp(log_A_real) + 1j * A_imag
  dt = jnp.exp(log_dt)
  Abar = jnp.exp(dt * A)
  Bbar = (Abar - 1.0) / A
  Cc = C[..., 0] + 1j * C[..., 1]
  order = range(u.shape[1] - 1, -1, -1) if reverse else range(u.shape[1])
  x = jnp.zeros((u.shape[0],) + A.shape, jnp.complex64)
  out = [None] * u.shape[1]
  for l in order:
    x = Abar * x + Bbar * u[:, l, :, None]
    out[l] = 2.0 * jnp.sum(Cc * x, axis=-1).real + D[:, 0] * u[:, l]
  return jnp.stack(out, axis=1)


@pytest.mark.parametrize("length,reverse", [(7, False), (13, True)])
def test_s4d_fft_convolution_equals_the_recurrence_and_its_gradient(reverse, length):
  layer = S4D(3, state_size=4, reverse=reverse, dt_min=0.05, dt_max=0.5, rngs=nnx.Rngs(length))
  names = ("log_dt", "log_A_real", "A_imag", "C", "D")
  keys = jax.random.split(jax.random.key(length), len(names) + 2)
  # Move every parameter off its structured init so each gradient entry is exercised.
  params = {n: getattr(layer, n)[...] + 0.1 * jax.random.normal(k, getattr(layer, n).shape)
            for n, k in zip(names, keys)}
  u = jax.random.normal(keys[-2], (2, length, 3))
  w = jax.random.normal(keys[-1], (2, length, 3))

  graphdef = nnx.split(layer)[0]
  fft = lambda u, p: nnx.merge(graphdef, p)(u)

  naive = lambda u, p: s4d_naive(u, *(p[n] for n in names), reverse)
  out_f = fft(u, params)
  naive = jax.jit(naive)
  np.testing.assert_allclose(out_f, naive(u, params), rtol=1e-4, atol=1e-5)
  # Causality: the forward direction never sees later inputs, the backward never earlier ones.
  bumped = u.at[:, length // 2].add(1.0)
  changed = np.abs(np.asarray(fft(bumped, params) - out_f)).max(axis=(0, 2)) > 1e-6
  assert changed.tolist() == [(l <= length // 2) if reverse else (l >= length // 2) for l in range(length)]
  g_fft = jax.jit(jax.grad(lambda u, p: jnp.sum(fft(u, p) * w), argnums=(0, 1)))(u, params)
  g_naive = jax.jit(jax.grad(lambda u, p: jnp.sum(naive(u, p) * w), argnums=(0, 1)))(u, params)
  for a, b in zip(jax.tree.leaves(g_fft), jax.tree.leaves(g_naive)):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def _block(d=8, m=2, seed=0):
  return DiffuSSMBlock(d, m, state_size=4, dtype=jnp.float32, rngs=nnx.Rngs(seed))


@pytest.mark.parametrize("m", [2, 4])
def test_hourglass_shapes_and_index_maps(m):
  b, h, w, d = 1, 3, 4 * m, 8
  blk = _block(d, m)
  i = jax.random.normal(jax.random.key(0), (b, h, w // m, d))
  u, y, i_short, o = jax.jit(lambda i: (blk.hourglass_up(i), blk.bidirectional_ssm(blk.hourglass_up(i)),
                                        blk.W_down(blk.bidirectional_ssm(blk.hourglass_up(i))),
                                        blk(i, jnp.zeros((b, d)))))(i)
  assert u.shape == (b, h, w, d) and y.shape == (b, h, w, 2 * d)
  assert i_short.shape == (b, h, w // m, 2 * d) and o.shape == i.shape
  # U_l reads only I_{floor(l / M)}; I'_j reads only Y_l for l in [jM, jM + M).
  # and channel block m of I'_j comes from token jM + m alone.
  ju = jax.jit(jax.jacobian(lambda i: blk.hourglass_up(i)[0, 1, :, 0]))(i)[:, 0, 1]  # (w, w/M, d)
  jd = jax.jit(jax.jacobian(lambda y: blk.W_down(y)[0, 1]))(y)[:, :, 0, 1]  # (w/M, 2d, w, 2d)
  owner = np.arange(w) // m
  assert (np.abs(ju).sum(-1) > 0).tolist() == [[owner[l] == j for j in range(w // m)] for l in range(w)]
  reads = np.abs(jd).sum(-1).reshape(w // m, m, 2 * d // m, w).sum(2) > 0  # (j, channel block, l)
  assert reads.tolist() == [[[l == j * m + k for l in range(w)] for k in range(m)] for j in range(w // m)]


def _linear_kernels(block):
  """Weights of the layer's linear maps (conditioning and SSM parameters excluded)."""
  maps = ("W0", "W_up", "W_forward", "W_backward", "W_down", "W1", "W2", "W3")
  return sum(getattr(block, n).kernel.size for n in maps)


@pytest.mark.parametrize("m", [2, 4])
def test_layer_linear_maps_follow_the_paper(m):
  d = 48
  blk = nnx.eval_shape(lambda: DiffuSSMBlock(d, m, dtype=jnp.float32, rngs=nnx.Rngs(0)))
  assert _linear_kernels(blk) == layer_linear_params(d, m) == (11 + m) * d * d
  if m == 2:  # the paper's 9 D^2 + 2 M D^2 = 13 D^2 at its M = 2
    assert _linear_kernels(blk) == 9 * d * d + 2 * m * d * d == 13 * d * d


def test_diffussm_xl_parameter_count():
  """DiffuSSM-XL counted from shapes: a one-layer model plus 28 more layers (jax.eval_shape)."""
  one = nnx.eval_shape(lambda: DiffuSSM_models["DiffuSSM-XL"](input_size=32, in_channels=4, num_classes=1000,
                                                              depth=1, rngs=nnx.Rngs(0)))
  block = nnx.eval_shape(lambda: DiffuSSMBlock(1152, 2, dtype=jnp.float32, rngs=nnx.Rngs(0)))
  per_layer = count_params(block)
  total = count_params(one) + 28 * per_layer
  assert _linear_kernels(block) == 13 * 1152 ** 2
  # 13 D^2 linear maps + (8 + M) D biases + adaLN (3 D^2 + 3 D) + two S4D (2 D (4 N + 2)), N = 32.
  assert per_layer == 13 * 1152 ** 2 + 10 * 1152 + 3 * 1152 ** 2 + 3 * 1152 + 2 * 1152 * (4 * 32 + 2)
  assert total == 630_949_264  # the paper states 673M: 6.2 % more (see the model's docstring)


def test_small_model_count_matches_the_per_layer_sum():
  kw = dict(input_size=8, in_channels=1, hidden_size=16, num_classes=10, state_size=4)
  two = count_params(nnx.eval_shape(lambda: DiffuSSM(depth=2, rngs=nnx.Rngs(0), **kw)))
  one = count_params(nnx.eval_shape(lambda: DiffuSSM(depth=1, rngs=nnx.Rngs(0), **kw)))
  block = count_params(nnx.eval_shape(lambda: DiffuSSMBlock(16, 2, 4, dtype=jnp.float32, rngs=nnx.Rngs(0))))
  assert two - one == block


def test_linear_macs_formula_is_7_5_L_D2_at_m2():
  assert layer_linear_macs(1152, 1024, 2) == 7.5 * 1024 * 1152 ** 2


def tiny(**kw):
  kw = {"input_size": 8, "in_channels": 1, "hidden_size": 16, "depth": 2, "num_classes": 10, "state_size": 4,
        "rngs": nnx.Rngs(0), **kw}
  return DiffuSSM(**kw)


def test_output_shape_zero_init_head_and_cfg():
  model = tiny(depth=1)
  x = jax.random.normal(jax.random.key(0), (4, 8, 8, 1))
  t, y = jnp.array([1, 500, 999, 3]), jnp.array([0, 3, 10, 9])
  call = nnx.jit(lambda m, x, t, y: m(x, t, y))
  out = call(model, x, t, y)
  assert out.shape == (4, 8, 8, 2)
  np.testing.assert_array_equal(out, 0.0)  # adaLN-Zero style final layer
  leaves, tree = jax.tree.flatten(nnx.state(model, nnx.Param))
  keys = jax.random.split(jax.random.key(1), len(leaves))
  nnx.update(model, jax.tree.unflatten(tree, [l + 0.05 * jax.random.normal(k, l.shape) for l, k in zip(leaves, keys)]))
  out = call(model, x, t, y)
  assert np.isfinite(out).all() and np.abs(out).max() > 0
  cfg = nnx.jit(lambda m, x, t, y: m.forward_with_cfg(x, t, y, 1.5, cfg_channels=1))(model, x, t, y)
  assert cfg.shape == out.shape
  np.testing.assert_allclose(cfg[2:, ..., :1], cfg[:2, ..., :1])  # both halves carry the guided epsilon


def test_registry_names_and_bad_sizes():
  assert sorted(DiffuSSM_models) == ["DiffuSSM-L", "DiffuSSM-S", "DiffuSSM-XL"]
  assert isinstance(create_model("DiffuSSM", input_size=8, in_channels=1, hidden_size=16, depth=1, num_classes=10,
                                 state_size=4, rngs=nnx.Rngs(0)), DiffuSSM)
  with pytest.raises(ValueError, match="must divide input_size=9"):
    tiny(input_size=9)
  with pytest.raises(ValueError, match="positional embedding fixes the resolution"):
    tiny()(jnp.zeros((1, 16, 16, 1)), jnp.zeros((1,), jnp.int32), jnp.zeros((1,), jnp.int32))
