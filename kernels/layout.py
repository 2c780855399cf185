"""Launch geometry of the GSPN kernels: a direction as strides, tiles, the grid.

Shared by the JAX launcher and the interpreter tests, so both run the same variants.
"""

DIRECTIONS = ("lr", "rl", "tb", "bt")
TILE_ELEMENTS = 2048  # fp32 state per program (registers): line x channel block
MAX_BLOCK_C = 64


def next_pow2(n):
  return 1 << max(n - 1, 0).bit_length()


def geometry(shape, direction, chunk):
  """(constexpr kwargs, grid, num_warps) for NHWC `shape` scanned along `direction`."""
  b, h, w, c = shape
  if direction not in DIRECTIONS:
    raise ValueError(f"direction={direction!r}; use one of {DIRECTIONS}")
  if direction in ("lr", "rl"):  # scan along W, lines along H
    s, l, stride_s, stride_l = w, h, c, w * c
  else:  # scan along H, lines along W
    s, l, stride_s, stride_l = h, w, w * c, c
  n = s if chunk is None else min(chunk, s)
  nseg = -(-s // n)
  block_l = next_pow2(l)
  block_c = max(1, min(next_pow2(c), MAX_BLOCK_C, TILE_ELEMENTS // block_l))
  meta = dict(S=s, L=l, C=c, STRIDE_B=h * w * c, STRIDE_S=stride_s, STRIDE_L=stride_l, CHUNK=n, NSEG=nseg,
              REVERSE=direction in ("rl", "bt"), BLOCK_L=block_l, BLOCK_C=block_c)
  grid = (b * nseg, -(-c // block_c))
  num_warps = 4 if block_l * block_c <= 1024 else 8
  return meta, grid, num_warps
