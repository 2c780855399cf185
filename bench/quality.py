"""Quality at equal compute on the embedded digits: a GSPN-S/2- and a DiT-S/2-sized model
trained with the same recipe and budget (steps x batch), judged like `make demo`.

  python -m bench.quality                 # S/2 sizes; JSON, a markdown table and sample grids in bench/results/
  python -m bench.quality --smoke         # tiny models, a few steps (CI)
  python -m bench.quality --steps 1000 --eval-per-class 20 --sampling-steps 50   # a shorter run
"""

import argparse
import pathlib
import sys
import tempfile
import time

import jax

from bench.common import write_results
from configs import digits
from gspn_jax import train

# No stochastic depth for either model (DiT has none; GSPN's default is 0.1), as the digits default.
SIZES = {"GSPN-S/2": ("GSPN", dict(hidden_size=368, depth=24, patch_size=2, drop_path_rate=0.0)),
         "DiT-S/2": ("DiT", dict(hidden_size=384, depth=12, num_heads=6, patch_size=2))}
TINY = {"GSPN-tiny": ("GSPN", dict(hidden_size=32, depth=2, patch_size=2, drop_path_rate=0.0)),
        "DiT-tiny": ("DiT", dict(hidden_size=32, depth=2, num_heads=2, patch_size=2))}


def config_for(arch, kwargs, steps, lr, smoke, eval_per_class=50, sampling_steps=100):
  c = digits.get_config()
  c.model.name, c.model.kwargs = arch, kwargs
  c.num_steps = steps
  c.optim.lr = lr
  c.optim.decay_epochs = steps * c.batch_size / 1437
  c.sample_every = steps  # one grid, of the final state
  c.ckpt_every = steps
  c.eval.samples_per_class, c.sample.num_sampling_steps = eval_per_class, str(sampling_steps)
  if smoke:
    c.optim.warmup_epochs = 0.0
    c.sample.grid_per_class = 1
  return c


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--smoke", action="store_true")
  p.add_argument("--steps", type=int, default=3000)
  p.add_argument("--lr", type=float, default=2e-3, help="the same for both models")
  p.add_argument("--eval-per-class", type=int, default=50, help="samples per class judged (as make demo)")
  p.add_argument("--sampling-steps", type=int, default=100, help="DDPM steps of the judged samples")
  p.add_argument("--out", default=None)
  args = p.parse_args(argv)
  models, steps = (TINY, 4) if args.smoke else (SIZES, args.steps)
  if args.smoke:
    args.eval_per_class, args.sampling_steps = 4, 4
  rows, grids = [], {}
  for label, (arch, kwargs) in models.items():
    with tempfile.TemporaryDirectory() as workdir:
      t = time.time()
      config = config_for(arch, kwargs, steps, args.lr, args.smoke, args.eval_per_class, args.sampling_steps)
      state, report = train.train_and_evaluate(config, workdir)
      params = sum(x.size for x in jax.tree.leaves(state["params"]))
      grids[label] = (pathlib.Path(workdir) / "samples" / f"step_{steps:08d}.png").read_bytes()
    rows.append({"model": label, "params": int(params), "steps": steps, "batch": 32, "lr": args.lr,
                 "eval_samples": 10 * args.eval_per_class, "sampling_steps": args.sampling_steps,
                 "wall_s": time.time() - t, **report})
    print(rows[-1], file=sys.stderr)
  path = write_results("quality_smoke" if args.smoke else "quality", {"rows": rows}, args.out)
  table = ["| model | params | steps x batch | judged samples (DDPM steps) | conditional accuracy | "
           "classifier-feature FID (floor) | wall time |", "|---|---|---|---|---|---|---|"]
  table += [f"| {r['model']} | {r['params']:,} | {r['steps']} x {r['batch']} | {r['eval_samples']} "
            f"({r['sampling_steps']}) | {100 * r['conditional_accuracy']:.1f} % | {r['fid_samples_vs_test']:.1f} "
            f"({r['fid_train_vs_test_floor']:.1f}) | {r['wall_s']:.0f} s |" for r in rows]
  pathlib.Path(path).with_suffix(".md").write_text("\n".join(table) + "\n")
  for label, png in grids.items():  # the final cfg sample grid of each model, one class per column
    pathlib.Path(path).with_name(f"{pathlib.Path(path).stem}_{label.replace('/', '_')}.png").write_bytes(png)
  print("\n".join(table))
  return path


if __name__ == "__main__":
  main()
