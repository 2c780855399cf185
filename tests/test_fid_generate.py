import json
import subprocess
import sys

import jax
import numpy as np
import pytest

from fid.generate import chunk_labels, generate
from tests.cli import run_ok
from tests.test_train import tiny_config


def _fake_sampler(calls, fail_after=None):
  """Deterministic 'samples' from (labels, key): any mix-up of chunks shows in the output."""
  def sample(params, labels, key):
    if fail_after is not None and len(calls) == fail_after:
      raise KeyboardInterrupt  # the job is killed mid-run
    calls.append(int(jax.random.key_data(key)[-1]))
    noise = jax.random.uniform(key, (labels.shape[0], 4, 4, 3), minval=-1, maxval=1)
    return noise * 0.5 + (labels[:, None, None, None] / 10.0 - 0.5)
  return sample


def test_generation_resumes_without_duplicating_or_losing_samples(tmp_path):
  kwargs = dict(num_samples=10, global_batch=4, num_classes=10, seed=3)
  straight = generate(_fake_sampler([]), {}, lambda s: s, out=tmp_path / "a", **kwargs)
  with pytest.raises(KeyboardInterrupt):
    generate(_fake_sampler([], fail_after=2), {}, lambda s: s, out=tmp_path / "b", **kwargs)
  assert sorted(p.name for p in (tmp_path / "b" / "chunks").iterdir()) == ["chunk_000000.npz", "chunk_000001.npz"]
  calls = []
  resumed = generate(_fake_sampler(calls), {}, lambda s: s, out=tmp_path / "b", **kwargs)
  assert len(calls) == 1  # only the missing chunk
  a, b = np.load(straight), np.load(resumed)
  np.testing.assert_array_equal(a["arr_0"], b["arr_0"])
  np.testing.assert_array_equal(a["labels"], b["labels"])
  assert a["arr_0"].shape == (10, 4, 4, 3) and a["arr_0"].dtype == np.uint8
  want = np.concatenate([chunk_labels(3, i, 4, 10) for i in range(3)])[:10]
  np.testing.assert_array_equal(a["labels"], want)


def test_labels_are_uniform_over_classes():
  labels = np.concatenate([chunk_labels(0, i, 1000, 10) for i in range(10)])
  counts = np.bincount(labels, minlength=10)
  assert counts.min() > 900 and counts.max() < 1100


def test_generate_cli_on_a_trained_run(tmp_path):
  from gspn_jax import train

  train.train_and_evaluate(tiny_config(num_steps=1, **{"sample.num_sampling_steps": "2"}), tmp_path / "run")
  cmd = ["-m", "fid.generate", "--workdir", str(tmp_path / "run"), "--out", str(tmp_path / "fid"),
         "--num-samples", "6", "--global-batch", "4", "--num-sampling-steps", "3"]
  run_ok(cmd, timeout=600)
  out = np.load(tmp_path / "fid" / "samples.npz")
  assert out["arr_0"].shape == (6, 8, 8, 3) and out["arr_0"].dtype == np.uint8
  assert json.loads((tmp_path / "fid" / "settings.json").read_text())["num_samples"] == 6
  again = subprocess.run([sys.executable, *cmd[:-1], "5"], capture_output=True, text=True, timeout=600)
  assert again.returncode != 0 and "other settings" in again.stderr
