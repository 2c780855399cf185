"""How much a trained model uses its class label, per noise level and per block.

Trains one model of bench/equal_compute.py's study (same recipe, lr, steps and judging) and,
on fixed noised held-out digits x_t = q_sample(x_0, t, noise), measures per t:
  label_effect  ||eps(x_t,t,y) - eps(x_t,t,null)|| / ||eps(x_t,t,y)||  (what cfg amplifies)
  label_swap    ||eps(x_t,t,y) - eps(x_t,t,y')|| / ||eps(x_t,t,y)||    (y' = y + 5 mod 10)
  mse_y, mse_null: the denoising error with the label and without (the label's worth in loss)
and per block (mean over t): the rms of its adaLN modulation and of its residual update, and
the relative change of each when the label is replaced by the null label. Samples are judged
(accuracy, feature FID) at several cfg scales, so the label's size can be related to its use.

  nice -n 10 python -m bench.label_use --seeds 0 1          # every run of RUNS (XS/1, XS/2), two seeds
  python -m bench.label_use --smoke --out /tmp/l.json        # a tiny DiT, a few steps (CI)

Each run is appended to the JSON as it finishes; rerunning the same command skips it.
"""

import argparse
import json
import os
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from bench import equal_compute
from bench.common import RESULTS, device_name, write_results
from bench.probes import gspn_block_forward
from gspn_jax import digits_eval, sampling
from gspn_jax.data import digits as digits_data
from gspn_jax.diffusion import create_diffusion

# (size, model of equal_compute.SIZES) -> the study's best peak lr at 400 steps
RUNS = {("XS/1", "GSPN-adaln-norm"): 1e-2, ("XS/1", "DiT"): 3e-2,
        ("XS/2", "GSPN-adaln-norm"): 3e-2, ("XS/2", "DiT"): 3e-2, ("XS/1", "GSPN-adaln-norm-cond"): 1e-2,
        ("XS/1", "GSPN-adaln-norm-pos"): 3e-2, ("XS/1", "DiT-nopos"): 3e-2}
SMOKE_RUNS = {("tiny", "DiT"): 1e-2}
TS = (50, 200, 400, 600, 800, 950)
CFG_SCALES = (1.0, 1.5, 3.0, 5.0)
PROBE_IMAGES = 64


def norm(a):
  return jnp.sqrt(jnp.sum(jnp.square(a), axis=tuple(range(1, a.ndim))))


def rel(a, b):
  """Mean over the batch of ||a - b|| / ||a||."""
  return float(jnp.mean(norm(a - b) / jnp.maximum(norm(a), 1e-12)))


def blocks_forward(model, x, t, y):
  """Per block: (adaLN modulation (B, k*D) or None, residual update (B, h, w, D)). Matches model(x, t, y)."""
  c = model.t_embedder(t) + model.y_embedder(y)
  out = []
  if hasattr(model, "blocks"):  # DiT
    h = model.x_embedder(x) + model.pos_embed[...]
    for blk in model.blocks:
      new = blk(h, c)
      out.append((blk.adaLN_modulation(nnx.silu(c)), new - h))
      h = new
    return c, out
  hidden = model.x_embedder(x) + c[:, None, None, :]
  if model.pos_embed is not None:
    hidden = hidden + model.pos_embed[...]
  residual, skips = None, []
  kinds = [(b, "in") for b in model.in_blocks] + [(model.mid_block, "mid")] + [(b, "out") for b in model.out_blocks]
  for blk, kind in kinds:
    hidden, residual, _ = gspn_block_forward(blk, hidden, residual, skips.pop() if kind == "out" else None, c)
    if kind == "in":
      skips.append(hidden)
    mod = None if blk.adaLN_modulation is None else blk.adaLN_modulation(nnx.silu(c))
    out.append((mod, hidden))
  return c, out


def probe(graphdef, params, rest, num_classes, ts, n):
  """The label-use statistics of a trained model on n held-out digits."""
  model = nnx.merge(graphdef, params, rest)
  x0, y = (jnp.asarray(a[:n]) for a in digits_data.load_split("test"))
  diffusion = create_diffusion("")
  null, swap = jnp.full_like(y, num_classes), (y + 5) % 10
  eps = jax.jit(lambda x, t, y: model(x, t, y)[..., :x.shape[-1]])
  fwd = jax.jit(lambda x, t, y: blocks_forward(model, x, t, y))
  per_t, per_block = [], []
  for i, t in enumerate(ts):
    noise = jax.random.normal(jax.random.key(i), x0.shape)
    tt = jnp.full((n,), t, jnp.int32)
    xt = diffusion.q_sample(x0, tt, noise)
    e_y, e_null, e_swap = eps(xt, tt, y), eps(xt, tt, null), eps(xt, tt, swap)
    c_y, b_y = fwd(xt, tt, y)
    c_null, b_null = fwd(xt, tt, null)
    per_t.append({"t": t, "label_effect": rel(e_y, e_null), "label_swap": rel(e_y, e_swap),
                  "mse_y": float(jnp.mean(jnp.square(e_y - noise))),
                  "mse_null": float(jnp.mean(jnp.square(e_null - noise))), "c_label_share": rel(c_y, c_null)})
    per_block.append([{"mod_rms": None if my is None else float(jnp.sqrt(jnp.mean(jnp.square(my)))),
                       "mod_label_change": None if my is None else rel(my, mn),
                       "update_rms": float(jnp.sqrt(jnp.mean(jnp.square(uy)))), "update_label_change": rel(uy, un)}
                      for (my, uy), (mn, un) in zip(b_y, b_null)])
  mean = lambda k, b: None if per_block[0][b][k] is None else float(np.mean([p[b][k] for p in per_block]))
  blocks = [{k: mean(k, b) for k in per_block[0][b]} for b in range(len(per_block[0]))]
  return per_t, blocks


def run(model, size, label, lr, seed, args, judge):
  c = model.config
  labels = jnp.asarray(np.repeat(np.arange(10), args.eval_per_class))
  trained = {}

  def evaluate(params, s):
    trained["params"] = params
    return 0.0, 0.0  # judged below, at each cfg scale

  curve, wall = model.train(lr, seed, {args.steps}, evaluate)
  params = trained["params"]
  judged = []
  for scale in args.cfg_scales:
    sample = sampling.make_sampler(model.graphdef, model.rest, image_shape=(c.data.image_size,) * 2 + (1,),
                                   num_classes=c.data.num_classes, num_sampling_steps=str(args.sampling_steps),
                                   sampler="ddim", cfg_scale=scale, cfg_channels=1, report_steps=False)
    x = sample(params, labels, jax.random.fold_in(jax.random.key(seed), 1))  # the study's sampling key
    acc, fid = judge(np.asarray(x), np.asarray(labels))
    judged.append({"cfg_scale": scale, "accuracy": acc, "fid": fid})
  per_t, blocks = probe(model.graphdef, params, model.rest, c.data.num_classes, args.ts, args.probe_images)
  return {"size": size, "model": label, "arch": c.model.name, "kwargs": dict(c.model.kwargs), "lr": lr, "seed": seed,
          "steps": args.steps, "train_loss": curve[-1]["train_loss"], "train_wall_s": wall, "judged": judged,
          "per_t": per_t, "blocks": blocks}


def markdown(rows):
  ts = ", ".join(str(p["t"]) for p in rows[0]["per_t"])
  lines = [f"| size | model | seed | train loss (run mean) | label_effect per t ({ts})"
           " | mse gain from label (mean over t) | acc / FID per cfg scale | update label change per block |",
           "|" + "---|" * 8]
  for r in rows:
    gain = np.mean([p["mse_null"] - p["mse_y"] for p in r["per_t"]]) / np.mean([p["mse_y"] for p in r["per_t"]])
    lines.append("| " + " | ".join([
        r["size"], r["model"], str(r["seed"]), f"{r['train_loss']:.4f}",
        ", ".join(f"{p['label_effect']:.3f}" for p in r["per_t"]), f"{100 * gain:.1f} %",
        ", ".join(f"{j['cfg_scale']:g}: {100 * j['accuracy']:.0f} % / {j['fid']:.1f}" for j in r["judged"]),
        ", ".join(f"{b['update_label_change']:.2f}" for b in r["blocks"])]) + " |")
  return "\n".join(lines) + "\n"


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--runs", nargs="+", default=None, help="a subset of SIZE:MODEL, e.g. XS/1:DiT")
  p.add_argument("--seeds", nargs="+", type=int, default=[0])
  p.add_argument("--steps", type=int, default=400)
  p.add_argument("--eval-per-class", type=int, default=10)
  p.add_argument("--sampling-steps", type=int, default=20)
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  runs = SMOKE_RUNS if args.smoke else RUNS
  args.ts, args.cfg_scales, args.probe_images = TS, CFG_SCALES, PROBE_IMAGES
  if args.smoke:
    args.steps, args.eval_per_class, args.sampling_steps = 4, 2, 2
    args.ts, args.cfg_scales, args.probe_images = (500,), (1.0, 1.5), 8
  if min(args.steps, args.eval_per_class, args.sampling_steps) < 1:
    p.error("--steps, --eval-per-class and --sampling-steps must be positive")
  names = [f"{s}:{m}" for s, m in runs]
  if unknown := [r for r in args.runs or [] if r not in names]:
    p.error(f"--runs {unknown}: choose from {names}")
  if bad := [s for s in args.seeds if s < 0]:
    p.error(f"--seeds {bad}: seeds are non-negative integers")
  path = pathlib.Path(args.out or RESULTS / f"label_use_{device_name().replace(':', '_')}.json")
  rows = json.loads(path.read_text())["rows"] if path.exists() else []
  judge = None
  for (size, label), lr in runs.items():
    if args.runs and f"{size}:{label}" not in args.runs:
      continue
    model = None
    for seed in args.seeds:
      if any((r["size"], r["model"], r["seed"], r["steps"]) == (size, label, seed, args.steps) for r in rows):
        continue  # resumed
      judge = judge or digits_eval.Judge(digits_eval.train_classifier(1 if args.smoke else
                                                                      digits_eval.CLASSIFIER_EPOCHS))
      arch, kwargs = (equal_compute.SMOKE_SIZES if args.smoke else equal_compute.SIZES)[size][label]
      model = model or equal_compute.Model(arch, kwargs, args.steps, args.sampling_steps, args.smoke)
      rows.append(run(model, size, label, lr, seed, args, judge))
      print(json.dumps({k: rows[-1][k] for k in ("size", "model", "seed", "train_loss", "judged")}), file=sys.stderr,
            flush=True)
      os.replace(write_results(path.stem, {"rows": rows}, path.with_suffix(".tmp")), path)  # atomic: resumable
      path.with_suffix(".md").write_text(markdown(rows))
  if rows:
    print(markdown(rows))
  return path


if __name__ == "__main__":
  main()
