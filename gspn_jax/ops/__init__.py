"""The GSPN propagation op `gspn_scan`, the stability-context `normalize_gates`, and
`gspn_core`, a whole GSPN layer (projections, four directions, merge) as one op."""

import jax
from jax.sharding import PartitionSpec as P

from gspn_jax.ops.gates import normalize_gates
from gspn_jax.ops.reference import DIRECTIONS, gspn_scan_reference

IMPLS = ("auto", "xla", "triton")


def line_axis(direction):
  """The axis of NHWC arrays that holds the lines of a direction's scan."""
  return 1 if direction in ("lr", "rl") else 2


def gspn_scan(x, gl, gc, gr, lam, *, direction, chunk=None, impl="auto", normalize=False):
  """Linear 2-D propagation along one direction of NHWC arrays (B, H, W, C).

  direction: "lr"/"rl" scan along W (left to right / right to left) with lines along
    H; "tb"/"bt" scan along H with lines along W.
  gl, gc, gr: gates stored at the destination; gl connects to the previous element of
    the line (index - 1), gr to the next (index + 1). lam multiplies the input.
  chunk: segment length along the scan axis, counted from the scan's first element;
    the state restarts from zero at each segment start. None = one global segment.
  impl: "xla" (lax.scan reference), "triton" (GPU kernel), "auto" (Triton on GPU).
  normalize: the gates are logits, normalised along the line inside the op
    (normalize_gates; fused into the Triton kernel's prologue).
  Returns h in x's dtype; the state is accumulated in fp32.
  """
  _check(x, gl, gc, gr, lam, direction, chunk, impl)
  if impl == "auto":
    impl = "triton" if _triton_available() else "xla"
  if impl == "triton":
    from kernels import gspn_scan_triton

    fn = lambda *a: gspn_scan_triton(*a, direction=direction, chunk=chunk, normalize=normalize)
    return per_shard(fn)(x, gl, gc, gr, lam)
  if normalize:
    gl, gc, gr = normalize_gates(gl, gc, gr, line_axis(direction))
  return gspn_scan_reference(x, gl, gc, gr, lam, direction, chunk)


def per_shard(fn):
  """Runs fn on each device's shard of batch-sharded NHWC arrays (jax.shard_map over
  the mesh in context): a custom kernel is opaque to XLA's partitioner, which would
  otherwise gather the whole batch onto every device. H and W are never split."""

  def wrapped(*arrays):
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1 or arrays[0].shape[0] % mesh.size:
      return fn(*arrays)  # nothing to split (or a batch that does not divide: replicated)
    spec = P(mesh.axis_names, None, None, None)
    return jax.shard_map(fn, in_specs=(spec,) * len(arrays), out_specs=spec, check_vma=False)(*arrays)

  return wrapped


def _triton_available():
  try:
    import kernels
  except ImportError:
    return False
  return kernels.available()


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


from gspn_jax.ops.core import GROUP_DIRECTIONS, gspn_core  # noqa: E402  (core imports gspn_scan lazily)

__all__ = ["gspn_scan", "gspn_core", "GROUP_DIRECTIONS", "gspn_scan_reference", "normalize_gates", "per_shard",
           "line_axis", "DIRECTIONS"]
