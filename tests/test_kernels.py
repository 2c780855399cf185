"""The Triton kernels: the interpreter on CPU (every CI run) and, on a GPU, the jax-triton
path. What jax-triton compiles for the GPU is checked in tests/test_kernel_lowering.py."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gspn_jax.ops import gspn_scan
from tests.cli import run_ok

triton = pytest.importorskip("triton", reason="the kernels are Triton")


@pytest.fixture(scope="module")
def interpreter_report():
  return json.loads(run_ok(["-m", "tests.kernel_interpret"], timeout=1500).stdout)


def _scans(report):
  return [r for r in report if r.get("op") != "gspn_core"]


def test_interpreter_runs_every_direction_chunk_and_normalisation(interpreter_report):
  scans = _scans(interpreter_report)
  seen = {(r["direction"], r["chunk"], r["normalize"]) for r in scans if r["dtype"] == "float32"}
  assert len(seen) == 4 * 4 * 2
  assert {r["layout"] for r in scans} == {"tile", "rows"}
  # the rows layout with wide channel blocks, and narrowed to one channel per program
  assert {r["block_c"] for r in scans if r["layout"] == "rows"} >= {1, 16}


def test_fused_gspn_layer_matches_the_reference(interpreter_report):
  # the in-place reads, the u h + d x epilogue and merge, the recomputing backward; x's dtype
  core = [r for r in interpreter_report if r.get("op") == "gspn_core"]
  assert {r["chunk"] for r in core} == {1, 2, 3, None}
  assert {r["layout"] for r in core} == {"stencil", "tile", "rows+tile", "quad"}
  # a few square high-resolution-like maps: the four groups at once (segments, global, bf16)
  quad = [r for r in core if r["layout"] == "quad"]
  assert {r["chunk"] for r in quad} == {3, None} and {r["dtype"] for r in quad} == {"float32", "bfloat16"}
  # segments of at most two steps: the stencil (chunk 1 and 2, a global scan over 2 x 2, bf16)
  stencil = [r for r in core if r["layout"] == "stencil"]
  assert {r["chunk"] for r in stencil} == {1, 2, None} and {r["dtype"] for r in stencil} == {"float32", "bfloat16"}
  # longer ones: both axes' groups paired in one launch (tile and rows layouts, mirrored segments), and alone
  scans = [r for r in core if r["layout"] not in ("stencil", "quad")]
  assert {tuple(r["paired"]) for r in scans} == {(True, False), (True, True), (False, True)}
  assert any(r["layout"] == "rows+tile" and r["paired"] == [True, True] for r in scans)
  for r in core:
    if r["dtype"] == "float32":
      assert r["fwd"] < 1e-5 and r["bwd"] < 1e-5, r
    else:  # bf16 inputs and groups summed in bf16 against the fp32 reference
      assert r["dtype"] == "bfloat16" and r["fwd"] < 3e-2 and r["bwd"] < 3e-2, r


def test_fused_gspn_layer_with_shared_gates_matches_the_reference(interpreter_report):
  # G = 1: one gate column per pixel and group (both layouts, paired and single launches);
  # G = D/2: channels read their gate at c // 2, in the stencil and in a paired scan; the
  # stencil's gate column (G = 1, and G = 2 with two 32-channel blocks per gate)
  shared = [r for r in interpreter_report if r.get("op") == "gspn_core" and r["gates"] is not None]
  assert [(r["gates"], r["layout"], r["paired"]) for r in shared] == [
      (1, "rows+tile", [True, False]), (2, "stencil", None), (2, "tile", [False, True]), (1, "stencil", None),
      (2, "stencil", None)], shared
  for r in shared:
    assert r["fwd"] < 1e-5 and r["bwd"] < 1e-5, r


def test_fp32_kernels_match_the_reference(interpreter_report):
  for r in interpreter_report:
    if r["dtype"] == "float32":
      assert r["fwd"] < 1e-5 and r["bwd"] < 1e-5, r


def test_bf16_kernels_keep_an_fp32_state(interpreter_report):
  for r in _scans(interpreter_report):
    if r["dtype"] == "bfloat16":  # one bf16 rounding of the output; gradients use the bf16 output
      assert r["fwd"] < 2 ** -7 and r["bwd"] < 3e-2, r


def _on_gpu():
  from kernels import available

  return available()


gpu = pytest.mark.skipif("not _on_gpu()", reason="requires a CUDA GPU with jax-triton")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("direction", ["lr", "rl", "tb", "bt"])
@pytest.mark.parametrize("chunk", [1, 2, 3, None])
@pytest.mark.parametrize("normalize", [False, True])
def test_triton_matches_reference_on_gpu(dtype, direction, chunk, normalize):
  keys = jax.random.split(jax.random.key(0), 6)
  shape = (3, 13, 18, 70)  # odd sizes: W % chunk != 0, H and W not powers of two
  args = tuple(jax.random.normal(k, shape).astype(dtype) for k in keys[:5])
  if not normalize:
    args = (args[0], *(jax.nn.softmax(jnp.stack(args[1:4]).astype(jnp.float32), axis=0).astype(dtype)), args[4])
  dh = jax.random.normal(keys[5], shape).astype(dtype)

  def run(impl):
    f = jax.jit(functools.partial(gspn_scan, direction=direction, chunk=chunk, impl=impl, normalize=normalize))
    h, vjp = jax.vjp(f, *args)
    return [np.asarray(a.astype(jnp.float32)) for a in (h, *vjp(dh))]

  tol = 1e-5 if dtype == jnp.float32 else 3e-2
  for got, want in zip(run("triton"), run("xla")):
    assert np.abs(got - want).max() <= tol * np.abs(want).max()


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
@pytest.mark.parametrize("shape, chunk", [
    ((2, 7, 6, 40), 2),  # the stencil
    ((3, 13, 18, 70), 3),  # tile layout: lr + rl paired (18 % 3 == 0), tb and bt alone (13 % 3 != 0)
    ((1, 300, 40, 3), None),  # rows layout, narrowed, paired (not square)
    ((1, 200, 200, 2), None),  # the four groups at once (square, few programs)
])
def test_gspn_layer_matches_reference_on_gpu(dtype, shape, chunk):
  from gspn_jax.ops import gspn_core

  b, h, w, d = shape
  r = max(1, d // 4)
  ks = jax.random.split(jax.random.key(0), 8)
  args = (jax.random.normal(ks[0], shape, dtype), jax.random.normal(ks[1], (b, h, w, r), dtype),
          jax.random.normal(ks[2], (r, 12 * d)), *(0.5 * jax.random.normal(k, (r, 4 * d)) for k in ks[3:6]),
          jax.random.normal(ks[6], (4,)))
  ct = jax.random.normal(ks[7], shape, dtype)

  def run(impl, args):
    f = jax.jit(lambda *a: gspn_core(*a, chunk=chunk, merge="aligned", impl=impl))
    y, vjp = jax.vjp(f, *args)
    return [np.asarray(a.astype(jnp.float32)) for a in (y, *vjp(ct.astype(y.dtype)))]

  tol = 1e-5 if dtype == jnp.float32 else 3e-2  # bf16 against the reference in fp32
  for got, want in zip(run("triton", args), run("reference", [a.astype(jnp.float32) for a in args])):
    assert np.abs(got - want).max() <= tol * np.abs(want).max()


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("merge", ["aligned", "released"])
def test_gspn_model_gradients_on_gpu(merge):
  from flax import nnx

  from gspn_jax.models import GSPN
  from tests.test_models import _perturb

  def grads(impl):
    model = _perturb(GSPN(input_size=16, patch_size=2, in_channels=4, hidden_size=64, depth=4, num_classes=10,
                          scan_impl=impl, merge=merge, rngs=nnx.Rngs(0)))
    x = jax.random.normal(jax.random.key(1), (4, 16, 16, 4))
    t, y = jnp.array([1, 100, 500, 999]), jnp.array([0, 1, 2, 3])
    loss = lambda m: jnp.mean((m(x, t, y) - x.repeat(2, -1)) ** 2)
    return jax.tree.leaves(nnx.state(nnx.jit(nnx.grad(loss))(model)))

  for a, b in zip(grads("triton"), grads("xla")):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)


@pytest.mark.gpu
@gpu
def test_train_step_with_the_kernel_on_gpu(tmp_path):
  from gspn_jax import train
  from tests.test_train import tiny_config

  params = {}
  for impl in ("triton", "xla"):
    c = tiny_config(num_steps=3)
    c.model.kwargs.scan_impl = impl
    params[impl] = jax.tree.leaves(train.train_and_evaluate(c, tmp_path / impl)[0]["params"])
  for a, b in zip(params["triton"], params["xla"]):
    np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
