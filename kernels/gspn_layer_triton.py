"""A GSPN layer's kernels (kernels/core_op.py): the scan kernels' bodies (gspn_triton.py)
with the layer's epilogue.

Forward: group GROUP's scan stores [acc +] m[GROUP] (u h + d x) instead of h, u and d
read in place like the gates. Backward: from the layer output's cotangent dy,
dL/dh = m u dy; it stores dx (+ acc, the previous groups'), dgl, dgc, dgr, dlam,
du = m dy h, dd = m dy x, and dm's per-program sum of dy (u h + d x). "_acc" kernels
take acc, the others start the sum.
"""

import triton
import triton.language as tl

from kernels.gspn_triton import _bwd_rows, _bwd_tile, _fwd_rows, _fwd_tile


@triton.jit
def gspn_core_fwd_kernel(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, y_ptr,
                         S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
                         STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr,
                         REVERSE: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr,
                         BLOCK_C: tl.constexpr, PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr,
                         OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr,
                         GROUP: tl.constexpr, GATE_SHARE: tl.constexpr):
  """A GSPN layer's first group: y = m[GROUP] (u h + d x), h never stored."""
  _fwd_tile(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, x_ptr, y_ptr, S, L, C, STRIDE_B, STRIDE_S,
            STRIDE_L, CHUNK, NSEG, REVERSE, NORMALIZE, BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM,
            True, False, OFF_U, OFF_D, GROUP, False, GATE_SHARE)


@triton.jit
def gspn_core_fwd_acc_kernel(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, acc_ptr, y_ptr,
                             S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
                             STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr,
                             NSEG: tl.constexpr, REVERSE: tl.constexpr, NORMALIZE: tl.constexpr,
                             BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, PITCH: tl.constexpr,
                             OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr,
                             OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr, GROUP: tl.constexpr,
                             GATE_SHARE: tl.constexpr):
  """The next groups: y = acc + m[GROUP] (u h + d x), acc the previous groups' sum."""
  _fwd_tile(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, acc_ptr, y_ptr, S, L, C, STRIDE_B,
            STRIDE_S, STRIDE_L, CHUNK, NSEG, REVERSE, NORMALIZE, BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR,
            OFF_LAM, True, True, OFF_U, OFF_D, GROUP, False, GATE_SHARE)


@triton.jit
def gspn_core_bwd_kernel(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, h_ptr, dy_ptr,
                         dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr, du_ptr, dd_ptr, dm_ptr,
                         S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
                         STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr,
                         REVERSE: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr,
                         BLOCK_C: tl.constexpr, PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr,
                         OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr,
                         GROUP: tl.constexpr, GATE_SHARE: tl.constexpr):
  """A GSPN layer's first group's backward from dy: dx, the six projection gradients, dm."""
  _bwd_tile(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, h_ptr, dy_ptr, x_ptr,
            dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr, du_ptr, dd_ptr, dm_ptr, S, L, C, STRIDE_B, STRIDE_S,
            STRIDE_L, CHUNK, NSEG, REVERSE, NORMALIZE, BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM,
            True, False, OFF_U, OFF_D, GROUP, False, GATE_SHARE)


@triton.jit
def gspn_core_bwd_acc_kernel(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, h_ptr, dy_ptr, acc_ptr,
                             dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr, du_ptr, dd_ptr, dm_ptr,
                             S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
                             STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr,
                             NSEG: tl.constexpr, REVERSE: tl.constexpr, NORMALIZE: tl.constexpr,
                             BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, PITCH: tl.constexpr,
                             OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr,
                             OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr, GROUP: tl.constexpr,
                             GATE_SHARE: tl.constexpr):
  """The next groups: dx adds to acc, the previous groups' dx."""
  _bwd_tile(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, h_ptr, dy_ptr, acc_ptr,
            dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr, du_ptr, dd_ptr, dm_ptr, S, L, C, STRIDE_B, STRIDE_S,
            STRIDE_L, CHUNK, NSEG, REVERSE, NORMALIZE, BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM,
            True, True, OFF_U, OFF_D, GROUP, False, GATE_SHARE)


@triton.jit
def gspn_core_fwd_rows_kernel(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, y_ptr, state_ptr,
                              S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
                              STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr,
                              NSEG: tl.constexpr, REVERSE: tl.constexpr, NORMALIZE: tl.constexpr,
                              BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, ROW: tl.constexpr, PITCH: tl.constexpr,
                              OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr,
                              OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr, GROUP: tl.constexpr,
                              GATE_SHARE: tl.constexpr):
  _fwd_rows(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, x_ptr, y_ptr, state_ptr, S, L, C, STRIDE_B,
            STRIDE_S, STRIDE_L, CHUNK, NSEG, REVERSE, NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, OFF_GL, OFF_GC, OFF_GR,
            OFF_LAM, True, False, OFF_U, OFF_D, GROUP, False, GATE_SHARE)


@triton.jit
def gspn_core_fwd_acc_rows_kernel(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, acc_ptr, y_ptr,
                                  state_ptr, S: tl.constexpr, L: tl.constexpr, C: tl.constexpr,
                                  STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr,
                                  CHUNK: tl.constexpr, NSEG: tl.constexpr, REVERSE: tl.constexpr,
                                  NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
                                  ROW: tl.constexpr, PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr,
                                  OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, OFF_U: tl.constexpr,
                                  OFF_D: tl.constexpr, GROUP: tl.constexpr, GATE_SHARE: tl.constexpr):
  _fwd_rows(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, acc_ptr, y_ptr, state_ptr, S, L, C,
            STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG, REVERSE, NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, OFF_GL,
            OFF_GC, OFF_GR, OFF_LAM, True, True, OFF_U, OFF_D, GROUP, False, GATE_SHARE)


@triton.jit
def gspn_core_bwd_rows_kernel(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, h_ptr, dy_ptr,
                              dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr, du_ptr, dd_ptr, dm_ptr, state_ptr,
                              S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
                              STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr,
                              NSEG: tl.constexpr, REVERSE: tl.constexpr, NORMALIZE: tl.constexpr,
                              BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, ROW: tl.constexpr, PITCH: tl.constexpr,
                              OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr,
                              OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr, GROUP: tl.constexpr,
                              GATE_SHARE: tl.constexpr):
  _bwd_rows(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, h_ptr, dy_ptr, x_ptr,
            dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr, du_ptr, dd_ptr, dm_ptr, state_ptr, S, L, C, STRIDE_B,
            STRIDE_S, STRIDE_L, CHUNK, NSEG, REVERSE, NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, OFF_GL, OFF_GC, OFF_GR,
            OFF_LAM, True, False, OFF_U, OFF_D, GROUP, False, GATE_SHARE)


@triton.jit
def gspn_core_bwd_acc_rows_kernel(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, h_ptr, dy_ptr,
                                  acc_ptr, dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr, du_ptr, dd_ptr, dm_ptr,
                                  state_ptr, S: tl.constexpr, L: tl.constexpr, C: tl.constexpr,
                                  STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr,
                                  CHUNK: tl.constexpr, NSEG: tl.constexpr, REVERSE: tl.constexpr,
                                  NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
                                  ROW: tl.constexpr, PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr,
                                  OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, OFF_U: tl.constexpr,
                                  OFF_D: tl.constexpr, GROUP: tl.constexpr, GATE_SHARE: tl.constexpr):
  _bwd_rows(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, h_ptr, dy_ptr, acc_ptr,
            dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr, du_ptr, dd_ptr, dm_ptr, state_ptr, S, L, C, STRIDE_B,
            STRIDE_S, STRIDE_L, CHUNK, NSEG, REVERSE, NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, OFF_GL, OFF_GC, OFF_GR,
            OFF_LAM, True, True, OFF_U, OFF_D, GROUP, False, GATE_SHARE)


# a GSPN layer's groups with the u h + d x epilogue and merge weight: the first, then accumulating
CORE_FORWARD = {"tile": gspn_core_fwd_kernel, "rows": gspn_core_fwd_rows_kernel}
CORE_FORWARD_ACC = {"tile": gspn_core_fwd_acc_kernel, "rows": gspn_core_fwd_acc_rows_kernel}
CORE_BACKWARD = {"tile": gspn_core_bwd_kernel, "rows": gspn_core_bwd_rows_kernel}
CORE_BACKWARD_ACC = {"tile": gspn_core_bwd_acc_kernel, "rows": gspn_core_bwd_acc_rows_kernel}
