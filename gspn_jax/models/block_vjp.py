"""A block's backward, ordered and optionally rematerialised, on every XLA backend.

`nnx.remat` (jax.checkpoint) saves nothing on XLA:CPU: its recomputation is merged back
into the forward (see gspn_jax.ops.barrier), and without remat XLA:CPU's memory
scheduler defers weight-gradient dots to the end of the step, keeping each block's
activations and cotangents alive through the whole backward. Here the block is one
custom_vjp whose backward
  - with remat: saves only the block's inputs (parameters, hidden, residual, skip, c)
    and recomputes the block tied to the output cotangent, so it runs then and not in
    the forward;
  - always: hands its input cotangents on only after its parameter gradients exist, so
    each block's backward finishes before the next one starts.
"""

import functools

import jax
from flax import nnx

from gspn_jax.ops.barrier import after


def call_block(block, hidden, residual, skip, key, c, *, remat):
  """block(hidden, residual, skip, key, c) with the ordered (and, if remat, rematerialised) backward."""
  graphdef, params, rest = nnx.split(block, nnx.Param, ...)
  return _apply(graphdef, remat, params, rest, hidden, residual, skip, key, c)


def _run(graphdef, rest, key):
  return lambda params, hidden, residual, skip, c: nnx.merge(graphdef, params, rest)(hidden, residual, skip, key, c)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1))
def _apply(graphdef, remat, params, rest, hidden, residual, skip, key, c):
  return _run(graphdef, rest, key)(params, hidden, residual, skip, c)


def _apply_fwd(graphdef, remat, params, rest, hidden, residual, skip, key, c):
  args = (params, hidden, residual, skip, c)
  if remat:
    return _apply(graphdef, remat, params, rest, hidden, residual, skip, key, c), (rest, key, args)
  out, vjp = jax.vjp(_run(graphdef, rest, key), *args)
  return out, (rest, key, vjp)


def _apply_bwd(graphdef, remat, saved, ct):
  rest, key, vjp = saved
  if remat:
    rest, args = after((rest, vjp), ct)  # recomputed now, not merged into the forward
    _, vjp = jax.vjp(_run(graphdef, rest, key), *args)
  dparams, *dinputs = vjp(ct)
  dhidden, dresidual, dskip, dc = after(dinputs, dparams)
  return dparams, None, dhidden, dresidual, dskip, None, dc


_apply.defvjp(_apply_fwd, _apply_bwd)
