"""Quality against sampling cost on the embedded digits: DDPM vs flow matching, GSPN and DiT.

  python -m bench.flow                   # demo-size models, 3,000 steps each; JSON, table, plot in bench/results/
  python -m bench.flow --smoke           # tiny models, a few steps (CI)
  nice -n 10 python -m bench.flow --steps 1500 --eval-per-class 20 --nfe 4,10,20,50,250 --workdir runs/bench_flow

With --workdir the models train (and resume) there and every finished evaluation is written
to the JSON at once: the same command rerun after an interruption skips what is done.
--models, --objectives, --samplers and --nfe pick a part of the study (e.g. the rows of the
targets first); parts run one after another into the same JSON add up.

Each backbone is trained twice with the digits recipe (configs/digits.py) and equal steps:
with DiT's diffusion (objective "ddpm") and with SiT's linear-path velocity objective
("flow"). Each model is then sampled at every NFE (model evaluations per image; guidance
doubles the batch, not the count) with cfg 1.5: DDPM models by the ancestral sampler
(respaced), DDIM, DPM-Solver++(2M) (also with static thresholding, and with time-uniform
steps) and SDE-DPM-Solver++(2M), flow models by Euler, Heun (NFE / 2 steps) and the
Euler-Maruyama SDE (SiT's default diffusion and last step); and judged like `make demo`
(conditional accuracy and feature FID against held-out real digits).
"""

import argparse
import functools
import json
import pathlib
import sys
import tempfile
import time

import jax
import numpy as np

from bench.common import RESULTS, device_name, write_results
from configs import digits
from gspn_jax import digits_eval, sampling, train
from gspn_jax.train_state import build_model, split_model
from gspn_jax.transport import sampling as objective_sampling

# The demo's GSPN with the released additive conditioning (213,540 parameters) and a DiT of the same width and depth (478,600).
MODELS = {"GSPN": ("GSPN", dict(hidden_size=64, depth=6, patch_size=2, drop_path_rate=0.0)),
          "DiT": ("DiT", dict(hidden_size=64, depth=6, num_heads=4, patch_size=2))}
TINY = {"DiT-tiny": ("DiT", dict(hidden_size=16, depth=2, num_heads=2, patch_size=2))}  # --smoke: every code path
SMOKE_SAMPLERS = "ddpm,dpm++ static,sde-dpm++,euler,heun,sde"
SAMPLERS = {"ddpm": ("ddpm", "ddim", "dpm++", "sde-dpm++", "dpm++ static", "dpm++ time_uniform"),
            "flow": ("euler", "heun", "sde")}
ALL_SAMPLERS = SAMPLERS["ddpm"] + SAMPLERS["flow"]
# DPM-Solver++ variants: (sampler, its options): x0 clipped to [-1, 1]; steps uniform in t instead of logSNR.
VARIANTS = {"dpm++ static": ("dpm++", {"dpm_thresholding": "static"}),
            "dpm++ time_uniform": ("dpm++", {"dpm_spacing": "time_uniform"})}


def config_for(arch, kwargs, objective, steps):
  c = digits.get_config()
  c.model.name, c.model.kwargs = arch, kwargs
  c.objective = objective
  c.sample.sampler = "heun" if objective == "flow" else "ddpm"
  c.num_steps, c.ckpt_every, c.sample_every = steps, steps, 0
  c.optim.decay_epochs = steps * c.batch_size / 1437
  c.optim.warmup_epochs = min(c.optim.warmup_epochs, c.optim.decay_epochs / 2)
  c.eval.enabled = False
  return c


def steps_for(sampler, nfe):
  """The sampler's step count for nfe model evaluations, or None where it has none."""
  if sampler == "heun":
    return nfe // 2 if nfe % 2 == 0 else None
  if sampler == "sde":
    return nfe if nfe >= 2 else None
  return nfe


def evaluate(config, state, samplers, nfes, per_class, classifier, done, save):
  """Judges every (sampler, NFE) not in done; save(row) after each."""
  graphdef, _, rest = split_model(build_model(config))
  labels = np.repeat(np.arange(10), per_class)
  for label in samplers:
    sampler, options = VARIANTS.get(label, (label, {}))
    for nfe in nfes:
      steps = steps_for(sampler, nfe)
      if steps is None or (label, nfe) in done:
        continue
      fn = objective_sampling.make_sampler(
          graphdef, rest, sampler=sampler, **options, image_shape=(8, 8, 1), num_classes=10, num_sampling_steps=str(steps),
          cfg_scale=config.sample.cfg_scale, cfg_channels=1, **objective_sampling.objective_kwargs(config))
      t = time.time()
      samples = sampling.sample_in_batches(fn, state["ema"], labels, jax.random.key(1), batch_size=len(labels))
      report = digits_eval.evaluate_samples(samples, labels, classifier())
      save({"sampler": label, "nfe": nfe, "steps": steps, "sample_s": time.time() - t, **report})
      print(config.model.name, config.objective, label, nfe, f"{report['conditional_accuracy']:.3f}",
            f"{report['fid_samples_vs_test']:.1f}", file=sys.stderr)


def plot(rows, path):
  from bench.plots import plt, save

  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
  for ax, key, title in ((axes[0], "conditional_accuracy", "conditional accuracy"),
                         (axes[1], "fid_samples_vs_test", "classifier-feature FID")):
    for name in sorted({(r["model"], r["objective"], r["sampler"]) for r in rows}):
      pts = [(r["nfe"], r[key]) for r in rows if (r["model"], r["objective"], r["sampler"]) == name]
      color = plt.cm.tab10(ALL_SAMPLERS.index(name[2]) % 10)  # one colour a sampler, one line style a backbone
      ax.plot(*zip(*pts), marker="o", label=" ".join(name), color=color,
              linestyle="-" if name[0].startswith("GSPN") else "--")
    ax.set_xscale("log")
    ax.set_xlabel("model evaluations per sample (NFE)")
    ax.set_title(title)
  axes[1].set_yscale("log")
  axes[0].legend(fontsize=7)
  save(fig, path)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--steps", type=int, default=3000, help="training steps of every model (batch 32)")
  p.add_argument("--eval-per-class", type=int, default=50, help="judged samples per class (as make demo)")
  p.add_argument("--nfe", default="4,10,20,50,100,250", help="model evaluations per sample")
  p.add_argument("--models", default="GSPN,DiT")
  p.add_argument("--objectives", default="ddpm,flow")
  p.add_argument("--samplers", default=None, help="a subset of the objectives' samplers (default: all)")
  p.add_argument("--workdir", default=None, help="train and resume here (default: a temporary directory)")
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  nfes = [int(n) for n in args.nfe.split(",")]
  unknown = set(args.objectives.split(",")) - set(SAMPLERS)
  unknown |= set((args.samplers or "").split(",")) - {"", *ALL_SAMPLERS}
  if unknown:
    raise ValueError(f"unknown objective or sampler {sorted(unknown)}; use {SAMPLERS}")
  if min(nfes) < 2:
    raise ValueError(f"--nfe {args.nfe}: every sampler needs at least 2 evaluations")
  models = TINY if args.smoke else {k: MODELS[k] for k in args.models.split(",")}
  steps, per_class = (3, 2) if args.smoke else (args.steps, args.eval_per_class)
  if args.smoke:
    nfes, args.samplers = [4], args.samplers or SMOKE_SAMPLERS
  name = "flow_smoke" if args.smoke else "flow"
  path = pathlib.Path(args.out or RESULTS / f"{name}_{device_name().replace(':', '_')}.json")
  rows = json.loads(path.read_text())["rows"] if args.workdir and path.exists() else []
  rows = [r for r in rows if r["train_steps"] == steps and r["num_samples"] == 10 * per_class]
  classifier = functools.cache(digits_eval.train_classifier)  # trained once, when first needed

  def save(row):
    rows.append(row)
    tmp = write_results(name, {"rows": rows, "argv": sys.argv[1:]}, f"{path}.tmp")
    tmp.replace(path)  # atomic: an interrupted write leaves the last complete file

  for label, (arch, kwargs) in models.items():
    for objective in args.objectives.split(","):
      config = config_for(arch, kwargs, objective, steps)
      samplers = [s for s in SAMPLERS[objective] if args.samplers is None or s in args.samplers.split(",")]
      done = {(r["sampler"], r["nfe"]) for r in rows if (r["model"], r["objective"]) == (label, objective)}
      if all((s, n) in done or steps_for(s, n) is None for s in samplers for n in nfes):
        continue
      with tempfile.TemporaryDirectory() as tmp:
        workdir = pathlib.Path(args.workdir or tmp) / f"{label}_{objective}"
        t = time.time()
        state, _ = train.train_and_evaluate(config, workdir)  # resumes from workdir's checkpoint
        meta = {"model": label, "objective": objective, "train_steps": steps, "batch": config.batch_size,
                "train_s": time.time() - t}
        evaluate(config, state, samplers, nfes, per_class, classifier, done, lambda r: save({**meta, **r}))
  nfe_cols = sorted({r["nfe"] for r in rows})
  table = [f"| model | objective | sampler | {' | '.join(f'NFE {n}' for n in nfe_cols)} |",
           "|---|---|---|" + "---|" * len(nfe_cols)]
  for name in dict.fromkeys((r["model"], r["objective"], r["sampler"]) for r in rows):
    cells = {r["nfe"]: r for r in rows if (r["model"], r["objective"], r["sampler"]) == name}
    table.append(f"| {' | '.join(name)} | " + " | ".join(
        f"{100 * cells[n]['conditional_accuracy']:.1f} % / {cells[n]['fid_samples_vs_test']:.1f}" if n in cells
        else "-" for n in nfe_cols) + " |")
  table.append(f"\nEach cell: conditional accuracy / classifier-feature FID (floor "
               f"{rows[0]['fid_train_vs_test_floor']:.1f}); {steps} training steps x batch 32, "
               f"{10 * per_class} judged samples, cfg 1.5.")
  path.with_suffix(".md").write_text("\n".join(table) + "\n")
  plot(rows, path.with_suffix(".png"))
  print("\n".join(table))
  return path


if __name__ == "__main__":
  main()
