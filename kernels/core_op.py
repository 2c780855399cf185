"""A GSPN layer (gspn_jax/ops/core.py, merge="aligned") on the Triton kernels.

Forward: one dot makes the projection p = xp @ [w_gates | w_lam | w_u | w_d] (B, H, W, 24D);
then one launch per channel group k reads its gl, gc, gr, lam, u, d in place from p
(pixel pitch 24D, channel offsets layout.core_offsets: no slice is copied), normalises the
gates in the prologue, scans in direction GROUP_DIRECTIONS[k] and stores
acc + m[k] (u h + d x), acc the previous groups' sum (in x's dtype, as the reference
sums), so h never reaches HBM. Backward: saves only (x, xp, w, m); per group it recomputes
h with the plain forward kernel (same in-place reads), runs the adjoint kernel with
dh = m[k] u dy, and gathers the group's six gradients for one dW and one dxp dot.
Each launch runs per device shard of a batch-sharded mesh (H and W are never split).
"""

import functools

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

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
    table = gspn_triton.CORE_FORWARD if y is None else gspn_triton.CORE_FORWARD_ACC

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


def _scan_and_adjoint(x, p, dh, k, direction, chunk, compute_capability, interpret):
  """Group k's h (recomputed) and its adjoint's (dx, dgl, dgc, dgr, dlam)."""
  meta, grid, num_warps = _geometry(x.shape, direction, chunk, k, _SCAN_OFFSETS)
  opts = dict(interpret=interpret, compute_capability=compute_capability, NORMALIZE=True)
  like = jax.ShapeDtypeStruct(x.shape, x.dtype)
  (h,) = launch(gspn_triton.FORWARD, (x, p, p, p, p), [like], 1, meta, grid, num_warps, **opts)
  return (h, *launch(gspn_triton.BACKWARD, (x, p, p, p, p, h, dh), [like] * 5, 3, meta, grid, num_warps, **opts))


def _bwd(chunk, compute_capability, interpret, residuals, dy):
  x, xp, w, m = residuals
  d = x.shape[-1]
  p = _project(xp, w, x.dtype)
  m = m.astype(x.dtype).astype(jnp.float32)
  dy = dy.astype(jnp.float32)
  x32 = x.astype(jnp.float32)
  dx, dm, dws, dxp = 0, [], [], 0
  for k, direction in enumerate(GROUP_DIRECTIONS):
    u, dd = (p[..., base + k * d:base + (k + 1) * d].astype(jnp.float32) for base in (16 * d, 20 * d))
    dh = (m[k] * u * dy).astype(x.dtype)
    h, gx, gl, gc, gr, glam = _sharded(
        lambda x, p, dh, k=k, direction=direction: _scan_and_adjoint(x, p, dh, k, direction, chunk,
                                                                     compute_capability, interpret), x, p, dh)
    h = h.astype(jnp.float32)
    dx = dx + gx.astype(jnp.float32) + m[k] * dy * dd
    dm.append(jnp.sum(dy * (u * h + dd * x32)))
    du, ddd = (m[k] * dy * h).astype(x.dtype), (m[k] * dy * x32).astype(x.dtype)
    dproj = jnp.concatenate([gl, gc, gr, glam, du, ddd], axis=3)  # this group's 6 slices, (B, H, W, 6D)
    wk = jnp.concatenate([w[:, b + k * d:b + (k + 1) * d] for b in range(0, 24 * d, 4 * d)], axis=1)
    dws.append(jnp.einsum("bhwr,bhwc->rc", xp, dproj, preferred_element_type=jnp.float32))
    dxp = dxp + jnp.dot(dproj, wk.astype(x.dtype).T, preferred_element_type=jnp.float32)
  # dws[k] holds group k's columns of each of the six blocks: interleave back to w's layout.
  dw = jnp.concatenate([dws[k][:, i * d:(i + 1) * d] for i in range(6) for k in range(4)], axis=1)
  return dx.astype(x.dtype), dxp.astype(xp.dtype), dw.astype(w.dtype), jnp.stack(dm)


_core.defvjp(_fwd, _bwd)
