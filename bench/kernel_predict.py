"""A performance model of a GSPN layer's kernels on an H100, from the compiled program (no GPU).

For each benchmark shape (B, H, W, D) one GSPN layer (gspn_core, merge="aligned", four
directions, R = D/16) is lowered for CUDA at compute capability 90 (kernels/audit.py), its
forward alone and its forward + gradient, in two versions: "v2", the current kernels
(kernels/core_op.py: the projection read in place in group-major order, the fused
u h + d x / merge epilogue, one launch per scan axis), and "v1", one gspn_scan per group on
sliced gates with the epilogue in XLA (the op before the layer kernels).

Bytes moved, counted from the lowered module:
- each Triton custom call: every 4-D operand and result, C channels per pixel (a kernel
  reads only its group's C channels of a wider projection; a paired launch,
  kernels/gspn_pair_triton.py, reads twelve from its one projection operand), divided by
  the fraction of each 32-byte sector used: contiguous bytes per pixel are BLOCK_C
  channels, or, when the block holds all C channels, the group's slots read from the
  24C-wide projection (contiguous in group-major order), or a whole line tile where the
  line runs along W; the four directions take turns, so each call is charged their mean.
  The rows layout's fp32 state rows stay in L1/L2 and are not counted. Two sharings count
  as L2 hits: a sector's other pixels read by the same program at the next step (a scan
  along W over whole pixels: one step of the resident programs' traffic is far below the
  L2), and the other channels of a pixel read in the same step by the programs of the
  other channel blocks when the whole grid is resident at once (the rows layout's
  one-channel blocks of a high-resolution map).
- a paired launch's accesses beyond each operand and result once (AGAIN: the forward's
  second pass re-reads x and its own partial y; the backward re-reads x, dy, the recomputed
  h, the gates and its dx): free (L2 hits) when one group's share of the traffic of the
  programs resident at once fits the H100's 50 MB L2 ("l2_footprint" per call in the
  JSON), else charged as HBM traffic. An assumption, stated per call. The four groups'
  launch (kernels/gspn_quad_triton.py) reads all 24 slots of the projection and its
  re-reads (QUAD_AGAIN) are always charged.
- the XLA ops between them on (B, H, W, .) arrays, unfused (an upper bound): a slice
  reads and writes its result, other ops read their operands and write their results.
  Reshapes (bitcasts) and the projection / weight-gradient GEMMs, which every version
  runs alike, are left out.
Minimum bytes with N = B*H*W*D elements: forward x, the 24 projected channels groups and
y once: 26 N; forward + backward (y only summed) x, the projection, then x, dy and the
projection read, dx and the 24 projection gradients written: 76 N. With channel-shared
gates (G per group, g = G/D) the 12 gate slots are g wide: 14 + 12g and 40 + 36g (the
scan kernels write per-channel gate gradients, which XLA sums: 12 (1 - g) N above that
minimum; the stencil one partial sum per channel block where a block lies in one gate).
The stencil launches (segments of at most two steps, kernels/gspn_stencil_triton.py) are
counted by stencil_bytes: every image-sized operand and result once, whole sectors, their
neighbour reads L2 hits while the traffic between a row's reads and its neighbours' fits
the L2.
Time = the largest of three bounds: bytes / 3.0 TB/s; latency: each program waits one
dependent memory round trip per scan step and line tile (1 us; 0.7 us where the inputs are
loaded a tile ahead: HBM_LATENCY_S, STEP_CHAIN_S, assumed) (two scans per program in a
paired forward, four in its backward; one and two in the four groups' launch, whose
groups run as concurrent programs; one for a stencil program), in waves of 132 SMs x
resident programs per SM (from ptxas's register count); issue: the SASS instructions the
threads execute (the innermost loop x its trips, or a loop-free kernel's expected count:
kernels/audit.py) at one warp instruction per scheduler and clock (4 per SM, 1.98 GHz),
a peak no kernel reaches, so a floor.
Every figure is predicted, not measured.
"""

import math
import statistics

import jax
import jax.numpy as jnp

from kernels import audit, layout

H100_BANDWIDTH = 3.0e12  # measured copy bandwidth on the project's H100 (spec/kernel.md)
H100_SMS = 132
REGISTERS_PER_SM = 65536
MAX_WARPS_PER_SM = 64
H100_L2_BYTES = 50 * 2 ** 20
H100_CLOCK = 1.98e9  # boost clock; 4 schedulers per SM issue one warp instruction per clock at most
# A scan step's latency (assumed, not measured): a step that loads its inputs from HBM waits
# for them (HBM_LATENCY_S, ~0.6-0.8 us under load) and then for its dependent chain (the state
# or neighbour exchange, the math, barriers: STEP_CHAIN_S). The rows layout loads each line
# tile's inputs one tile ahead (kernels/gspn_triton.py), so its step is the longer of the two.
HBM_LATENCY_S = 0.7e-6
STEP_CHAIN_S = 0.3e-6
ROUND_TRIP_S = HBM_LATENCY_S + STEP_CHAIN_S
PREFETCHED_STEP_S = max(HBM_LATENCY_S, STEP_CHAIN_S)
NOT_COUNTED = ("stablehlo.custom_call", "func.return", "func.call", "func.func", "stablehlo.constant",
               "stablehlo.broadcast_in_dim", "stablehlo.reshape", "stablehlo.dot_general",
               "stablehlo.optimization_barrier", "stablehlo.iota")


def layer_fn(shape, chunk, dtype, version="v2", grad=True, gate_channels=None):
  """A jitted GSPN layer (forward, or value and gradient w.r.t. all 7 inputs) and its avals."""
  from gspn_jax.ops import core

  b, h, w, d = shape
  r = max(1, d // 16)
  avals = (jax.ShapeDtypeStruct(shape, dtype), jax.ShapeDtypeStruct((b, h, w, r), dtype),
           jax.ShapeDtypeStruct((r, 12 * (gate_channels or d)), jnp.float32),
           *[jax.ShapeDtypeStruct((r, 4 * d), jnp.float32)] * 3, jax.ShapeDtypeStruct((4,), jnp.float32))
  if version == "v2":
    layer = lambda *a: core.gspn_core(*a, chunk=chunk, merge="aligned", impl="triton", gate_channels=gate_channels)
  else:
    layer = lambda *a: core._core(*a, chunk, "aligned", "triton")
  fn = jax.value_and_grad(lambda *a: jnp.sum(layer(*a).astype(jnp.float32)), argnums=range(7)) if grad else layer
  return jax.jit(fn), avals


def _bytes(type_text):
  dims, dtype = type_text.split("<")[1].rstrip(">").rsplit("x", 1)
  size = {"f32": 4, "bf16": 2, "f16": 2}[dtype]
  return math.prod(int(d) for d in dims.split("x")) * size


def _pixels(type_text):
  return math.prod(int(d) for d in type_text.split("<")[1].split("x")[:3])


def xla_op_bytes(lowered, shape):
  """Bytes of the XLA ops outside the kernels on (B, H, W, .) arrays, unfused."""
  prefix = "tensor<" + "x".join(map(str, shape[:3])) + "x"
  total = 0
  for o in audit._ops(lowered.compiler_ir("stablehlo").operation):
    name = o.operation.name
    if name in NOT_COUNTED:
      continue
    ins = [str(v.type) for v in o.operation.operands if str(v.type).startswith(prefix)]
    outs = [str(v.type) for v in o.operation.results if str(v.type).startswith(prefix)]
    if name == "stablehlo.slice":
      total += 2 * sum(_bytes(t) for t in outs)
    else:
      total += sum(_bytes(t) for t in ins + outs)
  return total


def sector_efficiency(meta, size, pitch, slots=1, siblings=False):
  """Useful fraction of each 32-byte sector for one array of `pitch` channels per pixel
  of which a program reads `slots` adjacent C-channel slots. siblings: the programs of
  the other channel blocks run at the same time and read the rest of each pixel's
  channels in the same step (L2 hits)."""
  channels = meta["C"] if siblings else meta["BLOCK_C"]
  contiguous = channels * size
  if channels >= meta["C"]:
    if pitch == meta["C"] and meta["STRIDE_L"] == 1:
      contiguous *= meta["BLOCK_L"]
    elif pitch == meta["C"] and meta["STRIDE_S"] == 1:
      return 1.0  # the next step reads the sector's other pixels: an L2 hit one step later
    elif pitch > meta["C"]:
      contiguous *= slots
  return min(1.0, contiguous / 32)


def _paired(call):
  return call["kernel"].startswith("gspn_pair")


def _quad(call):
  return call["kernel"].startswith("gspn_quad")


def _groups(call):
  """Channel groups one program of the launch scans in sequence, and groups per launch."""
  return (2, 2) if _paired(call) else (1, 4) if _quad(call) else (1, 1)


def _stencil(call):
  return call["kernel"].startswith("gspn_stencil")


# The stencil's neighbour reads in C-channel units per pixel: forward, on the second steps
# (half the pixels of each of 4 groups) x and lam at three line neighbours; the backward adds,
# on the first steps, the successor's u, dy and three gates at three neighbours.
STENCIL_AGAIN = {"fwd": 12, "bwd": 12 + 30}


def stencil_bytes(call, shape, size, programs):
  """HBM bytes of one stencil launch (kernels/gspn_stencil_triton.py): every image-shaped
  operand and result once at its full width (x, the projection, y; with dy, dx and the
  projection gradients), whole sectors (a pixel's channel blocks run as adjacent programs
  and share their border sectors in L2). Its neighbour reads (STENCIL_AGAIN) are L2 hits
  when the traffic between a row's reads and its neighbour rows' (one row of pixel blocks
  apart in launch order) fits the L2 (`halo_in_l2`), else charged as HBM traffic."""
  images = [t for t in call["operand_shapes"] + call["result_shapes"]
            if t.startswith("tensor<" + "x".join(map(str, shape[:3])) + "x")]
  once = sum(_bytes(t) for t in images)
  block_p, block_c = layout.stencil_blocks(shape[-1])
  # the programs of one row of pixel blocks (all four parity classes, all channel blocks):
  # the launch-order distance between a row's reads and its neighbour rows'
  rows_apart = -(-((shape[2] + 1) // 2) // block_p) * 4 * -(-shape[-1] // block_c)
  footprint = min(1.0, rows_apart / programs) * once
  again = STENCIL_AGAIN["bwd" if "_bwd" in call["kernel"] else "fwd"] * math.prod(shape) * size
  return once, again, footprint


# A paired launch's accesses beyond each operand and result once, in C-channel widths:
# (x-like, projection slots). Forward: the second pass re-reads x, reads and rewrites y.
# Backward, per pass pair (recompute h, adjoint) of two groups: x read 4x, h written 2x and
# read 4x (h and its previous step), dy read 2x, dx written 2x and read once, and the
# recompute's 4 gate slots (gl, gc, gr, lam) read again by the adjoint.
AGAIN = {"fwd": (3, 0), "bwd": (3 + 5 + 1 + 2, 8)}
# The four groups' launch (kernels/gspn_quad_triton.py), beyond each operand and result once:
# forward, x read by four groups; backward, x read 8x (recompute and adjoint per group), dy
# 4x, h read 8x (h and its previous step) after being written, and each group's 4 gate
# slots again. The groups read in different orders (columns, rows, both reversed), so these
# re-reads span the whole map: always charged as HBM traffic.
QUAD_AGAIN = {"fwd": (3, 0), "bwd": (7 + 3 + 8, 4)}


def kernel_bytes(call, shape, chunk, size, metas, siblings=False, gates=None):
  """HBM bytes of one custom call, and for a paired launch its in-program re-reads
  (AGAIN; module docstring); siblings as in sector_efficiency. gates: gate channels per
  group (channel-shared gates; None = C): a gate slot is that many channels wide."""
  c = shape[-1]
  g = (gates or c) / c  # a gate slot's width in C-channel units
  four_d = [t for t in call["operand_shapes"] + call["result_shapes"] if t.count("x") == 4]
  wide = [t for t in call["operand_shapes"] if t in four_d and int(t.split("<")[1].split("x")[3]) > c]
  # the projection slots one program reads per pixel and pass, in C-channel units: a group's
  # gl, gc, gr (then lam, u, d) in the paired kernels and in order in the others' operands
  slots = 3 * g + 3 if _groups(call)[1] > 1 else sum(g if i < 3 else 1 for i in range(len(wide)))
  eff_p = statistics.mean(sector_efficiency(m, size, 12 * (gates or c) + 12 * c, slots, siblings) for m in metas)
  eff_x = statistics.mean(sector_efficiency(m, size, c, 1, siblings) for m in metas)
  pixels = _pixels(four_d[0]) * c * size
  total = 0.0
  for t in four_d:
    if t not in wide:
      total += _pixels(t) * min(int(t.split("<")[1].split("x")[3]), c) * size / eff_x
  if wide:  # both groups' slots from one operand (paired), else one operand per slot
    total += _groups(call)[1] * slots * _pixels(wide[0]) * c * size / eff_p
  again = 0.0
  if _groups(call)[1] > 1:
    xs, ps = (QUAD_AGAIN if _quad(call) else AGAIN)["bwd" if "_bwd" in call["kernel"] else "fwd"]
    ps = ps and _groups(call)[1] * (3 * g + 1)  # the adjoint re-reads each group's gates and lam
    again = pixels * (xs / eff_x + ps / eff_p)
  return total, again


def kernel_time(registers, num_warps, programs, steps_per_program, tiles_per_step, prefetched=False):
  """(latency-bound seconds, resident programs per SM) of one custom call; prefetched: its
  line tiles' inputs are loaded one tile ahead (the rows layout)."""
  per_sm = max(1, min(REGISTERS_PER_SM // (max(registers, 1) * 32 * num_warps), MAX_WARPS_PER_SM // num_warps))
  waves = math.ceil(programs / (H100_SMS * per_sm))
  return waves * steps_per_program * tiles_per_step * (PREFETCHED_STEP_S if prefetched else ROUND_TRIP_S), per_sm


def measure(lowered, shape, chunk, size, gates=None):
  """(bytes, latency seconds, issue seconds, gate copies, per-kernel figures) of one lowered module."""
  metas = [layout.geometry(shape, d, chunk)[0] for d in layout.DIRECTIONS]
  meta = metas[0]
  moved, latency, issue, programs = 0.0, 0.0, 0.0, {}
  for i, call in enumerate(audit.triton_calls(lowered)):
    stats, sass = audit.assemble(call["ptx"], call["compute_capability"])
    n = math.prod(call["grid"])
    if _stencil(call):  # one step per program, no scan
      t, per_sm = kernel_time(stats["registers"], call["num_warps"], n, 1, 1)
      once, again, footprint = stencil_bytes(call, shape, size, n)
      latency += t
      issue += issue_time(n * call["num_warps"] * audit.expected_instructions(sass))
      moved += once + (0.0 if footprint <= H100_L2_BYTES else again)
      programs[f"{i}:{call['kernel']}"] = {
          "kernel": call["kernel"], "programs": n, "programs_per_sm": round(n / H100_SMS, 2),
          "resident_per_sm": per_sm, "registers": stats["registers"], "bytes": once, "re_read_bytes": again,
          "l2_footprint": footprint, "halo_in_l2": footprint <= H100_L2_BYTES}
      continue
    # scans per program in sequence: its groups, each recomputed then adjoint in a fused backward
    passes = _groups(call)[0] * (2 if "_bwd" in call["kernel"] and _groups(call)[1] > 1 else 1)
    widen = call["kernel"].startswith(("gspn_pair_fwd", "gspn_quad")) or (  # kernels/core_op.py: their tiles
        call["kernel"].startswith("gspn_pair_bwd") and layout.backward_widen(shape, "lr"))
    rows_tile = layout.quad_tile("_bwd" in call["kernel"]) if _quad(call) else layout.ROWS_TILE
    tiles = -(-meta["L"] // layout.geometry(shape, "lr", chunk, rows_tile, widen=widen)[0]["BLOCK_L"])
    t, per_sm = kernel_time(stats["registers"], call["num_warps"], n, passes * meta["CHUNK"], tiles,
                            prefetched=call["kernel"].endswith("_rows_kernel"))
    loop = audit.innermost_loop(sass)
    issue += issue_time(n * call["num_warps"] * loop["instructions"] * passes * meta["CHUNK"] * tiles)
    # a pixel's other channel blocks run at once: the whole grid resident, or one group's share
    # of it (the four groups' launch: axis 2, the slowest in launch order)
    siblings = (n // 4 if _quad(call) else n) <= H100_SMS * per_sm
    once, again = kernel_bytes(call, shape, chunk, size, metas, siblings=siblings, gates=gates)
    latency += t
    row = {"kernel": call["kernel"], "programs": n, "programs_per_sm": round(n / H100_SMS, 2),
           "resident_per_sm": per_sm, "registers": stats["registers"], "bytes": once}
    if _paired(call):
      # one group's share of the traffic of the programs resident at once: the reuse distance
      resident = min(n, H100_SMS * per_sm)
      footprint = resident / n * (once + again) / 2
      row.update(l2_footprint=footprint, re_read_bytes=again, re_reads_in_l2=footprint <= H100_L2_BYTES)
      once += 0.0 if row["re_reads_in_l2"] else again
    if _quad(call):
      row.update(re_read_bytes=again, re_reads_in_l2=False)
      once += again
    moved += once
    programs[f"{i}:{call['kernel']}"] = row
  return moved + xla_op_bytes(lowered, shape), latency, issue, len(audit.copied_operands(lowered)), programs


def issue_time(warp_instructions):
  """Seconds to issue this many warp instructions at the H100's peak rate (a floor)."""
  return warp_instructions / (H100_SMS * 4 * H100_CLOCK)


def min_bytes(n, g=1.0):
  """The layer's minimum bytes (module docstring), n = B*H*W*D elements x bytes each; g: a gate
  slot's width in channels over D (channel-shared gates): the projection is 12 + 12g slots wide."""
  return {"min_bytes_fwd": (14 + 12 * g) * n, "min_bytes_fwd_bwd": (40 + 36 * g) * n}


def predict_case(name, shape, chunk, dtype, version="v2", gate_channels=None):
  size = jnp.dtype(dtype).itemsize
  n = math.prod(shape) * size
  out = {"case": name, "version": version, "shape": shape, "chunk": chunk, "dtype": jnp.dtype(dtype).name,
         **({"gate_channels": gate_channels} if gate_channels else {}),
         **min_bytes(n, (gate_channels or shape[-1]) / shape[-1])}
  for what, grad in (("fwd", False), ("fwd_bwd", True)):
    fn, avals = layer_fn(shape, chunk, dtype, version, grad, gate_channels)
    lowered = audit.lower_for_cuda(fn, *avals, compute_capability=90)
    moved, latency, issue, copies, programs = measure(lowered, shape, chunk, size, gate_channels)
    bounds = {"bandwidth": moved / H100_BANDWIDTH, "latency": latency, "issue": issue}
    t = max(bounds.values())
    out.update({f"bytes_{what}": moved, f"bytes_over_min_{what}": round(moved / out[f"min_bytes_{what}"], 3),
                f"gate_copies_{what}": copies, f"predicted_{what}_ms": round(1e3 * t, 4),
                f"predicted_{what}_bound": max(bounds, key=bounds.get),
                f"predicted_{what}_issue_ms": round(1e3 * issue, 4),
                f"predicted_{what}_bandwidth_fraction": round(out[f"min_bytes_{what}"] / t / H100_BANDWIDTH, 3),
                f"kernels_{what}": programs})
  return out


def plot(rows, path):
  from bench.plots import plt, save

  fig, ax = plt.subplots(figsize=(10, 4))
  v2 = [r for r in rows if r["version"] == "v2"]
  v1 = {(r["case"], r["dtype"]): r for r in rows if r["version"] == "v1"}
  labels = [f"{r['case']}\n{r['dtype']}" for r in v2]
  xs = range(len(v2))
  for i, (what, label) in enumerate((("fwd", "forward"), ("fwd_bwd", "fwd+bwd"))):
    key = f"predicted_{what}_bandwidth_fraction"
    ax.bar([x - 0.3 + 0.2 * i for x in xs], [v1[r["case"], r["dtype"]][key] for r in v2], 0.2,
           label=f"v1 {label}", alpha=0.5)
    ax.bar([x + 0.1 + 0.2 * i for x in xs], [r[key] for r in v2], 0.2, label=f"v2 {label}")
  ax.axhline(0.85, color="k", ls="--", lw=0.8, label="85 % target")
  ax.set_xticks(list(xs), labels, rotation=60, ha="right", fontsize=7)
  ax.set_ylabel("minimum bytes / time / 3.0 TB/s")
  ax.set_title("A GSPN layer's kernels on an H100: PREDICTED from the compiled program, not measured")
  ax.legend(fontsize=7, ncol=2)
  save(fig, path, dpi=120)
