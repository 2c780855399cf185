"""Everything to run on the first GPU, in one command, results named after the device.

  python -m bench.gpu_check            # on a CUDA GPU with jax-triton (README, GPU install)
  python -m bench.gpu_check --smoke    # anywhere: the same steps at smoke size, no GPU tests

Steps, each in its own process so one failure does not hide the others:
  1. the GPU tests (pytest -m gpu: the kernels against the XLA reference, a GSPN model's
     gradients, a train step) and the CUDA lowering audit (tests/test_kernel_lowering.py);
  2. bench.kernel, measured, then set beside bench.kernel --predict (the H100 model);
  3. bench.compare (GSPN-XL/2 vs DiT-XL/2).
Writes bench/results/gpu_check_<device>.json: each step's exit code and output tail, and
the measured-vs-predicted table.
"""

import argparse
import json
import pathlib
import subprocess
import sys

from bench.common import device_name, write_results

PREDICTED = pathlib.Path("bench/results/kernel_predicted_h100.json")


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
  p.add_argument("--out", default=None, help="JSON path (default: bench/results/gpu_check_<device>.json)")
  args = p.parse_args(argv)
  from kernels import INSTALL_HINT, available

  if not args.smoke and not available():
    raise SystemExit(f"bench.gpu_check needs a CUDA GPU with jax-triton ({INSTALL_HINT}); --smoke runs on a CPU")
  out = pathlib.Path(args.out) if args.out else None
  folder = (out.parent if out else pathlib.Path("bench/results"))
  tag = f"{'smoke_' if args.smoke else ''}{device_name().replace(':', '_')}"
  kernel_json, compare_json = folder / f"gpu_check_kernel_{tag}.json", folder / f"gpu_check_compare_{tag}.json"
  smoke = ["--smoke"] if args.smoke else []
  steps = {}
  if not args.smoke:
    steps["gpu_tests"] = _run(["-m", "pytest", "-q", "-m", "gpu", "tests/test_kernels.py",
                               "tests/test_kernel_lowering.py"], 3600)
  steps["kernel"] = _run(["-m", "bench.kernel", *smoke, "--out", str(kernel_json)], 7200)
  steps["compare"] = _run(["-m", "bench.compare", *smoke, "--out", str(compare_json)], 7200)
  table = []
  if kernel_json.exists() and PREDICTED.exists():
    table = measured_vs_predicted(json.loads(kernel_json.read_text())["rows"], json.loads(PREDICTED.read_text())["rows"])
  path = write_results(f"gpu_check{'_smoke' if args.smoke else ''}", {"steps": steps, "measured_vs_predicted": table},
                       out)
  for name, s in steps.items():
    print(f"{name}: exit {s['returncode']} ({s['command']})")
  print(f"wrote {path}")
  return 0 if all(s["returncode"] == 0 for s in steps.values()) else 1


if __name__ == "__main__":
  sys.exit(main())
