import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from gspn_jax import sharding
from gspn_jax.train_state import accumulate_grads
from tests.cli import run_ok


@pytest.fixture(scope="module")
def multidevice_report():
  return json.loads(run_ok(["-m", "tests.multidevice"], timeout=900).stdout)


@pytest.mark.parametrize("case", ["dp", "fsdp", "accum_fsdp", "dit_fsdp", "diffussm_fsdp"])
def test_sharded_train_step_equals_the_single_device_step(multidevice_report, case):
  assert multidevice_report[case]["max_rel_err"] < 1e-5


def test_no_activation_is_ever_gathered(multidevice_report):
  dp, fsdp = multidevice_report["dp"], multidevice_report["fsdp"]
  assert dp["all_gathers"] == 0 and not dp["param_sharded"]  # data parallel: one gradient all-reduce
  assert fsdp["param_sharded"] and fsdp["all_gathers"] > 0
  for case in ("fsdp", "accum_fsdp", "dit_fsdp", "diffussm_fsdp"):  # FSDP gathers parameters, never activations
    assert multidevice_report[case]["activation_gathers"] == []


def test_the_kernel_wrapper_runs_per_shard_without_collectives(multidevice_report):
  r = multidevice_report["per_shard"]
  assert r["fwd_collectives"] == 0 and r["grad_collectives"] == 0
  assert r["out_sharding_split"] and r["max_abs_err"] < 1e-6


def test_accumulated_gradients_equal_the_full_batch_gradient():
  w = jnp.array([0.5, -1.0, 2.0])
  batch = {"x": jax.random.normal(jax.random.key(0), (12, 3)), "y": jnp.arange(12.0)}

  def loss_and_grads(params, b, key):
    loss = lambda p: jnp.mean((b["x"] @ p - b["y"]) ** 2)
    return {"loss": loss(params)}, jax.grad(loss)(params)

  full = loss_and_grads(w, batch, None)
  for k in (1, 2, 3, 4):
    terms, grads = accumulate_grads(loss_and_grads, w, batch, jax.random.key(0), k)
    np.testing.assert_allclose(grads, full[1], rtol=1e-5)
    np.testing.assert_allclose(terms["loss"], full[0]["loss"], rtol=1e-5)


def test_mesh_from_config():
  cfg = lambda data, fsdp: ml_collections.ConfigDict({"data": data, "fsdp": fsdp})
  assert dict(sharding.make_mesh(cfg(-1, 1)).shape) == {"data": jax.device_count(), "fsdp": 1}
  with pytest.raises(ValueError, match="at most one"):
    sharding.make_mesh(cfg(-1, -1))
  with pytest.raises(ValueError, match="does not use"):
    sharding.make_mesh(cfg(2, 3))


TINY = ["--config.model.kwargs.hidden_size=16", "--config.model.kwargs.depth=2", "--config.batch_size=8",
        "--config.eval.enabled=False", "--config.sample_every=0", "--config.sample.num_sampling_steps=2",
        "--config.sample.grid_per_class=1", "--config.log_every=1", "--config.ckpt_every=1"]


def _main(workdir, *flags, env=None, **kw):
  cmd = [sys.executable, "main.py", "--config", "configs/digits.py", "--workdir", str(workdir), *TINY, *flags]
  return subprocess.Popen(cmd, env={**os.environ, "JAX_PLATFORMS": "cpu", **(env or {})}, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, **kw)


def _params(workdir, step):
  import orbax.checkpoint as ocp

  restored = ocp.PyTreeCheckpointer().restore(str(workdir / "checkpoints" / str(step) / "state"))
  return restored["params"]


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_processes_train_then_resume_on_another_device_count(tmp_path):
  port = _free_port()
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
  procs = [_main(tmp_path / "run", "--config.num_steps=2", f"--coordinator_address=localhost:{port}",
                 "--num_processes=2", f"--process_id={i}", env=env) for i in range(2)]
  for p in procs:
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-3000:]
  rows = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [r["step"] for r in rows] == [1, 2]  # written once, by process 0
  resumed = _main(tmp_path / "run", "--config.num_steps=4")  # 1 process, 1 device
  out, err = resumed.communicate(timeout=600)
  assert resumed.returncode == 0, err[-3000:]
  assert "resumed from step 2" in out + err
  straight = _main(tmp_path / "straight", "--config.num_steps=4")
  out, err = straight.communicate(timeout=600)
  assert straight.returncode == 0, err[-3000:]
  for a, b in zip(jax.tree.leaves(_params(tmp_path / "run", 4)), jax.tree.leaves(_params(tmp_path / "straight", 4))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_sigterm_saves_a_checkpoint_and_exits_zero(tmp_path):
  proc = _main(tmp_path, "--config.num_steps=100000", "--config.ckpt_every=100000")
  metrics = tmp_path / "metrics.jsonl"
  deadline = time.time() + 600
  while time.time() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 2):
    time.sleep(0.5)
  proc.send_signal(signal.SIGTERM)
  out, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-3000:]
  assert "stopped by a signal" in out + err
  last = json.loads(metrics.read_text().splitlines()[-1])["step"]
  saved = sorted(int(p.name) for p in (tmp_path / "checkpoints").iterdir() if p.name.isdigit())
  assert saved and saved[-1] >= last
  rerun = _main(tmp_path, f"--config.num_steps={saved[-1] + 1}")
  out, err = rerun.communicate(timeout=600)
  assert rerun.returncode == 0 and f"resumed from step {saved[-1]}" in out + err
