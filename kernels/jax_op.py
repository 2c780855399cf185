"""The Triton kernels as a JAX op: one direction's scan, launches wrapped in a
custom_vjp that saves the forward output for the backward (kernels/launch.py)."""

import functools

import jax

from kernels import gspn_triton, layout
from kernels.launch import launch


def gspn_scan_triton(x, gl, gc, gr, lam, direction, chunk, normalize, compute_capability=None, interpret=False):
  return _scan(x, gl, gc, gr, lam, direction, chunk, normalize, compute_capability, interpret)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7, 8, 9))
def _scan(x, gl, gc, gr, lam, direction, chunk, normalize, compute_capability, interpret):
  return _forward(x, gl, gc, gr, lam, direction, chunk, normalize, compute_capability, interpret)


def _forward(x, gl, gc, gr, lam, direction, chunk, normalize, compute_capability, interpret):
  (h,) = launch(gspn_triton.FORWARD, (x, gl, gc, gr, lam), [jax.ShapeDtypeStruct(x.shape, x.dtype)], 1,
                *layout.geometry(x.shape, direction, chunk), interpret=interpret,
                compute_capability=compute_capability, NORMALIZE=normalize, GATE_SHARE=1)
  return h


def _fwd(x, gl, gc, gr, lam, direction, chunk, normalize, compute_capability, interpret):
  h = _forward(x, gl, gc, gr, lam, direction, chunk, normalize, compute_capability, interpret)
  return h, (x, gl, gc, gr, lam, h)


def _bwd(direction, chunk, normalize, compute_capability, interpret, residuals, dh):
  x, gl, gc, gr, lam, h = residuals
  out_shape = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in (x, gl, gc, gr, lam)]
  return tuple(launch(gspn_triton.BACKWARD, (x, gl, gc, gr, lam, h, dh.astype(h.dtype)), out_shape, 3,
                      *layout.geometry(x.shape, direction, chunk), interpret=interpret,
                      compute_capability=compute_capability, NORMALIZE=normalize, GATE_SHARE=1))


_scan.defvjp(_fwd, _bwd)
