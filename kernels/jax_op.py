"""The Triton kernels as a JAX op: jax-triton calls wrapped in a custom_vjp.

Works with jax-triton 0.3.1 (jax 0.11, triton 3.6: the GPU machines) and 0.4.x: only
arrays are passed positionally (inputs, then outputs through out_shape), everything else
as constexpr keywords. Saves the forward output for the backward.
"""

import functools

import jax
import jax_triton as jt

from kernels import gspn_triton, layout


def _call(kernel, inputs, out_shape, direction, chunk, normalize):
  meta, grid, num_warps = layout.geometry(inputs[0].shape, direction, chunk)
  return jt.triton_call(*inputs, kernel=kernel, out_shape=out_shape, grid=grid, num_warps=num_warps,
                        num_stages=2, NORMALIZE=normalize, **meta)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def gspn_scan_triton(x, gl, gc, gr, lam, direction, chunk, normalize):
  return _forward(x, gl, gc, gr, lam, direction, chunk, normalize)


def _forward(x, gl, gc, gr, lam, direction, chunk, normalize):
  return _call(gspn_triton.gspn_fwd_kernel, (x, gl, gc, gr, lam), jax.ShapeDtypeStruct(x.shape, x.dtype),
               direction, chunk, normalize)


def _fwd(x, gl, gc, gr, lam, direction, chunk, normalize):
  h = _forward(x, gl, gc, gr, lam, direction, chunk, normalize)
  return h, (x, gl, gc, gr, lam, h)


def _bwd(direction, chunk, normalize, residuals, dh):
  x, gl, gc, gr, lam, h = residuals
  out_shape = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (x, gl, gc, gr, lam)]
  dx, dgl, dgc, dgr, dlam = _call(gspn_triton.gspn_bwd_kernel, (x, gl, gc, gr, lam, h, dh.astype(h.dtype)),
                                  out_shape, direction, chunk, normalize)
  return dx, dgl, dgc, dgr, dlam


gspn_scan_triton.defvjp(_fwd, _bwd)
