"""Encode a dataset into VAE latents once, sharded over devices and hosts, resumably.

  python -m gspn_jax.data.extract --source imagefolder:/data/imagenet/train --out /data/in256_latents
  python -m gspn_jax.data.extract --source tfds:imagenet2012 --out /data/in256_latents --store samples

The images are cut into shards of --shard-size examples; process p of P encodes shards
p, p + P, ... on its local devices, both flips of every image in one batch, and writes
each finished shard atomically. A restarted command skips the shards on disk. Train on
the result with --config.data.path=<out> (see gspn_jax/data/latents.py for the format).
"""

import argparse
import json
import os
import pathlib
import sys

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from tqdm import tqdm

from gspn_jax.data import imagenet, latents


def extract(source, encoder, out, *, image_size, store="mean_std", shard_size=1024, batch_size=64, seed=0,
            vae_name="", scaling_factor=0.18215):
  """Writes the latent dataset of `source` to `out`; returns its metadata.

  encoder(images in [-1, 1]) -> (mean, std) of the scaled posterior, NHWC."""
  if store not in latents.STORES:
    raise ValueError(f"--store {store!r}; use one of {latents.STORES}")
  out = pathlib.Path(out)
  n = len(source)
  num_shards = -(-n // shard_size)
  probe_mean, _ = encoder(np.zeros((1, image_size, image_size, 3), np.float32))
  meta = {"num_examples": n, "num_classes": source.num_classes, "image_size": image_size,
          "latent_size": int(probe_mean.shape[1]), "channels": int(probe_mean.shape[-1]), "store": store,
          "vae": vae_name, "scaling_factor": scaling_factor, "shard_size": shard_size, "num_shards": num_shards,
          "dtype": "float16", "seed": seed}
  if jax.process_index() == 0:
    out.mkdir(parents=True, exist_ok=True)
    meta_file = out / latents.METADATA
    if meta_file.exists() and json.loads(meta_file.read_text()) != meta:
      raise ValueError(f"{out} holds a latent dataset made with other settings ({meta_file}); use a new --out")
    _write_atomic(meta_file, json.dumps(meta, indent=2).encode())
  mine = [s for s in range(num_shards) if s % jax.process_count() == jax.process_index()]
  todo = [s for s in mine if not (out / latents.shard_name(s, num_shards)).exists()]
  bar = tqdm(total=len(mine), initial=len(mine) - len(todo), unit="shard", file=sys.stderr,
             desc=f"process {jax.process_index()}: {n} images")
  for s in todo:
    indices = np.arange(s * shard_size, min((s + 1) * shard_size, n))
    records = []
    for start in range(0, len(indices), batch_size):
      batch = indices[start:start + batch_size]
      images, labels = source.read(batch, image_size)
      x = imagenet.to_model_range(images)
      mean, std = encoder(np.concatenate([x, x[:, :, ::-1]]))  # both flips in one batch
      mean, std = np.asarray(mean, np.float32), np.asarray(std, np.float32)
      k = len(batch)
      for j, (label, index) in enumerate(zip(labels, batch)):
        m, sd = np.stack([mean[j], mean[k + j]]), np.stack([std[j], std[k + j]])
        if store == "mean_std":
          records.append(latents.encode_record(label, np.stack([m, sd], axis=1)))
        else:
          noise = np.random.default_rng([seed, int(index)]).standard_normal(m.shape, dtype=np.float32)
          records.append(latents.encode_record(label, m + sd * noise))
    _write_shard(out / latents.shard_name(s, num_shards), records)
    bar.update(1)
  bar.close()
  return meta


def _write_atomic(path, data):
  tmp = path.with_name(path.name + ".tmp")
  tmp.write_bytes(data)
  os.replace(tmp, path)


def _write_shard(path, records):
  from array_record.python.array_record_module import ArrayRecordWriter

  tmp = path.with_name(path.name + ".tmp")
  writer = ArrayRecordWriter(str(tmp), "group_size:1")
  for r in records:
    writer.write(r)
  writer.close()
  os.replace(tmp, path)


def sharded_encoder(encode):
  """encode jitted over this process's local devices (batch split between them)."""
  mesh = Mesh(np.array(jax.local_devices()), ("data",))
  data = NamedSharding(mesh, P("data"))

  def fn(images):
    n = len(images)
    pad = -n % mesh.size
    if pad:
      images = np.concatenate([images, np.zeros((pad,) + images.shape[1:], images.dtype)])
    mean, std = encode(jax.device_put(images, data))
    return np.asarray(mean)[:n], np.asarray(std)[:n]

  return fn


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--source", required=True, help="imagefolder:<train dir> or tfds:imagenet2012[:train][@data_dir]")
  p.add_argument("--out", required=True, help="output folder of the latent dataset")
  p.add_argument("--vae", default="stabilityai/sd-vae-ft-ema", help="diffusers-format VAE folder or hub id")
  p.add_argument("--image-size", type=int, default=256)
  p.add_argument("--store", choices=latents.STORES, default="mean_std")
  p.add_argument("--shard-size", type=int, default=1024)
  p.add_argument("--batch-size", type=int, default=64, help="images per encoder call and process (x2 flips)")
  p.add_argument("--seed", type=int, default=0, help="posterior samples with --store samples")
  args = p.parse_args(argv)
  from gspn_jax import vae as vae_lib

  source = imagenet.open_source(args.source)
  vae = vae_lib.load_vae(args.vae)
  encoder = sharded_encoder(vae_lib.scaled_encoder(vae))
  meta = extract(source, encoder, args.out, image_size=args.image_size, store=args.store,
                 shard_size=args.shard_size, batch_size=args.batch_size, seed=args.seed, vae_name=args.vae,
                 scaling_factor=vae.scaling_factor)
  print(f"wrote {meta['num_examples']} latents ({meta['latent_size']}x{meta['latent_size']}x{meta['channels']}, "
        f"{meta['store']}) to {args.out}")


if __name__ == "__main__":
  main()
