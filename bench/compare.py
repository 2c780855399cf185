"""GSPN-XL/2 vs DiT-XL/2 (attention) vs DiffuSSM-XL (SSM, no patches) across resolutions, in one run.

  python -m bench.compare            # on a GPU: JSON and plots in bench/results/
  python -m bench.compare --quick    # on a GPU, minutes: GSPN-XL/2 and DiT-XL/2 at 256 px only
  python -m bench.compare --smoke    # anywhere: small models at tiny sizes

Per model and resolution (256, 512, 1024 px: 16^2, 32^2, 64^2 tokens): training images/s
at the largest power-of-two batch that fits, the memory XLA plans for that step, model
FLOPs utilisation (XLA's FLOP count of the step over the device's peak), and sampling
images/s (250-step DDPM with classifier-free guidance). "tokens" is the length the
long-range layers see: (latent/2)^2 for the /2 models, latent^2 for DiffuSSM. Then one layer alone: the GSPN
core (four directions, local and global) against attention on s^2 tokens up to 4K^2,
until attention runs out of memory or time. DiT uses the fastest attention JAX offers on
the device (cuDNN's fused attention on NVIDIA GPUs).
"""

import argparse
import sys

import jax
import jax.numpy as jnp
from flax import nnx

from bench.common import device_name, time_fn, write_results
from bench.throughput import fits, largest_batch, sampling_throughput, train_throughput

# Dense bf16 peak FLOP/s by device kind, for model FLOPs utilisation.
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12}


def peak_flops():
  kind = getattr(jax.devices()[0], "device_kind", "")
  return next((v for k, v in PEAK_FLOPS.items() if k in kind), None)


def attention_impl():
  return "cudnn" if jax.default_backend() == "gpu" else None


def model_rows(models, resolutions, train_batch, sample_batch, steps, dtype, search=True):
  """search: the largest power-of-two batch up to train_batch, else train_batch itself."""
  rows = []
  for res in resolutions:
    latent = res // 8
    for label, name, kw in models:
      if name.startswith("DiT"):
        kw = {**kw, "attn_impl": attention_impl()}
      tokens = latent ** 2 if name.startswith("DiffuSSM") else (latent // 2) ** 2
      row = {"model": label, "resolution": res, "tokens": tokens}
      found = (largest_batch(train_throughput, start=8, limit=train_batch, name=name, latent=latent, dtype=dtype, **kw)
               if search and train_batch > 8 else
               (train_batch, fits(train_throughput, name, latent, train_batch, dtype=dtype, iters=1, **kw)))
      if found is None or found[1] is None:
        row["train_error"] = "out of memory at the smallest batch"
      else:
        batch, t = found
        row.update(train_batch=batch, train_images_per_sec=t["images_per_sec"], train_memory_bytes=t["memory_bytes"],
                   params=t["params"])
        if peak_flops() and t.get("flops"):
          row["mfu"] = t["flops"] / (t["step_ms"] / 1e3) / peak_flops()
      s = fits(sampling_throughput, name, latent, sample_batch, dtype=dtype, steps=steps, **kw)
      if s is None:
        row["sample_error"] = "out of memory"
      else:
        row.update(sample_batch=sample_batch, sample_images_per_sec=s["images_per_sec"], sampling_steps=steps)
      rows.append(row)
      print(row, file=sys.stderr)
  return rows


def layer_rows(sizes, channels, dtype, budget_s):
  """The GSPN core on one s x s map against single-head attention over its s^2 tokens."""
  from gspn_jax.models.gspn import GSPNCore

  rows, attention_alive = [], {impl: True for impl in ("xla", attention_impl()) if impl}
  dt = jnp.dtype(dtype)
  for s in sizes:
    x = jax.random.normal(jax.random.key(0), (1, s, s, channels), dt)
    row = {"side": s, "tokens": s * s, "channels": channels}
    for mode, chunk in (("gspn_local", 2), ("gspn_global", None)):
      core = GSPNCore(channels, chunk=chunk, merge="aligned", impl="auto", dtype=dt, rngs=nnx.Rngs(0))
      fn = jax.jit(lambda x, core=core: core(x))
      t = fits(time_fn, fn, x, iters=3)
      row[f"{mode}_ms"] = None if t is None else 1e3 * t
    q = x.reshape(1, s * s, 1, channels)
    for impl in attention_alive:
      if not attention_alive[impl]:
        continue
      fn = jax.jit(lambda q, impl=impl: jax.nn.dot_product_attention(q, q, q, implementation=impl))
      t = fits(time_fn, fn, q, iters=3)
      row[f"attention_{impl}_ms"] = None if t is None else 1e3 * t
      if t is None or 4 * t > budget_s:  # out of memory, or the next size (4x tokens, 16x work) is too slow
        attention_alive[impl] = False
    rows.append(row)
    print(row, file=sys.stderr)
  return rows


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="small models at tiny sizes (runs on a CPU)")
  p.add_argument("--quick", action="store_true",
                 help="GSPN-XL/2 and DiT-XL/2 at 256 px, batch 32, 50 sampling steps, layers up to 1024^2")
  p.add_argument("--out", default=None, help="JSON path; plots go beside it")
  args = p.parse_args(argv)
  if args.smoke:
    models = [("GSPN-tiny", "GSPN", dict(hidden_size=32, depth=2, patch_size=2)),
              ("DiT-tiny", "DiT", dict(hidden_size=32, depth=2, num_heads=2, patch_size=2)),
              ("DiffuSSM-tiny", "DiffuSSM", dict(hidden_size=32, depth=1, state_size=8))]
    resolutions, batch, sample_batch, steps, dtype = (32, 64), 2, 2, 2, "float32"
    sizes, channels, budget = (16, 32), 16, 10.0
  elif args.quick:  # the first look on a GPU lent for minutes
    models = [("GSPN-XL/2", "GSPN-XL/2", {}), ("DiT-XL/2", "DiT-XL/2", {})]
    resolutions, batch, sample_batch, steps, dtype = (256,), 32, 16, 50, "bfloat16"
    sizes, channels, budget = (256, 1024), 64, 10.0
  else:
    models = [("GSPN-XL/2", "GSPN-XL/2", {}), ("DiT-XL/2", "DiT-XL/2", {}), ("DiffuSSM-XL", "DiffuSSM-XL", {})]
    resolutions, batch, sample_batch, steps, dtype = (256, 512, 1024), 512, 16, 250, "bfloat16"
    sizes, channels, budget = (64, 128, 256, 512, 1024, 2048, 4096), 64, 60.0
  payload = {"models": model_rows(models, resolutions, batch, sample_batch, steps, dtype, search=not args.quick),
             "layer": layer_rows(sizes, channels, dtype, budget), "dtype": dtype, "sampling_steps": steps}
  path = write_results("compare_smoke" if args.smoke else "compare_quick" if args.quick else "compare", payload,
                       args.out)
  from bench.plots import plot_compare

  plots = plot_compare(payload, path.with_suffix(""), device_name())
  print(f"wrote {path} and {', '.join(str(p) for p in plots)}")
  return path


if __name__ == "__main__":
  main()
