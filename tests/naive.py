"""Naive per-element GSPN propagation, written straight from the specification.

Independent of the reference's canonical layout: each direction is an explicit loop
over scan positions in scan order, with the line read through explicit indices.
Works on numpy (in-place) and, through `xp=jnp`, on traced JAX arrays for autodiff.
"""

import numpy as np


def _coords(direction, H, W):
  """Per scan step, the list of (h, w) along the line, in line order; and the step's
  predecessor offset (dh, dw) along the scan axis."""
  if direction in ("lr", "rl"):
    ws = range(W) if direction == "lr" else range(W - 1, -1, -1)
    steps = [[(h, w) for h in range(H)] for w in ws]
    prev = (0, -1) if direction == "lr" else (0, 1)
  else:
    hs = range(H) if direction == "tb" else range(H - 1, -1, -1)
    steps = [[(h, w) for w in range(W)] for h in hs]
    prev = (-1, 0) if direction == "tb" else (1, 0)
  return steps, prev


def gspn_scan_naive(x, gl, gc, gr, lam, direction, chunk=None, xp=np):
  B, H, W, C = x.shape
  steps, (dh, dw) = _coords(direction, H, W)
  n = len(steps) if chunk is None else min(chunk, len(steps))
  out = {}
  for p, line in enumerate(steps):
    first = p % n == 0
    for i, (h, w) in enumerate(line):
      acc = lam[:, h, w] * x[:, h, w]
      if not first:
        ph, pw = h + dh, w + dw  # same line index on the previous scan step
        lp = steps[p - 1]
        assert lp[i] == (ph, pw)
        if i > 0:
          acc = acc + gl[:, h, w] * out[lp[i - 1]]
        acc = acc + gc[:, h, w] * out[lp[i]]
        if i + 1 < len(line):
          acc = acc + gr[:, h, w] * out[lp[i + 1]]
      out[(h, w)] = acc
  rows = [xp.stack([out[(h, w)] for w in range(W)], axis=1) for h in range(H)]
  return xp.stack(rows, axis=1)
