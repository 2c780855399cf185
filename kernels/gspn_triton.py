"""GSPN propagation in Triton: forward and backward kernels for all directions, in two layouts.

Arrays are NHWC. A direction is a view given by constexpr strides in pixels: STRIDE_S
steps along the scan axis, STRIDE_L along the line, channels are contiguous; REVERSE walks the scan
axis backwards. Nothing is transposed or flipped in memory, outputs land in the image
frame. One program owns (batch element, segment, block of BLOCK_C channels) and keeps
the fp32 state of the whole line in registers ([BLOCK_L, BLOCK_C]); the h[l - 1] and
h[l + 1] neighbours come from tl.gather along the line (the "tile" layout, for lines
short enough that the channel block spreads over all warps). Every step reads each input
once and writes the output once. With NORMALIZE the gates arrive as logits and the
stability-context normalisation (sigmoid, divide by the sum over the neighbours that
exist) runs in the prologue, and its Jacobian in the backward.

The "rows" layout serves long lines (few channels, high resolution), where tl.gather
would hold the whole line in one warp, replicate it over the others and spill: each step
walks the line in BLOCK_L x BLOCK_C tiles and takes the previous step's state h[j - 1] at
l - 1, l, l + 1 from a per-program fp32 state row in global memory (two slots, one
barrier per step; it stays in L1/L2), so no tile holds more than BLOCK_L lanes of a line;
each tile's inputs are loaded during the previous tile's iteration.

Segments have CHUNK steps counted from the scan's start, in both passes.

x, h, dh and the gradients have C channels per pixel. gl, gc, gr and lambda are read in
place from wider arrays: pixel pitch PITCH, channel offsets OFF_GL, OFF_GC, OFF_GR,
OFF_LAM (the projection outputs of a GSPN layer hold every group's gates side by side),
so no channel slice is ever copied for a kernel. With channel-shared gates (GATE_SHARE > 1)
channel c reads gate channel c // GATE_SHARE (_gate_tile); the gate gradients stay per
channel (the caller sums them over the sharing channels). Separate C-channel arrays are PITCH = C
with zero offsets. The bodies (_fwd_tile, _bwd_tile, _fwd_rows, _bwd_rows) also serve a
GSPN layer's kernels (gspn_layer_triton.py) through their EPILOGUE / CORE constexprs.
"""

import triton
import triton.language as tl


@triton.jit
def _tile(program_b, program_c, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
          STRIDE_L: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
  """Pixel offsets and channels of one line x channel-block tile, its mask, and the
  neighbour helpers."""
  l = tl.arange(0, BLOCK_L)
  c = program_c * BLOCK_C + tl.arange(0, BLOCK_C)
  mask = (l < L)[:, None] & (c < C)[None, :]
  base = program_b.to(tl.int64) * STRIDE_B + l[:, None].to(tl.int64) * STRIDE_L
  zero = tl.zeros((BLOCK_L, BLOCK_C), tl.int32)
  idx_up = tl.maximum(l - 1, 0)[:, None] + zero            # h[l - 1]
  idx_dn = tl.minimum(l + 1, BLOCK_L - 1)[:, None] + zero  # h[l + 1]
  has_up = (l >= 1)[:, None].to(tl.float32)
  has_dn = (l + 1 < L)[:, None].to(tl.float32)
  return base, c[None, :], mask, idx_up, idx_dn, has_up, has_dn


@triton.jit
def _segment(NSEG: tl.constexpr, MIRROR: tl.constexpr):
  seg = tl.program_id(0) % NSEG
  if MIRROR:
    seg = NSEG - 1 - seg
  return seg


@triton.jit
def _step(x_ptr, lam_ptr, base, c, tile_mask, seg, j, S: tl.constexpr, CHUNK: tl.constexpr, REVERSE: tl.constexpr,
          STRIDE_S: tl.constexpr, C: tl.constexpr, PITCH: tl.constexpr, OFF_LAM: tl.constexpr):
  """Mask of the segment's j-th scan step, its offsets in C-channel arrays (off) and in
  the PITCH-wide ones before the channel offset (poff), and its x and lambda tiles."""
  s = seg * CHUNK + j
  if REVERSE:
    pos = S - 1 - s
  else:
    pos = s
  # not `tile_mask & (s < S)`: Triton 3.9's interpreter makes that int32; j == CHUNK: a prefetch past the segment
  mask = tl.where(j < CHUNK, tl.where(s < S, tile_mask, False), False)
  pix = base + pos.to(tl.int64) * STRIDE_S
  off = pix * C + c
  poff = pix * PITCH + c
  x = tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32)
  lam = tl.load(lam_ptr + (poff + OFF_LAM), mask=mask, other=0.0).to(tl.float32)
  return mask, off, poff, x, lam


@triton.jit
def _gate_tile(poff, mask, c, base, line_mask, seg, j, S: tl.constexpr, CHUNK: tl.constexpr, REVERSE: tl.constexpr,
               STRIDE_S: tl.constexpr, PITCH: tl.constexpr, C: tl.constexpr, BLOCK_C: tl.constexpr,
               GATE_SHARE: tl.constexpr):
  """Offsets (before OFF_G*) and mask of step j's gate loads: channel c reads gate channel
  c // GATE_SHARE of its group (GATE_SHARE = D / G channels per shared gate; 1: its own).
  Where the program's channel block lies in one gate's channels (G = 1, or GATE_SHARE a
  multiple of BLOCK_C) the gates are a [BLOCK_L, 1] column: one load, sigmoid and
  normalisation per pixel, broadcast over the channels where they meet the state."""
  goff, gmask = poff, mask
  if GATE_SHARE > 1:
    if GATE_SHARE >= C or GATE_SHARE % BLOCK_C == 0:
      s = seg * CHUNK + j
      if REVERSE:
        pos = S - 1 - s
      else:
        pos = s
      goff = (base + pos.to(tl.int64) * STRIDE_S) * PITCH + (tl.program_id(1) * BLOCK_C) // GATE_SHARE
      gmask = tl.where(j < CHUNK, tl.where(s < S, line_mask, False), False)
    else:
      goff = poff - c + c // GATE_SHARE
  return goff, gmask


@triton.jit
def _load_gates(gl_ptr, gc_ptr, gr_ptr, poff, mask, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr,
                OFF_GR: tl.constexpr):
  gl = tl.load(gl_ptr + (poff + OFF_GL), mask=mask, other=0.0).to(tl.float32)
  gc = tl.load(gc_ptr + (poff + OFF_GC), mask=mask, other=0.0).to(tl.float32)
  gr = tl.load(gr_ptr + (poff + OFF_GR), mask=mask, other=0.0).to(tl.float32)
  return gl, gc, gr


@triton.jit
def _gates(gl_ptr, gc_ptr, gr_ptr, poff, mask, has_up, has_dn, NORMALIZE: tl.constexpr, OFF_GL: tl.constexpr,
           OFF_GC: tl.constexpr, OFF_GR: tl.constexpr):
  """(gl, gc, gr) as the scan uses them, the sigmoids, and 1/sum (NORMALIZE only)."""
  gl, gc, gr = _load_gates(gl_ptr, gc_ptr, gr_ptr, poff, mask, OFF_GL, OFF_GC, OFF_GR)
  return _prologue(gl, gc, gr, mask, has_up, has_dn, NORMALIZE)


@triton.jit
def _prologue(gl, gc, gr, mask, has_up, has_dn, NORMALIZE: tl.constexpr):
  """The gates as the scan uses them from the loaded ones (logits with NORMALIZE)."""
  if NORMALIZE:
    gl = tl.sigmoid(gl)
    gc = tl.sigmoid(gc)
    gr = tl.sigmoid(gr)
    total = gl * has_up + gc + gr * has_dn
    inv = tl.where(mask, 1.0 / tl.maximum(total, 1e-7), 0.0)  # padding lanes get zero gates
    active = (total >= 1e-7).to(tl.float32)  # below the clamp the sum is a constant
    return gl * inv, gc * inv, gr * inv, gl, gc, gr, inv, active
  return gl, gc, gr, gl, gc, gr, gl, gl  # the last five are unused without NORMALIZE


@triton.jit
def _store_grads(dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr, off, mask, dx, dlam, dgl, dgc, dgr, gates, has_up,
                 has_dn, NORMALIZE: tl.constexpr):
  """One step's input gradients from the raw gate gradients, stored; with NORMALIZE
  through gate = sigmoid(logit) / sum of the existing neighbours' sigmoids."""
  gl, gc, gr, sl, sc, sr, inv, act = gates
  if NORMALIZE:
    t = (dgl * gl + dgc * gc + dgr * gr) * act
    dgl = (dgl - t * has_up) * inv * sl * (1.0 - sl)
    dgc = (dgc - t) * inv * sc * (1.0 - sc)
    dgr = (dgr - t * has_dn) * inv * sr * (1.0 - sr)
  tl.store(dx_ptr + off, dx.to(dx_ptr.dtype.element_ty), mask=mask)
  tl.store(dlam_ptr + off, dlam.to(dlam_ptr.dtype.element_ty), mask=mask)
  tl.store(dgl_ptr + off, dgl.to(dgl_ptr.dtype.element_ty), mask=mask)
  tl.store(dgc_ptr + off, dgc.to(dgc_ptr.dtype.element_ty), mask=mask)
  tl.store(dgr_ptr + off, dgr.to(dgr_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _cotangent_inputs(dh_ptr, u_ptr, d_ptr, h_ptr, acc_ptr, off, poff, mask, like, CORE: tl.constexpr,
                      ACC: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr):
  """What _cotangent reads at a step: dh (CORE: the layer's dy), u, d, h, acc (`like`
  stands in for what is not read)."""
  dh = tl.load(dh_ptr + off, mask=mask, other=0.0).to(tl.float32)
  u, d, h, acc = like, like, like, like
  if CORE:
    u = tl.load(u_ptr + (poff + OFF_U), mask=mask, other=0.0).to(tl.float32)
    d = tl.load(d_ptr + (poff + OFF_D), mask=mask, other=0.0).to(tl.float32)
    h = tl.load(h_ptr + off, mask=mask, other=0.0).to(tl.float32)
    if ACC:
      acc = tl.load(acc_ptr + off, mask=mask, other=0.0).to(tl.float32)
  return dh, u, d, h, acc


@triton.jit
def _cotangent(du_ptr, dd_ptr, off, mask, x, lam, carry, mk, dh, u, d, h, acc, CORE: tl.constexpr,
               ACC: tl.constexpr):
  """(g = dL/dh, dL/dx, dm's term) at one step. CORE: dh is the layer output's
  cotangent dy, so dL/dh = m u dy; stores du = m dy h and dd = m dy x, adds the direct
  m d dy (and with ACC the previous groups' dx) to dx; dm's term is dy (u h + d x)."""
  if CORE:
    g = mk * u * dh + carry
    dx = lam * g + mk * d * dh
    if ACC:
      dx += acc
    tl.store(du_ptr + off, (mk * dh * h).to(du_ptr.dtype.element_ty), mask=mask)
    tl.store(dd_ptr + off, (mk * dh * x).to(dd_ptr.dtype.element_ty), mask=mask)
    return g, dx, dh * (u * h + d * x)
  g = dh + carry
  return g, lam * g, g  # the last is unused without CORE


@triton.jit
def _fwd_tile(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, acc_ptr, out_ptr,
              S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr,
              STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr, REVERSE: tl.constexpr,
              NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, PITCH: tl.constexpr,
              OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr,
              EPILOGUE: tl.constexpr, ACC: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr,
              GROUP: tl.constexpr, MIRROR: tl.constexpr, GATE_SHARE: tl.constexpr):
  """The tile layout's forward; with EPILOGUE it stores [acc +] m[GROUP] (u h + d x)
  instead of h. MIRROR: segment NSEG - 1 - seg, i.e. with REVERSE the pixels the forward
  scan's segment seg covers (when S % CHUNK == 0)."""
  seg = _segment(NSEG, MIRROR)
  base, c, tile_mask, idx_up, idx_dn, has_up, has_dn = _tile(tl.program_id(0) // NSEG, tl.program_id(1), L, C,
                                                             STRIDE_B, STRIDE_L, BLOCK_L, BLOCK_C)
  h = tl.zeros((BLOCK_L, BLOCK_C), tl.float32)  # zero carry at the segment start
  line_mask = (tl.arange(0, BLOCK_L) < L)[:, None]
  mask, off, poff, x, lam = _step(x_ptr, lam_ptr, base, c, tile_mask, seg, 0, S, CHUNK, REVERSE, STRIDE_S, C, PITCH,
                                  OFF_LAM)
  goff, gmask = _gate_tile(poff, mask, c, base, line_mask, seg, 0, S, CHUNK, REVERSE, STRIDE_S, PITCH, C, BLOCK_C,
                           GATE_SHARE)
  gl, gc, gr = _load_gates(gl_ptr, gc_ptr, gr_ptr, goff, gmask, OFF_GL, OFF_GC, OFF_GR)
  for j in tl.range(0, CHUNK):
    # step j + 1's loads go out before step j's math (the loop is not pipelined by the compiler)
    mask1, off1, poff1, x1, lam1 = _step(x_ptr, lam_ptr, base, c, tile_mask, seg, j + 1, S, CHUNK, REVERSE,
                                         STRIDE_S, C, PITCH, OFF_LAM)
    goff1, gmask1 = _gate_tile(poff1, mask1, c, base, line_mask, seg, j + 1, S, CHUNK, REVERSE, STRIDE_S, PITCH, C,
                               BLOCK_C, GATE_SHARE)
    gl1, gc1, gr1 = _load_gates(gl_ptr, gc_ptr, gr_ptr, goff1, gmask1, OFF_GL, OFF_GC, OFF_GR)
    _goff, gmask = _gate_tile(poff, mask, c, base, line_mask, seg, j, S, CHUNK, REVERSE, STRIDE_S, PITCH, C, BLOCK_C,
                              GATE_SHARE)  # step j's gate mask
    a, b, cc, _sl, _sc, _sr, _inv, _act = _prologue(gl, gc, gr, gmask, has_up, has_dn, NORMALIZE)
    up = tl.gather(h, idx_up, 0) * has_up
    dn = tl.gather(h, idx_dn, 0) * has_dn
    h = lam * x + a * up + b * h + cc * dn
    u, d, acc = _epilogue_inputs(u_ptr, d_ptr, acc_ptr, off, poff, mask, x, EPILOGUE, ACC, OFF_U, OFF_D)
    _emit(m_ptr, out_ptr, off, mask, h, x, u, d, acc, EPILOGUE, ACC, GROUP)
    mask, off, poff, x, lam, gl, gc, gr = mask1, off1, poff1, x1, lam1, gl1, gc1, gr1


@triton.jit
def _epilogue_inputs(u_ptr, d_ptr, acc_ptr, off, poff, mask, like, EPILOGUE: tl.constexpr, ACC: tl.constexpr,
                     OFF_U: tl.constexpr, OFF_D: tl.constexpr):
  """u, d and (ACC) the previous groups' sum at a step: what _emit reads besides h and x
  (`like` stands in for what is not read)."""
  u, d, acc = like, like, like
  if EPILOGUE:
    u = tl.load(u_ptr + (poff + OFF_U), mask=mask, other=0.0).to(tl.float32)
    d = tl.load(d_ptr + (poff + OFF_D), mask=mask, other=0.0).to(tl.float32)
    if ACC:
      acc = tl.load(acc_ptr + off, mask=mask, other=0.0).to(tl.float32)
  return u, d, acc


@triton.jit
def _emit(m_ptr, out_ptr, off, mask, h, x, u, d, acc, EPILOGUE: tl.constexpr, ACC: tl.constexpr,
          GROUP: tl.constexpr):
  """Stores h, or with EPILOGUE the group's merged output [acc +] m (u h + d x)."""
  if EPILOGUE:
    y = tl.load(m_ptr + GROUP).to(tl.float32) * (u * h + d * x)
    if ACC:
      y += acc
    tl.store(out_ptr + off, y.to(out_ptr.dtype.element_ty), mask=mask)
  else:
    tl.store(out_ptr + off, h.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gspn_fwd_kernel(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, h_ptr,
                    S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
                    STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr,
                    REVERSE: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
                    PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr,
                    OFF_LAM: tl.constexpr, GATE_SHARE: tl.constexpr):
  _fwd_tile(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, x_ptr, x_ptr, x_ptr, x_ptr, h_ptr, S, L, C, STRIDE_B, STRIDE_S,
            STRIDE_L, CHUNK, NSEG, REVERSE, NORMALIZE, BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM,
            False, False, 0, 0, 0, False, GATE_SHARE)


@triton.jit
def _bwd_tile(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, h_ptr, dh_ptr, acc_ptr,
              dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr, du_ptr, dd_ptr, dm_ptr,
              S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr,
              STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr, REVERSE: tl.constexpr,
              NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, PITCH: tl.constexpr,
              OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr,
              CORE: tl.constexpr, ACC: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr, GROUP: tl.constexpr,
              MIRROR: tl.constexpr, GATE_SHARE: tl.constexpr):
  """The adjoint: g[j] = dh[j] + T[j+1]^T g[j+1] in reverse, then the input gradients
  (CORE: through the layer's epilogue, _cotangent; dm's per-program sum in dm_ptr).
  MIRROR as in _fwd_tile."""
  seg = _segment(NSEG, MIRROR)
  base, c, tile_mask, idx_up, idx_dn, has_up, has_dn = _tile(tl.program_id(0) // NSEG, tl.program_id(1), L, C,
                                                             STRIDE_B, STRIDE_L, BLOCK_L, BLOCK_C)
  mk = tl.load(m_ptr + GROUP).to(tl.float32) if CORE else 1.0
  line_mask = (tl.arange(0, BLOCK_L) < L)[:, None]
  carry = tl.zeros((BLOCK_L, BLOCK_C), tl.float32)  # T[j+1]^T g[j+1]; zero past the segment end
  dm = tl.zeros((BLOCK_L, BLOCK_C), tl.float32)
  for jj in tl.range(0, CHUNK):
    j = CHUNK - 1 - jj
    mask, off, poff, x, lam = _step(x_ptr, lam_ptr, base, c, tile_mask, seg, j, S, CHUNK, REVERSE, STRIDE_S, C,
                                    PITCH, OFF_LAM)
    if REVERSE:
      prev_off = off + STRIDE_S * C
    else:
      prev_off = off - STRIDE_S * C
    goff, gmask = _gate_tile(poff, mask, c, base, line_mask, seg, j, S, CHUNK, REVERSE, STRIDE_S, PITCH, C, BLOCK_C,
                             GATE_SHARE)
    gl, gc, gr, sl, sc, sr, inv, act = _gates(gl_ptr, gc_ptr, gr_ptr, goff, gmask, has_up, has_dn, NORMALIZE, OFF_GL,
                                              OFF_GC, OFF_GR)
    dh, u, d, h, acc = _cotangent_inputs(dh_ptr, u_ptr, d_ptr, h_ptr, acc_ptr, off, poff, mask, x, CORE, ACC, OFF_U,
                                         OFF_D)
    g, dx, dm_step = _cotangent(du_ptr, dd_ptr, off, mask, x, lam, carry, mk, dh, u, d, h, acc, CORE, ACC)
    if CORE:
      dm += dm_step
    # h[j-1]; zero at the segment start
    hp = tl.load(h_ptr + prev_off, mask=tl.where(j > 0, mask, False), other=0.0).to(tl.float32)
    dgl = g * tl.gather(hp, idx_up, 0) * has_up
    dgc = g * hp
    dgr = g * tl.gather(hp, idx_dn, 0) * has_dn
    _store_grads(dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr, off, mask, dx, x * g, dgl, dgc, dgr,
                 (gl, gc, gr, sl, sc, sr, inv, act), has_up, has_dn, NORMALIZE)
    # What step j's gates carry back to step j - 1: gc g[l] + gl[l+1] g[l+1] + gr[l-1] g[l-1].
    carry = gc * g + tl.gather(gl * g, idx_dn, 0) * has_dn + tl.gather(gr * g, idx_up, 0) * has_up
  if CORE:
    tl.store(dm_ptr + tl.program_id(0) * tl.num_programs(1) + tl.program_id(1), tl.sum(tl.sum(dm, 1), 0))


@triton.jit
def gspn_bwd_kernel(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, h_ptr, dh_ptr,
                    dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr,
                    S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
                    STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr,
                    REVERSE: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr,
                    PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr,
                    OFF_LAM: tl.constexpr, GATE_SHARE: tl.constexpr):
  _bwd_tile(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, x_ptr, x_ptr, x_ptr, h_ptr, dh_ptr, x_ptr,
            dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr, dx_ptr, dx_ptr, dx_ptr, S, L, C, STRIDE_B, STRIDE_S,
            STRIDE_L, CHUNK, NSEG, REVERSE, NORMALIZE, BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM,
            False, False, 0, 0, 0, False, GATE_SHARE)


@triton.jit
def _row_tile(program_b, program_c, l0, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
              STRIDE_L: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
  """Pixel offsets, channels and mask of the line tile starting at l0, its state-row
  offsets, neighbour masks."""
  l = l0 + tl.arange(0, BLOCK_L)
  c = program_c * BLOCK_C + tl.arange(0, BLOCK_C)
  mask = tl.where((c < C)[None, :], (l < L)[:, None], False)
  base = program_b.to(tl.int64) * STRIDE_B + l[:, None].to(tl.int64) * STRIDE_L
  row = l[:, None] * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
  up = (l >= 1)[:, None]
  dn = (l + 1 < L)[:, None]
  return base, c[None, :], mask, row, up, dn


@triton.jit
def _rows_tile_inputs(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, j, l0, seg, S: tl.constexpr, L: tl.constexpr,
                      C: tl.constexpr, STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr,
                      CHUNK: tl.constexpr, NSEG: tl.constexpr, REVERSE: tl.constexpr, BLOCK_L: tl.constexpr,
                      BLOCK_C: tl.constexpr, PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr,
                      OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, GATE_SHARE: tl.constexpr):
  """Step j's line tile at l0 in the rows layout: its masks, state-row and image offsets,
  and its x, lambda and gate logits."""
  base, c, tile_mask, row, up, dn = _row_tile(tl.program_id(0) // NSEG, tl.program_id(1), l0, L, C, STRIDE_B,
                                              STRIDE_L, BLOCK_L, BLOCK_C)
  mask, off, poff, x, lam = _step(x_ptr, lam_ptr, base, c, tile_mask, seg, j, S, CHUNK, REVERSE, STRIDE_S, C, PITCH,
                                  OFF_LAM)
  goff, gmask = _gate_tile(poff, mask, c, base, (l0 + tl.arange(0, BLOCK_L) < L)[:, None], seg, j, S, CHUNK,
                           REVERSE, STRIDE_S, PITCH, C, BLOCK_C, GATE_SHARE)
  gl, gc, gr = _load_gates(gl_ptr, gc_ptr, gr_ptr, goff, gmask, OFF_GL, OFF_GC, OFF_GR)
  return tile_mask, row, up, dn, mask, off, poff, gmask, x, lam, gl, gc, gr


@triton.jit
def _rows_inputs(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, acc_ptr, i, seg, S: tl.constexpr,
                 L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr,
                 STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr, REVERSE: tl.constexpr,
                 BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, PITCH: tl.constexpr, OFF_GL: tl.constexpr,
                 OFF_GC: tl.constexpr, OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, EPILOGUE: tl.constexpr,
                 ACC: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr, GATE_SHARE: tl.constexpr):
  """The rows layout's i-th line tile (step i // tiles per step, tile i % tiles): its step,
  masks, offsets and every input that does not depend on the state (x, lambda, the gate
  logits, u, d, acc); past the last tile everything is masked."""
  tiles: tl.constexpr = (L + BLOCK_L - 1) // BLOCK_L
  j = i // tiles
  tile_mask, row, up, dn, mask, off, poff, gmask, x, lam, gl, gc, gr = _rows_tile_inputs(
      x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, j, (i % tiles) * BLOCK_L, seg, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L,
      CHUNK, NSEG, REVERSE, BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, GATE_SHARE)
  u, d, acc = _epilogue_inputs(u_ptr, d_ptr, acc_ptr, off, poff, mask, x, EPILOGUE, ACC, OFF_U, OFF_D)
  return j, mask, off, row, up, dn, gmask, x, lam, gl, gc, gr, u, d, acc


@triton.jit
def _fwd_rows(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, acc_ptr, out_ptr, state_ptr,
              S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr,
              STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr, REVERSE: tl.constexpr,
              NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, ROW: tl.constexpr,
              PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr,
              OFF_LAM: tl.constexpr, EPILOGUE: tl.constexpr, ACC: tl.constexpr, OFF_U: tl.constexpr,
              OFF_D: tl.constexpr, GROUP: tl.constexpr, MIRROR: tl.constexpr, GATE_SHARE: tl.constexpr):
  """The rows layout's forward; EPILOGUE, MIRROR as in _fwd_tile. The walk over (step,
  line tile) is one loop that loads the next tile's inputs in this tile's iteration (the
  compiler does not pipeline it), so they are in flight across the step's barrier: a step
  waits for the longer of the HBM latency and its state round trip, not their sum."""
  seg = _segment(NSEG, MIRROR)
  program = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
  state = state_ptr + program.to(tl.int64) * (2 * ROW)
  tiles: tl.constexpr = (L + BLOCK_L - 1) // BLOCK_L
  j, mask, off, row, up, dn, gmask, x, lam, gl, gc, gr, u, d, acc = _rows_inputs(
      x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, acc_ptr, 0, seg, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L,
      CHUNK, NSEG, REVERSE, BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, EPILOGUE, ACC, OFF_U, OFF_D,
      GATE_SHARE)
  for i in tl.range(0, CHUNK * tiles):
    j1, mask1, off1, row1, up1, dn1, gmask1, x1, lam1, gl1, gc1, gr1, u1, d1, acc1 = _rows_inputs(
        x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, acc_ptr, i + 1, seg, S, L, C, STRIDE_B, STRIDE_S,
        STRIDE_L, CHUNK, NSEG, REVERSE, BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, EPILOGUE, ACC, OFF_U,
        OFF_D, GATE_SHARE)
    read = ((j + 1) % 2) * ROW  # h[j - 1], written before the last barrier
    write = (j % 2) * ROW
    a, b, cc, _sl, _sc, _sr, _inv, _act = _prologue(gl, gc, gr, gmask, up.to(tl.float32), dn.to(tl.float32),
                                                    NORMALIZE)
    prev = tl.where(j > 0, mask, False)  # zero carry at the segment start
    h_up = tl.load(state + (read + row - BLOCK_C), mask=tl.where(up, prev, False), other=0.0)
    h_mid = tl.load(state + (read + row), mask=prev, other=0.0)
    h_dn = tl.load(state + (read + row + BLOCK_C), mask=tl.where(dn, prev, False), other=0.0)
    h = lam * x + a * h_up + b * h_mid + cc * h_dn
    _emit(m_ptr, out_ptr, off, mask, h, x, u, d, acc, EPILOGUE, ACC, GROUP)
    tl.store(state + (write + row), h, mask=mask)
    if i % tiles == tiles - 1:
      tl.debug_barrier()  # the row is complete before the next step reads its neighbours
    j, mask, off, row, up, dn, gmask, x, lam, gl, gc, gr, u, d, acc = (j1, mask1, off1, row1, up1, dn1, gmask1, x1,
                                                                       lam1, gl1, gc1, gr1, u1, d1, acc1)


@triton.jit
def gspn_fwd_rows_kernel(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, h_ptr, state_ptr,
                         S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
                         STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr,
                         REVERSE: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr,
                         BLOCK_C: tl.constexpr, ROW: tl.constexpr, PITCH: tl.constexpr, OFF_GL: tl.constexpr,
                         OFF_GC: tl.constexpr, OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, GATE_SHARE: tl.constexpr):
  _fwd_rows(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, x_ptr, x_ptr, x_ptr, x_ptr, h_ptr, state_ptr, S, L, C, STRIDE_B,
            STRIDE_S, STRIDE_L, CHUNK, NSEG, REVERSE, NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, OFF_GL, OFF_GC, OFF_GR,
            OFF_LAM, False, False, 0, 0, 0, False, GATE_SHARE)


@triton.jit
def _rows_adjoint_inputs(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, h_ptr, dh_ptr, acc_ptr, i, seg,
                         S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
                         STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr,
                         REVERSE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, PITCH: tl.constexpr,
                         OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr,
                         CORE: tl.constexpr, ACC: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr,
                         GATE_SHARE: tl.constexpr):
  """The adjoint walk's i-th line tile (steps in reverse): its step, masks, offsets and
  every input that does not depend on the carried state (x, lambda, the gate logits, the
  _cotangent inputs, h[j - 1] at l - 1, l, l + 1)."""
  tiles: tl.constexpr = (L + BLOCK_L - 1) // BLOCK_L
  jj = i // tiles
  j = CHUNK - 1 - jj
  tile_mask, row, up, dn, mask, off, poff, gmask, x, lam, gl, gc, gr = _rows_tile_inputs(
      x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, j, (i % tiles) * BLOCK_L, seg, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L,
      CHUNK, NSEG, REVERSE, BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM, GATE_SHARE)
  dh, u, d, h, acc = _cotangent_inputs(dh_ptr, u_ptr, d_ptr, h_ptr, acc_ptr, off, poff, mask, x, CORE, ACC, OFF_U,
                                       OFF_D)
  if REVERSE:
    prev_off = off + STRIDE_S * C
  else:
    prev_off = off - STRIDE_S * C
  first = tl.where(j > 0, mask, False)  # h[j-1] is zero at the segment start
  hp_up = tl.load(h_ptr + prev_off - STRIDE_L * C, mask=tl.where(up, first, False), other=0.0).to(tl.float32)
  hp = tl.load(h_ptr + prev_off, mask=first, other=0.0).to(tl.float32)
  hp_dn = tl.load(h_ptr + prev_off + STRIDE_L * C, mask=tl.where(dn, first, False), other=0.0).to(tl.float32)
  return (jj, mask, tile_mask, off, row, up, dn, gmask, x, lam, gl, gc, gr, dh, u, d, h, acc, hp_up, hp, hp_dn)


@triton.jit
def _bwd_rows(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, m_ptr, h_ptr, dh_ptr, acc_ptr,
              dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr, du_ptr, dd_ptr, dm_ptr, state_ptr,
              S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr, STRIDE_S: tl.constexpr,
              STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr, REVERSE: tl.constexpr,
              NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr, ROW: tl.constexpr,
              PITCH: tl.constexpr, OFF_GL: tl.constexpr, OFF_GC: tl.constexpr, OFF_GR: tl.constexpr,
              OFF_LAM: tl.constexpr, CORE: tl.constexpr, ACC: tl.constexpr, OFF_U: tl.constexpr, OFF_D: tl.constexpr,
              GROUP: tl.constexpr, MIRROR: tl.constexpr, GATE_SHARE: tl.constexpr):
  """The adjoint as in _bwd_tile; step j + 1 leaves gc g, gl g, gr g in three state rows.
  One loop over (step, line tile) as in _fwd_rows, the next tile's inputs loaded first
  (the last tile reloads itself: no load past the segment)."""
  seg = _segment(NSEG, MIRROR)
  program = tl.program_id(0) * tl.num_programs(1) + tl.program_id(1)
  state = state_ptr + program.to(tl.int64) * (6 * ROW)
  mk = tl.load(m_ptr + GROUP).to(tl.float32) if CORE else 1.0
  dm = tl.zeros((BLOCK_L, BLOCK_C), tl.float32)
  tiles: tl.constexpr = (L + BLOCK_L - 1) // BLOCK_L
  (jj, mask, tile_mask, off, row, up, dn, gmask, x, lam, gl, gc, gr, dh, u, d, h, acc, hp_up, hp,
   hp_dn) = _rows_adjoint_inputs(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, h_ptr, dh_ptr, acc_ptr, 0, seg,
                                 S, L, C, STRIDE_B, STRIDE_S, STRIDE_L, CHUNK, NSEG, REVERSE, BLOCK_L, BLOCK_C, PITCH,
                                 OFF_GL, OFF_GC, OFF_GR, OFF_LAM, CORE, ACC, OFF_U, OFF_D, GATE_SHARE)
  for i in tl.range(0, CHUNK * tiles):
    (jj1, mask1, tile_mask1, off1, row1, up1, dn1, gmask1, x1, lam1, gl1, gc1, gr1, dh1, u1, d1, h1, acc1, hp_up1, hp1,
     hp_dn1) = _rows_adjoint_inputs(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, u_ptr, d_ptr, h_ptr, dh_ptr, acc_ptr,
                                    tl.minimum(i + 1, CHUNK * tiles - 1), seg, S, L, C, STRIDE_B, STRIDE_S, STRIDE_L,
                                    CHUNK, NSEG, REVERSE, BLOCK_L, BLOCK_C, PITCH, OFF_GL, OFF_GC, OFF_GR, OFF_LAM,
                                    CORE, ACC, OFF_U, OFF_D, GATE_SHARE)
    read = state + ((jj + 1) % 2) * (3 * ROW)
    write = state + (jj % 2) * (3 * ROW)
    has_up = up.to(tl.float32)
    has_dn = dn.to(tl.float32)
    a, b, cc, sl, sc, sr, inv, act = _prologue(gl, gc, gr, gmask, has_up, has_dn, NORMALIZE)
    nxt = tl.where(jj > 0, mask, False)  # zero past the segment end
    carry = (tl.load(read + row, mask=nxt, other=0.0)
             + tl.load(read + ROW + row + BLOCK_C, mask=tl.where(dn, nxt, False), other=0.0)
             + tl.load(read + 2 * ROW + row - BLOCK_C, mask=tl.where(up, nxt, False), other=0.0))
    g, dx, dm_step = _cotangent(du_ptr, dd_ptr, off, mask, x, lam, carry, mk, dh, u, d, h, acc, CORE, ACC)
    if CORE:
      dm += dm_step
    _store_grads(dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr, off, mask, dx, x * g, g * hp_up, g * hp, g * hp_dn,
                 (a, b, cc, sl, sc, sr, inv, act), has_up, has_dn, NORMALIZE)
    # every step writes its rows (zeros past the scan's end), so the next one never reads stale state
    tl.store(write + row, b * g, mask=tile_mask)
    tl.store(write + ROW + row, a * g, mask=tile_mask)
    tl.store(write + 2 * ROW + row, cc * g, mask=tile_mask)
    if i % tiles == tiles - 1:
      tl.debug_barrier()
    (jj, mask, tile_mask, off, row, up, dn, gmask, x, lam, gl, gc, gr, dh, u, d, h, acc, hp_up, hp,
     hp_dn) = (jj1, mask1, tile_mask1, off1, row1, up1, dn1, gmask1, x1, lam1, gl1, gc1, gr1, dh1, u1, d1, h1, acc1,
               hp_up1, hp1, hp_dn1)
  if CORE:
    tl.store(dm_ptr + program, tl.sum(tl.sum(dm, 1), 0))


@triton.jit
def gspn_bwd_rows_kernel(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, h_ptr, dh_ptr,
                         dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr, state_ptr,
                         S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
                         STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr,
                         REVERSE: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr,
                         BLOCK_C: tl.constexpr, ROW: tl.constexpr, PITCH: tl.constexpr, OFF_GL: tl.constexpr,
                         OFF_GC: tl.constexpr, OFF_GR: tl.constexpr, OFF_LAM: tl.constexpr, GATE_SHARE: tl.constexpr):
  _bwd_rows(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, x_ptr, x_ptr, x_ptr, h_ptr, dh_ptr, x_ptr,
            dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr, dx_ptr, dx_ptr, dx_ptr, state_ptr, S, L, C, STRIDE_B,
            STRIDE_S, STRIDE_L, CHUNK, NSEG, REVERSE, NORMALIZE, BLOCK_L, BLOCK_C, ROW, PITCH, OFF_GL, OFF_GC, OFF_GR,
            OFF_LAM, False, False, 0, 0, 0, False, GATE_SHARE)


FORWARD = {"tile": gspn_fwd_kernel, "rows": gspn_fwd_rows_kernel}
BACKWARD = {"tile": gspn_bwd_kernel, "rows": gspn_bwd_rows_kernel}
