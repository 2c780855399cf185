"""A GSPN layer's four groups as concurrent programs of one launch (kernels/core_op.py),
for square maps whose scans have too few programs to fill a GPU (a global scan of a few
high-resolution maps: the rows layout narrowed to one channel per program and still
fewer programs than SMs).

There every program is latency-bound: it waits one round trip per scan step, and the
paired launches (gspn_pair_triton.py) run the four groups as two launches of two passes
each, four scans in sequence. Here grid axis 2 picks the group (lr, tb, rl, bt, as
gspn_jax.ops.core.GROUP_DIRECTIONS), so the four scans run at once: a quarter of the
steps in sequence, four times the programs. Each group stores its own m[k] (u h + d x)
(XLA sums the four in x's dtype, in the reference's order); its backward recomputes its
h into its quarter of a scratch output, then runs the adjoint from the layer's dy,
writing its own dx (XLA sums them), its six projection gradients and dm's per-program
sums. The bodies are the rows layout's (gspn_triton._fwd_rows, _bwd_rows); the group is
a uniform branch per program. H == W, so both axes share one geometry: S = L = W and the
strides of a step and of a line are 1 and W, or W and 1.
"""

import triton
import triton.language as tl

from kernels.gspn_triton import _bwd_rows, _fwd_rows


@triton.jit
def _group_fwd(x_ptr, p_ptr, m_ptr, y_ptr, state, S: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
               STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, REVERSE: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr,
               NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, ROW: tl.constexpr,
               PITCH: tl.constexpr, OFF: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr,
               OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr,
               GROUP: tl.constexpr, GATE_SHARE: tl.constexpr):
  """Group GROUP's m (u h + d x) into y_ptr; its slots at OFF_* + OFF."""
  _fwd_rows(x_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, m_ptr, x_ptr, y_ptr, state, S, S, C, STRIDE_B, STRIDE_S,
            STRIDE_L, CHUNK, NSEG, REVERSE, NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, OFF_GL + OFF, OFF_GC + OFF,
            OFF_GR + OFF, OFF_LAM + OFF, True, False, OFF_U + OFF, OFF_D + OFF, GROUP, False, GATE_SHARE)


@triton.jit
def gspn_quad_fwd_rows_kernel(x_ptr, p_ptr, m_ptr, y0, y1, y2, y3, state_ptr, S: tl.constexpr, L: tl.constexpr,
                              C: tl.constexpr, STRIDE_B: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr,
                              NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
                              ROW: tl.constexpr, PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr,
                              OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr,
                              OFF_GROUP: tl.constexpr, GATE_SHARE: tl.constexpr):
  """y_k = m[k] (u h + d x) of group k = program_id(2); OFF_*: group 0's slots, group k's
  k OFF_GROUP further. Strides in pixels: lr / rl step along W (1) over lines along H (W =
  S), tb / bt the other way."""
  k = tl.program_id(2)
  state = state_ptr + k.to(tl.int64) * (tl.num_programs(0) * tl.num_programs(1) * (2 * ROW))
  if k == 0:
    _group_fwd(x_ptr, p_ptr, m_ptr, y0, state, S, C, STRIDE_B, 1, S, False, CHUNK, NSEG, NORMALIZE, BLOCK_L, BLOCK_C,
               ROW, PITCH, 0, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, OFF_U, OFF_D, 0, GATE_SHARE)
  elif k == 1:
    _group_fwd(x_ptr, p_ptr, m_ptr, y1, state, S, C, STRIDE_B, S, 1, False, CHUNK, NSEG, NORMALIZE, BLOCK_L,
               BLOCK_C, ROW, PITCH, OFF_GROUP, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, OFF_U, OFF_D, 1, GATE_SHARE)
  elif k == 2:
    _group_fwd(x_ptr, p_ptr, m_ptr, y2, state, S, C, STRIDE_B, 1, S, True, CHUNK, NSEG, NORMALIZE, BLOCK_L, BLOCK_C,
               ROW, PITCH, 2 * OFF_GROUP, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, OFF_U, OFF_D, 2, GATE_SHARE)
  else:
    _group_fwd(x_ptr, p_ptr, m_ptr, y3, state, S, C, STRIDE_B, S, 1, True, CHUNK, NSEG, NORMALIZE, BLOCK_L, BLOCK_C,
               ROW, PITCH, 3 * OFF_GROUP, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, OFF_U, OFF_D, 3, GATE_SHARE)


@triton.jit
def _group_bwd(x_ptr, p_ptr, m_ptr, dy_ptr, dx_ptr, dgl, dgc, dgr, dlam, du, dd, h_ptr, dm_ptr, state,
               S: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr,
               STRIDE_L: tl.constexpr, REVERSE: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr, NORMALIZE: tl.constexpr,
               BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, ROW: tl.constexpr, PITCH: tl.constexpr,
               OFF: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr,
               OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr, GROUP: tl.constexpr,
               GATE_SHARE: tl.constexpr):
  """Group GROUP's h recomputed into h_ptr (the forward's two state rows after the
  adjoint's six), then its adjoint."""
  programs = tl.num_programs(0) * tl.num_programs(1)
  _fwd_rows(x_ptr, p_ptr, p_ptr, p_ptr, p_ptr, x_ptr, x_ptr, x_ptr, x_ptr, h_ptr, state + programs * (6 * ROW), S, S,
            C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG, REVERSE, NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH,
            OFF_GL + OFF, OFF_GC + OFF, OFF_GR + OFF, OFF_LAM + OFF, False, False, 0, 0, 0, False, GATE_SHARE)
  _bwd_rows(x_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, m_ptr, h_ptr, dy_ptr, x_ptr, dx_ptr, dgl, dgc, dgr, dlam,
            du, dd, dm_ptr, state, S, S, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG, REVERSE, NORMALIZE, BLOCK_L,
            BLOCK_C, ROW, PITCH, OFF_GL + OFF, OFF_GC + OFF, OFF_GR + OFF, OFF_LAM + OFF, True, False, OFF_U + OFF,
            OFF_D + OFF, GROUP, False, GATE_SHARE)


@triton.jit
def gspn_quad_bwd_rows_kernel(
    x_ptr, p_ptr, m_ptr, dy_ptr, dx0, dx1, dx2, dx3, gl0, gc0, gr0, lam0, u0, d0, gl1, gc1, gr1, lam1, u1, d1, gl2, gc2,
    gr2, lam2, u2, d2, gl3, gc3, gr3, lam3, u3, d3, h_ptr, dm0, dm1, dm2, dm3, state_ptr, S: tl.constexpr,
    L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr,
    NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, ROW: tl.constexpr, PITCH: tl.constexpr,
    OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, OFF_U: tl.constexpr,
    OFF_D: tl.constexpr, OFF_GROUP: tl.constexpr, NUMEL: tl.constexpr, GATE_SHARE: tl.constexpr):
  """Group k = program_id(2): dx_k, its six projection gradients, dm_k's per-program sums;
  h_ptr: 4 x NUMEL scratch (group k's h in the k-th quarter)."""
  k = tl.program_id(2)
  state = state_ptr + k.to(tl.int64) * (tl.num_programs(0) * tl.num_programs(1) * (8 * ROW))
  h = h_ptr + k.to(tl.int64) * NUMEL
  if k == 0:
    _group_bwd(x_ptr, p_ptr, m_ptr, dy_ptr, dx0, gl0, gc0, gr0, lam0, u0, d0, h, dm0, state, S, C, STRIDE_B, 1, S,
               False, CHUNK, NSEG, NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, 0, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, OFF_U,
               OFF_D, 0, GATE_SHARE)
  elif k == 1:
    _group_bwd(x_ptr, p_ptr, m_ptr, dy_ptr, dx1, gl1, gc1, gr1, lam1, u1, d1, h, dm1, state, S, C, STRIDE_B, S, 1,
               False, CHUNK, NSEG, NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, OFF_GROUP, OFF_GL, OFF_GC, OFF_GR, OFF_LAM,
               OFF_U, OFF_D, 1, GATE_SHARE)
  elif k == 2:
    _group_bwd(x_ptr, p_ptr, m_ptr, dy_ptr, dx2, gl2, gc2, gr2, lam2, u2, d2, h, dm2, state, S, C, STRIDE_B, 1, S,
               True, CHUNK, NSEG, NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, 2 * OFF_GROUP, OFF_GL, OFF_GC, OFF_GR,
               OFF_LAM, OFF_U, OFF_D, 2, GATE_SHARE)
  else:
    _group_bwd(x_ptr, p_ptr, m_ptr, dy_ptr, dx3, gl3, gc3, gr3, lam3, u3, d3, h, dm3, state, S, C, STRIDE_B, S, 1,
               True, CHUNK, NSEG, NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, 3 * OFF_GROUP, OFF_GL, OFF_GC, OFF_GR,
               OFF_LAM, OFF_U, OFF_D, 3, GATE_SHARE)


QUAD_FORWARD = {"rows": gspn_quad_fwd_rows_kernel}
QUAD_BACKWARD = {"rows": gspn_quad_bwd_rows_kernel}
