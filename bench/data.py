"""Throughput of the ImageNet latent pipeline: extraction and the training input.

  python -m bench.data            # on a GPU: JSON in bench/results/data_<device>.json
  python -m bench.data --smoke    # anywhere: a tiny VAE, 32 px images, a tiny model

- Extraction, images/s per device: the SD-VAE encoder alone (sd-vae architecture with
  random weights, both flips of every image, as gspn_jax.data.extract runs it), and the
  whole command (JPEG decode, ADM crop, encode, ArrayRecord write) on a generated
  ImageFolder of ImageNet-sized JPEGs.
- Training input, images/s: the grain loader over those latents at the global batch,
  against the demand of the GSPN-XL/2 train step on all local devices.
"""

import argparse
import pathlib
import sys
import tempfile
import time

import jax
import ml_collections
import numpy as np
from flax import nnx
from PIL import Image

from bench.common import time_fn, write_results
from bench.throughput import train_throughput
from gspn_jax import vae as vae_lib
from gspn_jax.data import extract, imagenet, latents

FULL = dict(image_size=256, num_images=512, batch=64, global_batch=256, vae={}, model=("GSPN-XL/2", "GSPN-XL/2", {}),
            dtype="bfloat16", demand_batch=32)
SMOKE = dict(image_size=32, num_images=24, batch=4, global_batch=8,
             vae=dict(block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4),
             model=("GSPN-tiny", "GSPN", dict(hidden_size=32, depth=2, patch_size=2)), dtype="float32", demand_batch=2)


def write_image_folder(root, num_images, num_classes=4, size=(500, 375)):
  """JPEGs of ImageNet's typical size: smooth colour fields with noise, so they compress
  and decode like photographs rather than like flat colour."""
  rng = np.random.default_rng(0)
  yy, xx = np.mgrid[0:size[1], 0:size[0]] / max(size)
  for i in range(num_images):
    folder = root / f"n{i % num_classes:08d}"
    folder.mkdir(parents=True, exist_ok=True)
    a, b, c = rng.uniform(-8, 8, (3, 3))
    field = np.stack([np.sin(a[k] * xx + b[k] * yy + c[k]) for k in range(3)], -1)
    pixels = 127.5 * (1 + field) + rng.normal(0, 12, field.shape)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i}.JPEG", quality=90)
  return root


def loader_throughput(path, meta, global_batch, batches=20):
  data = ml_collections.ConfigDict(dict(name="imagenet_latents", path=str(path), image_size=meta["latent_size"],
                                        channels=meta["channels"], num_classes=meta["num_classes"]))
  it = latents.create_train_iterator(data, global_batch_size=global_batch, seed=0)
  next(it)  # threads started, first batch read
  t = time.perf_counter()
  for _ in range(batches):
    batch = next(it)
  assert batch["image"].shape == (global_batch, meta["latent_size"], meta["latent_size"], meta["channels"])
  return global_batch * batches / (time.perf_counter() - t)


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("--smoke", action="store_true", help="tiny sizes (runs on a CPU)")
  p.add_argument("--out", default=None, help="JSON path")
  args = p.parse_args(argv)
  s = SMOKE if args.smoke else FULL
  devices = jax.local_device_count()
  vae = vae_lib.AutoencoderKL(rngs=nnx.Rngs(0), **s["vae"])
  encoder = extract.sharded_encoder(vae_lib.scaled_encoder(vae))
  size, batch = s["image_size"], s["batch"]

  images = np.random.default_rng(1).uniform(-1, 1, (2 * batch, size, size, 3)).astype(np.float32)
  encode_s = time_fn(encoder, images, iters=5)  # encoder(images) returns host arrays: transfers included
  row = {"image_size": size, "batch": batch, "devices": devices,
         "encoder_images_per_sec_per_device": batch / encode_s / devices}
  with tempfile.TemporaryDirectory() as tmp:
    tmp = pathlib.Path(tmp)
    source = imagenet.ImageFolderSource(write_image_folder(tmp / "train", s["num_images"]))
    encoder(images[:1])  # extract's probe shape, compiled before the clock starts
    t = time.perf_counter()
    meta = extract.extract(source, encoder, tmp / "latents", image_size=size, shard_size=8 * batch,
                           batch_size=batch)
    row["extract_images_per_sec_per_device"] = len(source) / (time.perf_counter() - t) / devices
    row["loader_images_per_sec"] = loader_throughput(tmp / "latents", meta, s["global_batch"])
  label, name, kwargs = s["model"]
  demand = train_throughput(name, meta["latent_size"], s["demand_batch"], dtype=s["dtype"], iters=3, **kwargs)
  row.update(demand_model=label, demand_batch_per_device=s["demand_batch"],
             demand_images_per_sec=demand["images_per_sec"] * devices,
             loader_headroom=row["loader_images_per_sec"] / (demand["images_per_sec"] * devices))
  print(row, file=sys.stderr)
  path = write_results("data_smoke" if args.smoke else "data", row, args.out)
  print(f"wrote {path}")
  return path


if __name__ == "__main__":
  main()
