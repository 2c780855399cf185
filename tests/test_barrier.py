"""barrier.after and the per-block backward (models/block_vjp.py) on XLA:CPU: recomputation
stays in the backward, and per-block remat keeps less memory than no remat."""

import functools

import jax
import jax.numpy as jnp
import pytest
from flax import nnx

from gspn_jax.models.block_vjp import call_block
from gspn_jax.models.gspn import Block
from gspn_jax.ops.barrier import after

pytestmark = pytest.mark.skipif(jax.default_backend() != "cpu", reason="checks XLA:CPU's compiled program")


def _recompute_flops(tie):
  """FLOPs of a train step whose backward recomputes the forward's dot x @ w."""

  @jax.custom_vjp
  def f(x, w):
    return jnp.tanh(x @ w)

  def fwd(x, w):
    return f(x, w), (x, w)

  def bwd(res, g):
    x, w = tie(res, g)
    _, vjp = jax.vjp(lambda x, w: jnp.tanh(x @ w), x, w)
    return vjp(g)

  f.defvjp(fwd, bwd)
  x = w = jnp.ones((64, 64))
  compiled = jax.jit(jax.grad(lambda x, w: jnp.sum(f(x, w) ** 2), argnums=1)).lower(x, w).compile()
  return compiled.cost_analysis()["flops"]


def test_after_keeps_the_recomputation_in_the_backward():
  dot = 2 * 64**3
  barrier = _recompute_flops(lambda res, g: jax.lax.optimization_barrier((res, g))[0])
  tied = _recompute_flops(after)
  assert tied >= barrier + dot * 0.99  # the barrier's recomputed dot is merged into the forward's


def test_after_is_the_identity():
  x, g = jnp.arange(6.0).reshape(2, 3), jnp.ones(4)
  y, i = after((x, jnp.arange(3)), g)
  assert (y == x).all() and (i == jnp.arange(3)).all()


def _blocks_step(remat):
  blocks = [Block(32, chunk=2, drop_path=0.0, skip=False, merge="aligned", impl="xla", dtype=jnp.float32,
                  rngs=nnx.Rngs(i)) for i in range(5)]
  graphdef, params = nnx.split(nnx.List(blocks), nnx.Param)
  hidden = jax.random.normal(jax.random.key(0), (8, 8, 8, 32))

  def loss(params, hidden):
    residual = None
    for blk in nnx.merge(graphdef, params):
      hidden, residual = call_block(blk, hidden, residual, None, None, None, remat=remat)
    return jnp.sum(hidden * residual)

  step = jax.jit(jax.grad(loss, argnums=(0, 1)))
  return step.lower(params, hidden).compile(), functools.partial(step, params, hidden)


def test_per_block_remat_saves_memory_and_keeps_gradients():
  (plain, run_plain), (remat, run_remat) = _blocks_step(False), _blocks_step(True)
  assert remat.memory_analysis().temp_size_in_bytes < 0.85 * plain.memory_analysis().temp_size_in_bytes
  for a, b in zip(jax.tree.leaves(run_plain()), jax.tree.leaves(run_remat())):
    assert jnp.allclose(a, b, rtol=1e-5, atol=1e-6)
