"""Train-step and sampling throughput of one model at one size, and peak memory.

The building blocks of bench/train.py and bench/compare.py: a model from the registry
at a latent size, its jitted train step (the real one, from gspn_jax.train_state) and a
CFG sampling step, timed on synthetic data.
"""

import time

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from bench.common import time_fn
from gspn_jax.diffusion import create_diffusion
from gspn_jax.models import create_model
from gspn_jax.train_state import init_state, make_train_step, split_model

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _model(name, latent, dtype, remat, **kwargs):
  return create_model(name, input_size=latent, in_channels=4, num_classes=1000, dtype=DTYPES[dtype],
                      remat=remat, rngs=nnx.Rngs(0), **kwargs)


def train_throughput(name, latent, batch, dtype="bfloat16", remat=False, iters=5, **kwargs):
  """{images_per_sec, step_ms, params}: AdamW train step of DiT's diffusion loss."""
  graphdef, params, rest = split_model(_model(name, latent, dtype, remat, **kwargs))
  tx = optax.adamw(1e-4)
  state = init_state(params, tx, 0)
  step = jax.jit(make_train_step(graphdef, rest, create_diffusion(""), tx, lambda s: 1e-4, 0.9999),
                 donate_argnums=0)
  x = jax.random.normal(jax.random.key(1), (batch, latent, latent, 4))
  batch_arrays = {"image": x, "label": jnp.arange(batch) % 1000}

  compiled = step.lower(state, batch_arrays).compile()
  for _ in range(2):  # warm up
    state = jax.block_until_ready(compiled(state, batch_arrays)[0])
  t = time.perf_counter()
  for _ in range(iters):
    state = compiled(state, batch_arrays)[0]
  jax.block_until_ready(state)
  dt = (time.perf_counter() - t) / iters
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return {"images_per_sec": batch / dt, "step_ms": 1e3 * dt, "memory_bytes": compiled_memory(compiled),
          "flops": (cost or {}).get("flops"), "params": sum(a.size for a in jax.tree.leaves(params))}


def compiled_memory(compiled):
  """Device memory one call of a compiled function needs: its arguments, outputs not
  aliased to (donated) arguments, and its temporaries, as XLA planned them."""
  m = compiled.memory_analysis()
  return int(m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes)


def sampling_throughput(name, latent, batch, dtype="bfloat16", steps=250, iters=3, **kwargs):
  """Images/s of `steps`-step DDPM with classifier-free guidance (two model evaluations
  per step, DiT's forward_with_cfg), from the time of one sampling step."""
  graphdef, params, rest = split_model(_model(name, latent, dtype, False, **kwargs))
  diffusion = create_diffusion(str(steps))

  @jax.jit
  def one_step(params, x, y, key):
    model = nnx.merge(graphdef, params, rest)
    fn = lambda x, t, y: model.forward_with_cfg(x, t, y, 1.5)
    t = jnp.full((x.shape[0],), steps - 1, jnp.int32)
    return diffusion.p_sample(fn, x, t, key, model_kwargs={"y": y})["sample"]

  x = jax.random.normal(jax.random.key(1), (2 * batch, latent, latent, 4))
  y = jnp.concatenate([jnp.arange(batch) % 1000, jnp.full((batch,), 1000)])
  dt = time_fn(one_step, params, x, y, jax.random.key(2), iters=iters)
  return {"images_per_sec": batch / (dt * steps), "step_ms": 1e3 * dt}


def fits(fn, *args, **kwargs):
  """fn(*args, **kwargs), or None when the device runs out of memory."""
  try:
    return fn(*args, **kwargs)
  except Exception as e:  # XlaRuntimeError RESOURCE_EXHAUSTED, or the allocator's own error
    if "RESOURCE_EXHAUSTED" in str(e) or "out of memory" in str(e).lower():
      return None
    raise


def largest_batch(fn, start=8, limit=4096, **kwargs):
  """The largest power-of-two batch (from start, up to limit) for which fn runs."""
  best, batch = None, start
  while batch <= limit:
    result = fits(fn, batch=batch, **kwargs)
    if result is None:
      break
    best, batch = (batch, result), batch * 2
  return best
