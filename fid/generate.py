"""Sample batches for FID-50K with DiT's sample_ddp conventions, resumably.

  python -m fid.generate --workdir runs/gspn_xl2 --out fid_runs/gspn_xl2 --num-samples 50000
  python -m fid.generate --dit-ckpt DiT-XL-2-256x256.pt --model DiT-XL/2 --out fid_runs/dit_xl2

250-step ancestral sampling, classifier-free guidance 1.5 on the first 3 channels,
uniformly random labels, decoding and uint8 quantisation (clamp(127.5 x + 128) cast
to uint8), all written as one ADM batch <out>/samples.npz (arr_0, labels).

The samples are made in chunks of one global batch. Chunk i's labels and noise depend
only on (seed, i), so the result does not depend on the number of devices or hosts;
each finished chunk is written atomically to <out>/chunks/, and a restarted command
skips the chunks on disk: nothing is generated twice or lost.
"""

import argparse
import json
import pathlib
import sys

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm import tqdm

from gspn_jax import sampling
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
  bar = tqdm(total=num_chunks, initial=len(done), unit="chunk", disable=not is_main, file=sys.stderr,
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


def _model_from_args(args):
  """(graphdef, rest, params, decode, image_shape, num_classes, settings source)."""
  from gspn_jax import generate as run_lib
  from gspn_jax.train_state import split_model

  if args.dit_ckpt:
    from flax import nnx

    from gspn_jax import convert
    from gspn_jax.models import DiT_models
    from gspn_jax.vae import load_decoder

    latent = args.image_size // 8
    model = DiT_models[args.model](input_size=latent, in_channels=4, num_classes=1000, rngs=nnx.Rngs(0))
    convert.dit_from_torch(model, convert.read_torch_state_dict(args.dit_ckpt))
    graphdef, params, rest = split_model(model)
    return graphdef, rest, params, load_decoder(args.vae or "stabilityai/sd-vae-ft-ema"), (latent, latent, 4), \
        1000, 3
  workdir, step = run_lib.resolve_checkpoint(args.workdir, args.ckpt)
  config, graphdef, rest, ema, _ = run_lib.load_ema(workdir, step)
  image_shape = (config.data.image_size, config.data.image_size, config.data.channels)
  return graphdef, rest, ema, run_lib.decoder_for(config, args.vae), image_shape, config.data.num_classes, \
      config.sample.cfg_channels


def main(argv=None):
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
  p.add_argument("--sampler", choices=("ddpm", "ddim", "dpm++", "euler", "heun", "dopri5", "sde"), default=None,
                 help="default: ddpm, or a flow run's configured sampler")
  p.add_argument("--seed", type=int, default=0)
  args = p.parse_args(argv)
  objective = objective_sampling.run_objective(args.workdir, args.ckpt)  # refuses a wrong sampler up front
  args.sampler = args.sampler or objective["default_sampler"]
  objective_sampling.check_sampler(objective["objective"], args.sampler)
  graphdef, rest, params, decode, image_shape, num_classes, cfg_channels = _model_from_args(args)
  sample_fn = objective_sampling.make_sampler(
      graphdef, rest, image_shape=image_shape, num_classes=num_classes, num_sampling_steps=args.num_sampling_steps,
      sampler=args.sampler, cfg_scale=args.cfg_scale, cfg_channels=cfg_channels, **objective["kwargs"])
  settings = {k: v for k, v in vars(args).items()}
  out = pathlib.Path(args.out)
  if jax.process_index() == 0:
    out.mkdir(parents=True, exist_ok=True)
    previous = out / "settings.json"
    if previous.exists() and json.loads(previous.read_text()) != settings:
      raise ValueError(f"{out} holds chunks made with other settings ({previous}); use a new --out")
    previous.write_text(json.dumps(settings, indent=2))
  final = generate(sample_fn, params, decode, out=out, num_samples=args.num_samples,
                   global_batch=args.global_batch, num_classes=num_classes, seed=args.seed)
  print(f"wrote {final}")
  return final


if __name__ == "__main__":
  main()
