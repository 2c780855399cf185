"""The Triton path as a GPU would compile it, checked on CPU: the train and sampling
steps and the benchmark shapes lowered for CUDA through jax-triton's own lowering rule,
the embedded PTX assembled with Triton's ptxas (bench/kernel_audit.py, kernels/audit.py)."""

import importlib.util
import json

import jax
import pytest

from tests.cli import run_ok

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("jax_triton") is None or importlib.util.find_spec("jax_cuda13_plugin") is None,
    reason="requires jax-triton 0.3.1 and the jax-cuda13-plugin wheel matching jaxlib (make test installs both)")


@pytest.fixture(scope="module")
def report():
  return json.loads(run_ok(["-m", "bench.kernel_audit", "--ci"], timeout=900).stdout)


def test_train_and_sampling_steps_lower_for_cuda_per_shard(report):
  seen = {(r["case"], r["dtype"], r["compute_capability"], r["kernel"]) for r in report if "mesh_devices" in r}
  for dtype, cc in (("float32", 90), ("bfloat16", 80)):  # the H100 and the A100
    # a global block's paired scans and a local block's stencil, forward and backward
    kernels = [f"gspn_pair_{k}_kernel" for k in ("fwd", "fwd_acc", "bwd", "bwd_acc")] + [
        f"gspn_stencil_{k}_kernel" for k in ("fwd", "bwd")]
    assert {("train_step", dtype, cc, k) for k in kernels} <= seen
  assert {("sampling_step", "bfloat16", 90, k) for k in ("gspn_pair_fwd_acc_kernel", "gspn_stencil_fwd_kernel")} <= seen
  for r in report:
    if "mesh_devices" in r:  # the kernels see one device's half of the batch (tiny_config: 16 images, 4 sampled)
      batch = int(r["operand_shapes"][0].split("<")[1].split("x")[0])
      assert batch == (8 if r["case"] == "train_step" else 4), r["operand_shapes"]
      assert r["spill_store_bytes"] == 0 and r["replicated_warps"] == [], r


def test_benchmark_shapes_compile_without_spills_or_replicated_warps(report):
  bench = [r for r in report if "mesh_devices" not in r]
  kernels = {f"gspn_pair_{k}{layout}_kernel" for k in ("fwd", "fwd_acc", "bwd", "bwd_acc") for layout in ("", "_rows")}
  kernels |= {"gspn_stencil_fwd_kernel", "gspn_stencil_bwd_kernel", "gspn_quad_fwd_rows_kernel",
              "gspn_quad_bwd_rows_kernel"}
  assert {r["kernel"] for r in bench} == kernels  # a GSPN layer at one shape per layout class
  for r in bench:
    assert r["gate_copies"] == 0, r
    assert r["spill_store_bytes"] == 0 and r["stack_bytes"] == 0, r
    assert r["replicated_warps"] == [], r
    assert r["sass_per_element_step"] is not None, r


def _lowered_layer(merge, value_and_grad=True, hw=(6, 5), gates=None, chunk=3):
  """A bf16 GSPN layer (gspn_core, impl='triton') lowered for an H100, at a tiny shape whose
  H divides by the chunk (tb and bt in one launch) and W does not (lr and rl one each);
  chunk 2: the stencil. gates: channel-shared gates (gate_channels)."""
  import jax.numpy as jnp

  from gspn_jax.ops import gspn_core
  from kernels import audit

  (h, w), b, d, r = hw, 2, 16, 2
  avals = (jax.ShapeDtypeStruct((b, h, w, d), jnp.bfloat16), jax.ShapeDtypeStruct((b, h, w, r), jnp.bfloat16),
           jax.ShapeDtypeStruct((r, 12 * (gates or d)), jnp.float32),
           *[jax.ShapeDtypeStruct((r, 4 * d), jnp.float32)] * 3,
           jax.ShapeDtypeStruct((4,), jnp.float32))
  layer = lambda *a: gspn_core(*a, chunk=chunk, merge=merge, impl="triton", gate_channels=gates)
  loss = lambda *a: jnp.sum(layer(*a).astype(jnp.float32))
  fn = jax.value_and_grad(loss, argnums=range(7)) if value_and_grad else layer
  return audit.lower_for_cuda(jax.jit(fn), *avals, compute_capability=90)


def test_layer_kernels_read_the_projections_in_place():
  from kernels import audit

  lowered = _lowered_layer("aligned")
  kernels = [c["kernel"] for c in audit.triton_calls(lowered)]
  # lr, rl alone (backward: the recomputed h and the fused adjoint per group), tb + bt paired
  assert kernels == ["gspn_core_fwd_kernel", "gspn_core_fwd_acc_kernel", "gspn_pair_fwd_acc_kernel",
                     "gspn_fwd_kernel", "gspn_core_bwd_kernel", "gspn_fwd_kernel", "gspn_core_bwd_acc_kernel",
                     "gspn_pair_bwd_acc_kernel"], kernels
  assert audit.copied_operands(lowered) == []
  # the released merge scans transposed copies of x from sliced gates: the check sees them
  released = audit.copied_operands(_lowered_layer("released", hw=(5, 5)))
  assert {op for _, _, op in released} == {"stablehlo.concatenate", "stablehlo.slice"}


def test_stencil_is_one_launch_each_way_on_the_projection_in_place():
  from kernels import audit

  lowered = _lowered_layer("aligned", hw=(4, 5), chunk=2)
  calls = audit.triton_calls(lowered)
  assert [c["kernel"] for c in calls] == ["gspn_stencil_fwd_kernel", "gspn_stencil_bwd_kernel"]
  assert audit.copied_operands(lowered) == []
  assert calls[0]["operand_shapes"][1].startswith("tensor<2x4x5x384x"), calls[0]["operand_shapes"]
  # the backward: dx, the 24 projection gradients as one group-major array, dm's per-program sums
  assert [t.split("<")[1].rsplit("x", 1)[0] for t in calls[1]["result_shapes"][:2]] == ["2x4x5x16", "2x4x5x384"]


def test_four_groups_run_at_once_on_a_square_map_with_few_programs():
  from kernels import audit

  lowered = _lowered_layer("aligned", hw=(512, 512), chunk=None)  # 2 maps x 16 one-channel programs per group
  calls = audit.triton_calls(lowered)
  assert [c["kernel"] for c in calls] == ["gspn_quad_fwd_rows_kernel", "gspn_quad_bwd_rows_kernel"]
  assert audit.copied_operands(lowered) == []
  fwd, bwd = calls
  assert fwd["grid"] == [2, 16, 4] and bwd["grid"] == [2, 16, 4]  # axis 2: the group
  assert fwd["operand_shapes"][1].startswith("tensor<2x512x512x384x"), fwd["operand_shapes"]  # in place
  image = lambda shapes: [t.split("<")[1].rsplit("x", 1)[0] for t in shapes if t.count("x") == 4]
  assert image(fwd["result_shapes"]) == ["2x512x512x16"] * 4  # each group's m (u h + d x)
  # four dx, 4 x 6 projection gradients, the recomputed h of all four groups, four dm sums
  assert image(bwd["result_shapes"]) == ["2x512x512x16"] * 28 + ["8x512x512x16"] + ["2x16x1x1"] * 4


def test_layer_forward_never_stores_h():
  from kernels import audit

  calls = audit.triton_calls(_lowered_layer("aligned", value_and_grad=False))
  # each launch adds its group(s) to the previous launches' sum: no per-direction h output
  assert [c["kernel"] for c in calls] == ["gspn_core_fwd_kernel", "gspn_core_fwd_acc_kernel",
                                          "gspn_pair_fwd_acc_kernel"]
  assert all(len(c["result_shapes"]) == 1 for c in calls)
  assert all(c["operand_shapes"][-1] == c["result_shapes"][0] for c in calls[1:])
  # the pair reads the projection once as one 24D-wide operand (both groups' six slots in place)
  assert calls[2]["operand_shapes"][1].startswith("tensor<2x6x5x384x"), calls[2]["operand_shapes"]


def test_shared_gates_are_read_in_place_without_a_broadcast_copy():
  from kernels import audit

  lowered = _lowered_layer("aligned", gates=1)  # forward and backward
  assert len(audit.triton_calls(lowered)) == 8 and audit.copied_operands(lowered) == []
  stencil = _lowered_layer("aligned", gates=1, hw=(4, 5), chunk=2)
  assert len(audit.triton_calls(stencil)) == 2 and audit.copied_operands(stencil) == []
  forward = _lowered_layer("aligned", value_and_grad=False, gates=1)
  calls = audit.triton_calls(forward)
  # the projection: one gate triple + lam, u, d (16 channels each) per group, 4 x (3 + 48) channels
  assert calls[2]["operand_shapes"][1].startswith("tensor<2x6x5x204x"), calls[2]["operand_shapes"]
  # nothing image-sized is broadcast in the forward: no per-channel gate exists outside the kernels
  image_broadcasts = [line for line in forward.as_text().splitlines()
                      if "stablehlo.broadcast_in_dim" in line and "-> tensor<2x6x5x" in line]
  assert image_broadcasts == [], image_broadcasts


def test_the_replicated_warp_check_sees_a_line_copied_over_warps():
  from kernels import audit

  ttgir = ("#blocked = #ttg.blocked<{sizePerThread = [32, 1], threadsPerWarp = [32, 1], warpsPerCTA = [1, 8], "
           "order = [0, 1]}>\n#blocked1 = #ttg.blocked<{sizePerThread = [1, 4], threadsPerWarp = [8, 4], "
           "warpsPerCTA = [4, 1], order = [1, 0]}>\n"
           "%0 = tt.load %a : tensor<1024x2x!tt.ptr<f32>, #blocked> -> tensor<1024x2xf32, #blocked>\n"
           "%1 = arith.addf %b, %b : tensor<256x8xf32, #blocked1>\n")
  assert audit.replicated_warps(ttgir) == [((1024, 2), "#blocked")]  # 2 of its 8 warps hold distinct columns


def test_expected_instructions_halves_each_uniform_branch_and_refuses_loops():
  from kernels import audit

  sass = ("/*0000*/ MOV R1, c[0x0][0x28] ;\n/*0010*/ @P0 BRA 0x40 ;\n/*0020*/ FADD R2, R2, R3 ;\n"
          "/*0030*/ FADD R2, R2, R3 ;\n/*0040*/ STG.E [R4], R2 ;\n/*0050*/ EXIT ;\n/*0060*/ BRA 0x60 ;\n")
  # the two skipped adds run in half the programs; nothing after EXIT runs
  assert audit.expected_instructions(sass) == 5.0
  with pytest.raises(ValueError, match="loop"):
    audit.expected_instructions(sass.replace("@P0 BRA 0x40", "@P0 BRA 0x00"))


@pytest.mark.skipif("jax.default_backend() != 'cpu'", reason="checks a machine without a GPU")
def test_jax_triton_on_a_cpu_machine_leaves_the_triton_path_off():
  import kernels

  assert not kernels.available()
  with pytest.raises(RuntimeError, match=r"pip install -e '\.\[gpu\]'"):
    kernels.gspn_scan_triton(*[jax.numpy.zeros((1, 2, 2, 1))] * 5, direction="lr")


def test_performance_model_charges_shared_gates_their_width():
  """bench.kernel --predict: the minimum bytes of a layer (26 N forward, 76 N with the
  backward; 14 + 12g and 40 + 36g with gates g = G/D wide) and fewer bytes counted from the
  lowered kernels when the gates are shared (one layer at a tiny shape, forward + backward)."""
  import jax.numpy as jnp

  from bench import kernel_predict

  shape, n = (1, 8, 8, 16), 8 * 8 * 16 * 4
  full = kernel_predict.predict_case("tiny", shape, 2, jnp.float32)
  shared = kernel_predict.predict_case("tiny", shape, 2, jnp.float32, gate_channels=1)
  assert (full["min_bytes_fwd"], full["min_bytes_fwd_bwd"]) == (26 * n, 76 * n)
  assert (shared["min_bytes_fwd"], shared["min_bytes_fwd_bwd"]) == ((14 + 12 / 16) * n, (40 + 36 / 16) * n)
  for what in ("fwd", "fwd_bwd"):
    assert shared[f"bytes_{what}"] < full[f"bytes_{what}"]
    assert shared[f"gate_copies_{what}"] == full[f"gate_copies_{what}"] == 0
    assert full[f"bytes_{what}"] >= full[f"min_bytes_{what}"] and shared[f"bytes_{what}"] >= shared[f"min_bytes_{what}"]
