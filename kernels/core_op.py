"""A GSPN layer (gspn_jax/ops/core.py, merge="aligned") on the Triton kernels.

Forward: one dot makes the projection p = xp @ W (B, H, W, 24D), W the columns of
[w_gates | w_lam | w_u | w_d] permuted to group-major order (layout.core_offsets: a
group's gl, gc, gr, lam, u, d are 6D contiguous channels of a pixel); kernels read them
in place (pixel pitch 24D, channel offsets as constexprs: no slice is copied) and
normalise the gates in the prologue. The two groups that scan one axis (lr and rl, tb
and bt) run in one launch when their segments coincide (S % chunk == 0 or a global
scan; kernels/gspn_pair_triton.py), else one launch each; every launch stores
acc + its groups' m[k] (u h + d x), acc the previous launches' sum (in x's dtype, as the
reference sums), so h never reaches HBM: two launches per layer. Backward: saves only
(x, xp, w, m); per group it recomputes h (the plain forward kernel, same in-place reads),
then the adjoint takes the layer's dy through the epilogue (dh = m[k] u dy) and writes dx
(adding the previous groups'), the six projection gradients and dm's partial sums; paired
groups run both in one launch as the forward does (two launches per layer), others take
two launches per group. XLA only runs the dW and dxp GEMMs on the gradients (dW in the
weights' own column order).
Where a square map's scans have too few programs to fill a GPU even at one channel per
program (layout.quad: a global scan of a few high-resolution maps), the four groups run as
concurrent programs of one launch each way instead (kernels/gspn_quad_triton.py): one scan
in sequence rather than four; each group writes its own y (forward) or dx (backward), which
XLA sums.
Where no segment is longer than two steps (chunk 1 or 2 on both axes: GSPN's local
blocks) the layer is a stencil (kernels/gspn_stencil_triton.py): one launch forward, one
backward, which writes dx and all projection gradients as one group-major array, so XLA
runs one dW and one dxp GEMM (a shared gate's gradient as per-channel-block partial sums
where a program's channels lie in one gate, else per channel).
Each launch runs per device shard of a batch-sharded mesh (H and W are never split).

Channel-shared gates (w of width 12G + 12D, G < D gate channels per group): a group's
slots are gl, gc, gr (G each), lam, u, d (D each), pitch 12G + 12D; the kernels read gate
channel c // GATE_SHARE (GATE_SHARE = D / G) in place, so no broadcast gate exists in HBM.
The backward kernels write per-channel gate gradients; their dW columns are summed over
the sharing channels and their dxp contracts with the gate weights repeated D/G times.
"""

import functools
import math

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from kernels import gspn_layer_triton as core_kernels
from kernels import gspn_pair_triton, gspn_quad_triton, gspn_stencil_triton, gspn_triton, layout
from kernels.launch import launch

GROUP_DIRECTIONS = ("lr", "tb", "rl", "bt")  # as gspn_jax.ops.core


def gspn_core_triton(x, xp, w, m, chunk, compute_capability=None, interpret=False):
  """y (B, H, W, D) from x, xp (B, H, W, R), w (R, 12G + 12D), m (4,)."""
  return _core(x, xp, w, m, chunk, compute_capability, interpret)


def _gates(d, width):
  """G, the gate channels per group, of a projection (or weights) `width` columns wide."""
  return width // 12 - d


def _group_major(w, d, width=None):
  """w's columns [slot i, group k] reordered to [k, i] (layout.core_offsets); width: each
  gate slot widened to that many columns, a gate's column repeated over the channels or
  partial sums that carry its gradient."""
  r, g = w.shape[0], _gates(d, w.shape[1])
  gates, rest = w[:, :12 * g].reshape(r, 3, 4, g), w[:, 12 * g:].reshape(r, 3, 4, d)
  if width:
    gates = jnp.repeat(gates, width // g, axis=3)
  slots = lambda a: a.transpose(0, 2, 1, 3).reshape(r, 4, -1)  # [group, slot, channel]
  return jnp.concatenate([slots(gates), slots(rest)], axis=2).reshape(r, -1)


def _released(dw, d, g, width):
  """dW in w's own column order from its group-major (R, 4 (3 width + 3D)) form: the
  inverse of _group_major(width=width), a gate's columns summed."""
  r = dw.shape[0]
  dw = dw.reshape(r, 4, 3 * width + 3 * d)
  gates = dw[:, :, :3 * width].reshape(r, 4, 3, g, width // g).sum(-1).transpose(0, 2, 1, 3).reshape(r, 12 * g)
  rest = dw[:, :, 3 * width:].reshape(r, 4, 3, d).transpose(0, 2, 1, 3).reshape(r, 12 * d)
  return jnp.concatenate([gates, rest], axis=1)


def _project(xp, w, dtype, d):
  """p in group-major channel order."""
  return jnp.dot(xp, _group_major(w, d).astype(dtype))


def _sharded(fn, *arrays):
  """fn on each device's batch shard (jax.shard_map over the mesh in context): a kernel
  is opaque to XLA's partitioner. NHWC arrays are split by batch, others replicated."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty or mesh.size == 1 or arrays[0].shape[0] % mesh.size:
    return fn(*arrays)
  spec = lambda a: P(mesh.axis_names, None, None, None) if a.ndim == 4 else P()
  return jax.shard_map(fn, in_specs=tuple(spec(a) for a in arrays), out_specs=P(mesh.axis_names, None, None, None),
                       check_vma=False)(*arrays)


def _geometry(shape, direction, chunk, k, names, width, widen=False, rows_tile=layout.ROWS_TILE):
  """The launch geometry of group k reading a projection `width` channels wide in place."""
  d = shape[-1]
  offsets = layout.core_offsets(d, k, _gates(d, width))
  return layout.geometry(shape, direction, chunk, rows_tile, pitch=width, offsets={n: offsets[n] for n in names},
                         widen=widen)


def _shared(x, p):
  """The launches' gate constexprs: GATE_SHARE = D / G channels per gate."""
  d = x.shape[-1]
  return dict(GATE_SHARE=d // _gates(d, p.shape[-1]))


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _core(x, xp, w, m, chunk, compute_capability, interpret):
  return _forward(x, xp, w, m, chunk, compute_capability, interpret)


def _forward(x, xp, w, m, chunk, compute_capability, interpret):
  p = _project(xp, w, x.dtype, x.shape[-1])
  m = m.astype(x.dtype)
  if layout.stencil_chunks(x.shape, chunk):
    fn = functools.partial(_stencil, chunk=chunk, compute_capability=compute_capability, interpret=interpret)
    return _sharded(fn, x, p, m)
  if layout.quad(x.shape, chunk):
    fn = functools.partial(_quad, chunk=chunk, compute_capability=compute_capability, interpret=interpret)
    y0, y1, y2, y3 = _sharded(fn, x, p, m)
    return y0 + y1 + y2 + y3  # in x's dtype, in the reference's order
  y = None
  for k in (0, 1):  # groups k and k + 2 scan one axis, forward and in reverse
    acc = () if y is None else (y,)
    if _paired(x.shape, GROUP_DIRECTIONS[k], chunk):
      fn = functools.partial(_pair, k=k, chunk=chunk, compute_capability=compute_capability, interpret=interpret)
      y = _sharded(fn, x, p, m, *acc)
      continue
    for g in (k, k + 2):
      acc = () if y is None else (y,)
      fn = functools.partial(_group, k=g, chunk=chunk, compute_capability=compute_capability, interpret=interpret)
      y = _sharded(fn, x, p, m, *acc)
  return y


def _paired(shape, direction, chunk):
  """Whether the reverse scan's segments are the forward's (S % CHUNK == 0)."""
  meta = layout.geometry(shape, direction, chunk)[0]
  return meta["S"] % meta["CHUNK"] == 0


def _pair(x, p, m, *acc, k, chunk, compute_capability, interpret):
  """Groups k (forward) and k + 2 (reverse) in one launch, added to acc."""
  meta, grid, num_warps = _geometry(x.shape, GROUP_DIRECTIONS[k], chunk, k, layout.SLOTS, p.shape[-1], widen=True)
  num_warps = _pair_warps(meta, num_warps, False, compute_capability)
  table = gspn_pair_triton.PAIR_FORWARD_ACC if acc else gspn_pair_triton.PAIR_FORWARD
  return launch(table, (x, p, m, *acc), [jax.ShapeDtypeStruct(x.shape, x.dtype)], 1, meta, grid, num_warps,
                interpret=interpret, compute_capability=compute_capability, NORMALIZE=True,
                OFF_NEXT=p.shape[-1] // 2, GROUP=k, **_shared(x, p))[0]


def _quad_geometry(shape, chunk, width, backward, compute_capability):
  """The four groups' launch (layout.quad): lr's geometry (square: every group's), grid
  axis 2 the group; the kernels set each group's strides and direction. Line tiles of
  layout.quad_tile, doubled (the one-channel programs' widening, both ways: one program per
  group leaves the backward the registers that a pair's two passes lacked at 4K lines)."""
  meta, grid, num_warps = _geometry(shape, "lr", chunk, 0, layout.SLOTS, width, widen=True,
                                    rows_tile=layout.quad_tile(backward))
  # 2 elements per thread both ways (one pass per program: the backward fits 128 registers)
  num_warps = _pair_warps(meta, num_warps, False, compute_capability)
  del meta["STRIDE_S"], meta["STRIDE_L"]
  return {**meta, "OFF_GROUP": width // 4}, (*grid, 4), num_warps


def _quad(x, p, m, *, chunk, compute_capability, interpret):
  """The four groups' m[k] (u h + d x), one launch."""
  meta, grid, num_warps = _quad_geometry(x.shape, chunk, p.shape[-1], False, compute_capability)
  return launch(gspn_quad_triton.QUAD_FORWARD, (x, p, m), [jax.ShapeDtypeStruct(x.shape, x.dtype)] * 4, 1, meta,
                grid, num_warps, interpret=interpret, compute_capability=compute_capability, NORMALIZE=True,
                **_shared(x, p))


def _quad_backward(x, p, m, dy, *, chunk, compute_capability, interpret):
  """The four groups' backward, one launch: four dx, 4 x 6 projection gradients, four dm
  per-program sums."""
  meta, grid, num_warps = _quad_geometry(x.shape, chunk, p.shape[-1], True, compute_capability)
  like = jax.ShapeDtypeStruct(x.shape, x.dtype)
  dm = jax.ShapeDtypeStruct((*grid[:2], 1, 1), "float32")
  scratch = jax.ShapeDtypeStruct((4 * x.shape[0], *x.shape[1:]), x.dtype)  # each group's recomputed h
  outs = launch(gspn_quad_triton.QUAD_BACKWARD, (x, p, m, dy), [like] * 28 + [scratch] + [dm] * 4, 4, meta, grid,
                num_warps, interpret=interpret, compute_capability=compute_capability, NORMALIZE=True,
                NUMEL=math.prod(x.shape), **_shared(x, p))
  return outs[:28] + outs[29:]


def _stencil(x, p, m, *dy, chunk, compute_capability, interpret):
  """The whole layer in one launch (segments of at most two steps): y, or with dy its
  backward: dx, dp (group-major, gate slots layout.stencil_gate_width wide), dm's
  per-program sums."""
  meta, grid, num_warps = layout.stencil_geometry(x.shape, chunk)
  like = jax.ShapeDtypeStruct(x.shape, x.dtype)
  opts = dict(interpret=interpret, compute_capability=compute_capability, G=_gates(x.shape[-1], p.shape[-1]),
              **_shared(x, p))
  if not dy:
    return launch(gspn_stencil_triton.STENCIL_FORWARD, (x, p, m), [like], 0, meta, grid, num_warps, **opts)[0]
  width = layout.stencil_gate_width(x.shape, opts["G"])
  outs = [like, jax.ShapeDtypeStruct((*x.shape[:3], 12 * width + 12 * x.shape[-1]), x.dtype),
          jax.ShapeDtypeStruct((grid[0], 1, 1, 4), "float32")]
  return launch(gspn_stencil_triton.STENCIL_BACKWARD, (x, p, m, *dy), outs, 0, meta, grid, num_warps, **opts)


def _stencil_bwd(x, xp, w, m, dy, chunk, compute_capability, interpret):
  d = x.shape[-1]
  p = _project(xp, w, x.dtype, d)
  fn = functools.partial(_stencil, chunk=chunk, compute_capability=compute_capability, interpret=interpret)
  dx, dp, dm = _sharded(fn, x, p, m.astype(x.dtype), dy.astype(x.dtype))
  g = _gates(d, w.shape[1])
  width = layout.stencil_gate_width(x.shape, g)
  dw = jnp.einsum("bhwr,bhwc->rc", xp, dp, preferred_element_type=jnp.float32)
  dxp = jnp.dot(dp, _group_major(w, d, width).astype(x.dtype).T, preferred_element_type=jnp.float32)
  dw = _released(dw, d, g, width)
  return dx, dxp.astype(xp.dtype), dw.astype(w.dtype), jnp.sum(dm, axis=(0, 1, 2)).astype(m.dtype)


def _pair_warps(meta, num_warps, backward, compute_capability):
  """A paired launch's warps (drops meta's REVERSE: the kernels run both). Chosen by the
  compiler audit (bench/kernel_audit.py): at the others ptxas spills a few bytes of these
  two-pass kernels, e.g. the forward's at 4 warps on 1024-element tiles, at 8 on 32 x 64
  tiles, at 4 on 64 x 32 (XL/2 at 1024 px, fp32); on
  sm_80 the tile backward's at 4 warps on 1024-element tiles, so it gets twice the warps,
  and at 2 warps on a 64-element tile (the digits model's 4 x 4 tokens), so that one runs
  on 1. The rows backward, which loads a tile ahead, runs 4 elements per thread (~250
  registers): at 2 its 128-register cap spilled 4-8 bytes on sm_80, at 1 its 64."""
  meta.pop("REVERSE")
  elements = meta["BLOCK_L"] * meta["BLOCK_C"]
  sm80 = backward and _capability(compute_capability) < 90
  if meta["KERNEL"] == "rows":
    return (elements // 128 if backward else elements // 64) if elements >= 512 else num_warps
  if not backward and meta["BLOCK_C"] >= 8 and elements >= 1024:
    return 8 if elements == 1024 or meta["BLOCK_L"] >= 64 else 4
  if sm80 and elements in (64, 1024):
    return 8 if elements == 1024 else 1
  return num_warps


def _capability(compute_capability):
  """The target's compute capability: the one lowered for, else device 0's (90 off a GPU)."""
  if compute_capability is not None:
    return int(compute_capability)
  device = jax.devices()[0]
  if device.platform != "gpu" or not hasattr(device, "compute_capability"):
    return 90
  return int(round(10 * float(device.compute_capability)))


def _group(x, p, m, *acc, k, chunk, compute_capability, interpret):
  """Group k alone, added to acc."""
  geometry = _geometry(x.shape, GROUP_DIRECTIONS[k], chunk, k, layout.SLOTS, p.shape[-1])
  table = core_kernels.CORE_FORWARD_ACC if acc else core_kernels.CORE_FORWARD
  return launch(table, (x, p, p, p, p, p, p, m, *acc), [jax.ShapeDtypeStruct(x.shape, x.dtype)], 1, *geometry,
                interpret=interpret, compute_capability=compute_capability, NORMALIZE=True, GROUP=k,
                **_shared(x, p))[0]


def _fwd(x, xp, w, m, chunk, compute_capability, interpret):
  return _forward(x, xp, w, m, chunk, compute_capability, interpret), (x, xp, w, m)


def _group_backward(x, p, m, dy, acc, k, direction, chunk, compute_capability, interpret):
  """Group k's h recomputed, then its adjoint through the epilogue: dx (plus acc, the
  previous groups' dx), the six projection gradients, dm's per-program sums."""
  meta, grid, num_warps = _geometry(x.shape, direction, chunk, k, layout.SLOTS, p.shape[-1])
  opts = dict(interpret=interpret, compute_capability=compute_capability, NORMALIZE=True, **_shared(x, p))
  like = jax.ShapeDtypeStruct(x.shape, x.dtype)
  scan_meta = {n: v for n, v in meta.items() if n not in ("OFF_U", "OFF_D")}
  (h,) = launch(gspn_triton.FORWARD, (x, p, p, p, p), [like], 1, scan_meta, grid, num_warps, **opts)
  table = core_kernels.CORE_BACKWARD if acc is None else core_kernels.CORE_BACKWARD_ACC
  dm = jax.ShapeDtypeStruct((*grid, 1, 1), "float32")
  return launch(table, (x, p, p, p, p, p, p, m, h, dy, *([] if acc is None else [acc])), [like] * 7 + [dm], 3,
                meta, grid, num_warps, GROUP=k, **opts)


def _pair_backward(x, p, m, dy, *acc, k, chunk, compute_capability, interpret):
  """Groups k and k + 2's backward in one launch: dx (plus acc), twelve projection
  gradients (group k's six, then group k + 2's), both groups' dm per-program sums."""
  meta, grid, num_warps = _geometry(x.shape, GROUP_DIRECTIONS[k], chunk, k, layout.SLOTS, p.shape[-1],
                                    widen=layout.backward_widen(x.shape, GROUP_DIRECTIONS[k]))
  num_warps = _pair_warps(meta, num_warps, True, compute_capability)
  like = jax.ShapeDtypeStruct(x.shape, x.dtype)
  dm = jax.ShapeDtypeStruct((*grid, 1, 1), "float32")
  table = gspn_pair_triton.PAIR_BACKWARD_ACC if acc else gspn_pair_triton.PAIR_BACKWARD
  # outputs: dx, the gradients, h (the recompute's scratch), dm; the rows layout's 6 + 2 state rows
  outs = launch(table, (x, p, m, dy, *acc), [like] * 14 + [dm, dm], 4, meta, grid, num_warps, interpret=interpret,
                compute_capability=compute_capability, NORMALIZE=True, OFF_NEXT=p.shape[-1] // 2, GROUP=k,
                **_shared(x, p))
  return outs[:13] + outs[14:]


def _scans_backward(x, p, m, dy, chunk, compute_capability, interpret):
  """dx, each group's six projection gradients {k: [...]}, each group's dm {k: sum}."""
  opts = dict(chunk=chunk, compute_capability=compute_capability, interpret=interpret)
  m, dy = m.astype(x.dtype), dy.astype(x.dtype)
  if layout.quad(x.shape, chunk):
    outs = _sharded(functools.partial(_quad_backward, **opts), x, p, m, dy)
    dx = sum(a.astype(jnp.float32) for a in outs[:4]).astype(x.dtype)
    return dx, {k: outs[4 + 6 * k:10 + 6 * k] for k in range(4)}, {k: jnp.sum(outs[28 + k]) for k in range(4)}
  dx, dm, grads = None, {}, {}
  for k in (0, 1):
    acc = () if dx is None else (dx,)
    if _paired(x.shape, GROUP_DIRECTIONS[k], chunk):
      dx, *dslices, dma, dmb = _sharded(functools.partial(_pair_backward, k=k, **opts), x, p, m, dy, *acc)
      grads[k], grads[k + 2], dm[k], dm[k + 2] = dslices[:6], dslices[6:], jnp.sum(dma), jnp.sum(dmb)
      continue
    for g in (k, k + 2):
      fn = lambda *a, g=g: _group_backward(*a[:4], a[4] if len(a) > 4 else None, g, GROUP_DIRECTIONS[g], chunk,
                                           compute_capability, interpret)
      dx, *dslices, dmk = _sharded(fn, x, p, m, dy, *([] if dx is None else [dx]))
      grads[g], dm[g] = dslices, jnp.sum(dmk)
  return dx, grads, dm


def _bwd(chunk, compute_capability, interpret, residuals, dy):
  x, xp, w, m = residuals
  if layout.stencil_chunks(x.shape, chunk):
    return _stencil_bwd(x, xp, w, m, dy, chunk, compute_capability, interpret)
  d = x.shape[-1]
  gates = _gates(d, w.shape[1])
  p = _project(xp, w, x.dtype, d)
  dx, grads, dm = _scans_backward(x, p, m, dy, chunk, compute_capability, interpret)
  dw, dxp = [], 0
  for i in range(6):  # gl, gc, gr, lam, u, d of group k: columns (4i + k) G, 12G + (4(i - 3) + k) D of w
    width, start = (gates, 0) if i < 3 else (d, 12 * gates - 12 * d)
    for k in range(4):
      dp = grads[k][i]  # per channel; a shared gate's is the sum over its D/G channels
      wk = w[:, start + (4 * i + k) * width:start + (4 * i + k + 1) * width].astype(x.dtype)
      dwk = jnp.einsum("bhwr,bhwc->rc", xp, dp, preferred_element_type=jnp.float32)
      if width < d:  # shared gates: dW summed over the sharing channels, dxp through the repeated weights
        dwk, wk = dwk.reshape(-1, width, d // width).sum(-1), jnp.repeat(wk, d // width, axis=1)
      dw.append(dwk)
      dxp = dxp + jnp.dot(dp, wk.T, preferred_element_type=jnp.float32)
  dw = jnp.concatenate(dw, axis=1)
  return dx, dxp.astype(xp.dtype), dw.astype(w.dtype), jnp.stack([dm[k] for k in range(4)]).astype(m.dtype)


_core.defvjp(_fwd, _bwd)
