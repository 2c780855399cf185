"""A performance model of the GSPN kernels on an H100, from the compiled program (no GPU).

For each benchmark shape the op's forward and gradient (four directions, or one for the
single layers) are lowered for CUDA at compute capability 90 (kernels/audit.py). Bytes
moved = every Triton custom call's operands and results (each element crosses HBM once:
the kernels read every input once per step and write every output once; the rows
layout's fp32 state rows stay in L1/L2 and are not counted), divided by the fraction of
each 32-byte sector used (bf16 x 8 channels with lines along H: 16 of 32 bytes), plus, for forward+backward,
the XLA ops between the kernels on full-size arrays (the gradient sums over directions),
counted unfused: an upper bound. Minimum bytes, with D directions and N = B*H*W*C: every
distinct array once; forward x and the merged output once, 4 gate/lambda arrays per
direction: (2 + 4D) N; backward adds x, the D saved outputs, dh, dx once and 4D
gradients read or written: (3 + 9D) N. Time = the larger of the bandwidth bound (bytes / 3.0 TB/s) and a
latency bound: each program waits one dependent memory round trip per scan step and line
tile (no prefetch), in waves of (132 SMs x resident programs per SM, from ptxas's
register count). Every figure is predicted, not measured.
"""

import math

import jax.numpy as jnp

from kernels import audit

H100_BANDWIDTH = 3.0e12  # measured copy bandwidth on the project's H100 (spec/kernel.md)
H100_SMS = 132
REGISTERS_PER_SM = 65536
MAX_WARPS_PER_SM = 64
ROUND_TRIP_S = 1.0e-6  # one dependent global load + barrier per step, HBM latency ~0.6-0.8 us


def _bytes(shape_text):
  dims, dtype = shape_text.split("<")[1].rstrip(">").rsplit("x", 1)
  size = {"f32": 4, "bf16": 2, "f16": 2}[dtype]
  return math.prod(int(d) for d in dims.split("x")) * size


def xla_op_bytes(lowered, shape):
  """Operands and results, on full-size arrays, of the XLA ops outside the kernels (unfused)."""
  full = "tensor<" + "x".join(map(str, shape))
  total = 0
  for o in audit._ops(lowered.compiler_ir("stablehlo").operation):
    name = o.operation.name
    if name in ("stablehlo.custom_call", "func.return", "stablehlo.constant", "stablehlo.broadcast_in_dim"):
      continue
    types = [str(v.type) for v in o.operation.operands] + [str(v.type) for v in o.operation.results]
    if any(t.startswith(full) for t in types):
      total += sum(_bytes(t) for t in types if t.startswith(full))
  return total


def sector_efficiency(meta, size):
  """Useful fraction of each 32-byte sector a kernel touches: a program reads BLOCK_C
  contiguous channels per pixel, and whole line tiles only where the line runs along W
  and the block holds every channel."""
  contiguous = meta["BLOCK_C"] * size
  if meta["STRIDE_L"] == meta["C"] and meta["BLOCK_C"] >= meta["C"]:
    contiguous *= meta["BLOCK_L"]
  return min(1.0, contiguous / 32)


def kernel_time(row, steps_per_program, tiles_per_step):
  """(latency-bound seconds, programs, resident programs per SM) of one custom call."""
  programs = math.prod(row["grid"])
  warps = row["num_warps"]
  per_sm = max(1, min(REGISTERS_PER_SM // (max(row["registers"], 1) * 32 * warps), MAX_WARPS_PER_SM // warps))
  waves = math.ceil(programs / (H100_SMS * per_sm))
  return waves * steps_per_program * tiles_per_step * ROUND_TRIP_S, programs, per_sm


def predict_case(name, shape, directions, chunk, dtype):
  from bench.kernel_audit import op_step
  from kernels import layout

  size, d = jnp.dtype(dtype).itemsize, len(directions)
  n = math.prod(shape) * size
  out = {"case": name, "shape": shape, "directions": d, "chunk": chunk, "dtype": jnp.dtype(dtype).name,
         "min_bytes_fwd": (2 + 4 * d) * n, "min_bytes_fwd_bwd": (2 + 4 * d + 3 + 9 * d) * n}
  fn, args = op_step(shape, directions, chunk, dtype)
  lowered = audit.lower_for_cuda(fn, *args, compute_capability=90)
  rows = [audit.audit(c) for c in audit.triton_calls(lowered)]
  xla_bytes = xla_op_bytes(lowered, shape)
  for what, kinds in (("fwd", ("fwd",)), ("fwd_bwd", ("fwd", "bwd"))):
    moved = latency = 0.0
    for r, d in zip([r for r in rows if any(k in r["kernel"] for k in kinds)], directions * 2):
      meta, _, _ = layout.geometry(shape, d, chunk)
      tiles = -(-meta["L"] // meta["BLOCK_L"])
      shapes = r["operand_shapes"] + r["result_shapes"]
      moved += sum(_bytes(s) for s in shapes if s.count("x") == 4) / sector_efficiency(meta, size)
      t, programs, per_sm = kernel_time(r, meta["CHUNK"], tiles)
      latency = latency + t
      out[f"programs_{r['kernel']}"], out[f"programs_per_sm_{r['kernel']}"] = programs, round(programs / H100_SMS, 2)
    if what == "fwd_bwd":
      moved += xla_bytes
      out["xla_op_bytes_fwd_bwd"] = xla_bytes
    out[f"bytes_{what}"] = moved
    out[f"bytes_over_min_{what}"] = round(moved / out[f"min_bytes_{what}"], 3)
    t = max(moved / H100_BANDWIDTH, latency)
    out[f"predicted_{what}_ms"] = round(1e3 * t, 4)
    out[f"predicted_{what}_bandwidth_fraction"] = round(out[f"min_bytes_{what}"] / t / H100_BANDWIDTH, 3)
  return out


def plot(rows, path):
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, ax = plt.subplots(figsize=(9, 4))
  labels = [f"{r['case']}\n{r['dtype']}" for r in rows]
  xs = range(len(rows))
  ax.bar([x - 0.2 for x in xs], [r["predicted_fwd_bandwidth_fraction"] for r in rows], 0.4, label="forward")
  ax.bar([x + 0.2 for x in xs], [r["predicted_fwd_bwd_bandwidth_fraction"] for r in rows], 0.4, label="fwd+bwd")
  ax.axhline(0.85, color="k", ls="--", lw=0.8, label="85 % target")
  ax.set_xticks(list(xs), labels, rotation=60, ha="right", fontsize=7)
  ax.set_ylabel("minimum bytes / time / 3.0 TB/s")
  ax.set_title("GSPN kernels on an H100: PREDICTED from the compiled program, not measured")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
