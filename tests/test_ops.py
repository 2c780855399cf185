import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from gspn_jax.ops import gspn_scan, normalize_gates
from tests.naive import gspn_scan_naive

DIRECTIONS = ["lr", "rl", "tb", "bt"]
CHUNKS = [1, 2, 3, None]


def _inputs(key, shape=(2, 5, 7, 3), dtype=jnp.float32, normalized=True):
  ks = jax.random.split(key, 5)
  x, gl, gc, gr, lam = (jax.random.normal(k, shape, jnp.float32) for k in ks)
  if normalized:
    line_axis = 1  # any positive gates do; normalising keeps values O(1)
    gl, gc, gr = normalize_gates(gl, gc, gr, line_axis)
  return tuple(a.astype(dtype) for a in (x, gl, gc, gr, lam))


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("chunk", CHUNKS)
def test_reference_matches_naive_loop(direction, chunk):
  args = _inputs(jax.random.key(0))
  got = gspn_scan(*args, direction=direction, chunk=chunk, impl="xla")
  want = gspn_scan_naive(*(np.asarray(a, np.float64) for a in args), direction, chunk)
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_chunk_one_is_pointwise_and_global_equals_long_chunk():
  args = _inputs(jax.random.key(1))
  x, _, _, _, lam = args
  h1 = gspn_scan(*args, direction="lr", chunk=1, impl="xla")
  np.testing.assert_allclose(h1, x * lam, rtol=1e-6)
  hg = gspn_scan(*args, direction="tb", chunk=None, impl="xla")
  hl = gspn_scan(*args, direction="tb", chunk=100, impl="xla")
  np.testing.assert_array_equal(hg, hl)


def test_segments_are_counted_from_the_scan_start():
  # W = 7, chunk = 3: "lr" restarts at w = 0, 3, 6; "rl" at w = 6, 3, 0 (scan order).
  args = _inputs(jax.random.key(2))
  x, _, _, _, lam = args
  h_lr = gspn_scan(*args, direction="lr", chunk=3, impl="xla")
  h_rl = gspn_scan(*args, direction="rl", chunk=3, impl="xla")
  for w in (0, 3, 6):
    np.testing.assert_allclose(h_lr[:, :, w], (x * lam)[:, :, w], rtol=1e-6)
    np.testing.assert_allclose(h_rl[:, :, 6 - w], (x * lam)[:, :, 6 - w], rtol=1e-6)
  assert not np.allclose(h_lr[:, :, 1], (x * lam)[:, :, 1])


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("chunk", [2, None])
def test_gradients_finite_differences(direction, chunk):
  args = _inputs(jax.random.key(3), shape=(1, 3, 4, 2))
  f = lambda *a: gspn_scan(*a, direction=direction, chunk=chunk, impl="xla")
  args64 = tuple(a.astype(jnp.float32) for a in args)
  check_grads(f, args64, order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-2)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("chunk", CHUNKS)
def test_gradients_match_autodiff_of_naive_loop(direction, chunk):
  args = _inputs(jax.random.key(4), shape=(2, 4, 5, 2))
  ct = jax.random.normal(jax.random.key(5), args[0].shape)

  def loss(fn):
    return lambda *a: jnp.sum(fn(*a) * ct)

  ref = loss(lambda *a: gspn_scan(*a, direction=direction, chunk=chunk, impl="xla"))
  naive = loss(lambda *a: gspn_scan_naive(*a, direction, chunk, xp=jnp))
  g_ref = jax.grad(ref, argnums=range(5))(*args)
  g_naive = jax.grad(naive, argnums=range(5))(*args)
  for a, b in zip(g_ref, g_naive):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_backward_is_the_analytic_adjoint_not_autodiff_of_the_scan():
  args = _inputs(jax.random.key(6))
  f = lambda *a: gspn_scan(*a, direction="lr", chunk=None, impl="xla").sum()
  assert "custom_vjp_call" in str(jax.make_jaxpr(f)(*args))


def test_bf16_inputs_keep_an_fp32_state():
  args32 = _inputs(jax.random.key(7), shape=(2, 6, 64, 4))
  args16 = tuple(a.astype(jnp.bfloat16) for a in args32)
  up = tuple(a.astype(jnp.float32) for a in args16)  # the same bf16 values, in fp32
  h16 = gspn_scan(*args16, direction="lr", impl="xla")
  h32 = gspn_scan(*up, direction="lr", impl="xla")
  assert h16.dtype == jnp.bfloat16
  # One bf16 rounding of the fp32 result: a bf16 state would drift over 64 steps.
  np.testing.assert_allclose(np.asarray(h16, np.float32), h32, rtol=2 ** -8, atol=1e-6)
  grads = jax.grad(lambda *a: gspn_scan(*a, direction="bt", impl="xla").astype(jnp.float32).sum(),
                   argnums=range(5))(*args16)
  assert all(g.dtype == jnp.bfloat16 for g in grads)


def test_normalize_gates_rows_are_stochastic():
  k = jax.random.split(jax.random.key(8), 3)
  gl, gc, gr = (jax.random.normal(kk, (2, 5, 4, 3)) * 3 for kk in k)
  for axis in (1, 2):
    nl, nc, nr = normalize_gates(gl, gc, gr, axis)
    n = gl.shape[axis]
    first = jnp.take(nc + nr, 0, axis=axis)
    last = jnp.take(nl + nc, n - 1, axis=axis)
    mid = jnp.take(nl + nc + nr, jnp.arange(1, n - 1), axis=axis)
    for s in (first, last, mid):
      np.testing.assert_allclose(s, 1.0, rtol=1e-6)
    assert float(jnp.min(jnp.stack([nl, nc, nr]))) >= 0


def test_row_stochastic_propagation_is_bounded():
  # Long global propagation of a constant input with lam = 1 - (weight of history)
  # stays at the constant: no explosion, no decay.
  shape = (1, 9, 200, 2)
  gl, gc, gr = normalize_gates(*(jax.random.normal(k, shape) for k in jax.random.split(jax.random.key(9), 3)), 1)
  x = jnp.ones(shape)
  h = gspn_scan(x * 0.5, gl * 0.5, gc * 0.5, gr * 0.5, jnp.ones(shape), direction="lr", impl="xla")
  # h = 0.5 + 0.5 * (weighted average of previous line) -> converges to 1.
  np.testing.assert_allclose(h[:, :, -1], 1.0, rtol=1e-5)


@pytest.mark.parametrize("bad, msg", [
    (dict(direction="up"), "direction"),
    (dict(direction="lr", chunk=0), "chunk"),
    (dict(direction="lr", impl="cuda"), "impl"),
])
def test_bad_arguments_raise_clear_errors(bad, msg):
  args = _inputs(jax.random.key(10))
  with pytest.raises(ValueError, match=msg):
    gspn_scan(*args, **bad)
  with pytest.raises(ValueError, match="must match"):
    gspn_scan(args[0], args[1][:, :2], *args[2:], direction="lr")
