"""Each benchmark's command, at smoke size on the CPU: it runs and writes what it should."""

import json
import subprocess
import sys

import numpy as np
import pytest

from bench import equal_compute
from tests.cli import run_ok


def _run(module, tmp_path, *extra):
  out = tmp_path / f"{module.split('.')[-1]}.json"
  run_ok(["-m", module, "--smoke", "--out", str(out), *extra], timeout=900)
  return json.loads(out.read_text()), out


def test_kernel_benchmark_smoke(tmp_path):
  result, _ = _run("bench.kernel", tmp_path)
  assert result["copy_bandwidth_bytes_per_s"] > 0 and result["complete"] is True  # rewritten after each case
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
  # The matrix products of one forward at batch 1, written out (64 px: an 8x8 latent, C 4, D 32, 2 layers).
  d, c, depth, t_mlp = 32, 4, 2, 256 * 32 + 32 * 32
  tokens = 16  # DiT: 2x2 patches
  dit_block = 6 * d * d + 12 * tokens * d * d + 2 * tokens * tokens * d
  dit = tokens * c * 4 * d + t_mlp + depth * dit_block + 2 * d * d + tokens * d * 4 * 2 * c
  exact = lambda x: pytest.approx(x / 1e9, rel=1e-12)
  assert rows["DiT"]["matmul_gmacs"] == exact(dit)
  length, short, n = 64, 32, 8  # DiffuSSM: L = 64 tokens, J = 32, S4D N = 8 in each direction
  kernels = depth * 2 * d * n * length
  ssm_block = 3 * d * d + 7.5 * length * d * d
  ssm = short * 2 * c * d + t_mlp + depth * ssm_block + kernels + 2 * d * d + short * d * 2 * 2 * c
  assert rows["DiffuSSM"]["matmul_gmacs"] == exact(ssm)
  assert rows["DiffuSSM"]["s4d_kernel_gmacs"] == exact(kernels)
  assert rows["DiffuSSM"]["linear_maps_gmacs"] == exact(depth * 7.5 * length * d * d)
  # XLA also counts the FFTs and the elementwise work.
  assert rows["DiffuSSM"]["matmul_gmacs"] < rows["DiffuSSM"]["xla_gmacs"]


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


def test_implied_layer_maps_recovers_the_model_itself():
  """Given totals equal to the model's own, the solve returns its maps: 11 D^2 at length J, 2 D^2 at L."""
  from bench.flops import implied_layer_maps

  row = {"params": 630_949_264, "paper_params": 630_949_264, "matmul_gmacs": 297.9, "paper_gmacs": 297.9}
  implied = implied_layer_maps(row, width=1152, depth=29, length=1024)
  assert implied["weights_d2"] == pytest.approx(13) and implied["macs_ld2"] == pytest.approx(7.5)
  assert implied["at_short_length_d2"] == pytest.approx(11) and implied["at_full_length_d2"] == pytest.approx(2)


def test_equal_compute_smoke_sweeps_lr_then_seeds_the_best_and_resumes(tmp_path):
  result, out = _run("bench.equal_compute", tmp_path)
  rows = result["rows"]
  assert [(r["lr"], r["seed"]) for r in rows][:2] == [(0.003, 0), (0.01, 0)]
  best = result["summary"][0]["best_lr"]
  assert rows[2]["seed"] == 1 and rows[2]["lr"] == best  # the second seed at the sweep's best lr
  for r in rows:
    assert r["train_flops_per_image"] > 0 and [p["step"] for p in r["curve"]] == [2, 4]
    assert all(0 <= p["accuracy"] <= 1 and p["fid"] > 0 for p in r["curve"])
    assert r["curve"][1]["train_flops"] == 2 * r["curve"][0]["train_flops"] == 4 * 32 * r["train_flops_per_image"]
  assert out.with_suffix(".md").read_text().startswith("| size | model |")
  assert out.with_suffix(".png").stat().st_size > 0
  other = tmp_path / "other.json"  # the runs of another process of the same study join these
  other.write_text(json.dumps({**result, "rows": [{**rows[0], "seed": 7}]}))
  _run("bench.equal_compute", tmp_path, "--merge", str(other))  # every run is in the results: nothing is trained
  assert json.loads(out.read_text())["rows"] == rows + [{**rows[0], "seed": 7}]


def test_equal_compute_names_lrs_and_seeds_outside_the_study(tmp_path, capsys):
  for flag, value in (("--lrs", "0.5"), ("--seeds", "7")):
    with pytest.raises(SystemExit) as exit:  # before any training
      equal_compute.main(["--smoke", flag, value, "--out", str(tmp_path / "x.json")])
    assert exit.value.code == 2 and f"{flag} [{value}]" in capsys.readouterr().err.splitlines()[-1]
  assert not list(tmp_path.iterdir())  # nothing written


def test_kernel_prediction_refuses_gate_channels_it_cannot_model(tmp_path, capsys):
  from bench import kernel

  out = tmp_path / "k.json"
  for argv in (["--predict", "--gate-channels", "7"], ["--gate-channels", "1"], ["--predict", "--gate-channels", "0"]):
    with pytest.raises(SystemExit) as exit:  # before any lowering
      kernel.main([*argv, "--out", str(out)])
    assert exit.value.code == 2 and "--gate-channels" in capsys.readouterr().err.splitlines()[-1]
  assert not list(tmp_path.iterdir())  # nothing written


def test_stability_refuses_bad_arguments_in_one_line_before_training(tmp_path, capsys):
  from bench import stability

  out = tmp_path / "s.json"
  for argv, says in ((["--sizes", "XL/2"], "--sizes ['XL/2']"), (["--models", "Mamba"], "--models ['Mamba']"),
                     (["--steps", "0"], "must be positive"), (["--merge", str(tmp_path / "no.json")], "no such")):
    with pytest.raises(SystemExit) as exit:
      stability.main([*argv, "--out", str(out)])
    assert exit.value.code == 2 and says in capsys.readouterr().err.splitlines()[-1]
  assert not list(tmp_path.iterdir())  # nothing written


def test_stability_smoke_records_gspn_internals_and_resumes(tmp_path):
  result, out = _run("bench.stability", tmp_path)
  rows = result["rows"]
  assert [r["model"] for r in rows] == ["GSPN-adaln", "DiT"]
  for r in rows:
    assert len(r["loss"]) == len(r["grad_norm"]) == 4 and np.isfinite(r["loss"]).all()
    assert [p["step"] for p in r["points"]] == [0, 2, 4]
    assert all(p["probe_error"] < 1e-5 for p in r["points"])  # the probe's forward is the model's
    ratios = r["points"][1]["groups"]
    assert ratios["x_embedder.proj"]["update_ratio"] > 0 and ratios["final_layer.linear"]["update_ratio"] > 0
  gspn = rows[0]["points"][-1]
  assert {"spn.w_conv_up", "spn.l_conv_up", "spn.u_conv_up", "spn.d_conv"} <= set(rows[0]["points"][0]["groups"])
  assert len(gspn["blocks"]) == 1 and all(b["gate_logit"] > 0 and b["h"] > 0 and 1 / 3 <= b["gate_max"] <= 1
                                          for b in gspn["blocks"])
  assert set(rows[0]["digest"]["first_growth"]) >= {"gate_logit", "lambda", "h", "residual", "branch"}
  assert out.with_suffix(".png").stat().st_size > 0
  _run("bench.stability", tmp_path)  # resumed: every run is there, nothing is trained again
  assert json.loads(out.read_text())["rows"] == rows


def test_label_use_probe_measures_the_labels_effect_and_refuses_bad_arguments(tmp_path, capsys):
  import jax
  import jax.numpy as jnp
  from flax import nnx

  from bench import label_use
  from gspn_jax.models.dit import DiT

  model = DiT(input_size=8, patch_size=2, in_channels=1, hidden_size=16, depth=1, num_heads=2, num_classes=10,
              pos_embed=False, rngs=nnx.Rngs(0))
  assert model.pos_embed.shape == (4, 4, 16) and not np.any(model.pos_embed[...])  # the ablation: zeroed
  leaves, tree = jax.tree.flatten(nnx.state(model, nnx.Param))
  rng = np.random.default_rng(0)  # off the zero-initialised adaLN and final layer
  nnx.update(model, jax.tree.unflatten(tree, [l + 0.1 * rng.standard_normal(l.shape) for l in leaves]))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  per_t, blocks = label_use.probe(graphdef, params, rest, 10, (500,), 4)
  assert per_t[0]["label_effect"] > 0 and per_t[0]["label_swap"] > 0 and len(blocks) == 1
  assert blocks[0]["mod_label_change"] > 0 and blocks[0]["update_label_change"] > 0
  table = model.y_embedder.embedding_table.embedding
  table[...] = jnp.broadcast_to(table[...][:1], table.shape)  # every label, the null one included, alike
  per_t, blocks = label_use.probe(graphdef, nnx.state(model, nnx.Param), rest, 10, (500,), 4)
  assert per_t[0]["label_effect"] == 0 and per_t[0]["mse_y"] == per_t[0]["mse_null"]
  assert blocks[0]["mod_label_change"] == 0
  for argv, says in ((["--runs", "XL/2:DiT"], "--runs ['XL/2:DiT']"), (["--steps", "0"], "must be positive")):
    with pytest.raises(SystemExit) as exit:
      label_use.main([*argv, "--out", str(tmp_path / "l.json")])
    assert exit.value.code == 2 and says in capsys.readouterr().err.splitlines()[-1]
  assert not list(tmp_path.iterdir())  # nothing written
