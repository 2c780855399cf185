"""Nothing lost, every bad input answered in one line: crashes during checkpoint saves,
damaged checkpoints, generation bound to one checkpoint, flags and configs checked before
any work. CLI-level where a user meets the case; one driver process per command."""

import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from gspn_jax import generate, sampling, train, validation
from gspn_jax.errors import RunError, UsageError
from tests.cli import error_line, run_each
from tests.test_train import tiny_config


def _leaves_equal(a, b):
  return all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _train(config, workdir):
  """train_and_evaluate with its stderr (warnings, progress) captured."""
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    state, _ = train.train_and_evaluate(config, workdir)
  return state, err.getvalue()


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
  """A 4-step run, checkpoints at steps 2 and 4."""
  workdir = tmp_path_factory.mktemp("straight")
  state, _ = _train(tiny_config(), workdir)
  return workdir, state


def test_crash_during_save_resumes_bit_exact(tmp_path, straight):
  # kill -9 while step 4 is being written: only step 2 is complete.
  killed = subprocess.run([sys.executable, "-m", "tests.crash_during_save", str(tmp_path)], capture_output=True,
                          text=True, timeout=600)
  assert killed.returncode == -9, killed.stderr[-3000:]
  ckpts = tmp_path / "checkpoints"
  assert sorted(p.name for p in ckpts.iterdir()) == ["2", "4.orbax-checkpoint-tmp"]
  resumed, err = _train(tiny_config(), tmp_path)
  assert "4.orbax-checkpoint-tmp is a save that never completed" in err
  assert int(resumed["step"]) == 4
  for key in ("params", "ema", "opt_state"):
    assert _leaves_equal(straight[1][key], resumed[key]), key
  assert sorted(p.name for p in ckpts.iterdir()) == ["2", "4"]
  # metrics.jsonl: steps 3 and 4 were logged before the kill and again after it, kept once.
  rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  assert {"loss", "mse", "vb", "grad_norm", "lr", "steps_per_sec", "images_per_sec"} <= set(rows[0])
  assert (tmp_path / "tensorboard").is_dir()
  # config.json is this launch's; each launch's config is kept, readable by the group.
  assert sorted(p.name for p in tmp_path.glob("config*.json")) == ["config.0.json", "config.2.json", "config.json"]
  assert all(p.stat().st_mode & 0o040 for p in tmp_path.glob("config*.json"))
  assert not (tmp_path / "samples").exists()  # sample_every=0: never a grid


def test_nan_stop_names_a_complete_checkpoint(tmp_path):
  config = tiny_config(**{"optim.lr": 1e35, "optim.grad_clip": 0.0, "optim.warmup_epochs": 0.0, "num_steps": 6,
                          "ckpt_every": 1})
  with pytest.raises(RunError, match="non-finite loss") as e:
    _train(config, tmp_path)
  named = str(e.value).rsplit("resumes from ", 1)[1]
  assert (tmp_path / "checkpoints" / os.path.basename(named) / "_CHECKPOINT_METADATA").exists()
  assert not list((tmp_path / "checkpoints").glob("*tmp*"))  # the save in flight was finished, not cut


def _damage(workdir):
  """Step 4's largest array file cut short; an empty step 6 directory."""
  biggest = max((p for p in (workdir / "checkpoints" / "4" / "state").rglob("*") if p.is_file()),
                key=lambda p: p.stat().st_size)
  biggest.write_bytes(biggest.read_bytes()[:100])
  (workdir / "checkpoints" / "6").mkdir()


def test_damaged_checkpoint_skipped_with_warning(tmp_path, straight):
  workdir = tmp_path / "run"
  shutil.copytree(straight[0], workdir)
  _damage(workdir)
  err = io.StringIO()
  with contextlib.redirect_stderr(err):
    *_, step = generate.load_ema(workdir)
  assert step == 2
  warnings = [l for l in err.getvalue().splitlines() if l.startswith("warning:")]
  assert len(warnings) == 2 and "checkpoints/6 is incomplete or damaged" in warnings[0]
  assert "checkpoints/4 is incomplete or damaged" in warnings[1]
  with pytest.raises(RunError, match="checkpoints/4 is damaged.*pick an older step"):
    generate.load_ema(workdir, step=4)
  # Training moves the damaged steps aside (nothing deleted) and goes on from step 2.
  resumed, err = _train(tiny_config(), workdir)
  assert _leaves_equal(straight[1]["params"], resumed["params"])
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["2", "4", "4.damaged", "6.damaged"]


def test_resume_with_other_width_names_the_parameter(straight):
  with pytest.raises(UsageError, match=r"checkpoints/4: params/.* has shape .* the config differs from the run's"):
    _train(tiny_config(**{"model.kwargs.hidden_size": 32}), straight[0])
  assert sorted(p.name for p in (straight[0] / "checkpoints").iterdir()) == ["2", "4"]


def test_generate_bound_to_one_checkpoint(tmp_path, straight):
  from fid import generate as fid_generate

  workdir, out = straight[0], tmp_path / "fid"
  flags = ["--workdir", str(workdir), "--out", str(out), "--num-samples", "4", "--global-batch", "2"]
  pin = ["--ckpt", str(workdir / "checkpoints" / "2")]
  check = lambda argv: fid_generate.check_args(fid_generate.parse_args(argv))
  assert check(flags + pin)["step"] == 2 and json.loads((out / "settings.json").read_text())["step"] == 2
  # The newest checkpoint is step 4: resuming these chunks from it is refused, --ckpt pins step 2.
  with pytest.raises(UsageError, match=r"chunks from checkpoint step 2 .* step 4: pass --ckpt .*checkpoints/2"):
    check(flags)
  assert check(flags + pin)["step"] == 2
  with pytest.raises(UsageError, match="cfg_scale differ"):
    check(flags + pin + ["--cfg-scale", "2"])


def test_model_name_conflicting_kwargs_rejected():
  for name in ("GSPN-S/2", "DiT-S/2"):
    with pytest.raises(UsageError, match=f"'{name}' fixes .*hidden_size=.* but config.model.kwargs sets"):
      validation.check_run(tiny_config(**{"model.name": name}), 1)
  with pytest.raises(UsageError, match="'GSPN-Z/2' is not a model"):
    validation.check_run(tiny_config(**{"model.name": "GSPN-Z/2"}), 1)


def test_kwargs_foreign_to_the_family_ignored():
  from flax import nnx

  from gspn_jax.train_state import build_model

  config = tiny_config(**{"model.name": "DiT", "model.kwargs.num_heads": 2})  # a GSPN config's options
  assert validation.check_run(config, 1) == [
      "config.model.kwargs conditioning, drop_path_rate do not apply to DiT; ignored"]
  assert type(nnx.eval_shape(lambda: build_model(config))).__name__ == "DiT"


def test_progress_eta_excludes_compile_time():
  from gspn_jax.progress import Progress

  bar = Progress(10, unit="step")
  time.sleep(0.5)  # the first unit: compilation
  bar.update()
  for _ in range(3):
    bar.update()
  d = bar.bar.format_dict
  bar.close()
  assert d["n"] == 4 and d["initial"] == 1 and d["elapsed"] < 0.4  # the clock started after the first unit


def test_sampling_batches_sized_to_request():
  shapes = []

  def sample_fn(params, labels, key):
    shapes.append(labels.shape[0])
    return np.zeros((labels.shape[0], 2, 2, 1))

  assert sampling.sample_in_batches(sample_fn, {}, np.arange(5), jax.random.key(0), 500).shape[0] == 5
  assert shapes == [5]  # not padded to 500


def test_damaged_latent_metadata_named(tmp_path):
  from gspn_jax.data import latents

  (tmp_path / "metadata.json").write_text("{not json")
  with pytest.raises(UsageError, match=f"{tmp_path / 'metadata.json'} is damaged"):
    latents.read_metadata(tmp_path)


@pytest.fixture(scope="module")
def sample_runs(tmp_path_factory):
  """sample.py's bad flags, all in one process; a directory and an unwritable --out."""
  tmp = tmp_path_factory.mktemp("sample")
  locked = tmp / "locked"
  locked.mkdir(mode=0o500)
  cases = {
      "cfg-1": ["--cfg-scale", "-1"], "cfg0": ["--cfg-scale", "0"], "cfgnan": ["--cfg-scale", "nan"],
      "cfginf": ["--cfg-scale", "inf"], "steps0": ["--num-sampling-steps", "0"],
      "steps1": ["--num-sampling-steps", "1"], "stepsx": ["--num-sampling-steps", "ddim7x"],
      "outdir": ["--out", str(tmp)], "outlocked": ["--out", str(locked / "grid.png")],
      "ditflags": ["--model", "DiT-XL/2", "--image-size", "256"],
      "ditmissing": ["--model", "DiT-XL/2", "--ckpt", str(tmp / "DiT-XL-2-256x256.pt")],
      "dpmflags": ["--sampler", "ddim", "--dpm-spacing", "time_uniform", "--out", str(tmp / "grid.png")],
  }
  workdir = tmp / "no_run"
  results = run_each("sample.py", [["--workdir", str(workdir)] + a for a in cases.values()], timeout=600)
  yield tmp, dict(zip(cases, results))
  locked.chmod(0o700)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder: the unwritable case needs a user")
def test_out_path_unwritable_rejected(sample_runs):
  code, err = sample_runs[1]["outlocked"]
  assert code == 2 and "is not a writable folder" in error_line(err)


def test_cfg_scale_rejected(sample_runs):
  for case in ("cfg-1", "cfg0", "cfgnan", "cfginf"):
    code, err = sample_runs[1][case]
    assert code == 2 and "the guidance scale must be a finite number >= 1" in error_line(err), case


def test_sampling_steps_rejected(sample_runs):
  for case, words in (("steps0", "gives 0 sampling step(s)"), ("steps1", "gives 1 sampling step(s)"),
                      ("stepsx", "use a step count such as 250")):
    code, err = sample_runs[1][case]
    assert code == 2 and words in error_line(err), case


def test_out_path_directory_rejected(sample_runs):
  tmp, runs = sample_runs
  code, err = runs["outdir"]
  assert code == 2 and f"--out {tmp} is a directory" in error_line(err)
  assert not list(tmp.glob("*.tmp"))


def test_dit_flags_point_to_the_checkpoint(sample_runs):
  code, err = sample_runs[1]["ditflags"]
  assert code == 2 and "--model, --image-size are DiT's flags" in error_line(err)
  code, err = sample_runs[1]["ditmissing"]
  assert code == 2 and "DiT-XL-2-256x256.pt: no such file" in error_line(err)


def test_dpm_flags_refused_for_other_samplers(sample_runs):
  tmp, runs = sample_runs
  code, err = runs["dpmflags"]
  assert code == 2 and "--dpm-spacing: options of DPM-Solver++, not of sampler 'ddim'" in error_line(err)
  assert not (tmp / "grid.png").exists()  # refused before anything was sampled or written


def test_config_errors_one_line(tmp_path):
  base = ["--config", "configs/digits.py", "--workdir", str(tmp_path / "run")]
  cases = [
      (["--config", "configs/nope.py"], "--config configs/nope.py: no such file"),
      (base + ["--config.optim.lrr=1"], '--config.optim.lrr names no field of the config; did you mean "lr"'),
      (base + ["--config.num_steps=0"], "config.num_steps=0"),
      (base + ["--config.batch_size=33"], "config.batch_size=33 must be divisible by 2 devices"),
      (base + ["--config.model.name=GSPN-S/2"], "'GSPN-S/2' fixes"),
      (base + ["--config.model.name=Transformer"], "'Transformer' is not a model"),
      (base + ["--config.data.name=mnist"], "'mnist' is not a dataset"),
      (base + ["--config.data.path=/data/digits"], "the digits data is embedded"),
      (base + ["--config.sample.num_sampling_steps=1"], "config.sample.num_sampling_steps=1 gives 1"),
  ]
  results = run_each("main.py", [a for a, _ in cases], timeout=600,
                     env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
  for (argv, words), (code, err) in zip(cases, results):
    assert code == 2 and words in error_line(err), (argv, err[-2000:])
  assert not (tmp_path / "run").exists()  # nothing started


def test_evaluate_checks_files_first(tmp_path):
  def batch(name, images, **extra):
    np.savez(tmp_path / name, arr_0=images, **extra)
    return str(tmp_path / name)

  u8 = lambda n, s: np.zeros((n, s, s, 3), np.uint8)
  ref = batch("ref.npz", u8(8, 32))
  (tmp_path / "garbage.npz").write_bytes(os.urandom(256))
  cases = [
      ([ref, str(tmp_path / "missing.npz")], "missing.npz: no such file"),
      ([ref, batch("f32.npz", np.zeros((8, 32, 32, 3), np.float32))], "f32.npz: arr_0 is float32"),
      ([ref, str(tmp_path / "garbage.npz")], "garbage.npz is not a readable .npz batch (BadZipFile"),
      ([ref, batch("three.npz", u8(3, 32))], "three.npz holds 3 images; the metrics need at least 4"),
      ([ref, batch("big.npz", u8(8, 64))], "big.npz holds 64x64 images, the reference"),
  ]
  # No Inception weights anywhere: every case must fail on its file, before the weights are looked for.
  results = run_each("fid.evaluate", [a + ["--inception", str(tmp_path / "no_weights.pth")] for a, _ in cases],
                     timeout=600)
  for (argv, words), (code, err) in zip(cases, results):
    assert code == 2 and words in error_line(err), (argv, err[-2000:])
  (code, err), = run_each("fid.weights", [[]], timeout=600)
  assert code == 2 and "usage: python -m fid.weights" in error_line(err)


def test_sample_accepts_dit_flags(tmp_path, capsys):
  """DiT's own command, `sample.py --model DiT-S/8 --image-size 256 --ckpt <official .pt>`,
  on a generated checkpoint with the official key names (DiT-S/8: the smallest size)."""
  torch = pytest.importorskip("torch", reason="writes a PyTorch checkpoint")
  pytest.importorskip("diffusers", reason="writes the VAE folder")
  import sample
  from PIL import Image
  from tests.test_convert import dit_official_shapes
  from tests.test_vae import _reference, _save_folder

  gen = torch.Generator().manual_seed(0)
  shapes = dit_official_shapes(12, 384, p=8, grid=4)  # 256 px: 32x32 latents, patch 8
  torch.save({k: 0.02 * torch.randn(s, generator=gen) for k, s in shapes.items()}, tmp_path / "DiT-S-8-256x256.pt")
  vae = _save_folder(_reference(), tmp_path / "vae")  # a tiny VAE: 32x32 latents -> 64 px
  out = sample.main(["--model", "DiT-S/8", "--image-size", "256", "--ckpt", str(tmp_path / "DiT-S-8-256x256.pt"),
                     "--vae", str(vae), "--num-sampling-steps", "2", "--class-labels", "1,2",
                     "--out", str(tmp_path / "sample.png")])
  assert Image.open(out).size == (2 * (64 + 2) + 2, 64 + 2 + 2)
  assert f"wrote {out}" in capsys.readouterr().out
