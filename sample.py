"""Sample a class-conditional grid from a trained run, with classifier-free guidance.

  python sample.py --cfg-scale 1.5                          # newest checkpoint of runs/digits
  python sample.py --workdir runs/gspn_xl2 --num-sampling-steps 250 --seed 1
  python sample.py --ckpt runs/digits/checkpoints/800 --class-labels 3,1,4 --npz

Defaults come from the run's stored config (config.sample); flags override them.
"""

import argparse
import pathlib

import numpy as np

from gspn_jax import generate, sampling


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default="runs/digits", help="the training run's --workdir")
  p.add_argument("--ckpt", default=None, help="a checkpoint step directory, <workdir>/checkpoints/<step>")
  p.add_argument("--cfg-scale", type=float, default=None, help="guidance scale; 1 = no guidance")
  p.add_argument("--num-sampling-steps", default=None, help='respaced steps, e.g. 250 or "ddim50"')
  p.add_argument("--sampler", choices=("ddpm", "ddim", "dpm++", "euler", "heun", "dopri5", "sde"), default=None,
                 help="DDPM runs: ddpm|ddim|dpm++; flow runs: euler|heun|dopri5|sde (default: the config's)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--class-labels", default=None, help="comma-separated class indices (one grid column each)")
  p.add_argument("--per-class", type=int, default=None, help="samples per class (grid rows)")
  p.add_argument("--out", default=None, help="PNG path (default: <workdir>/sample_<step>.png)")
  p.add_argument("--npz", action="store_true", help="also write the uint8 samples and labels as .npz")
  p.add_argument("--vae", default=None, help="latent runs: diffusers VAE folder or hub id (default: the config's)")
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  workdir, step = generate.resolve_checkpoint(args.workdir, args.ckpt)
  labels = [int(c) for c in args.class_labels.split(",")] if args.class_labels else None
  images, labels, settings = generate.sample_run(
      workdir, step=step, class_labels=labels, per_class=args.per_class, cfg_scale=args.cfg_scale,
      num_sampling_steps=args.num_sampling_steps, sampler=args.sampler, seed=args.seed, vae=args.vae)
  out = pathlib.Path(args.out or workdir / f"sample_{settings['step']}.png")
  columns = len(set(labels.tolist()))
  small = images.shape[1] < 64  # upscale tiny images so the grid can be looked at
  sampling.save_png(sampling.make_grid(images, nrow=columns), out, upscale=8 if small else 1)
  if args.npz:
    np.savez(out.with_suffix(".npz"), arr_0=images, labels=labels)
  print(f"wrote {out} ({len(images)} samples, {settings})")
  return out


if __name__ == "__main__":
  main()
