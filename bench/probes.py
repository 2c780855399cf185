"""Activation statistics inside GSPN and DiT, per block, for the stability diagnostic.

`gspn_forward` and `dit_forward` recompute the models' deterministic forward (no label drop,
no stochastic depth) block by block and return (output, per-block statistics); the output
equals model(x, t, y) (tested), so the statistics are those of the model being trained.
Inside a GSPN core (gspn_jax/ops/core.py: y = sum_k m_k (u_k h_k + d_k x), h_k the scan of
lambda_k x with row-stochastic gates) they measure each factor: the gate logits and how
saturated and peaked (gate_max: the mean largest of the normalised gates, 1/3 when uniform,
1 when one-hot) the normalised gates are, lambda, u, d, and the propagated state h.
"""

import jax.numpy as jnp
from flax import nnx

from gspn_jax.models.layers import modulate, unpatchify
from gspn_jax.ops import gspn_scan
from gspn_jax.ops.core import GROUP_DIRECTIONS, shared_gates
from gspn_jax.ops.gates import normalize_gates
from gspn_jax.ops.unrolled import line_masks, scan_axes

SATURATED = 4.0  # |logit| beyond which sigmoid's slope is < 2 % of its maximum


def rms(a):
  return jnp.sqrt(jnp.mean(jnp.square(a.astype(jnp.float32))))


def gspn_core_forward(spn, x, c=None):
  """GSPNCore's output (merge="aligned") composed from gspn_scan, and its factors' statistics."""
  if spn.merge != "aligned":
    raise ValueError(f"the probe composes merge='aligned' only, got {spn.merge!r}")
  d = x.shape[-1]
  xp = spn.x_conv_down(x)
  if spn.c_proj is not None:
    xp = xp + spn.c_proj(nnx.silu(c))[:, None, None, :]
  gl, gc, gr = jnp.split(xp @ shared_gates(spn.w_conv_up.kernel[...], d), 3, axis=-1)
  lam, u, dd = (xp @ f.kernel[...] for f in (spn.l_conv_up, spn.u_conv_up, spn.d_conv))
  m = spn.m_conv[...]
  y, hs, gmax = 0.0, [], []
  for k, direction in enumerate(GROUP_DIRECTIONS):
    g = slice(k * d, (k + 1) * d)
    h = gspn_scan(x, gl[..., g], gc[..., g], gr[..., g], lam[..., g], direction=direction, chunk=spn.chunk,
                  impl="xla", normalize=True)
    line = scan_axes(direction)[1]
    ng = normalize_gates(gl[..., g], gc[..., g], gr[..., g], line)
    has_prev, has_next = line_masks(x.shape, line)  # a missing neighbour's gate is not used
    gmax.append(jnp.mean(jnp.maximum(jnp.maximum(ng[0] * has_prev, ng[1]), ng[2] * has_next)))
    hs.append(h)
    y = y + m[k] * (h * u[..., g] + x * dd[..., g])
  h = jnp.concatenate(hs, axis=-1)
  logits = jnp.concatenate([gl, gc, gr], axis=-1)
  x4 = jnp.concatenate([x] * 4, axis=-1)
  stats = {"x": rms(x), "xp": rms(xp), "gate_logit": rms(logits),
           "gate_saturated": jnp.mean((jnp.abs(logits) > SATURATED).astype(jnp.float32)),
           "gate_max": jnp.mean(jnp.stack(gmax)), "lambda": rms(lam), "u": rms(u), "d": rms(dd),
           "lambda_x": rms(lam * x4), "h": rms(h), "h_over_lambda_x": rms(h) / rms(lam * x4),
           "u_h": rms(u * h), "d_x": rms(dd * x4), "m": jnp.max(jnp.abs(m)), "core_out": rms(y),
           "core_gain": rms(y) / rms(x)}
  return y.astype(x.dtype), stats


def gspn_block_forward(blk, hidden, residual, skip, c):
  """Block.__call__ without stochastic depth, with the statistics of its stages."""
  if blk.skip_linear is not None:
    hidden = blk.skip_linear(jnp.concatenate([hidden, skip], axis=-1))
  residual = hidden.astype(jnp.float32) if residual is None else residual + hidden.astype(jnp.float32)
  z = blk.norm(residual)
  if blk.adaLN_modulation is not None:
    shift, scale, gate = jnp.split(blk.adaLN_modulation(nnx.silu(c)), 3, axis=-1)
    z = modulate(z, shift, scale)
  z = blk.conv2d(blk.in_proj(z))
  z, stats = gspn_core_forward(blk.spn, z, c)
  if blk.core_norm is not None:
    z = blk.core_norm(z)
  z = blk.out_dconv(blk.out_conv(z))
  stats["pre_square"] = rms(z)
  z = blk.out_proj(z * nnx.relu(z))
  if blk.adaLN_modulation is not None:
    z = gate[:, None, None, :] * z
  stats.update(residual=rms(residual), branch=rms(z))
  return z, residual, stats


def gspn_forward(model, x, t, y):
  """(model(x, t, y), [per-block statistics]) for a GSPN model."""
  c = model.t_embedder(t) + model.y_embedder(y)
  hidden = model.x_embedder(x) + c[:, None, None, :]
  residual, skips, stats = None, [], []
  for blk in model.in_blocks:
    hidden, residual, s = gspn_block_forward(blk, hidden, residual, None, c)
    skips.append(hidden)
    stats.append(s)
  hidden, residual, s = gspn_block_forward(model.mid_block, hidden, residual, None, c)
  stats.append(s)
  for blk in model.out_blocks:
    hidden, residual, s = gspn_block_forward(blk, hidden, residual, skips.pop(), c)
    stats.append(s)
  out = model.final_layer(model.norm_f(residual + hidden), c)
  return unpatchify(out, model.patch_size, model.out_channels), stats


def dit_forward(model, x, t, y):
  """(model(x, t, y), [per-block statistics]) for a DiT model: residual stream and branch size."""
  h = model.x_embedder(x) + model.pos_embed[...]
  c = model.t_embedder(t) + model.y_embedder(y)
  stats = []
  for blk in model.blocks:
    out = blk(h, c)
    stats.append({"residual": rms(h), "branch": rms(out - h)})
    h = out
  out = model.final_layer(h, c)
  return unpatchify(out, model.patch_size, model.out_channels), stats


FORWARDS = {"GSPN": gspn_forward, "DiT": dit_forward}
