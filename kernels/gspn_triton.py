"""GSPN propagation in Triton: one forward and one backward kernel for all directions.

Arrays are NHWC. A direction is a view given by constexpr strides: STRIDE_S steps along
the scan axis, STRIDE_L along the line, channels are contiguous; REVERSE walks the scan
axis backwards. Nothing is transposed or flipped in memory, outputs land in the image
frame. One program owns (batch element, segment, block of BLOCK_C channels) and keeps
the fp32 state of the whole line in registers ([BLOCK_L, BLOCK_C]); the h[l - 1] and
h[l + 1] neighbours come from tl.gather along the line. Every step reads each input
once and writes the output once. With NORMALIZE the gates arrive as logits and the
stability-context normalisation (sigmoid, divide by the sum over the neighbours that
exist) runs in the prologue, and its Jacobian in the backward.

Segments have CHUNK steps counted from the scan's start, in both passes.
"""

import triton
import triton.language as tl


@triton.jit
def _tile(program_b, program_c, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
          STRIDE_L: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_C: tl.constexpr):
  """Offsets of one line x channel-block tile, its mask, and the neighbour helpers."""
  l = tl.arange(0, BLOCK_L)
  c = program_c * BLOCK_C + tl.arange(0, BLOCK_C)
  mask = (l < L)[:, None] & (c < C)[None, :]
  base = program_b.to(tl.int64) * STRIDE_B + l[:, None].to(tl.int64) * STRIDE_L + c[None, :]
  zero = tl.zeros((BLOCK_L, BLOCK_C), tl.int32)
  idx_up = tl.maximum(l - 1, 0)[:, None] + zero            # h[l - 1]
  idx_dn = tl.minimum(l + 1, BLOCK_L - 1)[:, None] + zero  # h[l + 1]
  has_up = (l >= 1)[:, None].to(tl.float32)
  has_dn = (l + 1 < L)[:, None].to(tl.float32)
  return base, mask, idx_up, idx_dn, has_up, has_dn


@triton.jit
def _step(x_ptr, lam_ptr, base, tile_mask, seg, j, S: tl.constexpr, CHUNK: tl.constexpr, REVERSE: tl.constexpr,
          STRIDE_S: tl.constexpr):
  """Mask and offsets of the segment's j-th scan step, and its x and lambda tiles."""
  s = seg * CHUNK + j
  if REVERSE:
    pos = S - 1 - s
  else:
    pos = s
  mask = tl.where(s < S, tile_mask, False)  # not `tile_mask & (s < S)`: Triton 3.9's interpreter makes that int32
  off = base + pos.to(tl.int64) * STRIDE_S
  x = tl.load(x_ptr + off, mask=mask, other=0.0).to(tl.float32)
  lam = tl.load(lam_ptr + off, mask=mask, other=0.0).to(tl.float32)
  return mask, off, x, lam


@triton.jit
def _gates(gl_ptr, gc_ptr, gr_ptr, off, mask, has_up, has_dn, NORMALIZE: tl.constexpr):
  """(gl, gc, gr) as the scan uses them, the sigmoids, and 1/sum (NORMALIZE only)."""
  gl = tl.load(gl_ptr + off, mask=mask, other=0.0).to(tl.float32)
  gc = tl.load(gc_ptr + off, mask=mask, other=0.0).to(tl.float32)
  gr = tl.load(gr_ptr + off, mask=mask, other=0.0).to(tl.float32)
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
def gspn_fwd_kernel(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, h_ptr,
                    S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
                    STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr,
                    REVERSE: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr,
                    BLOCK_C: tl.constexpr):
  seg = tl.program_id(0) % NSEG
  base, tile_mask, idx_up, idx_dn, has_up, has_dn = _tile(tl.program_id(0) // NSEG, tl.program_id(1), L, C,
                                                          STRIDE_B, STRIDE_L, BLOCK_L, BLOCK_C)
  h = tl.zeros((BLOCK_L, BLOCK_C), tl.float32)  # zero carry at the segment start
  for j in tl.range(0, CHUNK):
    mask, off, x, lam = _step(x_ptr, lam_ptr, base, tile_mask, seg, j, S, CHUNK, REVERSE, STRIDE_S)
    gl, gc, gr, _sl, _sc, _sr, _inv, _act = _gates(gl_ptr, gc_ptr, gr_ptr, off, mask, has_up, has_dn, NORMALIZE)
    up = tl.gather(h, idx_up, 0) * has_up
    dn = tl.gather(h, idx_dn, 0) * has_dn
    h = lam * x + gl * up + gc * h + gr * dn
    tl.store(h_ptr + off, h.to(h_ptr.dtype.element_ty), mask=mask)


@triton.jit
def gspn_bwd_kernel(x_ptr, gl_ptr, gc_ptr, gr_ptr, lam_ptr, h_ptr, dh_ptr,
                    dx_ptr, dgl_ptr, dgc_ptr, dgr_ptr, dlam_ptr,
                    S: tl.constexpr, L: tl.constexpr, C: tl.constexpr, STRIDE_B: tl.constexpr,
                    STRIDE_S: tl.constexpr, STRIDE_L: tl.constexpr, CHUNK: tl.constexpr, NSEG: tl.constexpr,
                    REVERSE: tl.constexpr, NORMALIZE: tl.constexpr, BLOCK_L: tl.constexpr,
                    BLOCK_C: tl.constexpr):
  """The adjoint: g[j] = dh[j] + T[j+1]^T g[j+1] in reverse, then the input gradients."""
  seg = tl.program_id(0) % NSEG
  base, tile_mask, idx_up, idx_dn, has_up, has_dn = _tile(tl.program_id(0) // NSEG, tl.program_id(1), L, C,
                                                          STRIDE_B, STRIDE_L, BLOCK_L, BLOCK_C)
  carry = tl.zeros((BLOCK_L, BLOCK_C), tl.float32)  # T[j+1]^T g[j+1]; zero past the segment end
  for jj in tl.range(0, CHUNK):
    j = CHUNK - 1 - jj
    mask, off, x, lam = _step(x_ptr, lam_ptr, base, tile_mask, seg, j, S, CHUNK, REVERSE, STRIDE_S)
    if REVERSE:
      prev_off = off + STRIDE_S
    else:
      prev_off = off - STRIDE_S
    gl, gc, gr, sl, sc, sr, inv, act = _gates(gl_ptr, gc_ptr, gr_ptr, off, mask, has_up, has_dn, NORMALIZE)
    g = tl.load(dh_ptr + off, mask=mask, other=0.0).to(tl.float32) + carry
    # h[j-1]; zero at the segment start
    hp = tl.load(h_ptr + prev_off, mask=tl.where(j > 0, mask, False), other=0.0).to(tl.float32)
    dgl = g * tl.gather(hp, idx_up, 0) * has_up
    dgc = g * hp
    dgr = g * tl.gather(hp, idx_dn, 0) * has_dn
    if NORMALIZE:  # through gate = sigmoid(logit) / sum of the existing neighbours' sigmoids
      t = (dgl * gl + dgc * gc + dgr * gr) * act
      dgl = (dgl - t * has_up) * inv * sl * (1.0 - sl)
      dgc = (dgc - t) * inv * sc * (1.0 - sc)
      dgr = (dgr - t * has_dn) * inv * sr * (1.0 - sr)
    tl.store(dx_ptr + off, (lam * g).to(dx_ptr.dtype.element_ty), mask=mask)
    tl.store(dlam_ptr + off, (x * g).to(dlam_ptr.dtype.element_ty), mask=mask)
    tl.store(dgl_ptr + off, dgl.to(dgl_ptr.dtype.element_ty), mask=mask)
    tl.store(dgc_ptr + off, dgc.to(dgc_ptr.dtype.element_ty), mask=mask)
    tl.store(dgr_ptr + off, dgr.to(dgr_ptr.dtype.element_ty), mask=mask)
    # What step j's gates carry back to step j - 1: gc g[l] + gl[l+1] g[l+1] + gr[l-1] g[l-1].
    carry = gc * g + tl.gather(gl * g, idx_dn, 0) * has_dn + tl.gather(gr * g, idx_up, 0) * has_up
