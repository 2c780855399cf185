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
"""

import triton
import triton.language as tl

from kernels.gspn_triton import _fwd_rows, _fwd_tile


@triton.jit
def _pair_tile(x_ptr, p_ptr, m_ptr, acc_ptr, y_ptr, S: tl.constexpr, L: tl.constexpr, C: tl.constexpr,
               STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr,
               NSEG: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
               PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr,
               OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr, OFF_NEXT: tl.constexpr,
               GROUP: tl.constexpr, ACC: tl.constexpr):
  _fwd_tile(x_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, m_ptr, acc_ptr, y_ptr, S, L, C, STRIDE_B, STRIDE_S,
            STRIDE_L, CHUNK, NSEG, False, NORMALIZE, BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM,
            True, ACC, OFF_U, OFF_D, GROUP, False)
  tl.debug_barrier()  # the first pass's y is complete (other threads' stores) before the second adds to it
  _fwd_tile(x_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, m_ptr, y_ptr, y_ptr, S, L, C, STRIDE_B, STRIDE_S,
            STRIDE_L, CHUNK, NSEG, True, NORMALIZE, BLOCK_L, BLOCK_C, PITCH, OFF_GL + OFF_NEXT, OFF_GC + OFF_NEXT,
            OFF_GR + OFF_NEXT, OFF_LAM + OFF_NEXT, True, True, OFF_U + OFF_NEXT, OFF_D + OFF_NEXT, GROUP + 2, True)


@triton.jit
def _pair_rows(x_ptr, p_ptr, m_ptr, acc_ptr, y_ptr, state_ptr, S: tl.constexpr, L: tl.constexpr, C: tl.constexpr,
               STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr,
               NSEG: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
               ROW: tl.constexpr, PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr,
               OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr,
               OFF_NEXT: tl.constexpr, GROUP: tl.constexpr, ACC: tl.constexpr):
  # the second pass reuses the state rows: its first step reads none, and each step ends on a barrier
  _fwd_rows(x_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, m_ptr, acc_ptr, y_ptr, state_ptr, S, L, C, STRIDE_B,
            STRIDE_S, STRIDE_L, CHUNK, NSEG, False, NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, OFF_GL, OFF_GC, OFF_GR,
            OFF_LAM, True, ACC, OFF_U, OFF_D, GROUP, False)
  _fwd_rows(x_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, p_ptr, m_ptr, y_ptr, y_ptr, state_ptr, S, L, C, STRIDE_B,
            STRIDE_S, STRIDE_L, CHUNK, NSEG, True, NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, OFF_GL + OFF_NEXT,
            OFF_GC + OFF_NEXT, OFF_GR + OFF_NEXT, OFF_LAM + OFF_NEXT, True, True, OFF_U + OFF_NEXT,
            OFF_D + OFF_NEXT, GROUP + 2, True)


@triton.jit
def gspn_pair_fwd_kernel(x_ptr, p_ptr, m_ptr, y_ptr, S: tl.constexpr, L: tl.constexpr, C: tl.constexpr,
                         STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr,
                         CHUNK: tl.constexpr, NSEG: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr,
                         BLOCK_C: tl.constexpr, PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr,
                         OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr,
                         OFF_NEXT: tl.constexpr, GROUP: tl.constexpr):
  """The layer's first pair: y = m[GROUP] (u h + d x) + m[GROUP + 2] (u h' + d x)."""
  _pair_tile(x_ptr, p_ptr, m_ptr, x_ptr, y_ptr, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG, NORMALIZE,
             BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, OFF_U, OFF_D, OFF_NEXT, GROUP, False)


@triton.jit
def gspn_pair_fwd_acc_kernel(x_ptr, p_ptr, m_ptr, acc_ptr, y_ptr, S: tl.constexpr, L: tl.constexpr,
                             C: tl.constexpr, STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr,
                             STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr,
                             NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
                             PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr,
                             OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr,
                             OFF_NEXT: tl.constexpr, GROUP: tl.constexpr):
  """The second pair, added to acc (the first pair's y)."""
  _pair_tile(x_ptr, p_ptr, m_ptr, acc_ptr, y_ptr, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG, NORMALIZE,
             BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, OFF_U, OFF_D, OFF_NEXT, GROUP, True)


@triton.jit
def gspn_pair_fwd_rows_kernel(x_ptr, p_ptr, m_ptr, y_ptr, state_ptr, S: tl.constexpr, L: tl.constexpr,
                              C: tl.constexpr, STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr,
                              STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr,
                              NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
                              ROW: tl.constexpr, PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr,
                              OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, OFF_U: tl.constexpr,
                              OFF_D: tl.constexpr, OFF_NEXT: tl.constexpr, GROUP: tl.constexpr):
  _pair_rows(x_ptr, p_ptr, m_ptr, x_ptr, y_ptr, state_ptr, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG,
             NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, OFF_U, OFF_D, OFF_NEXT, GROUP,
             False)


@triton.jit
def gspn_pair_fwd_acc_rows_kernel(x_ptr, p_ptr, m_ptr, acc_ptr, y_ptr, state_ptr, S: tl.constexpr,
                                  L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
                                  STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr,
                                  NSEG: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr,
                                  BLOCK_C: tl.constexpr, ROW: tl.constexpr, PITCH: tl.constexpr,
                                  OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr,
                                  OFF_LAM: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr,
                                  OFF_NEXT: tl.constexpr, GROUP: tl.constexpr):
  _pair_rows(x_ptr, p_ptr, m_ptr, acc_ptr, y_ptr, state_ptr, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG,
             NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, OFF_U, OFF_D, OFF_NEXT, GROUP,
             True)


# one axis's two groups: the layer's first pair, then the second adding to it
PAIR_FORWARD = {"tile": gspn_pair_fwd_kernel, "rows": gspn_pair_fwd_rows_kernel}
PAIR_FORWARD_ACC = {"tile": gspn_pair_fwd_acc_kernel, "rows": gspn_pair_fwd_acc_rows_kernel}
