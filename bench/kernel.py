"""A GSPN layer: the Triton kernels vs the XLA path, against the device's copy bandwidth.

  python -m bench.kernel             # on a GPU: the full table, JSON in bench/results/
  python -m bench.kernel --smoke     # anywhere: tiny shapes, the XLA path only
  python -m bench.kernel --predict   # anywhere: the H100 performance model (bench/kernel_predict.py)
  python -m bench.kernel --predict --gate-channels 1   # the same with channel-shared gates (v2 only)
  python -m bench.kernel --cases xl2_256px_local layer_1k_b16_global   # some cases only

Cases: one GSPN layer (gspn_core, merge="aligned": four directions, R = D/16) at the
GSPN-XL/2 training shape at 256 px (B=32, 16x16, D=1500), 512 px (32x32) and 1024 px
(B=8, 64x64), and at one
high-resolution map (1K^2, 2K^2, 4K^2 with D=8) and at GSPN-2's shape (1K^2, batch 16,
D=8), global and local (chunk 2). For each:
forward and forward+backward, fp32 and bf16, time, the minimum bytes of the layer's
scan part (forward 26 N, forward + backward 76 N, N = B*H*W*D elements:
bench/kernel_predict.py) per second as a fraction of the measured copy bandwidth, and the
speed-up over XLA. The JSON is rewritten after each case ("complete": false until the last).
"""

import argparse
import sys

import jax
import jax.numpy as jnp

from bench.common import copy_bandwidth, time_fn, write_results

FULL = [
    ("xl2_256px_local", (32, 16, 16, 1500), 2),
    ("xl2_256px_global", (32, 16, 16, 1500), None),
    ("xl2_512px_local", (32, 32, 32, 1500), 2),
    ("xl2_512px_global", (32, 32, 32, 1500), None),
    *[(f"layer_{n}k_{mode}", (1, 1024 * n, 1024 * n, 8), chunk)
      for n in (1, 2, 4) for mode, chunk in (("global", None), ("local", 2))],
    # GSPN-2's reported shape (1024^2, batch 16, 8 channels: 1.8 ms on an A100)
    *[(f"layer_1k_b16_{mode}", (16, 1024, 1024, 8), chunk) for mode, chunk in (("global", None), ("local", 2))],
    # GSPN-XL/2 at 1024 px (64 x 64 tokens), batch 8: last, the longest compiles
    ("xl2_1024px_local", (8, 64, 64, 1500), 2),
    ("xl2_1024px_global", (8, 64, 64, 1500), None),
]
SMOKE = [("smoke_local", (2, 8, 8, 16), 2)]  # one layer: its compiles are the cost


def case_fns(shape, chunk, impl, dtype):
  from gspn_jax.ops import gspn_core

  b, h, w, d = shape
  r = max(1, d // 16)
  keys = jax.random.split(jax.random.key(0), 7)
  args = [jax.random.normal(keys[0], shape, dtype), jax.random.normal(keys[1], (b, h, w, r), dtype),
          *(jax.random.normal(k, (r, n * d)) / r ** 0.5 for k, n in zip(keys[2:6], (12, 4, 4, 4))),
          jax.random.normal(keys[6], (4,))]
  layer = lambda *a: gspn_core(*a, chunk=chunk, merge="aligned", impl=impl)
  loss = lambda *a: jnp.sum(layer(*a).astype(jnp.float32))
  return args, jax.jit(layer), jax.jit(jax.value_and_grad(loss, argnums=range(7)))


def run(cases, impls, dtypes, bandwidth, save=None):
  """Rows of measured figures; save(rows) after each, so a run cut short keeps what it measured."""
  rows = []
  for name, shape, chunk in cases:
    n = shape[0] * shape[1] * shape[2] * shape[3]
    for dtype in dtypes:
      size = jnp.dtype(dtype).itemsize
      row = {"case": name, "shape": shape, "chunk": chunk, "dtype": jnp.dtype(dtype).name}
      for impl in impls:
        args, fwd, fwd_bwd = case_fns(shape, chunk, impl, dtype)
        for what, fn, bytes_moved in (("fwd", fwd, 26 * n * size), ("fwd_bwd", fwd_bwd, 76 * n * size)):
          try:
            t = time_fn(fn, *args)
          except Exception as e:  # e.g. the reference running out of memory at 4K^2
            row[f"{impl}_{what}_error"] = f"{type(e).__name__}: {str(e)[:200]}"
            continue
          row[f"{impl}_{what}_ms"] = 1e3 * t
          row[f"{impl}_{what}_bandwidth_fraction"] = bytes_moved / t / bandwidth
      for what in ("fwd", "fwd_bwd"):
        if f"triton_{what}_ms" in row and f"xla_{what}_ms" in row:
          row[f"speedup_{what}"] = row[f"xla_{what}_ms"] / row[f"triton_{what}_ms"]
      rows.append(row)
      print(row, file=sys.stderr)
      if save:
        save(rows)
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny shapes, XLA reference only (runs on a CPU)")
  p.add_argument("--predict", action="store_true", help="predicted H100 figures from the compiled program (no GPU)")
  p.add_argument("--out", default=None, help="JSON path (default: bench/results/kernel_<device>.json)")
  p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"],
                 help="with --predict: the dtypes modelled")
  p.add_argument("--cases", nargs="+", default=None, choices=[name for name, _, _ in FULL], metavar="CASE",
                 help=f"measure or predict these cases only (default: all of {', '.join(n for n, _, _ in FULL)})")
  p.add_argument("--gate-channels", type=int, default=None,
                 help="with --predict: channel-shared gates, G per group (a divisor of every case's D, e.g. 1)")
  args = p.parse_args(argv)
  if args.gate_channels is not None and (not args.predict or args.gate_channels < 1
                                         or any(shape[-1] % args.gate_channels for _, shape, _ in FULL)):
    p.error(f"--gate-channels {args.gate_channels}: needs --predict and a divisor of every case's D "
            f"({sorted({shape[-1] for _, shape, _ in FULL})}), e.g. 1")
  if args.cases and (args.smoke or (args.predict and not args.out)):
    p.error("--cases: not with --smoke, and with --predict give --out (the default file holds every case)")
  from kernels import INSTALL_HINT, available

  cases = [c for c in FULL if args.cases is None or c[0] in args.cases]
  if args.predict:
    return predict(args.out, [jnp.dtype(d) for d in args.dtypes], args.gate_channels, cases)
  if not args.smoke and not available():
    raise SystemExit(f"bench.kernel needs a CUDA GPU with jax-triton ({INSTALL_HINT}); "
                     "use --smoke for the CPU smoke test or --predict for the performance model")
  impls = ("xla",) if args.smoke else ("triton", "xla")
  bandwidth = copy_bandwidth(1 << 24 if args.smoke else 1 << 31)
  save = lambda rows, complete=False: write_results("kernel_smoke" if args.smoke else "kernel", {
      "copy_bandwidth_bytes_per_s": bandwidth, "complete": complete, "rows": rows}, args.out)
  path = save(run(SMOKE if args.smoke else cases, impls, (jnp.float32, jnp.bfloat16), bandwidth, save), True)
  print(f"wrote {path}")
  return path


def predict(out=None, dtypes=(jnp.float32, jnp.bfloat16), gate_channels=None, cases=FULL):
  """The performance model at every case; with gate_channels the current kernels (v2) only,
  in their own JSON (no plot: the plot sets v2 beside v1)."""
  from bench import kernel_predict

  rows = []
  for name, shape, chunk in cases:  # one GSPN layer (four directions) at each shape
    for dtype in dtypes:
      for version in ("v2",) if gate_channels else ("v1", "v2"):
        rows.append(kernel_predict.predict_case(name, shape, chunk, dtype, version, gate_channels))
        print({k: v for k, v in rows[-1].items() if not k.startswith("kernels_")}, file=sys.stderr)
  default = "kernel_predicted_shared_gates_h100.json" if gate_channels else "kernel_predicted_h100.json"
  path = write_results("kernel_predicted", {"predicted_for": "H100 (3.0 TB/s copy bandwidth, 132 SMs): PREDICTED, "
                                            "not measured", "unit": "one GSPN layer (gspn_core, four directions)",
                                            "gate_channels": gate_channels, "rows": rows},
                       out or f"bench/results/{default}")
  if not gate_channels:
    kernel_predict.plot(rows, path.with_suffix(".png"))
  print(f"wrote {path}")
  return path


if __name__ == "__main__":
  main()
