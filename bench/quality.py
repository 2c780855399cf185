"""Quality at equal compute on the embedded digits: named model variants trained with the same
recipe and budget (steps x batch) at one or more learning rates, each judged like `make demo`
and, without retraining, under the factors that could explain a gap between them: EMA vs raw
weights, cfg 1 vs 1.5, learned vs fixed ('small' = clipped posterior, 'large' = beta_t)
variance at sampling, and the mse and vb loss terms on the held-out digits.

  python -m bench.quality --size demo --lrs 1e-3 1e-2 --steps 1500   # the demo size: GSPN additive/adaln, DiT
  python -m bench.quality --size s2 --steps 1000                     # GSPN-S/2 and DiT-S/2
  python -m bench.quality --smoke                                    # tiny models, a few steps (CI)

Each run is appended to the JSON as it finishes; rerunning the same command skips the runs
already there, so an interrupted study resumes where it stopped.
"""

import argparse
import functools
import json
import os
import pathlib
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bench.common import RESULTS, device_name, write_results
from configs import digits
from gspn_jax import digits_eval, sampling, train
from gspn_jax.data import digits as digits_data
from gspn_jax.diffusion import create_diffusion
from gspn_jax.train_state import build_model, init_state, make_optimizer, make_train_step, split_model

# No stochastic depth for any model (DiT has none; GSPN's default is 0.1), as the digits default.
# "demo": the `make demo` GSPN, with the released and the adaLN-Zero conditioning, and a DiT of
# about its training FLOPs per image (the FLOPs are counted and reported with every run).
GS = dict(patch_size=2, drop_path_rate=0.0)
SIZES = {
    "demo": {"GSPN-additive": ("GSPN", dict(hidden_size=64, depth=6, **GS)),
             "GSPN-adaln": ("GSPN", dict(hidden_size=64, depth=6, conditioning="adaln", **GS)),
             "DiT": ("DiT", dict(hidden_size=64, depth=8, num_heads=4, patch_size=2))},
    "s2": {"GSPN-S/2": ("GSPN", dict(hidden_size=368, depth=24, **GS)),
           "GSPN-S/2-adaln": ("GSPN", dict(hidden_size=368, depth=24, conditioning="adaln", **GS)),
           "DiT-S/2": ("DiT", dict(hidden_size=384, depth=12, num_heads=6, patch_size=2))},
    "tiny": {"GSPN-tiny": ("GSPN", dict(hidden_size=32, depth=2, **GS)),
             "DiT-tiny": ("DiT", dict(hidden_size=32, depth=2, num_heads=2, patch_size=2))},
}
# (weights, cfg scale, variance at sampling): the first is what `make demo` reports.
SAMPLINGS = [("ema", 1.5, "learned"), ("raw", 1.5, "learned"), ("ema", 1.0, "learned"),
             ("ema", 1.5, "small"), ("ema", 1.5, "large")]


def config_for(arch, kwargs, steps, lr, seed, smoke=False, sampling_steps=100):
  c = digits.get_config()
  c.model.name, c.model.kwargs = arch, kwargs
  c.num_steps, c.seed = steps, seed
  c.optim.lr = lr
  c.optim.decay_epochs = steps * c.batch_size / 1437
  c.sample_every = steps  # one grid, of the final state
  c.ckpt_every = steps
  c.eval.enabled = False  # judged below, under every sampling setting
  c.sample.num_sampling_steps = str(sampling_steps)
  if smoke:
    c.optim.warmup_epochs = 0.0
    c.sample.grid_per_class = 1
  return c


def train_flops_per_image(config):
  """XLA's count of the FLOPs of one train step (forward, backward, AdamW, EMA) per image."""
  tx = make_optimizer(config, lambda s: config.optim.lr)
  graphdef, params, rest = split_model(build_model(config))
  step = make_train_step(graphdef, rest, create_diffusion(""), tx, lambda s: config.optim.lr, config.ema_decay)
  state = jax.eval_shape(lambda p: init_state(p, tx, 0), params)
  n, s = config.batch_size, config.data.image_size
  batch = {"image": jax.ShapeDtypeStruct((n, s, s, 1), jnp.float32), "label": jax.ShapeDtypeStruct((n,), jnp.int32)}
  cost = jax.jit(step).lower(state, batch).compile().cost_analysis()  # compiled: loops as run
  cost = cost[0] if isinstance(cost, list) else cost
  return float(cost["flops"]) / n


def make_sampler(graphdef, rest, config):
  """sampling.make_sampler with cfg scale and variance as arguments, so one compile serves every
  setting: cfg 1 runs the same [cond; uncond] batch (uncond + 1 x (cond - uncond) = cond), and a
  fixed variance v replaces the model's v output (-1: the clipped posterior's log-variance, +1:
  log beta_t; nan: the learned one)."""
  diffusion = create_diffusion(config.sample.num_sampling_steps)
  c, s, null = config.data.channels, config.data.image_size, config.data.num_classes

  def sample(params, labels, key, cfg_scale, fixed_v):
    model = nnx.merge(graphdef, params, rest)
    n = labels.shape[0]
    z = jax.random.normal(jax.random.fold_in(key, 0), (n, s, s, c))
    z, y = jnp.concatenate([z, z]), jnp.concatenate([labels, jnp.full_like(labels, null)])

    def fn(x, t, y):
      out = model.forward_with_cfg(x, t, y, cfg_scale, config.sample.cfg_channels)
      return jnp.where(jnp.isnan(fixed_v), out, out.at[..., c:].set(fixed_v))

    return diffusion.p_sample_loop(fn, z.shape, jax.random.fold_in(key, 1), noise=z, model_kwargs={"y": y})[:n]

  return jax.jit(sample)


def heldout_loss_terms(graphdef, rest, params, seed):
  """The mse and vb terms on the held-out digits, with fixed timesteps and noise."""
  x, y = (jnp.asarray(a) for a in digits_data.load_split("test"))
  diffusion, key = create_diffusion(""), jax.random.key(seed)
  t = jax.random.randint(jax.random.fold_in(key, 0), (x.shape[0],), 0, diffusion.num_timesteps)
  model = nnx.merge(graphdef, params, rest)
  loss = lambda x, y: diffusion.training_losses(lambda xt, tt: model(xt, tt, y), x, t, key=jax.random.fold_in(key, 1))
  return {k: float(jnp.mean(v)) for k, v in jax.jit(loss)(x, y).items()}


def run(label, arch, kwargs, lr, seed, steps, eval_per_class, sampling_steps, smoke, judge):
  """Train one variant; judge it under every sampling setting. The row and the final grid."""
  config = config_for(arch, kwargs, steps, lr, seed, smoke, sampling_steps)
  flops = train_flops_per_image(config)
  with tempfile.TemporaryDirectory() as workdir:
    t = time.time()
    state, _ = train.train_and_evaluate(config, workdir)
    wall = time.time() - t
    grid = (pathlib.Path(workdir) / "samples" / f"step_{steps:08d}.png").read_bytes()
  graphdef, _, rest = split_model(build_model(config))
  labels = np.repeat(np.arange(config.data.num_classes), eval_per_class)
  key = jax.random.fold_in(jax.random.key(seed), 1)
  evals, sample = {}, make_sampler(graphdef, rest, config)
  for weights, cfg, variance in SAMPLINGS:
    fn = functools.partial(sample, cfg_scale=cfg, fixed_v={"learned": np.nan, "small": -1.0, "large": 1.0}[variance])
    params = state[{"ema": "ema", "raw": "params"}[weights]]
    samples = sampling.sample_in_batches(fn, params, labels, key, batch_size=min(len(labels), 500))  # no padding
    r = digits_eval.evaluate_samples(samples, labels, judge)
    evals[f"{weights}_cfg{cfg:g}_{variance}"] = {"accuracy": r["conditional_accuracy"], "fid": r["fid_samples_vs_test"]}
  row = {"model": label, "lr": lr, "seed": seed, "steps": steps, "batch": config.batch_size,
         "params": int(sum(x.size for x in jax.tree.leaves(state["params"]))), "train_flops_per_image": flops,
         "eval_samples": int(len(labels)), "sampling_steps": sampling_steps, "train_wall_s": wall,
         "fid_floor": r["fid_train_vs_test_floor"], "evals": evals,
         "heldout_loss_ema": heldout_loss_terms(graphdef, rest, state["ema"], seed),
         "heldout_loss_raw": heldout_loss_terms(graphdef, rest, state["params"], seed)}
  return row, grid


def markdown(rows):
  keys = [f"{w}_cfg{c:g}_{v}" for w, c, v in SAMPLINGS]
  head = ["model", "params", "train MFLOPs/image", "lr", "steps x batch"] + [k.replace("_", " ") for k in keys] + [
      "held-out mse / vb (EMA)"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for r in rows:
    cells = [r["model"], f"{r['params']:,}", f"{r['train_flops_per_image'] / 1e6:.1f}", f"{r['lr']:g}",
             f"{r['steps']} x {r['batch']}"]
    cells += [f"{100 * r['evals'][k]['accuracy']:.1f} % / {r['evals'][k]['fid']:.1f}" for k in keys]
    cells.append(f"{r['heldout_loss_ema']['mse']:.4f} / {r['heldout_loss_ema']['vb']:.4f}")
    lines.append("| " + " | ".join(cells) + " |")
  note = (f"\nEach sampling column: conditional accuracy / classifier-feature FID of {rows[0]['eval_samples']} "
          f"samples ({rows[0]['sampling_steps']} DDPM steps; FID floor {rows[0]['fid_floor']:.1f}).\n") if rows else ""
  return "\n".join(lines) + "\n" + note


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--size", choices=sorted(SIZES), default="demo")
  p.add_argument("--models", nargs="+", default=None, help="a subset of the size's variants, in this order")
  p.add_argument("--lrs", nargs="+", type=float, default=[1e-3, 1e-2])
  p.add_argument("--seeds", nargs="+", type=int, default=[0])
  p.add_argument("--steps", type=int, default=1500)
  p.add_argument("--eval-per-class", type=int, default=20, help="samples per class judged")
  p.add_argument("--sampling-steps", type=int, default=100, help="DDPM steps of the judged samples")
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  if args.smoke:
    args.size, args.lrs, args.steps, args.eval_per_class, args.sampling_steps = "tiny", [1e-3], 4, 2, 4
  if args.steps < 1 or args.eval_per_class < 1 or args.sampling_steps < 1 or min(args.lrs) <= 0:
    p.error("--steps, --eval-per-class, --sampling-steps and every --lrs must be positive")
  variants = SIZES[args.size]
  models = args.models or list(variants)
  if unknown := [m for m in models if m not in variants]:
    p.error(f"--models {unknown} not in --size {args.size}: choose from {list(variants)}")
  path = pathlib.Path(args.out or RESULTS / f"quality_{args.size}_{device_name().replace(':', '_')}.json")
  rows = json.loads(path.read_text())["rows"] if path.exists() else []
  done = {(r["model"], r["lr"], r["seed"], r["steps"]) for r in rows}
  judge = None
  for lr in args.lrs:
    for label in models:
      for seed in args.seeds:
        if (label, lr, seed, args.steps) in done:
          continue  # resumed: this run is already in the results
        judge = judge or digits_eval.train_classifier()
        row, grid = run(label, *variants[label], lr, seed, args.steps, args.eval_per_class, args.sampling_steps,
                        args.smoke, judge)
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
        os.replace(write_results(path.stem, {"rows": rows}, path.with_suffix(".tmp")), path)  # atomic: resumable
        path.with_suffix(".md").write_text(markdown(rows))
        name = f"{label}_lr{lr:g}_seed{seed}".replace("/", "_")
        path.with_name(f"{path.stem}_{name}.png").write_bytes(grid)  # the final cfg-1.5 EMA grid, a class per column
  print(markdown(rows))
  return path


if __name__ == "__main__":
  main()
