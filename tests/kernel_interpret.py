"""The Triton kernels under the Triton interpreter (CPU, torch tensors) against the XLA
reference, forward and backward. Run by tests/test_kernels.py in its own process, since
TRITON_INTERPRET must be set before the kernels are decorated:
`TRITON_INTERPRET=1 python -m tests.kernel_interpret` prints a JSON report."""

import itertools
import json
import os
import sys

os.environ["TRITON_INTERPRET"] = "1"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from gspn_jax.ops import gspn_scan  # noqa: E402
from kernels import gspn_triton, layout  # noqa: E402


def _torch(a):
  return torch.from_dlpack(jnp.array(a, copy=True))


def triton_forward_backward(args, dh, direction, chunk, normalize):
  meta, grid, num_warps = layout.geometry(args[0].shape, direction, chunk)
  t = [_torch(a) for a in args]
  h = torch.empty_like(t[0])
  gspn_triton.gspn_fwd_kernel[grid](*t, h, NORMALIZE=normalize, num_warps=num_warps, **meta)
  grads = [torch.empty_like(a) for a in t]
  gspn_triton.gspn_bwd_kernel[grid](*t, h, _torch(dh), *grads, NORMALIZE=normalize, num_warps=num_warps, **meta)
  to_jax = lambda a: np.asarray(jnp.from_dlpack(a).astype(jnp.float32))
  return to_jax(h), [to_jax(g) for g in grads]


def reference_forward_backward(args, dh, direction, chunk, normalize):
  f = lambda *a: gspn_scan(*a, direction=direction, chunk=chunk, impl="xla", normalize=normalize)
  h, vjp = jax.vjp(f, *args)
  return np.asarray(h.astype(jnp.float32)), [np.asarray(g.astype(jnp.float32)) for g in vjp(dh)]


def rel_err(a, b):
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


def case(shape, direction, chunk, normalize, dtype, seed=0):
  keys = jax.random.split(jax.random.key(seed), 6)
  x, gl, gc, gr, lam, dh = (jax.random.normal(k, shape) for k in keys)
  if not normalize:  # positive, row-stochastic-ish gates keep values O(1)
    gl, gc, gr = (jax.nn.softmax(jnp.stack([gl, gc, gr]), axis=0)[i] for i in range(3))
  args = tuple(a.astype(dtype) for a in (x, gl, gc, gr, lam))
  h_t, g_t = triton_forward_backward(args, dh.astype(dtype), direction, chunk, normalize)
  h_r, g_r = reference_forward_backward(args, dh.astype(dtype), direction, chunk, normalize)
  return {"shape": shape, "direction": direction, "chunk": chunk, "normalize": normalize, "dtype": str(dtype),
          "fwd": rel_err(h_t, h_r), "bwd": max(rel_err(a, b) for a, b in zip(g_t, g_r))}


def main():
  results = []
  for direction, chunk, normalize in itertools.product(layout.DIRECTIONS, (1, 2, 3, None), (False, True)):
    results.append(case((2, 5, 7, 3), direction, chunk, normalize, jnp.dtype(jnp.float32)))
  for direction in layout.DIRECTIONS:  # several channel blocks, non-power-of-2 line
    results.append(case((1, 6, 5, 70), direction, 2, True, jnp.dtype(jnp.float32), seed=1))
    results.append(case((2, 5, 7, 3), direction, 3, True, jnp.dtype(jnp.bfloat16), seed=2))
  json.dump(results, sys.stdout)


if __name__ == "__main__":
  main()
