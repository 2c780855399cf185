"""A GSPN layer's two groups that scan one axis (lr and rl, or tb and bt) in one launch
(kernels/core_op.py).

Both scans have the same lines and, when the scan length is a multiple of CHUNK, the
same segments: the forward scan's segment seg is the reverse scan's segment
NSEG - 1 - seg. So one program owns (batch element, segment, channel block) for both: it
runs group GROUP forward, storing [acc +] m[GROUP] (u h + d x), then group GROUP + 2 in
reverse over the same pixels, adding m[GROUP + 2] (u h + d x) to what it stored. Its
second pass re-reads x and its own partial y (an L2 hit while the programs resident at
once touch less than the L2 holds: bench/kernel_predict.py). The projection p is one
operand: group GROUP's six slots at OFF_*, group GROUP + 2's at OFF_* + OFF_NEXT.
A layer's forward is two such launches, the second adding to the first's output.

The backward pairs the same way: per group, h recomputed into a scratch output (the plain
forward), then the adjoint from the layer's dy (gspn_layer_triton.py) writing dx, the
group's six projection gradients and dm's per-program sum; the second group's adjoint adds
to the first's dx. Between passes the program re-reads x, dy, h, the gates and its own dx
(L2, as above).
"""

import triton
import triton.language as tl

from kernels.gspn_triton import _bwd_rows, _bwd_tile, _fwd_rows, _fwd_tile


@triton.jit
def _pair_tile(x_ptr, p_ptr, m_ptr, acc_ptr, y_ptr, S: tl.constexpr, L: tl.constexpr, C: tl.constexpr,
               STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr,
               NSEG: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
               PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr,
               OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr, OFF_NEXT: tl.constexpr,
               GROUP: tl.constexpr, ACC: tl.constexpr, GATE_SHARE: tl.constexpr):
  _fwd_tile(x_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, m_ptr, acc_ptr, y_ptr, S, L, C, STRIDE_B, STRIDE_S,
            STRIDE_L, CHUNK, NSEG, False, NORMALIZE, BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM,
            True, ACC, OFF_U, OFF_D, GROUP, False, GATE_SHARE)
  tl.debug_barrier()  # the first pass's y is complete (other threads' stores) before the second adds to it
  _fwd_tile(x_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, m_ptr, y_ptr, y_ptr, S, L, C, STRIDE_B, STRIDE_S,
            STRIDE_L, CHUNK, NSEG, True, NORMALIZE, BLOCK_L, BLOCK_C, PITCH, OFF_GL + OFF_NEXT, OFF_GC + OFF_NEXT,
            OFF_GR + OFF_NEXT, OFF_LAM + OFF_NEXT, True, True, OFF_U + OFF_NEXT, OFF_D + OFF_NEXT, GROUP + 2, True,
            GATE_SHARE)


@triton.jit
def _pair_rows(x_ptr, p_ptr, m_ptr, acc_ptr, y_ptr, state_ptr, S: tl.constexpr, L: tl.constexpr, C: tl.constexpr,
               STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr,
               NSEG: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
               ROW: tl.constexpr, PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr,
               OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr,
               OFF_NEXT: tl.constexpr, GROUP: tl.constexpr, ACC: tl.constexpr, GATE_SHARE: tl.constexpr):
  # the second pass reuses the state rows: its first step reads none, and each step ends on a barrier
  _fwd_rows(x_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, m_ptr, acc_ptr, y_ptr, state_ptr, S, L, C, STRIDE_B,
            STRIDE_S, STRIDE_L, CHUNK, NSEG, False, NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, OFF_GL, OFF_GC, OFF_GR,
            OFF_LAM, True, ACC, OFF_U, OFF_D, GROUP, False, GATE_SHARE)
  _fwd_rows(x_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, m_ptr, y_ptr, y_ptr, state_ptr, S, L, C, STRIDE_B,
            STRIDE_S, STRIDE_L, CHUNK, NSEG, True, NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, OFF_GL + OFF_NEXT,
            OFF_GC + OFF_NEXT, OFF_GR + OFF_NEXT, OFF_LAM + OFF_NEXT, True, True, OFF_U + OFF_NEXT,
            OFF_D + OFF_NEXT, GROUP + 2, True, GATE_SHARE)


@triton.jit
def gspn_pair_fwd_kernel(x_ptr, p_ptr, m_ptr, y_ptr, S: tl.constexpr, L: tl.constexpr, C: tl.constexpr,
                         STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr,
                         CHUNK: tl.constexpr, NSEG: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr,
                         BLOCK_C: tl.constexpr, PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr,
                         OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr,
                         OFF_NEXT: tl.constexpr, GROUP: tl.constexpr, GATE_SHARE: tl.constexpr):
  """The layer's first pair: y = m[GROUP] (u h + d x) + m[GROUP + 2] (u h' + d x)."""
  _pair_tile(x_ptr, p_ptr, m_ptr, x_ptr, y_ptr, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG, NORMALIZE,
             BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, OFF_U, OFF_D, OFF_NEXT, GROUP, False, GATE_SHARE)


@triton.jit
def gspn_pair_fwd_acc_kernel(x_ptr, p_ptr, m_ptr, acc_ptr, y_ptr, S: tl.constexpr, L: tl.constexpr,
                             C: tl.constexpr, STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr,
                             STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr,
                             NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
                             PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr,
                             OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr,
                             OFF_NEXT: tl.constexpr, GROUP: tl.constexpr, GATE_SHARE: tl.constexpr):
  """The second pair, added to acc (the first pair's y)."""
  _pair_tile(x_ptr, p_ptr, m_ptr, acc_ptr, y_ptr, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG, NORMALIZE,
             BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, OFF_U, OFF_D, OFF_NEXT, GROUP, True, GATE_SHARE)


@triton.jit
def gspn_pair_fwd_rows_kernel(x_ptr, p_ptr, m_ptr, y_ptr, state_ptr, S: tl.constexpr, L: tl.constexpr,
                              C: tl.constexpr, STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr,
                              STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr,
                              NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
                              ROW: tl.constexpr, PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr,
                              OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, OFF_U: tl.constexpr,
                              OFF_D: tl.constexpr, OFF_NEXT: tl.constexpr, GROUP: tl.constexpr,
                              GATE_SHARE: tl.constexpr):
  _pair_rows(x_ptr, p_ptr, m_ptr, x_ptr, y_ptr, state_ptr, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG,
             NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, OFF_U, OFF_D, OFF_NEXT, GROUP,
             False, GATE_SHARE)


@triton.jit
def gspn_pair_fwd_acc_rows_kernel(x_ptr, p_ptr, m_ptr, acc_ptr, y_ptr, state_ptr, S: tl.constexpr,
                                  L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
                                  STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr,
                                  NSEG: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr,
                                  BLOCK_C: tl.constexpr, ROW: tl.constexpr, PITCH: tl.constexpr,
                                  OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr,
                                  OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr,
                                  OFF_NEXT: tl.constexpr, GROUP: tl.constexpr, GATE_SHARE: tl.constexpr):
  _pair_rows(x_ptr, p_ptr, m_ptr, acc_ptr, y_ptr, state_ptr, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG,
             NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, OFF_U, OFF_D, OFF_NEXT, GROUP,
             True, GATE_SHARE)


@triton.jit
def _bwd_pass_tile(x_ptr, p_ptr, m_ptr, dy_ptr, acc_ptr, dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr, du_ptr, dd_ptr,
                   h_ptr, dm_ptr, S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
                   STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr,
                   NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, PITCH: tl.constexpr,
                   OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr,
                   OFF_U: tl.constexpr, OFF_D: tl.constexpr, GROUP: tl.constexpr, ACC: tl.constexpr,
                   SECOND: tl.constexpr, GATE_SHARE: tl.constexpr):
  """One group's h recomputed into h_ptr, then its adjoint (the second group reversed, mirrored)."""
  _fwd_tile(x_ptr, p_ptr, p_ptr, p_ptr, p_ptr, x_ptr, x_ptr, x_ptr, x_ptr, h_ptr, S, L, C, STRIDE_B, STRIDE_S,
            STRIDE_L, CHUNK, NSEG, SECOND, NORMALIZE, BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM,
            False, False, 0, 0, 0, SECOND, GATE_SHARE)
  tl.debug_barrier()  # h complete before the adjoint reads it
  _bwd_tile(x_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, m_ptr, h_ptr, dy_ptr, acc_ptr, dx_ptr, dgl_ptr, dgc_ptr,
            dgr_ptr, dlam_ptr, du_ptr, dd_ptr, dm_ptr, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG, SECOND,
            NORMALIZE, BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, True, ACC, OFF_U, OFF_D, GROUP,
            SECOND, GATE_SHARE)
  tl.debug_barrier()  # the reads of h and the stores of dx done before the next group


@triton.jit
def _bwd_pass_rows(x_ptr, p_ptr, m_ptr, dy_ptr, acc_ptr, dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr, du_ptr, dd_ptr,
                   h_ptr, dm_ptr, state_ptr, S: tl.constexpr, L: tl.constexpr, C: tl.constexpr,
                   STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr,
                   NSEG: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
                   ROW: tl.constexpr, PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr,
                   OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr,
                   GROUP: tl.constexpr, ACC: tl.constexpr, SECOND: tl.constexpr, GATE_SHARE: tl.constexpr):
  """As _bwd_pass_tile; the forward's two state rows per program lie after the adjoint's six."""
  programs = tl.num_programs(0) * tl.num_programs(1)
  _fwd_rows(x_ptr, p_ptr, p_ptr, p_ptr, p_ptr, x_ptr, x_ptr, x_ptr, x_ptr, h_ptr, state_ptr + programs * (6 * ROW), S,
            L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG, SECOND, NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, OFF_GL,
            OFF_GC, OFF_GR, OFF_LAM, False, False, 0, 0, 0, SECOND, GATE_SHARE)
  _bwd_rows(x_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, m_ptr, h_ptr, dy_ptr, acc_ptr, dx_ptr, dgl_ptr, dgc_ptr,
            dgr_ptr, dlam_ptr, du_ptr, dd_ptr, dm_ptr, state_ptr, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG,
            SECOND, NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, True, ACC, OFF_U, OFF_D,
            GROUP, SECOND, GATE_SHARE)


@triton.jit
def gspn_pair_bwd_kernel(
    x_ptr, p_ptr, m_ptr, dy_ptr, dx_ptr, dgl_a, dgc_a, dgr_a, dlam_a, du_a, dd_a, dgl_b, dgc_b, dgr_b, dlam_b, du_b,
    dd_b, h_ptr, dma_ptr, dmb_ptr, S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
    STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr, NORMALIZE: tl.constexpr,
    BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr,
    OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr, OFF_NEXT: tl.constexpr,
    GROUP: tl.constexpr, GATE_SHARE: tl.constexpr):
  """The first pair's backward: dx, both groups' six gradients and dm sums; h scratch."""
  _bwd_pass_tile(x_ptr, p_ptr, m_ptr, dy_ptr, x_ptr, dx_ptr, dgl_a, dgc_a, dgr_a, dlam_a, du_a, dd_a, h_ptr, dma_ptr,
                 S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG, NORMALIZE, BLOCK_L, BLOCK_C, PITCH, OFF_GL,
                 OFF_GC, OFF_GR, OFF_LAM, OFF_U, OFF_D, GROUP, False, False, GATE_SHARE)
  _bwd_pass_tile(x_ptr, p_ptr, m_ptr, dy_ptr, dx_ptr, dx_ptr, dgl_b, dgc_b, dgr_b, dlam_b, du_b, dd_b, h_ptr, dmb_ptr,
                 S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG, NORMALIZE, BLOCK_L, BLOCK_C, PITCH, OFF_GL +
                 OFF_NEXT, OFF_GC + OFF_NEXT, OFF_GR + OFF_NEXT, OFF_LAM + OFF_NEXT, OFF_U + OFF_NEXT, OFF_D +
                 OFF_NEXT, GROUP + 2, True, True, GATE_SHARE)


@triton.jit
def gspn_pair_bwd_acc_kernel(
    x_ptr, p_ptr, m_ptr, dy_ptr, acc_ptr, dx_ptr, dgl_a, dgc_a, dgr_a, dlam_a, du_a, dd_a, dgl_b, dgc_b, dgr_b,
    dlam_b, du_b, dd_b, h_ptr, dma_ptr, dmb_ptr, S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B:
    tl.constexpr, STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr, NORMALIZE:
    tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC:
    tl.constexpr, OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr, OFF_NEXT:
    tl.constexpr, GROUP: tl.constexpr, GATE_SHARE: tl.constexpr):
  """The second pair's: dx added to acc, the first pair's dx."""
  _bwd_pass_tile(x_ptr, p_ptr, m_ptr, dy_ptr, acc_ptr, dx_ptr, dgl_a, dgc_a, dgr_a, dlam_a, du_a, dd_a, h_ptr,
                 dma_ptr, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG, NORMALIZE, BLOCK_L, BLOCK_C, PITCH,
                 OFF_GL, OFF_GC, OFF_GR, OFF_LAM, OFF_U, OFF_D, GROUP, True, False, GATE_SHARE)
  _bwd_pass_tile(x_ptr, p_ptr, m_ptr, dy_ptr, dx_ptr, dx_ptr, dgl_b, dgc_b, dgr_b, dlam_b, du_b, dd_b, h_ptr, dmb_ptr,
                 S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG, NORMALIZE, BLOCK_L, BLOCK_C, PITCH, OFF_GL +
                 OFF_NEXT, OFF_GC + OFF_NEXT, OFF_GR + OFF_NEXT, OFF_LAM + OFF_NEXT, OFF_U + OFF_NEXT, OFF_D +
                 OFF_NEXT, GROUP + 2, True, True, GATE_SHARE)


@triton.jit
def gspn_pair_bwd_rows_kernel(
    x_ptr, p_ptr, m_ptr, dy_ptr, dx_ptr, dgl_a, dgc_a, dgr_a, dlam_a, du_a, dd_a, dgl_b, dgc_b, dgr_b, dlam_b, du_b,
    dd_b, h_ptr, dma_ptr, dmb_ptr, state_ptr, S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B:
    tl.constexpr, STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr, NORMALIZE:
    tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, ROW: tl.constexpr, PITCH: tl.constexpr, OFF_GL:
    tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D:
    tl.constexpr, OFF_NEXT: tl.constexpr, GROUP: tl.constexpr, GATE_SHARE: tl.constexpr):
  """gspn_pair_bwd_kernel in the rows layout."""
  _bwd_pass_rows(x_ptr, p_ptr, m_ptr, dy_ptr, x_ptr, dx_ptr, dgl_a, dgc_a, dgr_a, dlam_a, du_a, dd_a, h_ptr, dma_ptr,
                 state_ptr, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG, NORMALIZE, BLOCK_L, BLOCK_C, ROW,
                 PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, OFF_U, OFF_D, GROUP, False, False, GATE_SHARE)
  _bwd_pass_rows(x_ptr, p_ptr, m_ptr, dy_ptr, dx_ptr, dx_ptr, dgl_b, dgc_b, dgr_b, dlam_b, du_b, dd_b, h_ptr, dmb_ptr,
                 state_ptr, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG, NORMALIZE, BLOCK_L, BLOCK_C, ROW,
                 PITCH, OFF_GL + OFF_NEXT, OFF_GC + OFF_NEXT, OFF_GR + OFF_NEXT, OFF_LAM + OFF_NEXT, OFF_U + OFF_NEXT,
                 OFF_D + OFF_NEXT, GROUP + 2, True, True, GATE_SHARE)


@triton.jit
def gspn_pair_bwd_acc_rows_kernel(
    x_ptr, p_ptr, m_ptr, dy_ptr, acc_ptr, dx_ptr, dgl_a, dgc_a, dgr_a, dlam_a, du_a, dd_a, dgl_b, dgc_b, dgr_b,
    dlam_b, du_b, dd_b, h_ptr, dma_ptr, dmb_ptr, state_ptr, S: tl.constexpr, L: tl.constexpr, C: tl.constexpr,
    STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr,
    NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, ROW: tl.constexpr, PITCH: tl.constexpr,
    OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, OFF_U: tl.constexpr,
    OFF_D: tl.constexpr, OFF_NEXT: tl.constexpr, GROUP: tl.constexpr, GATE_SHARE: tl.constexpr):
  """gspn_pair_bwd_acc_kernel in the rows layout."""
  _bwd_pass_rows(x_ptr, p_ptr, m_ptr, dy_ptr, acc_ptr, dx_ptr, dgl_a, dgc_a, dgr_a, dlam_a, du_a, dd_a, h_ptr,
                 dma_ptr, state_ptr, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG, NORMALIZE, BLOCK_L, BLOCK_C,
                 ROW, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, OFF_U, OFF_D, GROUP, True, False, GATE_SHARE)
  _bwd_pass_rows(x_ptr, p_ptr, m_ptr, dy_ptr, dx_ptr, dx_ptr, dgl_b, dgc_b, dgr_b, dlam_b, du_b, dd_b, h_ptr, dmb_ptr,
                 state_ptr, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG, NORMALIZE, BLOCK_L, BLOCK_C, ROW,
                 PITCH, OFF_GL + OFF_NEXT, OFF_GC + OFF_NEXT, OFF_GR + OFF_NEXT, OFF_LAM + OFF_NEXT, OFF_U + OFF_NEXT,
                 OFF_D + OFF_NEXT, GROUP + 2, True, True, GATE_SHARE)


# one axis's two groups: the layer's first pair, then the second adding to it
PAIR_FORWARD = {"tile": gspn_pair_fwd_kernel, "rows": gspn_pair_fwd_rows_kernel}
PAIR_FORWARD_ACC = {"tile": gspn_pair_fwd_acc_kernel, "rows": gspn_pair_fwd_acc_rows_kernel}
PAIR_BACKWARD = {"tile": gspn_pair_bwd_kernel, "rows": gspn_pair_bwd_rows_kernel}
PAIR_BACKWARD_ACC = {"tile": gspn_pair_bwd_acc_kernel, "rows": gspn_pair_bwd_acc_rows_kernel}
