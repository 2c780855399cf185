"""Channel-shared gates (GSPN(gate_channels=G)) as the GPU would compile them, on any machine.

  python -m bench.shared_gates     # JSON in bench/results/kernel_audit_shared_gates_sm90.json

One GSPN layer's forward and backward (gspn_core, impl="triton", four directions, bf16,
R = D/16) at a GSPN-XL/2 shape and a high-resolution few-channel map, local (the stencil)
and global (tile pairs at XL/2, the four groups at once at 1K^2), with one gate per channel
(gate_channels=None, the release) and with GSPN-2's one
gate triple per pixel and group (gate_channels=1), lowered for CUDA sm_90 through jax-triton
and every kernel's PTX assembled (kernels/audit.py): registers, spills, SASS instructions
per element-step, replicated warps; gate_copies counts kernel operands made by a slice or
copy, image_broadcasts the broadcasts of image-sized arrays in the forward (a shared gate
spread over its channels outside the kernels would be one). Compiler output, not measured.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import sys  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bench.kernel import FULL  # noqa: E402

CASES = ("xl2_256px_local", "xl2_256px_global", "layer_1k_local", "layer_1k_global")
COMPUTE_CAPABILITY = 90


def layer(shape, chunk, gates, grad):
  """A jitted GSPN layer (forward, or value and gradient w.r.t. all 7 inputs) and its avals."""
  from gspn_jax.ops import gspn_core

  b, h, w, d = shape
  r = max(1, d // 16)
  avals = (jax.ShapeDtypeStruct(shape, jnp.bfloat16), jax.ShapeDtypeStruct((b, h, w, r), jnp.bfloat16),
           jax.ShapeDtypeStruct((r, 12 * (gates or d)), jnp.float32),
           *[jax.ShapeDtypeStruct((r, 4 * d), jnp.float32)] * 3, jax.ShapeDtypeStruct((4,), jnp.float32))
  fn = lambda *a: gspn_core(*a, chunk=chunk, merge="aligned", impl="triton", gate_channels=gates)
  if grad:
    fn = jax.value_and_grad(lambda *a, f=fn: jnp.sum(f(*a).astype(jnp.float32)), argnums=range(7))
  return jax.jit(fn), avals


def image_broadcasts(lowered, shape):
  """Lines of the lowered module that broadcast to an image-sized (B, H, W, .) array."""
  prefix = "-> tensor<" + "x".join(map(str, shape[:3])) + "x"
  return [line.strip() for line in lowered.as_text().splitlines()
          if "stablehlo.broadcast_in_dim" in line and prefix in line]


def run():
  from kernels import audit

  rows = []
  for name, shape, chunk in (c for c in FULL if c[0] in CASES):
    for gates in (None, 1):
      t = time.time()
      fn, avals = layer(shape, chunk, gates, grad=False)
      forward = audit.lower_for_cuda(fn, *avals, compute_capability=COMPUTE_CAPABILITY)
      fn, avals = layer(shape, chunk, gates, grad=True)
      lowered = audit.lower_for_cuda(fn, *avals, compute_capability=COMPUTE_CAPABILITY)
      info = dict(case=name, shape=shape, chunk=chunk, dtype="bfloat16", gate_channels=gates,
                  projection_channels=12 * (gates or shape[-1]) + 12 * shape[-1],
                  gate_copies=len(audit.copied_operands(lowered)),
                  image_broadcasts=len(image_broadcasts(forward, shape)))
      rows += [{**info, **audit.audit(call)} for call in audit.triton_calls(lowered)]
      print(f"{name} gate_channels={gates}: {time.time() - t:.0f} s", file=sys.stderr)
  return rows


def main():
  import triton

  from bench.common import write_results

  rows = run()
  path = write_results("kernel_audit_shared_gates",
                       {"compiled_for": f"sm_{COMPUTE_CAPABILITY} (bfloat16) on a CPU host (compiler output, not run)",
                        "triton": triton.__version__, "rows": rows},
                       f"bench/results/kernel_audit_shared_gates_sm{COMPUTE_CAPABILITY}.json")
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
