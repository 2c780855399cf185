"""The flow objective through the trainer, the sampler dispatch and the entry points."""

import jax
import numpy as np
import pytest
from flax import nnx

from configs import digits_flow
from fid import generate as fid_generate
from gspn_jax import config_lib, generate, train
from gspn_jax.checkpoint import save_config
from gspn_jax.train_state import build_model, split_model
from gspn_jax.transport import sampling as objective_sampling
from tests.test_train import tiny_config


TINY_DIT = {"model.name": "DiT", "model.kwargs": {"hidden_size": 16, "depth": 2, "num_heads": 2, "patch_size": 2}}


def tiny_flow_config(**overrides):
  """tiny_config with the flow objective of configs/digits_flow.py."""
  flow = digits_flow.get_config()
  return tiny_config(**{"objective": "flow", "transport": flow.transport, "sample.sampler": flow.sample.sampler,
                        "sample.num_sampling_steps": "3", **overrides})


@pytest.mark.parametrize("arch", [{}, TINY_DIT])
def test_flow_heads_have_no_learned_sigma(arch):
  for objective, channels in (("ddpm", 2), ("flow", 1)):
    c = tiny_config(objective=objective, **arch)
    assert nnx.eval_shape(lambda: build_model(c)).out_channels == channels


def test_flow_run_trains_samples_and_refuses_ddpm_samplers(tmp_path, capsys):
  train.train_and_evaluate(tiny_flow_config(num_steps=2, sample_every=2, **TINY_DIT), tmp_path)  # grid: 3 Heun steps
  assert (tmp_path / "samples" / "step_00000002.png").exists()
  for sampler in ("sde",):  # each sampler's numerics: tests/test_transport.py
    images, labels, settings = generate.sample_run(tmp_path, sampler=sampler, num_sampling_steps="2",
                                                   class_labels=[3, 1], per_class=1)
    assert images.shape == (2, 8, 8, 1) and images.dtype == np.uint8 and settings["sampler"] == sampler
  with pytest.raises(ValueError, match="objective 'flow'; use --sampler euler"):
    generate.sample_run(tmp_path, sampler="ddpm")
  with pytest.raises(SystemExit) as exit_info:  # one line, exit code 2, before any weights are loaded
    fid_generate.main(["--workdir", str(tmp_path), "--out", str(tmp_path / "fid"), "--sampler", "dpm++"])
  assert exit_info.value.code == 2 and "objective 'flow'" in capsys.readouterr().err


def test_a_ddpm_run_refuses_flow_samplers_before_loading(tmp_path):
  save_config(tmp_path, tiny_config())  # a run's stored config; no checkpoint is needed to refuse
  with pytest.raises(ValueError, match="objective 'ddpm'; use --sampler ddpm"):
    generate.sample_run(tmp_path, sampler="heun")
  with pytest.raises(ValueError, match="--dpm-spacing: options of DPM-Solver"):
    generate.sample_run(tmp_path, sampler="ddim", dpm_spacing="time_uniform")
  with pytest.raises(ValueError, match="config.sample.sampler"):
    config_lib.validate(tiny_flow_config(**{"sample.sampler": "ddim"}))
  with pytest.raises(ValueError, match="prediction"):
    config_lib.validate(tiny_flow_config(**{"transport.prediction": "x0"}))
  with pytest.raises(ValueError, match="guidance_interval"):
    config_lib.validate(tiny_flow_config(**{"sample.flow.guidance_interval": (0.8, 0.2)}))


@pytest.mark.parametrize("sampler,options", [("dpm++", {}), ("sde-dpm++", {"dpm_thresholding": "static"})])
def test_dpm_solver_samples_a_ddpm_model_with_guidance(sampler, options):
  graphdef, params, rest = split_model(build_model(tiny_config(**TINY_DIT)))
  sample = objective_sampling.make_sampler(graphdef, rest, sampler=sampler, image_shape=(8, 8, 1), num_classes=10,
                                           num_sampling_steps="4", cfg_scale=2.0, cfg_channels=1, **options)
  out = np.asarray(sample(params, jax.numpy.array([1, 2, 3]), jax.random.key(0)))
  assert out.shape == (3, 8, 8, 1) and np.isfinite(out).all()
  if options:  # the last step returns the thresholded data prediction
    assert np.abs(out).max() <= 1
  with pytest.raises(ValueError, match="--dpm-spacing 'karras'"):
    objective_sampling.make_sampler(graphdef, rest, sampler=sampler, image_shape=(8, 8, 1), num_classes=10,
                                    dpm_spacing="karras")
