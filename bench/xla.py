"""The XLA path's cost per train step: GSPN vs DiT as XLA compiles them (no Triton).

  python -m bench.xla            # S/2 sizes timed, XL/2 compiled only; JSON + PNG in bench/results/
  python -m bench.xla --smoke    # tiny models (CI)

One fp32 train step's loss and gradients (DiT's diffusion loss, as gspn_jax.train_state
computes it; the optimizer update, the same for any backbone, left out) at batch 32 on
8x8x1 and 32x32x1 inputs (10 classes, no stochastic depth). For each model and shape:
XLA's FLOPs and bytes accessed (`compiled.cost_analysis()`), its temporary memory
(`compiled.memory_analysis()`), and the minimum wall time over repeats (S sizes; XL/2 is
compiled only). `cpu_s_per_step_min` is the process CPU time (all threads), steadier than wall time on a
shared machine. `flops_per_param_token` is the FLOPs over 6 x (parameters applied at
every token) x tokens, the dense-model estimate of a train step's work.
"""

import argparse
import os
import sys
import time

# XLA:CPU's default concurrency-optimised scheduler keeps the backward's transients of
# many layers alive at once (four GSPN cores at 4x4 tokens: 186 MiB of temporaries, 87 MiB
# without it); the memory-minimising scheduler is what training on a CPU wants. Set
# before jax starts, for both models alike, and recorded in the results.
SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if "concurrency_optimized_scheduler" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {SCHEDULER_FLAG}".strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402

from bench.common import write_results  # noqa: E402
from gspn_jax.diffusion import create_diffusion  # noqa: E402
from gspn_jax.models import create_model  # noqa: E402
from gspn_jax.train_state import split_model  # noqa: E402

MAX_TIMED_TEMP_GIB = 8  # steps that plan more temporaries are compiled only (a shared 24 GiB machine)

S_SIZES = {
    "GSPN-S/2 aligned": ("GSPN-S/2", dict(merge="aligned")),
    "GSPN-S/2 released": ("GSPN-S/2", dict(merge="released")),
    "GSPN-S/2 aligned remat": ("GSPN-S/2", dict(merge="aligned", remat=True)),
    "DiT-S/2": ("DiT-S/2", {}),
}
XL_SIZES = {"GSPN-XL/2": ("GSPN-XL/2", {}), "DiT-XL/2": ("DiT-XL/2", {})}
TINY = {
    "GSPN-tiny": ("GSPN", dict(hidden_size=32, depth=2, patch_size=2)),
    "DiT-tiny": ("DiT", dict(hidden_size=32, depth=2, num_heads=2, patch_size=2)),
}
# Parameters applied once per example (conditioning), not at every token.
PER_EXAMPLE = ("t_embedder", "y_embedder", "adaLN_modulation", "pos_embed")


def per_token_params(params):
  leaves = jax.tree_util.tree_leaves_with_path(params)
  return sum(a.size for path, a in leaves if not any(k in jax.tree_util.keystr(path) for k in PER_EXAMPLE))


def loss_and_grads_fn(graphdef, rest, diffusion):
  """The train step's work without the optimizer update: DiT's diffusion loss and its gradients."""

  def fn(params, batch, key):
    k_t, k_noise, k_model = jax.random.split(key, 3)
    x, y = batch["image"], batch["label"]
    t = jax.random.randint(k_t, (x.shape[0],), 0, diffusion.num_timesteps)

    def loss_fn(params):
      model = nnx.merge(graphdef, params, rest)
      terms = diffusion.training_losses(lambda xt, tt: model(xt, tt, y, key=k_model), x, t, key=k_noise)
      return jnp.mean(terms["loss"])

    return jax.value_and_grad(loss_fn)(params)

  return fn


def measure(name, kwargs, size, batch, repeats):
  extra = dict(drop_path_rate=0.0) if name.startswith("GSPN") else {}
  model = create_model(name, input_size=size, in_channels=1, num_classes=10, rngs=nnx.Rngs(0), **extra,
                       **kwargs)
  graphdef, params, rest = split_model(model)
  step = jax.jit(loss_and_grads_fn(graphdef, rest, create_diffusion("")))
  batch_arrays = {"image": jax.random.normal(jax.random.key(1), (batch, size, size, 1)),
                  "label": jnp.arange(batch) % 10}
  key = jax.random.key(2)
  t = time.perf_counter()
  compiled = step.lower(params, batch_arrays, key).compile()
  compile_s = time.perf_counter() - t
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  mem = compiled.memory_analysis()
  tokens = batch * (size // model.patch_size) ** 2
  p_tok = per_token_params(params)
  row = {"params": int(sum(a.size for a in jax.tree.leaves(params))), "per_token_params": int(p_tok),
         "tokens": tokens, "gflop": cost["flops"] / 1e9, "gb_accessed": cost["bytes accessed"] / 1e9,
         "temp_gib": mem.temp_size_in_bytes / 2**30, "compile_s": compile_s,
         "flops_per_param_token": cost["flops"] / (6 * p_tok * tokens)}
  if repeats and row["temp_gib"] <= MAX_TIMED_TEMP_GIB:
    jax.block_until_ready(compiled(params, batch_arrays, key))  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
      t, c = time.perf_counter(), time.process_time()
      jax.block_until_ready(compiled(params, batch_arrays, key))
      times.append(time.perf_counter() - t)
      cpu.append(time.process_time() - c)
    row.update(s_per_step_min=min(times), s_per_step_all=times, cpu_s_per_step_min=min(cpu))
  return row


def ratios(rows):
  """GSPN over DiT at the same size and shape, for each measured quantity."""
  out = []
  for r in rows:
    if not r["model"].startswith("GSPN"):
      continue
    size = r["model"].split()[0].split("-")[1]
    dit = next((d for d in rows if d["model"] == f"DiT-{size}" and d["input"] == r["input"]), None)
    if dit is None:
      continue
    keys = [k for k in ("gflop", "gb_accessed", "temp_gib", "s_per_step_min", "cpu_s_per_step_min")
            if k in r and k in dit]
    out.append({"model": r["model"], "input": r["input"], **{k: r[k] / dit[k] for k in keys}})
  return out


def plot(rows, path):
  from bench.plots import plt, save

  keys = [("gflop", "GFLOP / step"), ("gb_accessed", "GB accessed / step"), ("temp_gib", "temp memory (GiB)"),
          ("s_per_step_min", "wall s / step (min)")]
  fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 4))
  inputs = sorted({r["input"] for r in rows})
  models = list(dict.fromkeys(r["model"] for r in rows))
  width = 0.8 / len(models)
  for ax, (k, title) in zip(axes, keys):
    for i, m in enumerate(models):
      vals = [next((r.get(k, 0) for r in rows if r["model"] == m and r["input"] == s), 0) for s in inputs]
      ax.bar([j + i * width for j in range(len(inputs))], vals, width, label=m)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(inputs))], inputs)
    if any(r.get(k, 0) > 0 for r in rows):
      ax.set_yscale("log")
    else:  # XL/2 rows are compiled, not timed
      ax.text(0.5, 0.5, "compiled only", ha="center", transform=ax.transAxes)
    ax.set_title(title)
  axes[0].legend(fontsize=7)
  save(fig, path)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny models at batch 2 (CI)")
  p.add_argument("--repeats", type=int, default=3, help="timed steps per S-size row (the minimum is reported)")
  p.add_argument("--no-xl", action="store_true", help="skip the compiled-only XL/2 rows")
  p.add_argument("--sizes", default="8,32", help="input sizes (comma-separated)")
  p.add_argument("--xl-sizes", default="8", help="input sizes of the compiled-only XL/2 rows")
  p.add_argument("--models", default=None, help="only these rows (comma-separated labels)")
  p.add_argument("--out", default=None, help="JSON path")
  args = p.parse_args(argv)
  batch = 2 if args.smoke else 32
  plan = [(m, 1 if args.smoke else args.repeats, args.sizes) for m in (TINY if args.smoke else S_SIZES).items()]
  if not (args.smoke or args.no_xl):
    plan += [(m, 0, args.xl_sizes) for m in XL_SIZES.items()]
  if args.models:
    plan = [p for p in plan if p[0][0] in args.models.split(",")]
  rows = []
  for size in sorted({int(s) for p in plan for s in p[2].split(",")}):
    for (label, (name, kwargs)), repeats, sizes in plan:
      if str(size) not in sizes.split(","):
        continue
      row = {"model": label, "input": f"{size}x{size}x1", "batch": batch,
             **measure(name, kwargs, size, batch, repeats)}
      rows.append(row)
      print(row, file=sys.stderr)
  path = write_results("xla_smoke" if args.smoke else "xla", {"xla_flags": os.environ.get("XLA_FLAGS", ""),
                       "rows": rows, "ratios_vs_dit": ratios(rows)}, args.out)
  plot(rows, path.with_suffix(".png"))
  print(f"wrote {path}")
  return path


if __name__ == "__main__":
  main()
