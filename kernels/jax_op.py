"""The Triton kernels as a JAX op: jax-triton calls wrapped in a custom_vjp.

Works with jax-triton 0.3.1 (jax 0.11, triton 3.6: the GPU machines) and 0.4.x: only
arrays are passed positionally (inputs, then outputs through out_shape), everything else
as constexpr keywords. Saves the forward output for the backward. compute_capability
(e.g. 90) compiles for that GPU instead of querying device 0, so the op also lowers for
CUDA on a machine without one.
"""

import functools

import jax
import jax_triton as jt

from kernels import gspn_triton, layout


def gspn_scan_triton(x, gl, gc, gr, lam, direction, chunk, normalize, compute_capability=None):
  return _scan(x, gl, gc, gr, lam, direction, chunk, normalize, compute_capability)


def _call(kernels, inputs, out_shape, state_rows, direction, chunk, normalize, compute_capability):
  meta, grid, num_warps = layout.geometry(inputs[0].shape, direction, chunk)
  which = meta.pop("KERNEL")
  state = []  # the rows layout's fp32 state rows: an output XLA allocates, never read back
  if which == "rows":
    state = [jax.ShapeDtypeStruct((layout.state_size(meta, grid, state_rows),), "float32")]
  outs = jt.triton_call(*inputs, kernel=kernels[which], out_shape=[*out_shape, *state], grid=grid,
                        num_warps=num_warps, num_stages=layout.NUM_STAGES, compute_capability=compute_capability,
                        NORMALIZE=normalize, **meta)
  return outs[:len(out_shape)]


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8))
def _scan(x, gl, gc, gr, lam, direction, chunk, normalize, compute_capability):
  return _forward(x, gl, gc, gr, lam, direction, chunk, normalize, compute_capability)


def _forward(x, gl, gc, gr, lam, direction, chunk, normalize, compute_capability):
  (h,) = _call(gspn_triton.FORWARD, (x, gl, gc, gr, lam), [jax.ShapeDtypeStruct(x.shape, x.dtype)], 1,
               direction, chunk, normalize, compute_capability)
  return h


def _fwd(x, gl, gc, gr, lam, direction, chunk, normalize, compute_capability):
  h = _forward(x, gl, gc, gr, lam, direction, chunk, normalize, compute_capability)
  return h, (x, gl, gc, gr, lam, h)


def _bwd(direction, chunk, normalize, compute_capability, residuals, dh):
  x, gl, gc, gr, lam, h = residuals
  out_shape = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (x, gl, gc, gr, lam)]
  return tuple(_call(gspn_triton.BACKWARD, (x, gl, gc, gr, lam, h, dh.astype(h.dtype)), out_shape, 3,
                     direction, chunk, normalize, compute_capability))


_scan.defvjp(_fwd, _bwd)
