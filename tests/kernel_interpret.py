"""The Triton kernels under the Triton interpreter (CPU, torch tensors) against the XLA
reference, forward and backward. Run by tests/test_kernels.py in its own process, since
TRITON_INTERPRET must be set before the kernels are decorated:
`TRITON_INTERPRET=1 python -m tests.kernel_interpret` prints a JSON report."""

import functools
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

import kernels  # noqa: E402
from gspn_jax.ops import gspn_core, gspn_scan  # noqa: E402
from kernels import core_op, gspn_triton, layout  # noqa: E402


def _torch(a):
  return torch.from_dlpack(jnp.array(a, copy=True))


def triton_forward_backward(args, dh, direction, chunk, normalize, rows_tile=layout.ROWS_TILE, min_programs=1):
  meta, grid, num_warps = layout.geometry(args[0].shape, direction, chunk, rows_tile, min_programs=min_programs)
  which = meta.pop("KERNEL")
  # the rows layout's state starts as garbage, as XLA's uninitialised output would
  state = lambda rows: [torch.full((layout.state_size(meta, grid, rows),), float("nan"))] if which == "rows" else []
  t = [_torch(a) for a in args]
  h = torch.empty_like(t[0])
  gspn_triton.FORWARD[which][grid](*t, h, *state(1), NORMALIZE=normalize, GATE_SHARE=1, num_warps=num_warps, **meta)
  grads = [torch.empty_like(a) for a in t]
  gspn_triton.BACKWARD[which][grid](*t, h, _torch(dh), *grads, *state(3), NORMALIZE=normalize, GATE_SHARE=1,
                                    num_warps=num_warps, **meta)
  to_jax = lambda a: np.asarray(jnp.from_dlpack(a).astype(jnp.float32))
  return to_jax(h), [to_jax(g) for g in grads]


@functools.partial(jax.jit, static_argnums=(2, 3, 4))  # one compile per case, ~2.5x faster than eager
def _reference(args, dh, direction, chunk, normalize):
  f = lambda *a: gspn_scan(*a, direction=direction, chunk=chunk, impl="xla", normalize=normalize)
  h, vjp = jax.vjp(f, *args)
  return h, vjp(dh)


def reference_forward_backward(args, dh, direction, chunk, normalize):
  h, grads = _reference(args, dh, direction, chunk, normalize)
  return np.asarray(h.astype(jnp.float32)), [np.asarray(g.astype(jnp.float32)) for g in grads]


def rel_err(a, b):
  if not np.isfinite(a).all():  # NaN would slip through max() and comparisons
    return float("inf")
  return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-6))


def case(shape, direction, chunk, normalize, dtype, seed=0, rows_tile=layout.ROWS_TILE, min_programs=1):
  """min_programs=1 keeps the rows layout's channel blocks wide; the default
  (layout.MIN_PROGRAMS) narrows them to fill a GPU, as the JAX op does."""
  keys = jax.random.split(jax.random.key(seed), 6)
  x, gl, gc, gr, lam, dh = (jax.random.normal(k, shape) for k in keys)
  if not normalize:  # positive, row-stochastic-ish gates keep values O(1)
    gl, gc, gr = (jax.nn.softmax(jnp.stack([gl, gc, gr]), axis=0)[i] for i in range(3))
  args = tuple(a.astype(dtype) for a in (x, gl, gc, gr, lam))
  h_t, g_t = triton_forward_backward(args, dh.astype(dtype), direction, chunk, normalize, rows_tile, min_programs)
  h_r, g_r = reference_forward_backward(args, dh.astype(dtype), direction, chunk, normalize)
  meta = layout.geometry(shape, direction, chunk, rows_tile, min_programs=min_programs)[0]
  return {"shape": shape, "layout": meta["KERNEL"], "block_c": meta["BLOCK_C"], "direction": direction,
          "chunk": chunk, "normalize": normalize, "dtype": str(dtype), "fwd": rel_err(h_t, h_r),
          "bwd": max(rel_err(a, b) for a, b in zip(g_t, g_r))}


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _core_value_and_grads(args, ct, chunk, impl, gates):
  f = lambda *a: gspn_core(*a, chunk=chunk, merge="aligned", impl=impl, gate_channels=gates)
  y, vjp = jax.vjp(f, *args)
  return y, vjp(ct.astype(y.dtype))


def core_case(shape, chunk, dtype, seed=0, gates=None):
  """gspn_core(impl="triton") (fused forward, in-place reads, the kernels' backward) under
  the interpreter against impl="reference" run in fp32: the value and all 7 gradients.
  gates: channel-shared gates (gate_channels)."""
  b, h, w, d = shape
  r = max(1, d // 2)
  ks = jax.random.split(jax.random.key(seed), 8)
  args = (jax.random.normal(ks[0], shape), jax.random.normal(ks[1], (b, h, w, r)),
          jax.random.normal(ks[2], (r, 12 * (gates or d))), *(0.5 * jax.random.normal(k, (r, 4 * d)) for k in ks[3:6]),
          jax.random.normal(ks[6], (4,)))
  args = tuple(a.astype(dtype) for a in args[:2]) + args[2:]
  ct = jax.random.normal(ks[7], shape)
  with kernels.interpreted():
    y_t, g_t = _core_value_and_grads(args, ct, chunk, "triton", gates)
  up = tuple(a.astype(jnp.float32) for a in args)
  y_r, g_r = _core_value_and_grads(up, ct, chunk, "reference", gates)
  f32 = lambda a: np.asarray(a.astype(jnp.float32))
  layouts = {layout.geometry(shape, dr, chunk)[0]["KERNEL"] for dr in layout.DIRECTIONS}
  paired = [core_op._paired(shape, dr, chunk) for dr in ("lr", "tb")]  # one launch for lr + rl, for tb + bt
  if layout.stencil_chunks(shape, chunk):  # the whole layer in one launch
    layouts, paired = {"stencil"}, None
  elif layout.quad(shape, chunk):  # the four groups as concurrent programs of one launch each way
    layouts, paired = {"quad"}, None
  return {"op": "gspn_core", "shape": shape, "layout": "+".join(sorted(layouts)), "chunk": chunk, "paired": paired,
          "gates": gates, "dtype": str(jnp.dtype(dtype)), "fwd": rel_err(f32(y_t), f32(y_r)),
          "bwd": max(rel_err(f32(a), f32(b)) for a, b in zip(g_t, g_r))}


def main():
  results = []
  for direction, chunk, normalize in itertools.product(layout.DIRECTIONS, (1, 2, 3, None), (False, True)):
    results.append(case((2, 5, 7, 3), direction, chunk, normalize, jnp.dtype(jnp.float32)))
  for direction in layout.DIRECTIONS:  # several channel blocks, non-power-of-2 line
    results.append(case((1, 6, 5, 70), direction, 2, True, jnp.dtype(jnp.float32), seed=1))
    results.append(case((2, 5, 7, 3), direction, 3, True, jnp.dtype(jnp.bfloat16), seed=2))
  # the rows layout (few channels): several line tiles, a partial one; two channel blocks on long lines
  for direction, chunk, normalize in zip(layout.DIRECTIONS, (1, 3, None, 3), (False, True, True, False)):
    results.append(case((1, 9, 6, 2), direction, chunk, normalize, jnp.dtype(jnp.float32), seed=3, rows_tile=8))
  for direction, long_line in (("lr", (1, 300, 3, 18)), ("bt", (1, 3, 300, 18))):  # rows by the default rule
    results.append(case(long_line, direction, 2, True, jnp.dtype(jnp.float32), seed=4, rows_tile=2048))
  results.append(case((1, 9, 6, 2), "rl", 3, True, jnp.dtype(jnp.bfloat16), seed=5, rows_tile=8))
  # the rows layout narrowed to one-channel programs (a global scan with few programs), 3 line tiles
  for direction, dtype in (("bt", jnp.float32), ("rl", jnp.bfloat16)):
    shape = (2, 5, 300, 3) if direction == "bt" else (2, 300, 5, 3)
    results.append(case(shape, direction, None, True, jnp.dtype(dtype), seed=6, rows_tile=128,
                        min_programs=layout.MIN_PROGRAMS))
  # a whole GSPN layer: four directions from the fused forward and the backward, odd sizes.
  # Segments of at most two steps make it a stencil (one launch each way): odd H, a partial
  # pixel block, two channel blocks, chunk 1, a global scan over 2 x 2, bf16. Longer ones scan:
  # lines of 33 along H take the rows layout, those of 3 along W the tile layout; an axis
  # whose length divides by the chunk runs its two groups in one launch, else one each
  for shape, chunk, dtype in (((2, 5, 4, 3), 2, jnp.float32), ((1, 6, 5, 40), 2, jnp.float32),
                              ((1, 5, 7, 3), 1, jnp.float32), ((1, 2, 2, 3), None, jnp.float32),
                              ((2, 7, 5, 3), 2, jnp.bfloat16), ((2, 5, 6, 3), 3, jnp.float32),
                              ((2, 6, 4, 3), 3, jnp.bfloat16), ((1, 33, 3, 2), None, jnp.float32)):
    results.append(core_case(shape, chunk, jnp.dtype(dtype)))
  # a square map whose rows-layout grid stays below layout.QUAD_MAX_PROGRAMS: the four groups at
  # once (lines of 33, one or two one-channel programs per group; 11 segments; bf16)
  for shape, chunk, dtype in (((1, 33, 33, 1), 3, jnp.float32), ((1, 33, 33, 2), None, jnp.bfloat16)):
    results.append(core_case(shape, chunk, jnp.dtype(dtype)))
  # channel-shared gates. One triple per pixel and group (a [BLOCK_L, 1] gate column): lr + rl
  # paired in the rows layout (lines of 34), tb and bt alone in the tile layout (34 % 3 != 0).
  # Two gates of two channels each (channels read their gate at c // 2): the stencil, and
  # tb + bt paired in a 4-channel block
  results.append(core_case((1, 34, 3, 2), 3, jnp.dtype(jnp.float32), seed=6, gates=1))
  results.append(core_case((1, 4, 3, 4), 2, jnp.dtype(jnp.float32), seed=7, gates=2))
  results.append(core_case((1, 6, 4, 4), 3, jnp.dtype(jnp.float32), seed=8, gates=2))
  # the stencil with a [BLOCK_P, 1] gate column: G = 1; G = 2, each gate over two 32-channel
  # blocks (its gradient as two partial sums)
  results.append(core_case((1, 4, 3, 4), 2, jnp.dtype(jnp.float32), seed=9, gates=1))
  results.append(core_case((1, 5, 3, 128), 2, jnp.dtype(jnp.float32), seed=10, gates=2))
  json.dump(results, sys.stdout)


if __name__ == "__main__":
  main()
