"""Pre-extracted VAE latents on disk, and the training input that reads them.

A latent dataset is a folder:
  metadata.json                          sizes, the VAE, what is stored, the shards
  shard-00000-of-NNNNN.array_record      one record per image
Each record is the label (int32) followed by float16 arrays for BOTH horizontal flips of
the image: store="mean_std" keeps the scaled posterior mean and std (2, 2, h, w, c), so
training draws a fresh posterior sample every epoch as DiT does on the fly;
store="samples" keeps one scaled posterior sample per flip (2, h, w, c) at half the size.
Training picks a flip and (for mean_std) a sample with randomness seeded by the global
position, so resumption is exact.
"""

import json
import pathlib

import numpy as np

from gspn_jax.data.pipeline import make_iterator
from gspn_jax.errors import UsageError

METADATA = "metadata.json"
STORES = ("mean_std", "samples")


def shard_name(index, num_shards):
  return f"shard-{index:05d}-of-{num_shards:05d}.array_record"


def record_shape(meta):
  s, c = meta["latent_size"], meta["channels"]
  return (2, 2, s, s, c) if meta["store"] == "mean_std" else (2, s, s, c)


def encode_record(label, latents):
  return np.int32(label).tobytes() + np.asarray(latents, np.float16).tobytes()


def decode_record(record, meta):
  label = np.frombuffer(record[:4], np.int32)[0]
  return label, np.frombuffer(record[4:], np.float16).reshape(record_shape(meta))


def read_metadata(path):
  path = pathlib.Path(path)
  meta_file = path / METADATA
  if not meta_file.exists():
    raise FileNotFoundError(
        f"no latent dataset at {path} ({METADATA} missing): extract one first with "
        f"`python -m gspn_jax.data.extract --source imagefolder:<ImageNet train dir> --out {path}`")
  try:
    meta = json.loads(meta_file.read_text())
    meta["num_shards"], meta["latent_size"], meta["channels"], meta["num_classes"], meta["store"]
  except (ValueError, KeyError, TypeError) as e:
    raise UsageError(f"{meta_file} is damaged ({type(e).__name__}: {e}): rerun the extraction into a new "
                     "folder") from None
  missing = [shard_name(i, meta["num_shards"]) for i in range(meta["num_shards"])
             if not (path / shard_name(i, meta["num_shards"])).exists()]
  if missing:
    raise FileNotFoundError(f"latent dataset {path} is incomplete ({len(missing)} of {meta['num_shards']} shards "
                            f"missing, e.g. {missing[0]}): rerun the extraction command, it resumes")
  return meta


def check_config(meta, data_config):
  want = (data_config.image_size, data_config.channels, data_config.num_classes)
  have = (meta["latent_size"], meta["channels"], meta["num_classes"])
  if want != have:
    raise UsageError(f"latent dataset {data_config.path} holds {have[0]}x{have[0]}x{have[1]} latents of "
                     f"{have[2]} classes; the config wants {want[0]}x{want[0]}x{want[1]} of {want[2]} "
                     "(config.data.image_size is the latent size: 32 for 256 px)")


def latent_example(record, meta, position, seed):
  """A training example: a random flip and, for mean_std, a fresh posterior sample."""
  label, arr = decode_record(record, meta)
  rng = np.random.default_rng([seed, position])
  flip = int(rng.integers(2))
  if meta["store"] == "mean_std":
    mean, std = arr[flip].astype(np.float32)
    latent = mean + std * rng.standard_normal(mean.shape, dtype=np.float32)
  else:
    latent = arr[flip].astype(np.float32)
  return {"image": latent, "label": label}


def create_train_iterator(data_config, *, global_batch_size, seed, process_index=0, process_count=1):
  import grain

  if not data_config.path:
    raise UsageError("config.data.path is empty: set --config.data.path=<latent dataset folder> "
                     "(made by python -m gspn_jax.data.extract)")
  path = pathlib.Path(data_config.path)
  meta = read_metadata(path)
  check_config(meta, data_config)
  shards = [str(path / shard_name(i, meta["num_shards"])) for i in range(meta["num_shards"])]
  try:
    source = grain.sources.ArrayRecordDataSource(shards)
  except Exception:  # name the damaged shard, which the reader's error does not
    for shard in shards:
      try:
        grain.sources.ArrayRecordDataSource([shard])
      except Exception as e:
        raise UsageError(f"latent shard {shard} is damaged ({type(e).__name__}): rerun the extraction of that "
                         "shard (delete it; python -m gspn_jax.data.extract resumes)") from e
    raise
  return make_iterator(lambda pos, i: latent_example(source[i], meta, pos, seed), len(source),
                       global_batch_size=global_batch_size, seed=seed, process_index=process_index,
                       process_count=process_count, num_threads=16)
