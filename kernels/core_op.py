"""A GSPN layer (gspn_jax/ops/core.py, merge="aligned") on the Triton kernels.

Forward: one dot makes the projection p = xp @ [w_gates | w_lam | w_u | w_d] (B, H, W, 24D);
then one launch per channel group k reads its gl, gc, gr, lam, u, d in place from p
(pixel pitch 24D, channel offsets layout.core_offsets: no slice is copied), normalises the
gates in the prologue, scans in direction GROUP_DIRECTIONS[k] and stores
acc + m[k] (u h + d x), acc the previous groups' sum (in x's dtype, as the reference
sums), so h never reaches HBM. Backward: saves only (x, xp, w, m); per group it recomputes
h with the plain forward kernel (same in-place reads), then one adjoint kernel takes the
layer's dy through the epilogue (dh = m[k] u dy) and writes dx (adding the previous
groups'), the six projection gradients and dm's partial sums; XLA only runs the dW
and dxp GEMMs on them.
Each launch runs per device shard of a batch-sharded mesh (H and W are never split).
"""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from kernels import gspn_layer_triton as core_kernels
from kernels import gspn_triton, layout
from kernels.launch import launch

GROUP_DIRECTIONS = ("lr", "tb", "rl", "bt")  # as gspn_jax.ops.core
_SCAN_OFFSETS = ("OFF_GL", "OFF_GC", "OFF_GR", "OFF_LAM")


def gspn_core_triton(x, xp, w, m, chunk, compute_capability=None, interpret=False):
  """y (B, H, W, D) from x, xp (B, H, W, R), w (R, 24D), m (4,)."""
  return _core(x, xp, w, m, chunk, compute_capability, interpret)


def _project(xp, w, dtype):
  return jnp.dot(xp, w.astype(dtype))


def _sharded(fn, *arrays):
  """fn on each device's batch shard (jax.shard_map over the mesh in context): a kernel
  is opaque to XLA's partitioner. NHWC arrays are split by batch, others replicated."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1 or arrays[0].shape[0] % mesh.size:
    return fn(*arrays)
  spec = lambda a: P(mesh.axis_names, None, None, None) if a.ndim == 4 else P()
  return jax.shard_map(fn, in_specs=tuple(spec(a) for a in arrays), out_specs=P(mesh.axis_names, None, None, None),
                       check_vma=False)(*arrays)


def _geometry(shape, direction, chunk, k, names):
  offsets = layout.core_offsets(shape[-1], k)
  return layout.geometry(shape, direction, chunk, pitch=24 * shape[-1], offsets={n: offsets[n] for n in names})


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _core(x, xp, w, m, chunk, compute_capability, interpret):
  return _forward(x, xp, w, m, chunk, compute_capability, interpret)


def _forward(x, xp, w, m, chunk, compute_capability, interpret):
  p = _project(xp, w, x.dtype)
  y = None
  for k, direction in enumerate(GROUP_DIRECTIONS):
    table = core_kernels.CORE_FORWARD if y is None else core_kernels.CORE_FORWARD_ACC

    def group(*arrays, table=table, k=k, direction=direction):
      shape = arrays[0].shape  # the shard's
      geometry = _geometry(shape, direction, chunk, k, (*_SCAN_OFFSETS, "OFF_U", "OFF_D"))
      return launch(table, arrays, [jax.ShapeDtypeStruct(shape, arrays[0].dtype)], 1, *geometry,
                    interpret=interpret, compute_capability=compute_capability, NORMALIZE=True, GROUP=k)[0]

    acc = () if y is None else (y,)
    y = _sharded(group, x, p, p, p, p, p, p, m.astype(x.dtype), *acc)
  return y


def _fwd(x, xp, w, m, chunk, compute_capability, interpret):
  return _forward(x, xp, w, m, chunk, compute_capability, interpret), (x, xp, w, m)


def _group_backward(x, p, m, dy, acc, k, direction, chunk, compute_capability, interpret):
  """Group k's h recomputed, then its adjoint through the epilogue: dx (plus acc, the
  previous groups' dx), the six projection gradients, dm's per-program sums."""
  meta, grid, num_warps = _geometry(x.shape, direction, chunk, k, (*_SCAN_OFFSETS, "OFF_U", "OFF_D"))
  opts = dict(interpret=interpret, compute_capability=compute_capability, NORMALIZE=True)
  like = jax.ShapeDtypeStruct(x.shape, x.dtype)
  scan_meta = {n: v for n, v in meta.items() if n not in ("OFF_U", "OFF_D")}
  (h,) = launch(gspn_triton.FORWARD, (x, p, p, p, p), [like], 1, scan_meta, grid, num_warps, **opts)
  table = core_kernels.CORE_BACKWARD if acc is None else core_kernels.CORE_BACKWARD_ACC
  dm = jax.ShapeDtypeStruct((*grid, 1, 1), "float32")
  return launch(table, (x, p, p, p, p, p, p, m, h, dy, *([] if acc is None else [acc])), [like] * 7 + [dm], 3,
                meta, grid, num_warps, GROUP=k, **opts)


def _bwd(chunk, compute_capability, interpret, residuals, dy):
  x, xp, w, m = residuals
  d = x.shape[-1]
  p = _project(xp, w, x.dtype)
  dx, dm, dw, dxp = None, [], [[] for _ in range(6)], 0
  for k, direction in enumerate(GROUP_DIRECTIONS):
    fn = lambda *a, k=k, direction=direction: _group_backward(
        *a[:4], a[4] if len(a) > 4 else None, k, direction, chunk, compute_capability, interpret)
    dx, *dslices, dmk = _sharded(fn, x, p, m.astype(x.dtype), dy.astype(x.dtype), *([] if dx is None else [dx]))
    dm.append(jnp.sum(dmk))
    for i, g in enumerate(dslices):  # gl, gc, gr, lam, u, d of group k: columns i*4D + k*D of w
      dw[i].append(jnp.einsum("bhwr,bhwc->rc", xp, g, preferred_element_type=jnp.float32))
      dxp = dxp + jnp.dot(g, w[:, (4 * i + k) * d:(4 * i + k + 1) * d].astype(x.dtype).T,
                          preferred_element_type=jnp.float32)
  dw = jnp.concatenate([g for block in dw for g in block], axis=1)
  return dx, dxp.astype(xp.dtype), dw.astype(w.dtype), jnp.stack(dm).astype(m.dtype)


_core.defvjp(_fwd, _bwd)
