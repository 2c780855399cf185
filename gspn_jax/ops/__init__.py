"""The GSPN propagation op: `gspn_scan` and the stability-context `normalize_gates`."""

import jax

from gspn_jax.ops.gates import normalize_gates
from gspn_jax.ops.reference import DIRECTIONS, gspn_scan_reference

IMPLS = ("auto", "xla", "triton")


def gspn_scan(x, gl, gc, gr, lam, *, direction, chunk=None, impl="auto"):
  """Linear 2-D propagation along one direction of NHWC arrays (B, H, W, C).

  direction: "lr"/"rl" scan along W (left to right / right to left) with lines along
    H; "tb"/"bt" scan along H with lines along W.
  gl, gc, gr: gates stored at the destination; gl connects to the previous element of
    the line (index - 1), gr to the next (index + 1). lam multiplies the input.
  chunk: segment length along the scan axis, counted from the scan's first element;
    the state restarts from zero at each segment start. None = one global segment.
  impl: "xla" (lax.scan reference), "triton" (GPU kernel), "auto" (Triton on GPU).
  Returns h in x's dtype; the state is accumulated in fp32.
  """
  _check(x, gl, gc, gr, lam, direction, chunk, impl)
  if impl == "auto":
    impl = "triton" if _on_gpu() else "xla"
  if impl == "triton":
    from kernels import gspn_scan_triton  # imported lazily: needs jax-triton and a GPU

    return gspn_scan_triton(x, gl, gc, gr, lam, direction=direction, chunk=chunk)
  return gspn_scan_reference(x, gl, gc, gr, lam, direction, chunk)


def _on_gpu():
  return jax.default_backend() == "gpu" and _triton_available()


def _triton_available():
  try:
    import kernels  # noqa: F401

    return kernels.AVAILABLE
  except ImportError:
    return False


def _check(x, gl, gc, gr, lam, direction, chunk, impl):
  if direction not in DIRECTIONS:
    raise ValueError(f"gspn_scan: direction={direction!r}; use one of {DIRECTIONS}")
  if impl not in IMPLS:
    raise ValueError(f"gspn_scan: impl={impl!r}; use one of {IMPLS}")
  if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
    raise ValueError(f"gspn_scan: chunk={chunk!r}; use a positive int or None (global)")
  if x.ndim != 4:
    raise ValueError(f"gspn_scan: x has shape {x.shape}; expected NHWC (B, H, W, C)")
  for name, a in (("gl", gl), ("gc", gc), ("gr", gr), ("lam", lam)):
    if a.shape != x.shape:
      raise ValueError(f"gspn_scan: {name} has shape {a.shape}, x has {x.shape}; they must match")


__all__ = ["gspn_scan", "normalize_gates", "DIRECTIONS"]
