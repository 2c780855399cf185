import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gspn_jax.models.depthwise import depthwise_conv, depthwise_dense, depthwise_taps, library_depthwise_conv
from gspn_jax.ops import gspn_core

D, R = 3, 2


def _core_args(key, b=2, h=5, w=5, dtype=jnp.float32, d=D, gates=None):
  ks = jax.random.split(key, 7)
  x = jax.random.normal(ks[0], (b, h, w, d))
  xp = jax.random.normal(ks[1], (b, h, w, R))
  wg = jax.random.normal(ks[2], (R, 12 * (gates or d)))
  wl, wu, wd = (0.5 * jax.random.normal(k, (R, 4 * d)) for k in ks[3:6])
  m = jax.random.normal(ks[6], (4,))
  return tuple(a.astype(dtype) for a in (x, xp)) + (wg, wl, wu, wd, m)


def _value_and_grads(impl, chunk, merge, args, gates=None):
  ct = jax.random.normal(jax.random.key(9), args[0].shape)

  def loss(*a):
    y = gspn_core(*a, chunk=chunk, merge=merge, impl=impl, gate_channels=gates)
    return jnp.sum(y.astype(jnp.float32) * ct), y

  (_, y), grads = jax.jit(jax.value_and_grad(loss, argnums=range(7), has_aux=True))(*args)
  return y, grads


@pytest.mark.parametrize("merge, chunk, hw", [
    ("aligned", 1, (3, 4)), ("aligned", 2, (5, 4)), ("aligned", 3, (5, 7)), ("aligned", None, (4, 5)),
    ("released", 2, (5, 5)),
])
def test_fast_core_matches_the_reference_values_and_gradients(merge, chunk, hw):
  # aligned covers the four directions; odd sizes leave a short last segment.
  args = _core_args(jax.random.key(0), h=hw[0], w=hw[1])
  y_ref, g_ref = _value_and_grads("reference", chunk, merge, args)
  y, g = _value_and_grads("xla", chunk, merge, args)
  np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
  for a, b in zip(g, g_ref):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.abs(b).max()))


def test_fast_core_bf16_tracks_the_reference():
  args = _core_args(jax.random.key(1), h=4, w=6, dtype=jnp.bfloat16)
  up = tuple(a.astype(jnp.float32) for a in args)
  y16, g16 = _value_and_grads("xla", 2, "aligned", args)
  y32, g32 = _value_and_grads("reference", 2, "aligned", up)
  assert y16.dtype == jnp.bfloat16 and g16[0].dtype == jnp.bfloat16 and g16[2].dtype == jnp.float32
  scale = float(jnp.abs(y32).max())
  np.testing.assert_allclose(np.asarray(y16, np.float32), y32, atol=2e-2 * scale)
  for a, b in zip(g16, g32):
    np.testing.assert_allclose(np.asarray(a, np.float32), b, atol=3e-2 * float(jnp.abs(b).max()))


@pytest.mark.parametrize("d, gates, chunk, hw, dtype", [(3, 1, 2, (5, 4), jnp.float32),
                                                      (4, 2, None, (3, 4), jnp.bfloat16)])
def test_shared_gates_fast_core_matches_the_reference(d, gates, chunk, hw, dtype):
  # GSPN-2's compressive channels (gates=1) and half as many gates as channels; odd sizes
  args = _core_args(jax.random.key(2), h=hw[0], w=hw[1], dtype=dtype, d=d, gates=gates)
  assert args[2].shape == (R, 12 * gates)
  y_ref, g_ref = _value_and_grads("reference", chunk, "aligned", tuple(a.astype(jnp.float32) for a in args), gates)
  y, g = _value_and_grads("xla", chunk, "aligned", args, gates)
  assert g[2].shape == (R, 12 * gates)
  f32 = lambda a: np.asarray(a, np.float32)
  tol = (1e-5, 1e-4) if dtype == jnp.float32 else (2e-2, 3e-2)
  np.testing.assert_allclose(f32(y), y_ref, rtol=tol[0], atol=tol[0] * float(jnp.abs(y_ref).max()))
  for a, b in zip(g, g_ref):
    np.testing.assert_allclose(f32(a), b, rtol=tol[1], atol=tol[1] * float(jnp.abs(b).max()))


def _residual_elements(impl, args):
  _, vjp = jax.vjp(lambda *a: gspn_core(*a, chunk=2, merge="aligned", impl=impl), *args)
  return sum(a.size for a in jax.tree.leaves(vjp))


def test_fast_core_saves_only_its_inputs_for_the_backward():
  args = _core_args(jax.random.key(3), b=1, h=4, w=4)
  inputs = sum(a.size for a in args)
  assert _residual_elements("xla", args) <= inputs
  assert _residual_elements("reference", args) > 4 * inputs  # the 24D-channel expansion and the states


def test_core_bad_arguments_raise_clear_errors():
  args = _core_args(jax.random.key(4), h=4, w=6)
  with pytest.raises(ValueError, match="impl"):
    gspn_core(*args, chunk=2, impl="cuda")
  with pytest.raises(ValueError, match="square"):
    gspn_core(*args, chunk=2, merge="released")
  with pytest.raises(ValueError, match="w_lam"):
    gspn_core(args[0], args[1], args[2], args[3][:, :5], *args[4:], chunk=2)
  with pytest.raises(ValueError, match="gate_channels=2; use None or a positive divisor of D=3"):
    gspn_core(*args, chunk=2, gate_channels=2)
  with pytest.raises(ValueError, match=r"w_gates has shape \(2, 36\); expected \(2, 12\)"):
    gspn_core(*args, chunk=2, gate_channels=1)


@pytest.mark.parametrize("conv", [depthwise_taps, depthwise_dense], ids=["taps", "dense"])
@pytest.mark.parametrize("k, shape, dtype", [(7, (2, 5, 6, 3), jnp.float32), (3, (2, 4, 3, 5), jnp.float32),
                                             (3, (1, 4, 4, 2), jnp.bfloat16)])
def test_depthwise_convs_match_the_library_convolution(conv, k, shape, dtype):
  kx, kk, kg = jax.random.split(jax.random.key(5), 3)
  x = jax.random.normal(kx, shape).astype(dtype)
  kernel = jax.random.normal(kk, (k, k, 1, shape[-1])).astype(dtype)
  ct = jax.random.normal(kg, shape).astype(dtype)
  tol = 1e-5 if dtype == jnp.float32 else 3e-2

  def vg(f):
    return jax.jit(jax.value_and_grad(lambda x, w: jnp.sum((f(x, w) * ct).astype(jnp.float32)), argnums=(0, 1)))

  (v1, (dx1, dk1)), (v2, (dx2, dk2)) = vg(conv)(x, kernel), vg(library_depthwise_conv)(x, kernel)
  np.testing.assert_allclose(conv(x, kernel).astype(jnp.float32),
                             library_depthwise_conv(x, kernel).astype(jnp.float32), rtol=tol, atol=tol * k)
  assert dx1.dtype == dtype and dk1.dtype == dtype
  for a, b in ((dx1, dx2), (dk1, dk2)):
    b = np.asarray(b, np.float32)
    np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=tol, atol=tol * np.abs(b).max())


def test_depthwise_conv_rejects_even_or_mismatched_kernels():
  with pytest.raises(ValueError, match="odd"):
    depthwise_conv(jnp.zeros((1, 4, 4, 3)), jnp.zeros((4, 4, 1, 3)))
  with pytest.raises(ValueError, match="odd"):
    depthwise_conv(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 1, 2)))
