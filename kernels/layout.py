"""Launch geometry of the GSPN kernels: a direction as strides, the layout, tiles, the grid.

Shared by the JAX launcher, the interpreter tests and the compiler audit, so all run the
same variants. The "tile" layout keeps a whole line x channel block in registers and
takes neighbours with tl.gather, which keeps the line inside one warp: it is used while
the channel block spreads over every warp (BLOCK_C >= num_warps), else the warps would
hold copies of the line and long lines spill. The "rows" layout walks long lines in
tiles and carries the state in fp32 rows (kernels/gspn_triton.py). Its channel block
shrinks (to one channel) while the grid has fewer programs than an H100 has SMs: a
global scan of one high-resolution map otherwise runs as one program. Such programs
walk their lines in 2 x ROWS_TILE tiles in the paired forward (and backward, up to
1K lines); siblings read the other channels of the same sectors in the same step (L2
hits, bench/kernel_predict.py). A layer whose segments are at most two steps long is a
stencil instead (stencil_geometry: blocks of pixels of one parity class x channels). A
square map whose rows-layout grid stays small runs its four groups as concurrent programs
of one launch (quad, quad_tile).
"""

import math

DIRECTIONS = ("lr", "rl", "tb", "bt")
TILE_ELEMENTS = 2048  # fp32 state per program (registers): line x channel block
MAX_BLOCK_C = 64
ROWS_TILE = 512  # elements of one line tile in the rows layout (4 warps, 4 per thread)
NUM_STAGES = 2  # Triton's option, as jax_op passes it (no effect on these loops' loads)
ROWS_BLOCK_C = 16  # channels per program in the rows layout: 32 B of bf16, 64 B of fp32 per pixel
MIN_PROGRAMS = 132  # an H100's SMs: the rows layout narrows its channel block until the grid fills them


def next_pow2(n):
  return 1 << max(n - 1, 0).bit_length()


def geometry(shape, direction, chunk, rows_tile=ROWS_TILE, pitch=None, offsets=None, min_programs=MIN_PROGRAMS,
             widen=False):
  """(constexpr kwargs incl. KERNEL, grid, num_warps) for NHWC `shape` scanned along
  `direction`; strides count pixels. pitch, offsets: where gl, gc, gr, lam (and u, d)
  sit in the arrays they are read from (pixel pitch, OFF_* channel offsets; default
  separate `shape`-sized arrays). rows_tile: the rows layout's tile size (tests shrink
  it to walk several tiles of a short line). min_programs: the rows layout halves its
  channel block (down to 1) while the grid is smaller (tests pass 1 to keep wide blocks);
  widen: then it walks its lines in tiles of 2 x rows_tile (the paired forward, and the
  paired backward where backward_widen)."""
  b, h, w, c = shape
  if direction not in DIRECTIONS:
    raise ValueError(f"direction={direction!r}; use one of {DIRECTIONS}")
  if direction in ("lr", "rl"):  # scan along W, lines along H
    s, l, stride_s, stride_l = w, h, 1, w
  else:  # scan along H, lines along W
    s, l, stride_s, stride_l = h, w, w, 1
  n = s if chunk is None else min(chunk, s)
  nseg = -(-s // n)
  meta = dict(S=s, L=l, C=c, STRIDE_B=h * w, STRIDE_S=stride_s, STRIDE_L=stride_l, CHUNK=n, NSEG=nseg,
              REVERSE=direction in ("rl", "bt"), PITCH=c if pitch is None else pitch,
              **(offsets or dict(OFF_GL=0, OFF_GC=0, OFF_GR=0, OFF_LAM=0)))
  block_l = next_pow2(l)
  block_c = max(1, min(next_pow2(c), MAX_BLOCK_C, TILE_ELEMENTS // block_l))
  num_warps = min(4 if block_l * block_c <= 1024 else 8, max(1, block_l * block_c // 32))  # no idle lanes
  if block_c >= num_warps:
    meta.update(KERNEL="tile", BLOCK_L=block_l, BLOCK_C=block_c)
  else:
    block_c = min(next_pow2(c), ROWS_BLOCK_C)
    narrowed = False
    while block_c > 1 and b * nseg * -(-c // block_c) < min_programs:
      block_c, narrowed = block_c // 2, True
    if narrowed and widen:  # few programs, each latency-bound: twice the tile, half the tiles per step
      rows_tile *= 2
    block_l = min(next_pow2(l), max(1, rows_tile // block_c))
    # fewer lanes than elements (none replicated), 4 elements per thread
    num_warps = max(1, min(8 if narrowed else 4, block_l * block_c // 128))
    meta.update(KERNEL="rows", BLOCK_L=block_l, BLOCK_C=block_c, ROW=-(-l // block_l) * block_l * block_c)
  return meta, (b * nseg, -(-c // block_c)), num_warps


# The four groups at once while a paired launch would have fewer programs than this: there
# its four scans in sequence take longer than the four groups' extra traffic (x read by
# each, four outputs summed); at 1K^2 x 8 ch the performance model (bench/kernel_predict.py)
# puts the crossover between batch 8 (64 programs) and 16 (128).
QUAD_MAX_PROGRAMS = MIN_PROGRAMS // 2


def quad(shape, chunk):
  """Whether a layer's four groups run as concurrent programs of one launch
  (kernels/gspn_quad_triton.py): a square map in the rows layout whose grid, narrowed to
  one channel per program, has fewer than QUAD_MAX_PROGRAMS programs (each program waits a
  round trip per step; the paired launches would run four scans in sequence)."""
  meta, grid, _ = geometry(shape, "lr", chunk)
  return shape[1] == shape[2] and meta["KERNEL"] == "rows" and grid[0] * grid[1] < QUAD_MAX_PROGRAMS


def quad_tile(backward):
  """The four groups' launch's rows_tile (geometry(..., widen=True) doubles it): the
  forward walks its lines in 2048-element tiles on 32 warps (half the tiles per step of 2K
  and 4K lines), the backward in 1024-element tiles on 16 (no spills on sm_90 or sm_80)."""
  return ROWS_TILE if backward else 2 * ROWS_TILE


def backward_widen(shape, direction):
  """Whether a paired backward takes the narrowed rows layout's doubled tile (geometry's
  widen): where that tile holds the whole line, i.e. one tile per step (1024-element
  backward tiles spilled at 4K lines)."""
  return shape[1 if direction in ("lr", "rl") else 2] <= 2 * ROWS_TILE


SLOTS = ("OFF_GL", "OFF_GC", "OFF_GR", "OFF_LAM", "OFF_U", "OFF_D")  # a group's six projected slots


def core_offsets(d, group, gates=None):
  """Channel offsets of group `group`'s gl, gc, gr, lam, u, d in a GSPN layer's
  projection in the kernels' group-major order [group 0: gl | gc | gr | lam | u | d
  (D each) | group 1: ... ] (kernels/core_op.py permutes the weights' columns to it):
  one group's slots are 6D contiguous channels of a pixel, so at small D a program's
  reads fill whole 32-byte sectors. gates: G < D channel-shared gates, G channels each
  (a group is then 3G + 3D channels)."""
  g = d if gates is None else gates
  return {name: group * (3 * g + 3 * d) + start for name, start in zip(SLOTS, (0, g, 2 * g, 3 * g, 3 * g + d,
                                                                              3 * g + 2 * d))}


def state_size(meta, grid, rows):
  """fp32 elements of the rows layout's state: 2 slots x `rows` rows per program."""
  return math.prod(grid) * 2 * rows * meta["ROW"]


STENCIL_ELEMENTS = 512  # pixels x channels per stencil program (8 warps, 2 per thread)
STENCIL_BLOCK_C = 32  # 64 B of bf16 per pixel and slot: whole 32-byte sectors


def stencil_chunks(shape, chunk):
  """(segment length along W, along H) where both are at most 2 (the layer is then a
  stencil: kernels/gspn_stencil_triton.py), else None."""
  h, w = shape[1:3]
  n = tuple(s if chunk is None else min(chunk, s) for s in (w, h))
  return n if max(n) <= 2 else None


def stencil_blocks(c):
  """(BLOCK_P pixels, BLOCK_C channels) of a stencil program at C channels."""
  block_c = min(next_pow2(c), STENCIL_BLOCK_C)
  return max(1, STENCIL_ELEMENTS // block_c), block_c


def stencil_geometry(shape, chunk):
  """(constexpr kwargs incl. KERNEL, grid, num_warps) of the stencil kernels."""
  b, h, w, c = shape
  block_p, block_c = stencil_blocks(c)
  chunk_w, chunk_h = stencil_chunks(shape, chunk)
  meta = dict(KERNEL="stencil", H=h, W=w, C=c, CHUNK_W=chunk_w, CHUNK_H=chunk_h, BLOCK_P=block_p, BLOCK_C=block_c)
  pixel_blocks = -(-((h + 1) // 2 * ((w + 1) // 2)) // block_p)  # per parity class (row, column)
  # 2 elements per thread: at 4 ptxas spilled 8 bytes on sm_80 (XL/2 512 px, fp32 forward, bf16 backward)
  return meta, (b * 4 * pixel_blocks * -(-c // block_c),), max(1, min(8, block_p * block_c // 64))


def stencil_gate_width(shape, gates):
  """Channels per gate slot of the stencil's projection gradient (gspn_stencil_bwd_kernel):
  per channel (C), or where a program's channel block lies in one of the `gates` shared
  gates, one partial sum per channel block."""
  c = shape[-1]
  block_c, share = stencil_blocks(c)[1], c // gates
  return -(-c // block_c) if share >= c or share % block_c == 0 else c
