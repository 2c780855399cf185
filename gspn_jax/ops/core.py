"""The GSPN core of a block as one op: low-rank projections, four directions, merge.

    y = sum_k m[k] * (u_k * h_k + d_k * x_k)
    h_k = gspn_scan(x_k, gl_k, gc_k, gr_k, lam_k, direction_k, chunk, normalize=True)

with [gl | gc | gr] = xp @ w_gates, lam = xp @ w_lam, u = xp @ w_u, d = xp @ w_d, where xp
is the block's low-rank projection of x (GSPN's shared bottleneck) and the subscript k
picks channel group k (channels k*D .. (k+1)*D of each 4D-wide projection).
Group k runs in direction GROUP_DIRECTIONS[k] = lr, tb, rl, bt. merge="aligned" scans
x_k = x in place; merge="released" (the released code) scans x_k = x, x^T, flipW(x),
flipW(x^T) all left to right and merges the outputs without mapping them back.

Channel-shared gates (GSPN-2's compressive channels, `gate_channels=G`): w_gates is
(R, 12G), G gate channels per group, gate channel g of group k shared by the D/G
consecutive channels k*D + g*D/G ...; the reference broadcasts them over their channels
(jnp.repeat of the weights' columns) and runs the same scans. G = None: one gate per
channel (the release).

Residuals: the backward keeps only the op's inputs (x, xp, the weights, m) and
recomputes the projections, gates and scans; per layer that is D + D/16 channels per
token instead of the reference's 24D-channel projections plus four fp32 states.
"""

import functools

import jax
import jax.numpy as jnp

from gspn_jax.ops import unrolled
from gspn_jax.ops.barrier import after
from gspn_jax.ops.reference import segment_length

GROUP_DIRECTIONS = ("lr", "tb", "rl", "bt")
MERGES = ("aligned", "released")
CORE_IMPLS = ("auto", "xla", "reference", "triton")


def gspn_core(x, xp, w_gates, w_lam, w_u, w_d, m, *, chunk, merge="aligned", impl="auto", gate_channels=None):
  """One GSPN layer's propagation and merge, (B, H, W, D) -> (B, H, W, D) in x's dtype.

  x: the propagated input; xp: (B, H, W, R) its low-rank projection.
  w_gates: (R, 12G), gate logits [gl | gc | gr], each 4 groups of G channels, G =
  gate_channels (None: G = D, one gate per channel; else G divides D and each gate
  channel serves D/G consecutive channels of its group);
  w_lam, w_u, w_d: (R, 4D); m: (4,) merge weights. Weights are cast to x's dtype, the
  propagation state is fp32. chunk: segment length (None = global).
  impl:
    "reference": the specification. The projections expanded, sliced per group, one
      `gspn_scan(impl="xla")` (the lax.scan reference with its analytic custom_vjp) per
      group, autodiff for the rest.
    "xla": the fast XLA path (ops/unrolled.py): the same arithmetic with gates
      normalised where they are produced, steps as strided views of the image-frame
      arrays, the epilogue and merge fused, and (merge="aligned") the four groups' d x
      terms as one projection (sum_k m_k d_k) x; the backward saves only the inputs.
    "triton": the Triton kernels (kernels/core_op.py), with the same saved inputs:
      one projection of pitch 12G + 12D whose gl/gc/gr/lam/u/d channels the kernels read
      in place (no channel-slice copies; a shared gate read at channel c // (D/G)),
      normalisation in the prologue, m[k] (u*h + d*x) in the epilogue, summed over the
      groups launch by launch, so h never reaches HBM in the forward. merge="released"
      scans transposed/flipped copies of x: there one `gspn_scan(impl="triton")` per group.
    "auto": "triton" where the kernels run (a GPU with jax-triton), else "xla".
  """
  _check(x, xp, w_gates, w_lam, w_u, w_d, m, chunk, merge, impl, gate_channels)
  if impl == "auto":
    from gspn_jax.ops import _triton_available

    impl = "triton" if _triton_available() else "xla"
  if impl == "xla" and segment_length(max(x.shape[1:3]), chunk) > unrolled.MAX_UNROLL:
    impl = "reference"  # not unrolled; the reference's lax.scan (it keeps the 24D expansion)
  if impl == "reference":
    return _composed(x, xp, shared_gates(w_gates, x.shape[-1]), w_lam, w_u, w_d, m, chunk, merge, "xla")
  if impl == "triton" and merge == "aligned":
    import kernels

    return kernels.gspn_core_triton(x, xp, _weights(w_gates, w_lam, w_u, w_d), m, chunk=chunk)
  return _core(x, xp, w_gates, w_lam, w_u, w_d, m, chunk, merge, impl)


def shared_gates(w_gates, d):
  """(R, 12D) per-channel gate weights from (R, 12G) shared ones: each gate column
  repeated over the D/G channels it serves (the identity for G = D)."""
  return jnp.repeat(w_gates, d // (w_gates.shape[1] // 12), axis=1)


def _inputs(x, merge):
  """(x_k, direction_k) per channel group."""
  if merge == "aligned":
    return [(x, d) for d in GROUP_DIRECTIONS]
  xt = jnp.swapaxes(x, 1, 2)
  return [(x, "lr"), (xt, "lr"), (x[:, :, ::-1], "lr"), (xt[:, :, ::-1], "lr")]


def _project(xp, w, dtype):
  return jnp.dot(xp, w.astype(dtype))


def _composed(x, xp, w_gates, w_lam, w_u, w_d, m, chunk, merge, scan_impl):
  """The layer as the model composes it from gspn_scan (the reference's arithmetic)."""
  from gspn_jax.ops import gspn_scan

  d = x.shape[-1]
  gl, gc, gr = jnp.split(_project(xp, w_gates, x.dtype), 3, axis=-1)
  lam, u, dd = (_project(xp, w, x.dtype) for w in (w_lam, w_u, w_d))
  m = m.astype(x.dtype)
  if merge == "released":
    xs = jnp.concatenate([xk for xk, _ in _inputs(x, merge)], axis=-1)
    hs = gspn_scan(xs, gl, gc, gr, lam, direction="lr", chunk=chunk, impl=scan_impl, normalize=True)
    y = (hs * u + xs * dd).reshape(*x.shape[:3], 4, d)
    return jnp.einsum("bhwkd,k->bhwd", y, m)
  y = 0
  for k, direction in enumerate(GROUP_DIRECTIONS):
    g = slice(k * d, (k + 1) * d)
    hk = gspn_scan(x, gl[..., g], gc[..., g], gr[..., g], lam[..., g], direction=direction, chunk=chunk,
                   impl=scan_impl, normalize=True)
    y = y + m[k] * (hk * u[..., g] + x * dd[..., g])
  return y


def _group_weights(w, k, dtype, d):
  """Group k's blocks gl, gc, gr (R, G) and lam, u, d (R, D) of the (12G + 12D)-wide
  weights [gates (12G) | lam (4D) | u (4D) | d (4D)], each block 4 groups of G or D
  channels. Plain column slices of w (a reshaped w would make each slice read all of it)."""
  g = (w.shape[1] - 12 * d) // 12
  starts = [(4 * i + k) * g for i in range(3)] + [12 * g + (4 * i + k) * d for i in range(3)]
  return [jax.lax.slice_in_dim(w, s, s + (g if i < 3 else d), axis=1).astype(dtype) for i, s in enumerate(starts)]


def _merged_d(xp, wds, m32, dtype):
  """With merge="aligned" every group's d_k multiplies the same x, so the four d x terms
  are one projection: sum_k m_k d_k x = (xp @ sum_k m_k W_dk) x (one D-wide dot on the whole
  map instead of one per group and step, in the forward and in each of the backward's three)."""
  wd = sum(m32[k] * wds[k].astype(jnp.float32) for k in range(4)).astype(dtype)
  return wd, jnp.dot(xp, wd).astype(jnp.float32)


def _group_blocks(w, x, merge):
  """Each group's weight blocks for unrolled.group_*: all six, or without d where the d x
  terms are merged (aligned), and the d blocks."""
  blocks = [_group_weights(w, k, x.dtype, x.shape[-1]) for k in range(4)]
  return [b[:5] if merge == "aligned" else b for b in blocks], [b[5] for b in blocks]


def _unrolled(x, xp, w, m, chunk, merge):
  m = m.astype(x.dtype).astype(jnp.float32)
  blocks, wds = _group_blocks(w, x, merge)
  y = sum(unrolled.group_forward(xk, xp, blocks[k], m[k], direction, chunk)
          for k, (xk, direction) in enumerate(_inputs(x, merge)))
  if merge == "aligned":
    y = y + _merged_d(xp, wds, m, x.dtype)[1] * x.astype(jnp.float32)
  return y.astype(x.dtype)


def _unrolled_bwd(x, xp, w, m, chunk, merge, dy):
  """The fast path's backward, group by group (one group's transients live at a time)."""
  m32 = m.astype(x.dtype).astype(jnp.float32)
  dy = dy.astype(jnp.float32)
  blocks, wds = _group_blocks(w, x, merge)
  dx, dm, dws, dxp = 0, [], [], 0
  if merge == "aligned":  # the merged d x term: D = xp @ wd, its cotangent dy x
    wd, dproj = _merged_d(xp, wds, m32, x.dtype)
    ct = (dy * x.astype(jnp.float32)).astype(x.dtype)
    g = jnp.einsum("...r,...c->rc", xp, ct, preferred_element_type=jnp.float32)  # xp^T (dy x)
    dx, dxp = dproj * dy, jnp.dot(ct, wd.T, preferred_element_type=jnp.float32)

  def to_x(dxk, k):  # the transpose of _inputs' k-th transform
    if merge == "aligned" or k == 0:
      return dxk
    dxk = dxk[:, :, ::-1] if k >= 2 else dxk
    return jnp.swapaxes(dxk, 1, 2) if k % 2 else dxk

  for k, (xk, direction) in enumerate(_inputs(x, merge)):
    dxk, dxpk, dwk, dmk = unrolled.group_backward(xk, xp, blocks[k], m32[k], dy, direction, chunk)
    dx, dxp = dx + to_x(dxk, k), dxp + dxpk
    if merge == "aligned":  # d_k's share of the merged term: dW_dk = m_k g, dm_k += <g, W_dk>
      dwk, dmk = dwk + [m32[k] * g], dmk + jnp.sum(g * wds[k].astype(jnp.float32))
    dws.append(dwk)
    dm.append(dmk)
  dw = jnp.concatenate([dws[k][i] for i in range(6) for k in range(4)], axis=1)  # w's layout
  return dx.astype(x.dtype), dxp.astype(xp.dtype), dw, jnp.stack(dm)


def _weights(w_gates, w_lam, w_u, w_d):
  return jnp.concatenate([w_gates, w_lam, w_u, w_d], axis=1)


def _forward(x, xp, w_gates, w_lam, w_u, w_d, m, chunk, merge, impl):
  if impl == "xla":
    return _unrolled(x, xp, _weights(w_gates, w_lam, w_u, w_d), m, chunk, merge)
  return _composed(x, xp, shared_gates(w_gates, x.shape[-1]), w_lam, w_u, w_d, m, chunk, merge, "triton")


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8, 9))
def _core(x, xp, w_gates, w_lam, w_u, w_d, m, chunk, merge, impl):
  return _forward(x, xp, w_gates, w_lam, w_u, w_d, m, chunk, merge, impl)


def _core_fwd(x, xp, w_gates, w_lam, w_u, w_d, m, chunk, merge, impl):
  return _forward(x, xp, w_gates, w_lam, w_u, w_d, m, chunk, merge, impl), (x, xp, w_gates, w_lam, w_u, w_d, m)


def _core_bwd(chunk, merge, impl, residuals, dy):
  # Tied to dy (barrier.after), the recomputation can neither be merged with the
  # forward's identical ops (CSE would keep the forward's projections alive until here)
  # nor be scheduled before the cotangent exists.
  residuals = after(residuals, dy)
  if impl != "xla":  # recompute through the Triton op's own custom_vjp
    _, vjp = jax.vjp(lambda *a: _forward(*a, chunk, merge, impl), *residuals)
    return vjp(dy)
  x, xp, w_gates, w_lam, w_u, w_d, m = residuals
  dx, dxp, dw, dm = _unrolled_bwd(x, xp, _weights(w_gates, w_lam, w_u, w_d), m, chunk, merge, dy)
  dx, dxp = after((dx, dxp), (dw, dm))  # the weight gradients are computed before dx, dxp are used
  d, gates = x.shape[-1], w_gates.shape[1] // 12
  dws = jnp.split(dw, [12 * gates, 12 * gates + 4 * d, 12 * gates + 8 * d], axis=1)
  return (dx, dxp, *(g.astype(a.dtype) for g, a in zip(dws, (w_gates, w_lam, w_u, w_d))), dm.astype(m.dtype))


_core.defvjp(_core_fwd, _core_bwd)


def _check(x, xp, w_gates, w_lam, w_u, w_d, m, chunk, merge, impl, gate_channels):
  if impl not in CORE_IMPLS:
    raise ValueError(f"gspn_core: impl={impl!r}; use one of {CORE_IMPLS}")
  if merge not in MERGES:
    raise ValueError(f"gspn_core: merge={merge!r}; use one of {MERGES}")
  if chunk is not None and (not isinstance(chunk, int) or chunk < 1):
    raise ValueError(f"gspn_core: chunk={chunk!r}; use a positive int or None (global)")
  if x.ndim != 4 or xp.shape[:3] != x.shape[:3]:
    raise ValueError(f"gspn_core: x {x.shape} and xp {xp.shape} must be NHWC with the same (B, H, W)")
  if merge == "released" and x.shape[1] != x.shape[2]:
    raise ValueError(f"merge='released' needs a square token grid, got {x.shape[1]}x{x.shape[2]}; "
                     "use merge='aligned'")
  r, d = xp.shape[-1], x.shape[-1]
  g = d if gate_channels is None else gate_channels
  if not isinstance(g, int) or g < 1 or d % g:
    raise ValueError(f"gspn_core: gate_channels={gate_channels!r}; use None or a positive divisor of D={d}")
  for name, w, width in (("w_gates", w_gates, 12 * g), ("w_lam", w_lam, 4 * d), ("w_u", w_u, 4 * d),
                         ("w_d", w_d, 4 * d)):
    if w.shape != (r, width):
      raise ValueError(f"gspn_core: {name} has shape {w.shape}; expected ({r}, {width}) for R={r}, D={d}, "
                       f"gate_channels={gate_channels}")
  if m.shape != (4,):
    raise ValueError(f"gspn_core: m has shape {m.shape}; expected (4,)")
