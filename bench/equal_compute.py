"""Equal-compute study on the embedded digits: GSPN with the released (additive) and the
adaLN-Zero conditioning, and with adaLN-Zero and a LayerNorm on each core's output (core_norm),
against DiT, at three sizes whose models are matched in training FLOPs
per image (XLA's cost analysis of the compiled train step: forward, backward, AdamW, EMA).
Each model is trained at three peak learning rates (seed 0); the best one is trained again with
seed 1. Conditional accuracy and classifier-feature FID are measured at checkpoints along
training, so both can be plotted against training FLOPs.

  nice -n 10 python -m bench.equal_compute          # the study (JSON, markdown, PNG in bench/results/)
  python -m bench.equal_compute --smoke             # tiny models, a few steps (CI)

The recipe is configs/digits.py's (batch 32, AdamW, warm-up then cosine decay, grad clip 1)
for every model; only the peak lr is swept. One compiled train step serves every lr and seed
of a model: the peak lr is a value in the optimizer state, multiplying a unit-peak schedule
(the same updates as the schedule at that peak, with its floor min_lr scaled alike). Samples
are judged with the raw weights (the EMA of the recipe spans ~500 steps: longer than a run
here), cfg 1.5, DDIM. Each run is appended to the JSON as it finishes; rerunning the same
command skips the runs already there.
"""

import argparse
import json
import os
import pathlib
import sys
import time
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from bench.common import RESULTS, device_name, write_results
from bench.plots import plot_equal_compute
from configs import digits
from gspn_jax import digits_eval, sampling
from gspn_jax.data import create_train_iterator
from gspn_jax.data import digits as digits_data
from gspn_jax.diffusion import create_diffusion
from gspn_jax.train_state import build_model, init_state, learning_rate_fn, make_optimizer, make_train_step, split_model

G = dict(drop_path_rate=0.0)  # no stochastic depth for any model, as the digits default
A = dict(conditioning="adaln", **G)
N = dict(core_norm=True, **A)  # GSPN-adaln-norm: adaLN-Zero and a LayerNorm on each core's output
# Per size, DiT's depth/width is the one whose counted FLOPs come nearest GSPN-additive's.
SIZES = {
    "XS/2": {"GSPN-additive": ("GSPN", dict(hidden_size=32, depth=4, patch_size=2, **G)),
             "GSPN-adaln": ("GSPN", dict(hidden_size=32, depth=4, patch_size=2, **A)),
             "GSPN-adaln-norm": ("GSPN", dict(hidden_size=32, depth=4, patch_size=2, **N)),
             "DiT": ("DiT", dict(hidden_size=32, depth=4, num_heads=2, patch_size=2)),
             # XS/1's positional-embedding variant at patch 2 (does its gain depend on the grid?)
             "GSPN-adaln-norm-pos": ("GSPN", dict(hidden_size=32, depth=4, patch_size=2, pos_embed=True, **N))},
    "S/2": {"GSPN-additive": ("GSPN", dict(hidden_size=64, depth=6, patch_size=2, **G)),
            "GSPN-adaln": ("GSPN", dict(hidden_size=64, depth=6, patch_size=2, **A)),
            "GSPN-adaln-norm": ("GSPN", dict(hidden_size=64, depth=6, patch_size=2, **N)),
            "DiT": ("DiT", dict(hidden_size=64, depth=4, num_heads=4, patch_size=2))},
    "XS/1": {"GSPN-additive": ("GSPN", dict(hidden_size=32, depth=4, patch_size=1, **G)),
             "GSPN-adaln": ("GSPN", dict(hidden_size=32, depth=4, patch_size=1, **A)),
             "GSPN-adaln-norm": ("GSPN", dict(hidden_size=32, depth=4, patch_size=1, **N)),
             "DiT": ("DiT", dict(hidden_size=28, depth=4, num_heads=2, patch_size=1)),
             # Why GSPN lags at patch 1, one change each (run at two lrs, one seed):
             # every block global (receptive field), a 4x wider gate bottleneck (rank 8), and
             # DiT's fixed positional embedding added to the tokens (GSPN has none); then the
             # embedding with every block global.
             "GSPN-adaln-norm-global": ("GSPN", dict(hidden_size=32, depth=4, patch_size=1, segment_length=None, **N)),
             "GSPN-adaln-norm-rank8": ("GSPN", dict(hidden_size=32, depth=4, patch_size=1, core_rank=8, **N)),
             "GSPN-adaln-norm-pos": ("GSPN", dict(hidden_size=32, depth=4, patch_size=1, pos_embed=True, **N)),
             "GSPN-adaln-norm-pos-global": ("GSPN", dict(hidden_size=32, depth=4, patch_size=1, pos_embed=True,
                                                         segment_length=None, **N)),
             # the label inside the propagation: c feeds each core's gate bottleneck (bench.label_use)
             "GSPN-adaln-norm-cond": ("GSPN", dict(hidden_size=32, depth=4, patch_size=1, core_cond=True, **N)),
             # and the converse: DiT without its positional embedding (bench.label_use)
             "DiT-nopos": ("DiT", dict(hidden_size=28, depth=4, num_heads=2, patch_size=1, pos_embed=False))},
}
# The smoke run checks the study's mechanics (FLOP count, sweep, best-lr seed, resume, outputs)
# with one cheap model; GSPN's compile alone would cost CI more than the rest (bench.quality's
# smoke test trains a tiny GSPN).
SMOKE_SIZES = {"tiny": {"DiT": ("DiT", dict(hidden_size=16, depth=1, num_heads=2, patch_size=2))}}
LRS = (3e-3, 1e-2, 3e-2)
SEEDS = (0, 1)
CFG_SCALE = 1.5


class PeakLr(NamedTuple):
  lr: jax.Array


def scale_by_peak_lr():
  """Multiplies the updates by the peak lr held in the optimizer state (set per run)."""
  return optax.GradientTransformation(lambda params: PeakLr(jnp.ones((), jnp.float32)),
                                      lambda updates, state, params=None: (
                                          jax.tree.map(lambda u: u * state.lr, updates), state))


def config_for(arch, kwargs, steps, smoke=False):
  c = digits.get_config()
  c.model.name, c.model.kwargs = arch, kwargs
  c.num_steps = steps
  c.optim.min_lr = c.optim.min_lr / c.optim.lr  # the floor relative to the peak, as the recipe's
  c.optim.lr = 1.0  # unit peak: scale_by_peak_lr sets the run's
  c.optim.decay_epochs = steps * c.batch_size / 1437
  if smoke:
    c.optim.warmup_epochs = 0.0
  return c


class Model:
  """One model's compiled train step (and its FLOP count) and sampler, for all its runs."""

  def __init__(self, arch, kwargs, steps, sampling_steps, smoke):
    self.config = c = config_for(arch, kwargs, steps, smoke)
    lr_fn = learning_rate_fn(c, len(digits_data.load_split("train")[0]) // c.batch_size)
    self.tx = optax.chain(make_optimizer(c, lr_fn), scale_by_peak_lr())
    graphdef, params, self.rest = split_model(build_model(c))
    self.graphdef = graphdef
    self.params = int(sum(x.size for x in jax.tree.leaves(params)))
    step = make_train_step(graphdef, self.rest, create_diffusion(""), self.tx, lr_fn, c.ema_decay)
    state = jax.eval_shape(lambda p: init_state(p, self.tx, 0), params)
    n, s = c.batch_size, c.data.image_size
    batch = {"image": jax.ShapeDtypeStruct((n, s, s, 1), jnp.float32), "label": jax.ShapeDtypeStruct((n,), jnp.int32)}
    t = time.time()
    self.step = jax.jit(step, donate_argnums=0).lower(state, batch).compile()
    self.compile_s = time.time() - t
    cost = self.step.cost_analysis()
    self.flops_per_image = float((cost[0] if isinstance(cost, list) else cost)["flops"]) / n
    self.sample = sampling.make_sampler(graphdef, self.rest, image_shape=(s, s, 1), num_classes=c.data.num_classes,
                                        num_sampling_steps=str(sampling_steps), sampler="ddim", cfg_scale=CFG_SCALE,
                                        cfg_channels=1, report_steps=False)

  def train(self, lr, seed, evaluate_at, evaluate):
    """Trains from scratch; evaluate(params, seed) at each step in evaluate_at. The curve."""
    c = self.config.copy_and_resolve_references()
    c.seed = seed
    _, params, _ = split_model(build_model(c))
    state = init_state(params, self.tx, seed)
    state["opt_state"] = (state["opt_state"][0], PeakLr(jnp.asarray(lr, jnp.float32)))
    data = create_train_iterator(c.data, global_batch_size=c.batch_size, seed=seed)
    curve, losses, wall = [], [], 0.0
    for step in range(1, c.num_steps + 1):
      t = time.time()
      state, metrics = self.step(state, next(data))
      losses.append(metrics["loss"])
      wall += time.time() - t
      if step in evaluate_at:
        loss = float(np.mean(jax.device_get(losses)))  # the mean training loss since the last point
        losses = []
        if not np.isfinite(loss):  # diverged: no image to judge at this or any later point
          curve += [{"step": s, "train_flops": s * c.batch_size * self.flops_per_image, "accuracy": 0.0,
                     "fid": float("inf"), "train_loss": loss} for s in sorted(evaluate_at) if s >= step]
          break
        acc, fid = evaluate(state["params"], seed)
        curve.append({"step": step, "train_flops": step * c.batch_size * self.flops_per_image,
                      "accuracy": acc, "fid": fid, "train_loss": loss})
    return curve, wall


def best_lr(rows):
  """Lowest final FID among the seed-0 runs within 2 points of the best final accuracy."""
  top = max(r["curve"][-1]["accuracy"] for r in rows)
  ok = [r for r in rows if r["curve"][-1]["accuracy"] >= top - 0.02]
  return min(ok, key=lambda r: r["curve"][-1]["fid"])["lr"]


def summary(rows):
  """Per (size, model): the lr sweep's final points, the best lr, its seeds' mean curve."""
  out, known = [], {**SIZES, **SMOKE_SIZES}
  order = lambda k: (list(known).index(k[0]), list(known[k[0]]).index(k[1]))  # as in SIZES, however run
  for size, model in sorted(dict.fromkeys((r["size"], r["model"]) for r in rows), key=order):
    mine = [r for r in rows if (r["size"], r["model"]) == (size, model)]
    sweep = [r for r in mine if r["seed"] == SEEDS[0]]
    lr = best_lr(sweep)
    runs = [r for r in mine if r["lr"] == lr]
    curve = [{k: float(np.mean([r["curve"][i][k] for r in runs])) for k in runs[0]["curve"][i]}
             for i in range(len(runs[0]["curve"]))]
    out.append({"size": size, "model": model, "params": mine[0]["params"],
                "train_flops_per_image": mine[0]["train_flops_per_image"], "best_lr": lr,
                "seeds": [r["seed"] for r in runs], "final_per_seed": [r["curve"][-1] for r in runs],
                "sweep": {f"{r['lr']:g}": r["curve"][-1] for r in sweep}, "curve": curve})
  return out


def markdown(summ, meta):
  head = ["size", "model", "params", "train MFLOPs/image", "lr sweep (seed 0): acc / FID", "best lr",
          "final acc (seeds)", "final FID (seeds)", "train TFLOPs"]
  lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for s in summ:
    sweep = ", ".join(f"{lr}: {100 * p['accuracy']:.0f} % / {p['fid']:.1f}" for lr, p in s["sweep"].items())
    finals = s["final_per_seed"]
    accs = ", ".join(f"{100 * f['accuracy']:.0f}" for f in finals)
    fids = ", ".join(f"{f['fid']:.1f}" for f in finals)
    lines.append("| " + " | ".join([
        s["size"], s["model"], f"{s['params']:,}", f"{s['train_flops_per_image'] / 1e6:.1f}", sweep,
        f"{s['best_lr']:g}",
        f"{100 * np.mean([f['accuracy'] for f in finals]):.1f} % ({accs})",
        f"{np.mean([f['fid'] for f in finals]):.1f} ({fids})",
        f"{s['curve'][-1]['train_flops'] / 1e12:.2f}"]) + " |")
  return "\n".join(lines) + (
      f"\n\n{meta['steps']} steps x batch {meta['batch']} per run; accuracy / classifier-feature FID of "
      f"{meta['eval_samples']} raw-weight samples ({meta['sampling_steps']}-step DDIM, cfg {CFG_SCALE:g}) at the "
      f"final step; final columns: the mean over the seeds at the best lr (each seed in brackets).\n")


def count_flops(sizes, args):
  """The study's FLOP count (XLA's cost analysis of the compiled train step) with the code at hand:
  it follows the implementation (the XLA path's layer composition), the trained models do not."""
  rows = []
  for size in args.sizes or list(sizes):
    for label, (arch, kwargs) in sizes[size].items():
      if not args.models or label in args.models:
        model = Model(arch, kwargs, args.steps, args.sampling_steps, args.smoke)
        rows.append({"size": size, "model": label, "params": model.params,
                     "train_flops_per_image": model.flops_per_image})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
  return write_results("quality_equal_compute_flops", {"rows": rows}, args.out)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--sizes", nargs="+", default=None, help=f"a subset of {list(SIZES)}, in this order")
  p.add_argument("--models", nargs="+", default=None, help="a subset of each size's models")
  p.add_argument("--steps", type=int, default=400)
  p.add_argument("--points", type=int, default=3, help="evaluations along each run (the last at its end)")
  p.add_argument("--eval-per-class", type=int, default=10, help="samples per class judged at each point")
  p.add_argument("--sampling-steps", type=int, default=20, help="DDIM steps of the judged samples")
  p.add_argument("--lrs", nargs="+", type=float, default=None, help=f"a subset of the sweep {list(LRS)}")
  p.add_argument("--seeds", nargs="+", type=int, default=None, help=f"a subset of {list(SEEDS)}")
  p.add_argument("--out", default=None)
  p.add_argument("--merge", nargs="+", default=[], help="results of the same study written by other processes "
                 "(a study split with --sizes/--models and --out): their runs join --out's")
  p.add_argument("--report", action="store_true", help="train nothing: the table and plot of the runs at hand")
  p.add_argument("--count-flops", action="store_true",
                 help="train nothing: each model's training FLOPs per image as the current code compiles it (JSON)")
  args = p.parse_args(argv)
  sizes = SMOKE_SIZES if args.smoke else SIZES
  if args.smoke:
    args.steps, args.points, args.eval_per_class, args.sampling_steps = 4, 2, 2, 2
  if min(args.steps, args.points, args.eval_per_class, args.sampling_steps) < 1 or args.points > args.steps:
    p.error("--steps, --points, --eval-per-class and --sampling-steps must be positive, --points <= --steps")
  if unknown := [s for s in args.sizes or [] if s not in sizes]:
    p.error(f"--sizes {unknown}: choose from {list(sizes)}")
  if unknown := [m for m in args.models or [] if all(m not in v for v in sizes.values())]:
    p.error(f"--models {unknown}: choose from {list(dict.fromkeys(m for v in sizes.values() for m in v))}")
  lrs = LRS[:2] if args.smoke else LRS
  if unknown := [x for x in args.lrs or [] if x not in lrs]:
    p.error(f"--lrs {unknown}: choose from {list(lrs)}")
  if unknown := [x for x in args.seeds or [] if x not in SEEDS]:
    p.error(f"--seeds {unknown}: choose from {list(SEEDS)}")
  if args.count_flops:
    return count_flops(sizes, args)
  path = pathlib.Path(args.out or RESULTS / f"quality_equal_compute_{device_name().replace(':', '_')}.json")
  old = json.loads(path.read_text()) if path.exists() else {}
  rows = old.get("rows", [])
  meta = {"steps": args.steps, "batch": digits.get_config().batch_size, "lrs": list(lrs), "seeds": list(SEEDS),
          "eval_samples": 10 * args.eval_per_class, "sampling_steps": args.sampling_steps, "cfg_scale": CFG_SCALE}
  if changed := [k for k in meta if k in old and old[k] != meta[k]]:
    p.error(f"{changed} differ from the study in {path}: rerun with its settings, or write elsewhere with --out")
  key = lambda r: (r["size"], r["model"], r["lr"], r["seed"], r["steps"])
  for other in map(pathlib.Path, args.merge):
    more = json.loads(other.read_text())
    if changed := [k for k in meta if more.get(k) != meta[k]]:
      p.error(f"--merge {other}: its {changed} differ from this study's")
    rows += [r for r in more["rows"] if key(r) not in {key(q) for q in rows}]
  evaluate_at = {round(args.steps * (i + 1) / args.points) for i in range(args.points)}
  labels = np.repeat(np.arange(10), args.eval_per_class)
  judge = None

  def evaluate(model, params, seed):
    samples = model.sample(params, jnp.asarray(labels), jax.random.fold_in(jax.random.key(seed), 1))
    return judge(np.asarray(samples), labels)

  def save():
    os.replace(write_results(path.stem, {**meta, "rows": rows, "summary": summary(rows)}, path.with_suffix(".tmp")),
               path)  # atomic: resumable
    path.with_suffix(".md").write_text(markdown(summary(rows), meta))
    plot_equal_compute(summary(rows), str(path.with_suffix(".png")), device_name())

  for size in [] if args.report else args.sizes or list(sizes):
    for label, (arch, kwargs) in sizes[size].items():
      if args.models and label not in args.models:
        continue
      model = None
      done = lambda: [r for r in rows if (r["size"], r["model"], r["steps"]) == (size, label, args.steps)]
      for lr, seed in [(lr, SEEDS[0]) for lr in args.lrs or lrs] + [(None, s) for s in SEEDS[1:]]:
        if seed not in (args.seeds or SEEDS):
          continue
        lr = lr or best_lr([r for r in done() if r["seed"] == SEEDS[0]])
        if any((r["lr"], r["seed"]) == (lr, seed) for r in done()):
          continue  # resumed: this run is already in the results
        epochs = 1 if args.smoke else digits_eval.CLASSIFIER_EPOCHS
        judge = judge or digits_eval.Judge(digits_eval.train_classifier(epochs))
        model = model or Model(arch, kwargs, args.steps, args.sampling_steps, args.smoke)
        curve, wall = model.train(lr, seed, evaluate_at, lambda params, s: evaluate(model, params, s))
        rows.append({"size": size, "model": label, "arch": arch, "kwargs": kwargs, "lr": lr, "seed": seed,
                     "steps": args.steps, "params": model.params, "train_flops_per_image": model.flops_per_image,
                     "train_wall_s": wall, "compile_s": model.compile_s, "curve": curve})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        save()
  if rows:
    save()  # also redraws the table and the plot of a finished study
  print(markdown(summary(rows), meta))
  return path


if __name__ == "__main__":
  main()
