"""A GSPN layer in one launch where no segment is longer than two steps (chunk 1 or 2:
GSPN's local blocks), forward and backward (kernels/core_op.py).

In a two-step segment the first step's state is h = lam x and the second's is
h = lam x + gl h'[l - 1] + gc h'[l] + gr h'[l + 1], h' = lam x of the first step at the
three line neighbours. So the four scans are a stencil: each pixel's output comes from
its own x and 24 projection slots and its neighbours' x and lam, with no state carried
from step to step, no barrier and no scan order. It reads x and the projection once,
the neighbours' from L1/L2, and writes y = sum_k m[k] (u h + d x) once: 26 N bytes, the
layer's minimum.

The backward, from dy: a second step's g = dL/dh = m u dy; a first step's adds its
successor step's transposed operator, gc g[l] + gl g[l + 1] + gr g[l - 1] with the
successor's gates and g (m u dy again) at those pixels. It writes dx, the projection
gradients in p's group-major order as one array (XLA then runs one dW and one dxp GEMM)
and dm's per-program sums. Gate gradients are per channel, or, where a program's channel
block lies in one shared gate, its partial sum per pixel (the caller adds a gate's partials).

A program owns BLOCK_C channels of BLOCK_P pixels of one parity class (even or odd row,
even or odd column) of one image, so for each group its pixels are all first or all
second steps: one branch per group and program, not both per pixel. Channel blocks, then
the four classes, are the fastest-varying programs: the programs that share a sector (a
pixel's channel blocks, a pair of pixels of two classes) or read each other's pixels as
neighbours run at the same time, and those reads are L2 hits.

Group k scans lr, tb, rl, bt (k = 0..3); its six slots sit at OFF = k (3G + 3C) in p
(layout.core_offsets), at k (3 GATE_W + 3C) in the gradient array.
"""

import triton
import triton.language as tl

from kernels.gspn_triton import _prologue


@triton.jit
def _program(H: tl.constexpr, W: tl.constexpr, C: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
  """The program's pixels ([BLOCK_P, 1]: flat index, row, column), its class's row and
  column parity (scalars), channels ([1, BLOCK_C]), mask and pixel mask ([BLOCK_P, 1])."""
  channel_blocks: tl.constexpr = (C + BLOCK_C - 1) // BLOCK_C
  half_w: tl.constexpr = (W + 1) // 2
  pixel_blocks: tl.constexpr = ((H + 1) // 2 * half_w + BLOCK_P - 1) // BLOCK_P
  rest = tl.program_id(0) // channel_blocks
  row_parity, col_parity = rest // 2 % 2, rest % 2
  q = rest // 4 % pixel_blocks * BLOCK_P + tl.arange(0, BLOCK_P)[:, None]
  row, col = 2 * (q // half_w) + row_parity, 2 * (q % half_w) + col_parity
  pix = (rest // 4 // pixel_blocks).to(tl.int64) * (H * W) + row * W + col
  c = tl.program_id(0) % channel_blocks * BLOCK_C + tl.arange(0, BLOCK_C)[None, :]
  return pix, row, col, row_parity, col_parity, c, (row < H) & (col < W) & (c < C), (row < H) & (col < W)


@triton.jit
def _gate_pointers(p_ptr, pix, c, mask, pmask, C: tl.constexpr, PITCH: tl.constexpr, BLOCK_C: tl.constexpr,
                   GATE_SHARE: tl.constexpr):
  """Channel c's gl pointers (gate channel c // GATE_SHARE) and their mask. Where the
  channel block lies in one gate's channels (G = 1, or GATE_SHARE a multiple of BLOCK_C)
  a [BLOCK_P, 1] column: one load, sigmoid and normalisation per pixel, broadcast where
  the gates meet the state."""
  if GATE_SHARE >= C or GATE_SHARE % BLOCK_C == 0:
    gq, gmask = p_ptr + pix * PITCH + tl.min(c, axis=1)[:, None] // GATE_SHARE, pmask
  else:
    gq, gmask = p_ptr + pix * PITCH + c // GATE_SHARE, mask
  return gq, gmask


@triton.jit
def _second(parity, S: tl.constexpr, REVERSE: tl.constexpr):
  """Whether the pixels of this scan-axis parity are second steps (segments of two steps
  counted from the scan's start)."""
  if REVERSE:
    parity = S - 1 - parity
  return parity % 2 == 1


@triton.jit
def _gates(gq, ok, has_up, has_dn, G: tl.constexpr):
  """Normalised gates at gate pointers gq (gl; gc and gr G channels on), with their
  sigmoids and 1/sum for the Jacobian (gspn_triton._prologue)."""
  gl = tl.load(gq, mask=ok, other=0.0).to(tl.float32)
  gc = tl.load(gq + G, mask=ok, other=0.0).to(tl.float32)
  gr = tl.load(gq + 2 * G, mask=ok, other=0.0).to(tl.float32)
  return _prologue(gl, gc, gr, ok, has_up.to(tl.float32), has_dn.to(tl.float32), True)


@triton.jit
def _state(xq, pq, ok, NB: tl.constexpr, C: tl.constexpr, PITCH: tl.constexpr, OFF_LAM: tl.constexpr):
  """A first step's h = lam x NB pixels away where ok, else 0."""
  x = tl.load(xq + NB * C, mask=ok, other=0.0).to(tl.float32)
  return x * tl.load(pq + (NB * PITCH + OFF_LAM), mask=ok, other=0.0).to(tl.float32)


@triton.jit
def _propagated(xq, pq, gq, mask, gmask, line, L: tl.constexpr, BACK: tl.constexpr, LSTEP: tl.constexpr,
                C: tl.constexpr, PITCH: tl.constexpr, OFF: tl.constexpr, G: tl.constexpr):
  """A second step's gl h'[l - 1] + gc h'[l] + gr h'[l + 1], the three h' and its gates:
  BACK pixels to the previous step, LSTEP to the next line index."""
  has_up, has_dn = line >= 1, line < L - 1
  up = _state(xq, pq, mask & has_up, BACK - LSTEP, C, PITCH, OFF + 3 * G)
  mid = _state(xq, pq, mask, BACK, C, PITCH, OFF + 3 * G)
  dn = _state(xq, pq, mask & has_dn, BACK + LSTEP, C, PITCH, OFF + 3 * G)
  gl, gc, gr, sl, sc, sr, inv, act = _gates(gq + OFF, gmask, has_up, has_dn, G)
  return gl * up + gc * mid + gr * dn, up, mid, dn, gl, gc, gr, sl, sc, sr, inv, act


@triton.jit
def _slots(pq, mask, C: tl.constexpr, OFF_LAM: tl.constexpr):
  lam = tl.load(pq + OFF_LAM, mask=mask, other=0.0).to(tl.float32)
  u = tl.load(pq + (OFF_LAM + C), mask=mask, other=0.0).to(tl.float32)
  return lam, u, tl.load(pq + (OFF_LAM + 2 * C), mask=mask, other=0.0).to(tl.float32)


@triton.jit
def _group_forward(xq, pq, gq, x, m, parity, line, mask, gmask, S: tl.constexpr, L: tl.constexpr, REVERSE: tl.constexpr,
                   BACK: tl.constexpr, LSTEP: tl.constexpr, N: tl.constexpr, C: tl.constexpr, PITCH: tl.constexpr,
                   OFF: tl.constexpr, G: tl.constexpr):
  """m (u h + d x) of one group (N: its segment length, 1 or 2)."""
  lam, u, d = _slots(pq, mask, C, OFF + 3 * G)
  h = lam * x
  if N == 2:
    if _second(parity, S, REVERSE):
      prop, _, _, _, _, _, _, _, _, _, _, _ = _propagated(xq, pq, gq, mask, gmask, line, L, BACK, LSTEP, C, PITCH, OFF,
                                                         G)
      h += prop
  return m * (u * h + d * x)


@triton.jit
def _successor(pq, gq, dyq, ok, gok, line, m, NB: tl.constexpr, L: tl.constexpr, C: tl.constexpr, PITCH: tl.constexpr,
               OFF: tl.constexpr, G: tl.constexpr):
  """The next step's normalised gates and g = m u dy NB pixels away (line index `line`)."""
  u = tl.load(pq + (NB * PITCH + OFF + 3 * G + C), mask=ok, other=0.0).to(tl.float32)
  dy = tl.load(dyq + NB * C, mask=ok, other=0.0).to(tl.float32)
  gl, gc, gr, _, _, _, _, _ = _gates(gq + (NB * PITCH + OFF), gok, line >= 1, line < L - 1, G)
  return gl, gc, gr, m * u * dy


@triton.jit
def _store(dq, mask, value, SLOT: tl.constexpr):
  tl.store(dq + SLOT, value.to(dq.dtype.element_ty), mask=mask)


@triton.jit
def _group_backward(xq, pq, gq, dyq, dq, dgq, x, dy, m, parity, pos, line, mask, gmask, S: tl.constexpr,
                    L: tl.constexpr, REVERSE: tl.constexpr, BACK: tl.constexpr, LSTEP: tl.constexpr, N: tl.constexpr,
                    C: tl.constexpr, PITCH: tl.constexpr, OFF: tl.constexpr, G: tl.constexpr, GATE_W: tl.constexpr,
                    COLUMN: tl.constexpr):
  """One group's six projection gradients stored (gates at dgq, GATE_W apart; lam, u, d at
  dq + 3 GATE_W, C apart), its dx and dm terms."""
  lam, u, d = _slots(pq, mask, C, OFF + 3 * G)
  h = lam * x
  g = m * u * dy  # a second step's (and a segment's last) dL/dh
  # the gates' logit gradients, per channel or with a gate column per pixel (gmask's
  # shape): zero on first steps (h' = 0 there)
  dgl = tl.where(gmask, 0.0, 0.0)
  dgc = tl.where(gmask, 0.0, 0.0)
  dgr = tl.where(gmask, 0.0, 0.0)
  if N == 2:
    if _second(parity, S, REVERSE):
      prop, up, mid, dn, gl, gc, gr, sl, sc, sr, inv, act = _propagated(xq, pq, gq, mask, gmask, line, L, BACK, LSTEP,
                                                                        C, PITCH, OFF, G)
      h += prop
      dgl, dgc, dgr = g * up, g * mid, g * dn  # through the normalisation and the sigmoids
      if COLUMN:  # a shared gate's: summed over the program's channels first (the Jacobian is per pixel)
        dgl = tl.sum(tl.where(mask, dgl, 0.0), axis=1)[:, None]
        dgc = tl.sum(tl.where(mask, dgc, 0.0), axis=1)[:, None]
        dgr = tl.sum(tl.where(mask, dgr, 0.0), axis=1)[:, None]
      t = (dgl * gl + dgc * gc + dgr * gr) * act
      dgl = (dgl - t * (line >= 1).to(tl.float32)) * inv * sl * (1.0 - sl)
      dgc = (dgc - t) * inv * sc * (1.0 - sc)
      dgr = (dgr - t * (line < L - 1).to(tl.float32)) * inv * sr * (1.0 - sr)
    else:  # a first step gathers its successor's g: gr at l - 1, gc at l, gl at l + 1
      if REVERSE:
        last = pos >= 1
      else:
        last = pos + 1 < S
      ok, gok = mask & last, gmask & last
      _, _, gr_up, g_up = _successor(pq, gq, dyq, ok & (line >= 1), gok & (line >= 1), line - 1, m, -BACK - LSTEP, L,
                                     C, PITCH, OFF, G)
      _, gc_mid, _, g_mid = _successor(pq, gq, dyq, ok, gok, line, m, -BACK, L, C, PITCH, OFF, G)
      gl_dn, _, _, g_dn = _successor(pq, gq, dyq, ok & (line < L - 1), gok & (line < L - 1), line + 1, m,
                                     -BACK + LSTEP, L, C, PITCH, OFF, G)
      g += gr_up * g_up + gc_mid * g_mid + gl_dn * g_dn
  _store(dgq, gmask, dgl, 0)
  _store(dgq, gmask, dgc, GATE_W)
  _store(dgq, gmask, dgr, 2 * GATE_W)
  _store(dq, mask, x * g, 3 * GATE_W)
  _store(dq, mask, m * dy * h, 3 * GATE_W + C)
  _store(dq, mask, m * dy * x, 3 * GATE_W + 2 * C)
  return lam * g + m * d * dy, tl.sum(tl.sum(tl.where(mask, dy * (u * h + d * x), 0.0), axis=1), axis=0)


@triton.jit
def gspn_stencil_fwd_kernel(x_ptr, p_ptr, m_ptr, y_ptr, H: tl.constexpr, W: tl.constexpr, C: tl.constexpr,
                            CHUNK_W: tl.constexpr, CHUNK_H: tl.constexpr, BLOCK_P: tl.constexpr,
                            BLOCK_C: tl.constexpr, G: tl.constexpr, GATE_SHARE: tl.constexpr):
  """y = sum_k m[k] (u h + d x) of a GSPN layer whose segments are CHUNK_W (along W) and
  CHUNK_H (along H) steps long, 1 or 2; p is 12G + 12C channels wide, channel c reads
  gate channel c // GATE_SHARE."""
  PITCH: tl.constexpr = 12 * G + 12 * C
  GROUP: tl.constexpr = 3 * G + 3 * C
  pix, row, col, row_parity, col_parity, c, mask, pmask = _program(H, W, C, BLOCK_P, BLOCK_C)
  xq, pq = x_ptr + pix * C + c, p_ptr + pix * PITCH + c
  gq, gmask = _gate_pointers(p_ptr, pix, c, mask, pmask, C, PITCH, BLOCK_C, GATE_SHARE)
  x = tl.load(xq, mask=mask, other=0.0).to(tl.float32)
  # lr, tb, rl, bt: (scan parity, line index, S, L, REVERSE, pixels back to the previous
  # step, pixels to the next line index, segment length, the group's slots)
  y = _group_forward(xq, pq, gq, x, tl.load(m_ptr).to(tl.float32), col_parity, row, mask, gmask,
                     W, H, False, -1, W, CHUNK_W, C, PITCH, 0, G)
  y += _group_forward(xq, pq, gq, x, tl.load(m_ptr + 1).to(tl.float32), row_parity, col, mask, gmask,
                      H, W, False, -W, 1, CHUNK_H, C, PITCH, GROUP, G)
  y += _group_forward(xq, pq, gq, x, tl.load(m_ptr + 2).to(tl.float32), col_parity, row, mask, gmask,
                      W, H, True, 1, W, CHUNK_W, C, PITCH, 2 * GROUP, G)
  y += _group_forward(xq, pq, gq, x, tl.load(m_ptr + 3).to(tl.float32), row_parity, col, mask, gmask,
                      H, W, True, W, 1, CHUNK_H, C, PITCH, 3 * GROUP, G)
  tl.store(y_ptr + pix * C + c, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gspn_stencil_bwd_kernel(x_ptr, p_ptr, m_ptr, dy_ptr, dx_ptr, dp_ptr, dm_ptr, H: tl.constexpr, W: tl.constexpr,
                            C: tl.constexpr, CHUNK_W: tl.constexpr, CHUNK_H: tl.constexpr, BLOCK_P: tl.constexpr,
                            BLOCK_C: tl.constexpr, G: tl.constexpr, GATE_SHARE: tl.constexpr):
  """dx, dp and dm's per-program sums (dm_ptr[program, k]) from the layer output's
  cotangent dy. dp is group-major like p with gate slots GATE_W wide: per channel (C), or
  with a gate column one partial sum per channel block (stencil_gate_width)."""
  PITCH: tl.constexpr = 12 * G + 12 * C
  GROUP: tl.constexpr = 3 * G + 3 * C
  COLUMN: tl.constexpr = GATE_SHARE >= C or GATE_SHARE % BLOCK_C == 0
  channel_blocks: tl.constexpr = (C + BLOCK_C - 1) // BLOCK_C
  GATE_W: tl.constexpr = channel_blocks if COLUMN else C
  DGROUP: tl.constexpr = 3 * GATE_W + 3 * C
  pix, row, col, row_parity, col_parity, c, mask, pmask = _program(H, W, C, BLOCK_P, BLOCK_C)
  xq, pq, dyq = x_ptr + pix * C + c, p_ptr + pix * PITCH + c, dy_ptr + pix * C + c
  gq, gmask = _gate_pointers(p_ptr, pix, c, mask, pmask, C, PITCH, BLOCK_C, GATE_SHARE)
  dq = dp_ptr + pix * (4 * DGROUP) + c
  if COLUMN:
    dgq = dp_ptr + pix * (4 * DGROUP) + tl.program_id(0) % channel_blocks
  else:
    dgq = dq
  x = tl.load(xq, mask=mask, other=0.0).to(tl.float32)
  dy = tl.load(dyq, mask=mask, other=0.0).to(tl.float32)
  dm = dm_ptr + tl.program_id(0) * 4
  dx, s = _group_backward(xq, pq, gq, dyq, dq, dgq, x, dy, tl.load(m_ptr).to(tl.float32), col_parity, col, row,
                          mask, gmask, W, H, False, -1, W, CHUNK_W, C, PITCH, 0, G, GATE_W, COLUMN)
  tl.store(dm, s)
  dxk, s = _group_backward(xq, pq, gq, dyq, dq + DGROUP, dgq + DGROUP, x, dy, tl.load(m_ptr + 1).to(tl.float32),
                           row_parity, row, col, mask, gmask, H, W, False, -W, 1, CHUNK_H, C, PITCH, GROUP, G, GATE_W,
                           COLUMN)
  dx += dxk
  tl.store(dm + 1, s)
  dxk, s = _group_backward(xq, pq, gq, dyq, dq + 2 * DGROUP, dgq + 2 * DGROUP, x, dy,
                           tl.load(m_ptr + 2).to(tl.float32), col_parity, col, row, mask, gmask, W, H, True, 1, W,
                           CHUNK_W, C, PITCH, 2 * GROUP, G, GATE_W, COLUMN)
  dx += dxk
  tl.store(dm + 2, s)
  dxk, s = _group_backward(xq, pq, gq, dyq, dq + 3 * DGROUP, dgq + 3 * DGROUP, x, dy,
                           tl.load(m_ptr + 3).to(tl.float32), row_parity, row, col, mask, gmask, H, W, True, W, 1,
                           CHUNK_H, C, PITCH, 3 * GROUP, G, GATE_W, COLUMN)
  dx += dxk
  tl.store(dm + 3, s)
  tl.store(dx_ptr + pix * C + c, dx.to(dx_ptr.dtype.element_ty), mask=mask)


STENCIL_FORWARD = {"stencil": gspn_stencil_fwd_kernel}
STENCIL_BACKWARD = {"stencil": gspn_stencil_bwd_kernel}
