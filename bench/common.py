"""Timing, device description and result files shared by the benchmarks."""

import datetime
import json
import pathlib
import platform
import statistics
import time

import jax
import jax.numpy as jnp

RESULTS = pathlib.Path(__file__).parent / "results"


def device_name():
  d = jax.devices()[0]
  return f"{d.platform}:{getattr(d, 'device_kind', d.platform)}".replace(" ", "_")


def time_fn(fn, *args, warmup=2, iters=10):
  """Median wall time (s) of fn(*args) with its outputs ready; fn is already jitted."""
  for _ in range(warmup):
    jax.block_until_ready(fn(*args))
  times = []
  for _ in range(iters):
    t = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - t)
  return statistics.median(times)


def copy_bandwidth(num_bytes=1 << 30, iters=10):
  """Bytes/s of a device copy (read + write) of num_bytes: the roofline to compare with."""
  x = jnp.ones((num_bytes // 4,), jnp.float32)
  copy = jax.jit(lambda a: a * 1.0001)
  return 2 * num_bytes / time_fn(copy, x, iters=iters)


def write_results(name, payload, path=None, indent=2):
  path = pathlib.Path(path) if path else RESULTS / f"{name}_{device_name().replace(':', '_')}.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  payload = {"device": device_name(), "jax": jax.__version__, "python": platform.python_version(),
             "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **payload}
  tmp = path.with_name(path.name + ".tmp")  # atomic: an interrupted write leaves the previous file
  tmp.write_text(json.dumps(payload, indent=indent))
  tmp.replace(path)
  return path
