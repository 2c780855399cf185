"""Checks on 8 simulated CPU devices, run by tests/test_scale_out.py in a fresh process
(the device count is fixed when JAX starts): `python -m tests.multidevice`."""

import json
import os
import re
import sys

os.environ["XLA_FLAGS"] = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from gspn_jax import sharding, train  # noqa: E402
from gspn_jax.diffusion import create_diffusion  # noqa: E402
from gspn_jax.train_state import learning_rate_fn, make_optimizer  # noqa: E402
from tests.test_train import tiny_config  # noqa: E402


def sharded_step(config, devices):
  mesh = sharding.make_mesh(config.mesh, devices)
  lr_fn = learning_rate_fn(config, 10)
  tx = make_optimizer(config, lr_fn)
  with jax.set_mesh(mesh):
    graphdef, state, rest, state_sh, abstract = train.init_sharded(config, mesh, tx)
    step = train.jit_train_step(config, mesh, graphdef, rest, create_diffusion(""), tx, lr_fn, state_sh)
  return mesh, state, step, abstract


def run(config, devices, batch, steps=2):
  mesh, state, step, abstract = sharded_step(config, devices)
  gb = sharding.global_batch(batch, mesh)
  with jax.set_mesh(mesh):
    hlo = step.lower(state, gb).compile().as_text()
    for _ in range(steps):
      state, metrics = step(state, gb)
  param_shapes = {tuple(x.shape) for x in jax.tree.leaves(abstract["params"])}
  batch_dims = {(config.batch_size,), (config.batch_size // config.grad_accum_steps,)}
  gathered = [tuple(int(d) for d in dims.split(",") if d) for dims in re.findall(r"= f32\[([\d,]*)\]\S* all-gather\(", hlo)]
  return {
      "params": jax.tree.map(np.asarray, state["params"]),
      "loss": float(metrics["loss"]),
      "all_gathers": len(gathered),
      # An activation leads with the (micro-)batch axis; parameters may be gathered in a
      # derived layout (GSPN's core concatenates its projection weights and transposes slices).
      "activation_gathers": sorted({g for g in gathered if g not in param_shapes and g[:1] in batch_dims}),
      "param_sharded": any(len(a.sharding.device_set) > 1 and not a.sharding.is_fully_replicated
                           for a in jax.tree.leaves(state["params"])),
      "all_reduces": len(re.findall(r" all-reduce\(", hlo)),
  }


def per_shard_op():
  """The kernel path's shard_map wrapper (here around the reference: the kernel itself
  needs a GPU) on batch-sharded inputs: no collective in the op or its gradient."""
  from jax.sharding import NamedSharding, PartitionSpec as P

  from gspn_jax.ops import gspn_scan_reference, normalize_gates, per_shard

  mesh = sharding.make_mesh(tiny_config().mesh)
  keys = jax.random.split(jax.random.key(0), 5)
  args = [jax.device_put(jax.random.normal(k, (16, 6, 10, 24)), NamedSharding(mesh, P(("data", "fsdp"))))
          for k in keys]

  def op(*a):
    gl, gc, gr = normalize_gates(*a[1:4], 1)
    return gspn_scan_reference(a[0], gl, gc, gr, a[4], "rl", 3)

  out = {}
  with jax.set_mesh(mesh):
    fwd = jax.jit(per_shard(op))
    grad = jax.jit(jax.grad(lambda *a: jnp.sum(per_shard(op)(*a) ** 2), argnums=tuple(range(5))))
    for name, fn in (("fwd", fwd), ("grad", grad)):
      hlo = fn.lower(*args).compile().as_text()
      out[name + "_collectives"] = len(re.findall(r" (all-gather|all-to-all|collective-permute|all-reduce)\(", hlo))
    out["max_abs_err"] = float(jnp.abs(fwd(*args) - op(*args)).max())
    out["out_sharding_split"] = not fwd(*args).sharding.is_fully_replicated
  return out


def main():
  rng = np.random.default_rng(0)
  batch = {"image": rng.normal(size=(24, 8, 8, 1)).astype(np.float32), "label": rng.integers(0, 10, 24).astype(np.int32)}
  out = {}
  for name, data, fsdp, accum, devices in [("single", 1, 1, 1, jax.devices()[:1]), ("dp", 8, 1, 1, jax.devices()),
                                           ("fsdp", 2, 4, 1, jax.devices()), ("accum_single", 1, 1, 3, jax.devices()[:1]),
                                           ("accum_fsdp", 2, 4, 3, jax.devices()), ("dit_single", 1, 1, 1, jax.devices()[:1]),
                                           ("dit_fsdp", 2, 4, 1, jax.devices()),
                                           ("diffussm_single", 1, 1, 1, jax.devices()[:1]),
                                           ("diffussm_fsdp", 2, 4, 1, jax.devices())]:
    c = tiny_config(batch_size=24, grad_accum_steps=accum)
    if name.startswith("dit"):
      c.model.name, c.model.kwargs = "DiT", {"patch_size": 2, "hidden_size": 16, "depth": 2, "num_heads": 2}
    if name.startswith("diffussm"):
      c.model.name, c.model.kwargs = "DiffuSSM", {"hidden_size": 16, "depth": 1, "state_size": 4}
    c.mesh.data, c.mesh.fsdp = data, fsdp
    out[name] = run(c, devices, batch)
  report = {}
  for name, ref in (("dp", "single"), ("fsdp", "single"), ("accum_fsdp", "accum_single"), ("dit_fsdp", "dit_single"),
                    ("diffussm_fsdp", "diffussm_single")):
    errs = [float(np.abs(a - b).max() / (np.abs(b).max() + 1e-12))
            for a, b in zip(jax.tree.leaves(out[name]["params"]), jax.tree.leaves(out[ref]["params"]))]
    report[name] = {"max_rel_err": max(errs), **{k: v for k, v in out[name].items() if k != "params"}}
  report["accum_vs_plain_loss"] = [out["accum_single"]["loss"], out["single"]["loss"]]
  report["per_shard"] = per_shard_op()
  json.dump(report, sys.stdout, default=str)


if __name__ == "__main__":
  main()
