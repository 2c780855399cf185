"""Sample batches for FID-50K with DiT's sample_ddp conventions, resumably.

  python -m fid.generate --workdir runs/gspn_xl2 --out fid_runs/gspn_xl2 --num-samples 50000
  python -m fid.generate --dit-ckpt DiT-XL-2-256x256.pt --model DiT-XL/2 --out fid_runs/dit_xl2

250-step ancestral sampling, classifier-free guidance 1.5 on the first 3 channels,
uniformly random labels, decoding and uint8 quantisation (clamp(127.5 x + 128) cast
to uint8), all written as one ADM batch <out>/samples.npz (arr_0, labels).

The samples are made in chunks of one global batch. Chunk i's labels and noise depend
only on (seed, i), so the result does not depend on the number of devices or hosts;
each finished chunk is written atomically to <out>/chunks/, and a restarted command
skips the chunks on disk: nothing is generated twice or lost. <out>/settings.json records
the settings and the checkpoint step the chunks come from; a restart that would resume
them with other settings or another checkpoint (the run trained on) is refused, and
--ckpt pins the step.
"""

import argparse
import json
import pathlib

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from gspn_jax import errors, sampling, validation
from gspn_jax.progress import Progress
from gspn_jax.transport import sampling as objective_sampling


def chunk_labels(seed, chunk, size, num_classes):
  return np.asarray(jax.random.randint(jax.random.fold_in(jax.random.key(seed), 2 * chunk), (size,), 0,
                                       num_classes), np.int32)


def chunk_key(seed, chunk):
  return jax.random.fold_in(jax.random.key(seed), 2 * chunk + 1)


def generate(sample_fn, params, decode, *, out, num_samples, global_batch, num_classes, seed=0):
  """Runs sample_fn over all missing chunks; returns the path of the assembled batch.

  sample_fn(params, labels, key) -> model-space samples; decode(samples) -> [-1, 1] images.
  """
  out = pathlib.Path(out)
  chunks_dir = out / "chunks"
  num_chunks = -(-num_samples // global_batch)
  mesh = Mesh(np.array(jax.devices()), ("data",))
  if global_batch % mesh.size:
    raise ValueError(f"global batch {global_batch} is not divisible by {mesh.size} devices")
  data = NamedSharding(mesh, P("data"))
  params = jax.device_put(params, NamedSharding(mesh, P()))
  is_main = jax.process_index() == 0
  if is_main:
    chunks_dir.mkdir(parents=True, exist_ok=True)
  done = {int(p.stem.split("_")[1]) for p in chunks_dir.glob("chunk_*.npz")} if chunks_dir.exists() else set()
  done = set(multihost_utils.broadcast_one_to_all(np.isin(np.arange(num_chunks), list(done))).nonzero()[0])
  bar = Progress(num_chunks, initial=len(done), unit="chunk", enabled=is_main,
                 desc=f"{num_samples} samples, {global_batch} per chunk")
  for i in range(num_chunks):
    if i in done:
      continue
    labels = chunk_labels(seed, i, global_batch, num_classes)
    samples = sample_fn(params, jax.device_put(labels, data), chunk_key(seed, i))
    images = sampling.to_uint8(decode(samples))
    images = multihost_utils.process_allgather(images, tiled=True)
    if is_main:
      _save_atomic(chunks_dir / f"chunk_{i:06d}.npz", images=np.asarray(images), labels=labels)
    bar.update(1)
  bar.close()
  multihost_utils.sync_global_devices("fid.generate: all chunks written")
  final = out / "samples.npz"
  if is_main:
    parts = [np.load(chunks_dir / f"chunk_{i:06d}.npz") for i in range(num_chunks)]
    images = np.concatenate([p["images"] for p in parts])[:num_samples]
    labels = np.concatenate([p["labels"] for p in parts])[:num_samples]
    if images.shape[-1] == 1:  # greyscale (digits): the evaluator takes RGB
      images = np.repeat(images, 3, axis=-1)
    _save_atomic(final, arr_0=images, labels=labels)
  multihost_utils.sync_global_devices("fid.generate: samples.npz written")
  return final


def _save_atomic(path, **arrays):
  tmp = path.with_name(path.name + ".tmp.npz")
  np.savez(tmp, **arrays)
  tmp.replace(path)


def _model_from_args(args, step):
  """(graphdef, rest, params, decode, image_shape, num_classes, cfg channels)."""
  from gspn_jax import generate as run_lib

  if args.dit_ckpt:
    from gspn_jax.vae import load_decoder

    graphdef, rest, params, image_shape = run_lib.load_official_dit(args.dit_ckpt, args.model, args.image_size)
    return graphdef, rest, params, load_decoder(args.vae or "stabilityai/sd-vae-ft-ema"), image_shape, 1000, 3
  workdir, _ = run_lib.resolve_checkpoint(args.workdir, args.ckpt)
  config, graphdef, rest, ema, _ = run_lib.load_ema(workdir, step)
  image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
  return graphdef, rest, ema, run_lib.decoder_for(config, args.vae), image_shape, config.data.num_classes, \
      config.sample.cfg_channels


def parse_args(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  src = p.add_mutually_exclusive_group(required=True)
  src.add_argument("--workdir", help="a training run (its EMA weights and config)")
  src.add_argument("--dit-ckpt", help="an official DiT checkpoint (DiT-XL-2-256x256.pt) or its .npz")
  p.add_argument("--ckpt", default=None, help="with --workdir: a step directory instead of the newest")
  p.add_argument("--model", default="DiT-XL/2", help="with --dit-ckpt: the DiT size")
  p.add_argument("--image-size", type=int, default=256, choices=(256, 512), help="with --dit-ckpt")
  p.add_argument("--vae", default=None, help="diffusers-format VAE folder or hub id (latent models)")
  p.add_argument("--out", required=True, help="output folder: chunks/ and samples.npz")
  p.add_argument("--num-samples", type=int, default=50_000)
  p.add_argument("--global-batch", type=int, default=256, help="samples per chunk, over all devices")
  p.add_argument("--cfg-scale", type=float, default=1.5)
  p.add_argument("--num-sampling-steps", default="250")
  p.add_argument("--sampler", choices=("ddpm", "ddim", "dpm++", "sde-dpm++", "euler", "heun", "dopri5", "sde"),
                 default=None, help="default: ddpm, or a flow run's configured sampler")
  p.add_argument("--seed", type=int, default=0)
  objective_sampling.add_dpm_flags(p)
  errors.add_verbosity_flag(p)
  return p.parse_args(argv)


def main(argv=None):
  args = parse_args(argv)
  errors.quiet_libraries(args.verbosity >= 1)
  with errors.one_line_errors(args.verbosity >= 1):
    objective = objective_sampling.run_objective(args.workdir, args.ckpt)  # the run's config only, no weights
    args.sampler = args.sampler or objective["default_sampler"]
    objective_sampling.check_sampler(objective["objective"], args.sampler)
    dpm = objective_sampling.dpm_options(args.sampler, args.dpm_spacing, args.dpm_thresholding)
    settings = check_args(args)
    graphdef, rest, params, decode, image_shape, num_classes, cfg_channels = _model_from_args(args, settings["step"])
    sample_fn = objective_sampling.make_sampler(
        graphdef, rest, image_shape=image_shape, num_classes=num_classes, num_sampling_steps=args.num_sampling_steps,
        sampler=args.sampler, cfg_scale=args.cfg_scale, cfg_channels=cfg_channels,
        **dpm, **objective["kwargs"])
    final = generate(sample_fn, params, decode, out=args.out, num_samples=args.num_samples,
                     global_batch=args.global_batch, num_classes=num_classes, seed=args.seed)
    print(f"wrote {final} ({args.num_samples} samples{_from(settings)})")
  return final


def check_args(args):
  """The flags, the output folder and the checkpoint step, checked before any loading;
  returns the settings the chunks are made with (written to <out>/settings.json)."""
  from gspn_jax import generate as run_lib

  validation.check_sampling(args.cfg_scale, args.num_sampling_steps)
  if args.num_samples < 1 or args.global_batch < 1:
    raise errors.UsageError(f"--num-samples {args.num_samples}, --global-batch {args.global_batch}: both must be "
                            "at least 1")
  if args.global_batch % jax.device_count():
    raise errors.UsageError(f"--global-batch {args.global_batch} is not divisible by the {jax.device_count()} "
                            f"devices; use a multiple of {jax.device_count()}")
  out = pathlib.Path(args.out)
  if out.exists() and not out.is_dir():
    raise errors.UsageError(f"--out {out} is a file; give a folder (it will hold chunks/ and samples.npz)")
  validation.check_output(out / "settings.json", flag="--out")
  step = None
  if args.workdir:
    workdir, step = run_lib.resolve_checkpoint(args.workdir, args.ckpt)
    step = step if step is not None else run_lib.newest_step(workdir)
    if step is None:
      raise FileNotFoundError(f"no checkpoint in {workdir}/checkpoints: train first (python main.py --workdir "
                              f"{workdir})")
  # DPM-Solver++ options only where given: folders written before they existed resume unchanged
  settings = {**{k: v for k, v in vars(args).items() if k not in ("ckpt", "verbosity")
                and not (k.startswith("dpm_") and v is None)}, "step": step}
  previous = out / "settings.json"
  if previous.exists():
    before = json.loads(previous.read_text())
    if args.workdir and before.get("step") != step:
      pinned = pathlib.Path(args.workdir) / "checkpoints" / str(before.get("step"))
      raise errors.UsageError(
          f"{out} holds chunks from checkpoint step {before.get('step')} of {args.workdir}, this command would "
          f"add chunks from step {step}: pass --ckpt {pinned} to finish with the same checkpoint, or use a new --out")
    if before != settings:
      changed = sorted(k for k in set(before) | set(settings) if before.get(k) != settings.get(k))
      raise errors.UsageError(f"{out} holds chunks made with other settings ({', '.join(changed)} differ, see "
                              f"{previous}); use the same flags or a new --out")
  if jax.process_index() == 0:
    out.mkdir(parents=True, exist_ok=True)
    previous.write_text(json.dumps(settings, indent=2))
  return settings


def _from(settings):
  return f", checkpoint step {settings['step']} of {settings['workdir']}" if settings.get("workdir") else ""


if __name__ == "__main__":
  main()
