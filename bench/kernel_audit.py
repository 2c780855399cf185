"""The kernels as the GPU would run them, compiled on any machine (kernels/audit.py).

  python -m bench.kernel_audit          # the benchmark matrix, cc 90 and 80: JSON in bench/results/
  python -m bench.kernel_audit --capabilities 90 --dtypes bfloat16   # a part of it
  python -m bench.kernel_audit --ci     # one shape per layout class + the model steps; JSON on stdout
                                        # (or in --out)

For each case one GSPN layer's forward and backward (gspn_core, four directions; or a
whole train / sampling step) are lowered for CUDA through jax-triton, and every Triton
custom call's PTX is assembled: registers, spills, shared memory, SASS instructions per
element-step, replicated warps; gate_copies counts the kernel operands made by a slice,
copy or transpose (kernels/audit.py).
The model steps run on a simulated 2-device mesh, so their kernels are the per-shard
path (jax.shard_map). Figures are compiler output, not GPU measurements.
"""

import os

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

from kernels import audit  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bench.kernel import FULL  # noqa: E402
from bench.kernel_predict import layer_fn  # noqa: E402

# the stencil (local); paired scans in the tile layout; the four groups at once (a square
# high-resolution map, global); and, CI only, paired scans in the rows layout of one channel
# (a map that is not square takes them: no benchmark shape does)
CI_CASES = ("xl2_256px_local", "xl2_256px_global", "layer_4k_global")
CI_EXTRA = [("rows_pairs_4k_x_1k_global", (1, 4096, 1024, 8), None)]


def model_steps(compute_dtype):
  """The GSPN train step (forward + backward + update) and the sampling step on a 2-device
  mesh, with scan_impl='triton': (name, jitted fn, args) pairs."""
  from gspn_jax import sharding, train
  from gspn_jax.diffusion import create_diffusion
  from gspn_jax.sampling import make_sampler
  from gspn_jax.train_state import learning_rate_fn, make_optimizer
  from tests.test_train import tiny_config

  # depth 2: a local block (the stencil) and a global one (paired scans), the fewest layers with both
  c = tiny_config(compute_dtype=compute_dtype, **{"model.kwargs.depth": 2})
  c.model.kwargs.scan_impl = "triton"
  c.mesh.data, c.mesh.fsdp = 2, 1
  mesh = sharding.make_mesh(c.mesh)
  lr_fn = learning_rate_fn(c, 10)
  tx = make_optimizer(c, lr_fn)
  with jax.set_mesh(mesh):
    graphdef, state, rest, state_sh, _ = train.init_sharded(c, mesh, tx)
    step = train.jit_train_step(c, mesh, graphdef, rest, create_diffusion(""), tx, lr_fn, state_sh)
  size, ch = c.data.image_size, c.data.channels
  batch = sharding.global_batch({"image": jnp.zeros((c.batch_size, size, size, ch)),
                                 "label": jnp.zeros((c.batch_size,), jnp.int32)}, mesh)
  sample = make_sampler(graphdef, rest, image_shape=(size, size, ch), num_classes=c.data.num_classes,
                        num_sampling_steps="2", report_steps=False)
  labels = jax.device_put(jnp.zeros((4,), jnp.int32), sharding.batch_sharding(mesh, 1))
  return mesh, [("train_step", step, (state, batch)), ("sampling_step", sample.fn,
                                                       (state["ema"], labels, jax.random.key(0)))]


def audit_lowered(lowered, **info):
  rows = []
  for call in audit.triton_calls(lowered):
    rows.append({**info, **audit.audit(call)})
  return rows


def run(cases, dtypes, capabilities, with_models):
  rows = []
  for name, shape, chunk in cases:
    for dtype in dtypes:
      for cc in capabilities:
        t = time.time()
        fn, args = layer_fn(shape, chunk, dtype)
        lowered = audit.lower_for_cuda(fn, *args, compute_capability=cc)
        new = audit_lowered(lowered, case=name, shape=shape, chunk=chunk, dtype=jnp.dtype(dtype).name,
                            gate_copies=len(audit.copied_operands(lowered)))
        rows += new
        print(f"{name} {jnp.dtype(dtype).name} sm_{cc}: {len(new)} kernels, {time.time() - t:.0f} s", file=sys.stderr)
  if with_models:
    for compute_dtype, plan in (("float32", {"train_step": 90}), ("bfloat16", {"train_step": 80, "sampling_step": 90})):
      mesh, steps = model_steps(compute_dtype)
      for name, fn, args in steps:
        if name not in plan:
          continue
        cc = plan[name]
        t = time.time()
        with jax.set_mesh(mesh):
          lowered = audit.lower_for_cuda(fn, *args, compute_capability=cc)
        rows += audit_lowered(lowered, case=name, dtype=compute_dtype, mesh_devices=mesh.size)
        print(f"{name} {compute_dtype} sm_{cc}: {time.time() - t:.0f} s", file=sys.stderr)
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--ci", action="store_true", help="one shape per layout class and the model steps; JSON on stdout")
  p.add_argument("--out", default=None, help="JSON path (default: bench/results/kernel_audit_sm<cc>[_sm<cc>].json)")
  p.add_argument("--capabilities", type=int, nargs="+", default=[90, 80], help="compute capabilities")
  p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
  args = p.parse_args(argv)
  import triton

  from bench.common import write_results

  if args.ci:
    rows = run([c for c in FULL if c[0] in CI_CASES] + CI_EXTRA, (jnp.bfloat16,), (90,), with_models=True)
    if args.out is None:
      json.dump(rows, sys.stdout)
      return None
    what = ("the CI subset: one shape per layout class in bf16 for sm_90, the model steps (train fp32 sm_90, "
            "train bf16 sm_80, sampling bf16 sm_90)")
  else:
    rows = run(FULL, [jnp.dtype(d) for d in args.dtypes], args.capabilities, with_models=True)
    what = f"{' and '.join(f'sm_{cc}' for cc in args.capabilities)} ({', '.join(args.dtypes)})"
  archs = "_".join(f"sm{cc}" for cc in args.capabilities)
  path = write_results("kernel_audit", {"compiled_for": f"{what} on a CPU host (compiler output, not run)",
                                        "triton": triton.__version__, "rows": rows},
                       args.out or f"bench/results/kernel_audit_{archs}.json")
  print(f"wrote {path}")
  return path


if __name__ == "__main__":
  main()
