"""Sample a class-conditional grid from a trained run, with classifier-free guidance.

  python sample.py --cfg-scale 1.5                          # newest checkpoint of runs/digits
  python sample.py --workdir runs/gspn_xl2 --num-sampling-steps 250 --seed 1
  python sample.py --ckpt runs/digits/checkpoints/800 --class-labels 3,1,4 --npz
  python sample.py --model DiT-XL/2 --image-size 256 --ckpt DiT-XL-2-256x256.pt   # DiT's own command

Defaults come from the run's stored config (config.sample); flags override them. With an
official DiT checkpoint (.pt, or its .npz) the command is DiT's sample.py: its flags
(--model, --image-size, --vae ema|mse, --num-classes, --cfg-scale, --num-sampling-steps,
--seed, --ckpt) and defaults (cfg 4.0, 250 steps, its eight classes), the weights loaded
through gspn_jax.convert. Bad flags are one line on stderr and exit code 2, before any work.
"""

import argparse
import pathlib

import numpy as np

from gspn_jax import errors, generate, sampling, validation
from gspn_jax.transport import sampling as objective_sampling


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--workdir", default="runs/digits", help="the training run's --workdir")
  p.add_argument("--ckpt", default=None, help="a checkpoint step directory, <workdir>/checkpoints/<step>, or an "
                                              "official DiT checkpoint (.pt)")
  p.add_argument("--cfg-scale", type=float, default=None, help="guidance scale >= 1; 1 = no guidance")
  p.add_argument("--num-sampling-steps", default=None, help='respaced steps, at least 2: e.g. 250 or "ddim50"')
  p.add_argument("--sampler", choices=("ddpm", "ddim", "dpm++", "sde-dpm++", "euler", "heun", "dopri5", "sde"),
                 default=None, help="DDPM runs: ddpm|ddim|dpm++|sde-dpm++; flow runs: euler|heun|dopri5|sde (default: "
                                    "the config's)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--class-labels", default=None, help="comma-separated class indices (one grid column each)")
  p.add_argument("--per-class", type=int, default=None, help="samples per class (grid rows)")
  p.add_argument("--out", default=None, help="PNG path (default: <workdir>/sample_<step>.png; DiT: sample.png)")
  p.add_argument("--npz", action="store_true", help="also write the uint8 samples and labels as .npz")
  p.add_argument("--vae", default=None, help="latent models: diffusers VAE folder or hub id (default: the "
                                             "config's); with a DiT checkpoint also DiT's ema|mse (default ema)")
  objective_sampling.add_dpm_flags(p)
  dit = p.add_argument_group("DiT's sample.py flags, with an official DiT checkpoint as --ckpt")
  dit.add_argument("--model", default=None, help="the DiT size, e.g. DiT-XL/2 (default)")
  dit.add_argument("--image-size", type=int, default=None, choices=(256, 512), help="default 256")
  dit.add_argument("--num-classes", type=int, default=None, help="1000, the only value DiT's checkpoints have")
  errors.add_verbosity_flag(p)
  return p.parse_args(argv)


def check_args(args):
  """Every flag checked before anything is loaded; returns the class labels (or None)."""
  official = generate.is_torch_checkpoint(args.ckpt)
  if not official and (args.model or args.image_size or args.num_classes):
    given = [f for f, v in (("--model", args.model), ("--image-size", args.image_size),
                            ("--num-classes", args.num_classes)) if v]
    raise errors.UsageError(f"{', '.join(given)} are DiT's flags, for an official DiT checkpoint: pass it as "
                            "--ckpt DiT-XL-2-256x256.pt (a training run's size comes from its config)")
  if official and not pathlib.Path(args.ckpt).is_file():
    raise errors.UsageError(f"--ckpt {args.ckpt}: no such file (DiT's checkpoints: "
                            "https://dl.fbaipublicfiles.com/DiT/models/DiT-XL-2-256x256.pt)")
  if official and args.num_classes not in (None, 1000):
    raise errors.UsageError(f"--num-classes {args.num_classes}: DiT's checkpoints have 1000 classes")
  validation.check_sampling(args.cfg_scale, args.num_sampling_steps)
  if args.dpm_spacing or args.dpm_thresholding:
    objective_sampling.dpm_options(args.sampler, args.dpm_spacing, args.dpm_thresholding)
  try:
    labels = [int(c) for c in args.class_labels.split(",")] if args.class_labels else None
  except ValueError:
    raise errors.UsageError(f"--class-labels {args.class_labels}: expected comma-separated class indices, "
                            "e.g. 207,360,387") from None
  if args.per_class is not None and args.per_class < 1:
    raise errors.UsageError(f"--per-class {args.per_class}: must be at least 1")
  if args.out:
    validation.check_output(args.out)
  elif official:
    validation.check_output("sample.png")
  else:
    validation.check_output(pathlib.Path(args.workdir) / "sample.png", flag="--workdir")
  return labels


def main(argv=None):
  args = parse_args(argv)
  errors.quiet_libraries(args.verbosity >= 1)
  with errors.one_line_errors(args.verbosity >= 1):
    labels = check_args(args)
    if generate.is_torch_checkpoint(args.ckpt):
      images, labels, settings = generate.sample_official_dit(
          args.ckpt, model=args.model or "DiT-XL/2", image_size=args.image_size or 256, vae=args.vae or "ema",
          class_labels=labels, per_class=args.per_class or 1,
          cfg_scale=4.0 if args.cfg_scale is None else args.cfg_scale,
          num_sampling_steps=args.num_sampling_steps or 250, sampler=args.sampler or "ddpm", seed=args.seed,
          dpm_spacing=args.dpm_spacing, dpm_thresholding=args.dpm_thresholding)
      out = pathlib.Path(args.out or "sample.png")
    else:
      workdir, step = generate.resolve_checkpoint(args.workdir, args.ckpt)
      images, labels, settings = generate.sample_run(
          workdir, step=step, class_labels=labels, per_class=args.per_class, cfg_scale=args.cfg_scale,
          num_sampling_steps=args.num_sampling_steps, sampler=args.sampler, seed=args.seed, vae=args.vae,
          dpm_spacing=args.dpm_spacing, dpm_thresholding=args.dpm_thresholding)
      out = pathlib.Path(args.out or workdir / f"sample_{settings['step']}.png")
    columns = len(set(labels.tolist()))
    small = images.shape[1] < 64  # upscale tiny images so the grid can be looked at
    sampling.save_png(sampling.make_grid(images, nrow=columns), out, upscale=8 if small else 1)
    if args.npz:
      np.savez(out.with_suffix(".npz"), arr_0=images, labels=labels)
    print(f"wrote {out}{' and ' + str(out.with_suffix('.npz')) if args.npz else ''} ({len(images)} samples, "
          f"{settings})")
  return out


if __name__ == "__main__":
  main()
