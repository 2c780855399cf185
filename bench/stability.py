"""Training-stability diagnostic: what grows when GSPN or DiT is trained at a large step size.

Trains the equal-compute study's models (bench/equal_compute.py: same sizes, same digits
recipe, the peak lr set per run) and records along training: the loss every step (and its
spikes), per parameter group (a layer's name, summed over blocks) the gradient norm before
clipping and the update / parameter norm ratio (the parameters after the update), and every
--every steps, on a fixed probe batch (test digits, fixed t and noise), per block the
activations of bench/probes.py: for GSPN the gate logits (size, fraction saturated, peakedness
of the normalised gates), lambda, u, d, the propagated state h against lambda x, the core's
gain, the squared-ReLU input, the residual stream; for DiT the residual stream and each
block's branch.

  nice -n 10 python -m bench.stability                 # XS/1, XS/2 x GSPN-adaln, DiT x lr 1e-2, 3e-2
  nice -n 10 python -m bench.stability --sizes XS/1 --models GSPN-adaln-norm   # the core_norm remedy
  nice -n 10 python -m bench.stability --sizes XS/1 --models GSPN-adaln --lrs 3e-2 --steps 400 \
      --warmup-epochs 6                                # a longer warm-up
  python -m bench.stability --smoke                    # tiny GSPN and DiT, a few steps (CI)

JSON and PNG in bench/results/; processes run with --out join with --merge.

Each run is appended to the JSON as it finishes; rerunning the same command skips it.
"""

import argparse
import json
import os
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from bench import probes
from bench.common import RESULTS, device_name, write_results
from bench.equal_compute import SIZES, PeakLr, config_for, scale_by_peak_lr
from bench.plots import plot_stability
from configs import digits
from gspn_jax.data import create_train_iterator
from gspn_jax.data import digits as digits_data
from gspn_jax.diffusion import create_diffusion
from gspn_jax.train_state import (build_model, init_state, learning_rate_fn, make_loss_and_grads, make_optimizer,
                                  split_model)

SMOKE_SIZES = {"tiny": {"GSPN-adaln": ("GSPN", dict(hidden_size=16, depth=1, patch_size=2, conditioning="adaln",
                                                     drop_path_rate=0.0)),
                        "DiT": ("DiT", dict(hidden_size=16, depth=1, num_heads=2, patch_size=2))}}
PROBE_T = (50, 250, 500, 750, 950)  # timesteps of the probe batch, cycled over its examples
GROWTH = 3.0  # a statistic "has grown" once it is this many times its value at step 0
CONTAINERS = {"in_blocks", "mid_block", "out_blocks", "blocks"}
LEAVES = {"kernel", "bias", "scale", "embedding"}


def group_of(path):
  """A parameter's group: its layer's name without the block index or the leaf's kind."""
  keys = [str(getattr(k, "key", getattr(k, "idx", k))) for k in path]
  keys = [k for k in keys if k not in CONTAINERS and not k.isdigit()]
  return ".".join(keys[:-1] if keys[-1] in LEAVES and len(keys) > 1 else keys)


def group_norms(tree):
  """{group: l2 norm of its leaves}."""
  sq = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    g = group_of(path)
    sq[g] = sq.get(g, 0.0) + jnp.sum(jnp.square(leaf.astype(jnp.float32)))
  return {g: jnp.sqrt(v) for g, v in sq.items()}


class Run:
  """One model's compiled diagnostic step and probe, shared by its lrs (the peak lr is state)."""

  def __init__(self, arch, kwargs, steps, warmup_epochs, smoke=False):
    self.config = c = config_for(arch, kwargs, steps, smoke)
    if not smoke:
      c.optim.warmup_epochs = warmup_epochs
    lr_fn = learning_rate_fn(c, len(digits_data.load_split("train")[0]) // c.batch_size)
    self.tx = tx = optax.chain(make_optimizer(c, lr_fn), scale_by_peak_lr())
    graphdef, _, rest = split_model(build_model(c))
    forward = probes.FORWARDS[arch]

    loss_and_grads = make_loss_and_grads(graphdef, rest, create_diffusion(""))

    def step(state, batch):  # the training step's objective and update, with per-layer norms
      key = jax.random.fold_in(jax.random.wrap_key_data(state["rng"]), state["step"])
      terms, grads = loss_and_grads(state["params"], batch, key)
      updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
      params = optax.apply_updates(state["params"], updates)
      metrics = {"loss": terms["loss"], "grad_norm": optax.tree.norm(grads), "grad": group_norms(grads),
                 "update": group_norms(updates), "param": group_norms(params)}  # after the update: zero-init layers
      return {**state, "params": params, "opt_state": opt_state, "step": state["step"] + 1}, metrics

    def probe(params, x, t, y):  # the statistics, and how far the probe's forward is from the model's
      model = nnx.merge(graphdef, params, rest)
      out, stats = forward(model, x, t, y)
      return stats, jnp.max(jnp.abs(out - model(x, t, y)))

    self.step = jax.jit(step, donate_argnums=0)
    self.probe = jax.jit(probe)

  def train(self, lr, seed, every, probe_batch):
    c = self.config.copy_and_resolve_references()
    c.seed = seed
    _, params, _ = split_model(build_model(c))
    state = init_state(params, self.tx, seed)
    del state["ema"]  # not needed here
    state["opt_state"] = (state["opt_state"][0], PeakLr(jnp.asarray(lr, jnp.float32)))
    data = create_train_iterator(c.data, global_batch_size=c.batch_size, seed=seed)
    losses, grad_norms, points, t0 = [], [], [], time.time()
    for step in range(c.num_steps + 1):
      if step % every == 0 or step == c.num_steps:
        blocks, error = jax.device_get(self.probe(state["params"], *probe_batch))
        points.append({"step": step, "probe_error": float(error),
                       "blocks": [{k: float(v) for k, v in b.items()} for b in blocks]})
      if step == c.num_steps:
        break
      state, m = self.step(state, next(data))
      m = jax.device_get(m)
      losses.append(float(m["loss"]))
      grad_norms.append(float(m["grad_norm"]))
      if step % every == 0:
        points[-1]["groups"] = {g: {"grad": float(m["grad"][g]), "param": float(m["param"][g]),
                                    "update_ratio": float(m["update"][g] / max(m["param"][g], 1e-12))}
                                for g in m["grad"]}
      if not np.isfinite(losses[-1]):
        break
    return {"loss": losses, "grad_norm": grad_norms, "points": points, "wall_s": time.time() - t0}


def probe_batch(config, n=20):
  """Fixed test digits noised at fixed timesteps: x_t, t, y."""
  images, labels = digits_data.load_split("test")
  x0, y = jnp.asarray(images[:n]), jnp.asarray(labels[:n])
  t = jnp.asarray([PROBE_T[i % len(PROBE_T)] for i in range(n)], jnp.int32)
  noise = jax.random.normal(jax.random.key(0), x0.shape)
  return create_diffusion("").q_sample(x0, t, noise), t, y


def spikes(losses, window=20, factor=2.0):
  """Steps whose loss exceeds factor x the median of the previous window steps."""
  return [i for i in range(window, len(losses)) if losses[i] > factor * np.median(losses[i - window:i])]


def first_growth(points):
  """Per block statistic (max over blocks): the first step it reached GROWTH x its step-0 value."""
  out = {}
  for k in points[0]["blocks"][0]:
    series = [max(b[k] for b in p["blocks"]) for p in points]
    base = max(series[0], 1e-3 * max(series), 1e-12)  # zero-initialised gates start at 0
    hit = next((p["step"] for p, v in zip(points, series) if v > GROWTH * base), None)
    out[k] = {"step": hit, "start": series[0], "max": max(series), "end": series[-1]}
  return out


def digest(run):
  """The numbers the README quotes: loss over the last third, spikes, what grew first."""
  loss, n = run["loss"], len(run["loss"])
  groups = [p["groups"] for p in run["points"] if "groups" in p]
  return {"final_loss": float(np.mean(loss[-max(n // 3, 1):])), "max_loss": float(np.max(loss)),
          "spikes": spikes(loss), "diverged": not np.isfinite(loss[-1]),
          "max_grad_norm": float(np.max(run["grad_norm"])),
          "max_update_ratio": {g: max(p[g]["update_ratio"] for p in groups) for g in groups[0]},
          "first_growth": first_growth(run["points"])}


def rounded(tree):
  """Floats to 4 significant digits (the statistics are not more precise than that)."""
  if isinstance(tree, float):
    return float(f"{tree:.4g}")
  if isinstance(tree, dict):
    return {k: rounded(v) for k, v in tree.items()}
  return [rounded(v) for v in tree] if isinstance(tree, list) else tree


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--sizes", nargs="+", default=["XS/1", "XS/2"], help=f"of {list(SIZES)}")
  p.add_argument("--models", nargs="+", default=["GSPN-adaln", "DiT"], help="of each size's models")
  p.add_argument("--lrs", nargs="+", type=float, default=[1e-2, 3e-2])
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--steps", type=int, default=300)
  p.add_argument("--every", type=int, default=10, help="steps between probes")
  p.add_argument("--warmup-epochs", type=float, default=digits.get_config().optim.warmup_epochs,
                 help="linear lr warm-up (the digits recipe's by default; 1437 images an epoch)")
  p.add_argument("--out", default=None)
  p.add_argument("--merge", nargs="+", default=[], help="results written by other processes (--out): their "
                 "runs join --out's")
  args = p.parse_args(argv)
  sizes = SMOKE_SIZES if args.smoke else SIZES
  if args.smoke:
    args.sizes, args.models, args.lrs, args.steps, args.every = ["tiny"], list(SMOKE_SIZES["tiny"]), [3e-2], 4, 2
  if unknown := [s for s in args.sizes if s not in sizes]:
    p.error(f"--sizes {unknown}: choose from {list(sizes)}")
  if unknown := [m for m in args.models if all(m not in sizes[s] for s in args.sizes)]:
    p.error(f"--models {unknown}: choose from {sorted({m for s in args.sizes for m in sizes[s]})}")
  if missing := [m for m in args.merge if not pathlib.Path(m).exists()]:
    p.error(f"--merge {missing}: no such results file")
  if min(args.steps, args.every) < 1 or min(args.lrs) <= 0 or args.warmup_epochs < 0:
    p.error("--steps, --every and --lrs must be positive, --warmup-epochs not negative")
  path = pathlib.Path(args.out or RESULTS / f"stability_{device_name().replace(':', '_')}.json")
  rows = json.loads(path.read_text())["rows"] if path.exists() else []
  key = lambda r: (r["size"], r["model"], r["lr"], r["seed"], r["steps"], r["every"], r["warmup_epochs"])
  for other in args.merge:
    rows += [r for r in json.loads(pathlib.Path(other).read_text())["rows"] if key(r) not in {key(q) for q in rows}]

  def save():  # compact, 4 significant digits: ~60k numbers per study; atomic: resumable
    os.replace(write_results(path.stem, {"rows": rounded(rows)}, path.with_suffix(".tmp"), indent=None), path)

  for size in args.sizes:
    for label in args.models:
      if label not in sizes[size]:
        continue
      arch, kwargs = sizes[size][label]
      todo = [lr for lr in args.lrs
              if (size, label, lr, args.seed, args.steps, args.every, args.warmup_epochs)
              not in {key(r) for r in rows}]
      if not todo:
        continue  # resumed
      run = Run(arch, kwargs, args.steps, args.warmup_epochs, args.smoke)
      batch = probe_batch(run.config)
      for lr in todo:
        result = run.train(lr, args.seed, args.every, batch)
        rows.append({"size": size, "model": label, "arch": arch, "kwargs": kwargs, "lr": lr, "seed": args.seed,
                     "steps": args.steps, "every": args.every, "warmup_epochs": args.warmup_epochs, **result,
                     "digest": digest(result)})
        print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("loss", "grad_norm", "points")}),
              file=sys.stderr, flush=True)
        save()
  if rows:
    save()
    plot_stability(rows, str(path.with_suffix(".png")), device_name())
  return path


if __name__ == "__main__":
  main()
