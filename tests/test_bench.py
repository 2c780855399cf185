"""Each benchmark's command, at smoke size on the CPU: it runs and writes what it should."""

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.cli import run_ok


def _run(module, tmp_path, *extra):
  out = tmp_path / f"{module.split('.')[-1]}.json"
  run_ok(["-m", module, "--smoke", "--out", str(out), *extra], timeout=900)
  return json.loads(out.read_text()), out


def test_kernel_benchmark_smoke(tmp_path):
  result, _ = _run("bench.kernel", tmp_path)
  assert result["copy_bandwidth_bytes_per_s"] > 0
  assert {r["dtype"] for r in result["rows"]} == {"float32", "bfloat16"}
  assert all(r["xla_fwd_ms"] > 0 and r["xla_fwd_bwd_ms"] > 0 for r in result["rows"])


def test_train_benchmark_smoke(tmp_path):
  result, _ = _run("bench.train", tmp_path)
  assert [(r["model"], r["remat"]) for r in result["rows"]] == [
      ("GSPN-tiny", False), ("GSPN-tiny", True), ("DiT-tiny", False), ("DiT-tiny", True)]
  assert all(r["images_per_sec"] > 0 and r["memory_bytes"] > 0 for r in result["rows"])


def test_xla_benchmark_smoke_writes_costs_ratios_and_plot(tmp_path):
  result, out = _run("bench.xla", tmp_path, "--sizes", "8")
  assert [r["model"] for r in result["rows"]] == ["GSPN-tiny", "DiT-tiny"]
  assert all(r["gflop"] > 0 and r["gb_accessed"] > 0 and r["s_per_step_min"] > 0 for r in result["rows"])
  assert result["ratios_vs_dit"][0]["model"] == "GSPN-tiny" and result["ratios_vs_dit"][0]["gflop"] > 0
  assert "concurrency_optimized_scheduler=false" in result["xla_flags"]
  assert out.with_suffix(".png").stat().st_size > 0


def test_compare_benchmark_smoke_writes_json_and_plots(tmp_path):
  result, out = _run("bench.compare", tmp_path)
  models = {(r["model"], r["resolution"]) for r in result["models"]}
  assert models == {(m, res) for m in ("GSPN-tiny", "DiT-tiny", "DiffuSSM-tiny") for res in (32, 64)}
  assert all(r["train_images_per_sec"] > 0 and r["sample_images_per_sec"] > 0 for r in result["models"])
  assert all(r["gspn_local_ms"] > 0 and r["attention_xla_ms"] > 0 for r in result["layer"])
  from PIL import Image

  for suffix in ("models", "layer"):
    assert Image.open(out.with_name(f"{out.stem}_{suffix}.png")).size[0] > 400


def test_flops_benchmark_smoke(tmp_path):
  result, _ = _run("bench.flops", tmp_path)
  rows = {r["model"]: r for r in result["rows"]}
  ssm = rows["DiffuSSM"]
  # XLA counts the linear maps plus the S4D kernels, FFTs and elementwise work.
  assert ssm["linear_maps_gmacs"] < ssm["xla_gmacs"]
  assert rows["DiT"]["xla_gmacs"] > 0


def test_data_benchmark_smoke(tmp_path):
  result, _ = _run("bench.data", tmp_path)
  for key in ("encoder_images_per_sec_per_device", "extract_images_per_sec_per_device", "loader_images_per_sec",
              "demand_images_per_sec"):
    assert result[key] > 0, key
  assert result["loader_headroom"] == result["loader_images_per_sec"] / result["demand_images_per_sec"]


def test_quality_benchmark_smoke_judges_every_setting_and_resumes(tmp_path):
  result, out = _run("bench.quality", tmp_path)
  rows = result["rows"]
  assert [r["model"] for r in rows] == ["GSPN-tiny", "DiT-tiny"]
  assert all(r["steps"] == 4 and r["train_flops_per_image"] > 0 for r in rows)
  for r in rows:
    assert set(r["evals"]) == {"ema_cfg1.5_learned", "raw_cfg1.5_learned", "ema_cfg1_learned", "ema_cfg1.5_small",
                               "ema_cfg1.5_large"}
    assert all(0 <= e["accuracy"] <= 1 and e["fid"] > 0 for e in r["evals"].values())
    for terms in (r["heldout_loss_ema"], r["heldout_loss_raw"]):
      assert terms["mse"] > 0 and terms["vb"] > 0 and abs(terms["mse"] + terms["vb"] - terms["loss"]) < 1e-5
  assert out.with_suffix(".md").read_text().startswith("| model |")
  from PIL import Image

  for m in ("GSPN-tiny", "DiT-tiny"):
    assert Image.open(out.with_name(f"{out.stem}_{m}_lr0.001_seed0.png")).size[0] > 0
  _run("bench.quality", tmp_path)  # every run is already in the results: nothing is retrained
  assert json.loads(out.read_text())["rows"] == rows


def test_flow_benchmark_smoke_and_resume(tmp_path):
  result, out = _run("bench.flow", tmp_path, "--workdir", str(tmp_path / "runs"))
  run_ok(["-m", "bench.flow", "--smoke", "--out", str(out), "--workdir", str(tmp_path / "runs")], timeout=900)
  assert json.loads(out.read_text())["rows"] == result["rows"]  # all done: nothing trained or sampled again
  got = {(r["objective"], r["sampler"], r["nfe"], r["steps"]) for r in result["rows"]}
  assert got == {("ddpm", "ddpm", 4, 4), ("ddpm", "dpm++ static", 4, 4), ("ddpm", "sde-dpm++", 4, 4),
                 ("flow", "euler", 4, 4), ("flow", "heun", 4, 2), ("flow", "sde", 4, 4)}
  assert all(0 <= r["conditional_accuracy"] <= 1 and np.isfinite(r["fid_samples_vs_test"]) for r in result["rows"])
  assert out.with_suffix(".md").read_text().startswith("| model | objective | sampler | NFE 4 |")
  from PIL import Image

  assert Image.open(out.with_suffix(".png")).size[0] > 400


@pytest.mark.parametrize("module", ["bench.kernel"])
def test_gpu_benchmarks_refuse_without_a_gpu(module):
  from kernels import available

  if available():
    pytest.skip("a GPU is present: the full benchmark would run")
  res = subprocess.run([sys.executable, "-m", module], capture_output=True, text=True, timeout=300)
  assert res.returncode != 0 and "--smoke" in res.stderr
