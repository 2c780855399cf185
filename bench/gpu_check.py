"""Everything to run on the first GPU, in one command, results named after the device.

  python -m bench.gpu_check            # on a CUDA GPU with jax-triton (README, GPU install)
  python -m bench.gpu_check --quick    # on a GPU lent for minutes: under 10 minutes in all
  python -m bench.gpu_check --smoke    # anywhere: the same steps at smoke size, no GPU tests

Steps, each in its own process so one failure does not hide the others:
  1. the GPU tests (pytest -m gpu: the kernels against the XLA reference, a GSPN model's
     gradients, a train step) and the CUDA lowering audit (tests/test_kernel_lowering.py);
  2. bench.kernel, measured, then set beside bench.kernel --predict (the H100 model);
  3. bench.compare (GSPN-XL/2 vs DiT-XL/2).
--quick runs the kernel tests only, bench.kernel on QUICK_CASES and bench.compare --quick,
each step under a time limit (QUICK_LIMITS_S) that a cut-short step reports.
Writes bench/results/gpu_check_<device>.json (gpu_check_quick_...): each step's exit code
and output tail, and the measured-vs-predicted table.
"""

import argparse
import json
import pathlib
import subprocess
import sys

from bench.common import device_name, write_results

PREDICTED = pathlib.Path("bench/results/kernel_predicted_h100.json")
# One local and one global layer at GSPN-XL/2's 256 px shape and at GSPN-2's 1K^2 x 16 x 8 ch.
QUICK_CASES = ["xl2_256px_local", "xl2_256px_global", "layer_1k_b16_local", "layer_1k_b16_global"]
QUICK_LIMITS_S = {"gpu_tests": 150, "kernel": 210, "compare": 180}  # 9 minutes with the start-up
FULL_LIMITS_S = {"gpu_tests": 3600, "kernel": 7200, "compare": 7200}


def _run(args, timeout):
  try:
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)
    return {"command": " ".join(["python", *args]), "returncode": out.returncode, "tail": (out.stdout + out.stderr)[-3000:]}
  except subprocess.TimeoutExpired:
    return {"command": " ".join(["python", *args]), "returncode": None, "tail": f"timed out after {timeout} s"}


def measured_vs_predicted(measured_rows, predicted_rows):
  """One row per (case, dtype) found in both: measured Triton ms beside the predicted ms."""
  predicted = {(r["case"], r["dtype"]): r for r in predicted_rows if r.get("version", "v2") == "v2"}  # the kernels run
  table = []
  for m in measured_rows:
    p = predicted.get((m["case"], m["dtype"]))
    if p is None:
      continue
    row = {"case": m["case"], "dtype": m["dtype"]}
    for what in ("fwd", "fwd_bwd"):
      got, want = m.get(f"triton_{what}_ms"), p[f"predicted_{what}_ms"]
      row.update({f"measured_{what}_ms": got, f"predicted_{what}_ms": want,
                  f"measured_over_predicted_{what}": None if got is None else round(got / want, 3)})
    table.append(row)
  return table


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="smoke sizes, no GPU tests (runs on a CPU)")
  p.add_argument("--quick", action="store_true", help="a few cases and time limits: under 10 minutes on a GPU")
  p.add_argument("--out", default=None, help="JSON path (default: bench/results/gpu_check_<device>.json)")
  args = p.parse_args(argv)
  if args.smoke and args.quick:
    p.error("--smoke or --quick, not both")
  from kernels import INSTALL_HINT, available

  if not args.smoke and not available():
    raise SystemExit(f"bench.gpu_check needs a CUDA GPU with jax-triton ({INSTALL_HINT}); --smoke runs on a CPU")
  out = pathlib.Path(args.out) if args.out else None
  folder = (out.parent if out else pathlib.Path("bench/results"))
  mode = "smoke" if args.smoke else "quick" if args.quick else ""
  tag = f"{mode + '_' if mode else ''}{device_name().replace(':', '_')}"
  kernel_json, compare_json = folder / f"gpu_check_kernel_{tag}.json", folder / f"gpu_check_compare_{tag}.json"
  limits = QUICK_LIMITS_S if args.quick else FULL_LIMITS_S
  steps = {}
  if not args.smoke:  # one process: the GPU tests share one device
    tests = ["tests/test_kernels.py"] if args.quick else ["tests/test_kernels.py", "tests/test_kernel_lowering.py"]
    steps["gpu_tests"] = _run(["-m", "pytest", "-q", "-p", "no:xdist", "-m", "gpu", *tests], limits["gpu_tests"])
  cases = ["--smoke"] if args.smoke else ["--cases", *QUICK_CASES] if args.quick else []
  steps["kernel"] = _run(["-m", "bench.kernel", *cases, "--out", str(kernel_json)], limits["kernel"])
  steps["compare"] = _run(["-m", "bench.compare", *([f"--{mode}"] if mode else []), "--out", str(compare_json)],
                          limits["compare"])
  table = []
  if kernel_json.exists() and PREDICTED.exists():
    table = measured_vs_predicted(json.loads(kernel_json.read_text())["rows"], json.loads(PREDICTED.read_text())["rows"])
  path = write_results(f"gpu_check{'_' + mode if mode else ''}", {"steps": steps, "measured_vs_predicted": table},
                       out)
  for name, s in steps.items():
    print(f"{name}: exit {s['returncode']} ({s['command']})")
  print(f"wrote {path}")
  return 0 if all(s["returncode"] == 0 for s in steps.values()) else 1


if __name__ == "__main__":
  sys.exit(main())
