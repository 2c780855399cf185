import subprocess
import sys

import numpy as np
import pytest

from configs import digits as digits_config
from gspn_jax import config_lib
from gspn_jax.data import make_iterator
from gspn_jax.train_state import learning_rate_fn
from tests.cli import run_ok


def tiny_config(**overrides):
  c = digits_config.get_config()
  c.model.kwargs.hidden_size = 16
  c.model.kwargs.depth = 2
  c.batch_size = 16
  c.num_steps = 4
  c.log_every = 1
  c.ckpt_every = 2
  c.sample_every = 0
  c.sample.num_sampling_steps = "5"
  c.sample.grid_per_class = 1
  c.eval.enabled = False
  for k, v in overrides.items():
    target = c
    *path, last = k.split(".")
    for p in path:
      target = target[p]
    target[last] = v
  return c


def _iterator(n=100, batch=8, **kw):
  return make_iterator(lambda pos, i: {"label": i, "pos": pos}, n, global_batch_size=batch, seed=3, **kw)


def test_iterator_resumes_mid_epoch_and_splits_batches_over_processes():
  it = _iterator()
  batches = [next(it)["label"] for _ in range(30)]  # crosses epochs (12 steps each)
  assert it.steps_per_epoch == 12
  again = _iterator(num_threads=2)
  for _ in range(17):
    next(again)
  state = again.get_state()
  resumed = _iterator()
  resumed.set_state(state)
  np.testing.assert_array_equal(next(resumed)["label"], batches[17])
  parts = [_iterator(process_index=i, process_count=2) for i in range(2)]
  np.testing.assert_array_equal(np.concatenate([next(p)["label"] for p in parts]), batches[0])
  epoch = np.concatenate(batches[:12])
  assert len(set(epoch.tolist())) == 96  # no example twice within an epoch
  assert not np.array_equal(epoch, np.concatenate(batches[12:24]))  # each epoch reshuffled
  with pytest.raises(ValueError, match="divisible"):
    _iterator(process_count=3)


def test_learning_rate_schedules():
  c = tiny_config(**{"optim.lr": 1e-3, "optim.warmup_epochs": 1.0, "optim.decay_epochs": 10.0,
                     "optim.min_lr": 1e-6})
  lr = learning_rate_fn(c, steps_per_epoch=100)
  np.testing.assert_allclose([lr(0), lr(50), lr(100), lr(1000)], [0.0, 5e-4, 1e-3, 1e-6], rtol=1e-5, atol=1e-9)
  c.optim.schedule = "constant"
  c.optim.warmup_epochs = 0.0
  assert float(learning_rate_fn(c, 100)(12345)) == pytest.approx(1e-3)


@pytest.mark.parametrize("override, message", [
    ({"optim.schedule": "linear"}, "schedule"),
    ({"compute_dtype": "float16"}, "compute_dtype"),
    ({"sample.cfg_channels": 3}, "cfg_channels"),
])
def test_config_errors_name_the_field(override, message):
  with pytest.raises(ValueError, match=message):
    config_lib.validate(tiny_config(**override))


def test_main_and_sample_scripts_end_to_end(tmp_path):
  run = ["main.py", "--config", "configs/digits.py", "--workdir", str(tmp_path),
         "--config.model.kwargs.hidden_size=16", "--config.model.kwargs.depth=2", "--config.batch_size=16",
         "--config.num_steps=2", "--config.eval.enabled=False", "--config.sample_every=2",
         "--config.sample.num_sampling_steps=5", "--config.sample.grid_per_class=1"]
  run_ok(run, timeout=600)
  assert (tmp_path / "samples" / "step_00000002.png").exists()
  out = tmp_path / "grid.png"
  res = run_ok(["sample.py", "--workdir", str(tmp_path), "--cfg-scale", "1.5", "--class-labels", "3,1,4",
                "--per-class", "2", "--num-sampling-steps", "4", "--out", str(out), "--npz"], timeout=600)
  assert "wrote" in res.stdout
  npz = np.load(out.with_suffix(".npz"))
  assert npz["arr_0"].shape == (6, 8, 8, 1) and npz["arr_0"].dtype == np.uint8
  np.testing.assert_array_equal(npz["labels"], [3, 1, 4, 3, 1, 4])
  from PIL import Image
  assert Image.open(out).size == (8 * (3 * 10 + 2), 8 * (2 * 10 + 2))
  bad = subprocess.run([sys.executable, "sample.py", "--workdir", str(tmp_path / "nothing")],
                       capture_output=True, text=True, timeout=600)
  assert bad.returncode != 0 and "config.json" in bad.stderr
