"""Resumable input iterators.

An iterator's whole state is its position (batches consumed), saved in every checkpoint:
the batch at position p is a pure function of (seed, p), so a resumed run sees exactly
the batches an uninterrupted run would have seen.
"""

import numpy as np


class ArrayIterator:
  """Shuffled epochs over in-memory arrays; each process reads only its own slice of
  every global batch (process_index of process_count)."""

  def __init__(self, images, labels, *, global_batch_size, seed, process_index=0, process_count=1):
    if global_batch_size % process_count:
      raise ValueError(f"global batch {global_batch_size} is not divisible by {process_count} processes")
    if global_batch_size > len(images):
      raise ValueError(f"global batch {global_batch_size} exceeds the dataset's {len(images)} examples; "
                       "lower config.batch_size")
    self.images, self.labels = images, labels
    self.global_batch_size = global_batch_size
    self.seed = seed
    self.process_index, self.process_count = process_index, process_count
    self.steps_per_epoch = len(images) // global_batch_size  # the remainder is dropped each epoch
    self.position = 0

  @property
  def num_examples(self):
    return len(self.images)

  def get_state(self):
    return np.int64(self.position)

  def set_state(self, state):
    self.position = int(state)

  def __iter__(self):
    return self

  def __next__(self):
    epoch, i = divmod(self.position, self.steps_per_epoch)
    perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.images))
    local = self.global_batch_size // self.process_count
    start = i * self.global_batch_size + self.process_index * local
    idx = perm[start:start + local]
    self.position += 1
    return {"image": self.images[idx], "label": self.labels[idx]}


def create_train_iterator(data_config, *, global_batch_size, seed, process_index=0, process_count=1):
  if data_config.name == "digits":
    from gspn_jax.data import digits

    images, labels = digits.load_split("train")
    return ArrayIterator(images, labels, global_batch_size=global_batch_size, seed=seed,
                         process_index=process_index, process_count=process_count)
  if data_config.name == "imagenet_latents":
    raise FileNotFoundError(
        "config.data.name='imagenet_latents' needs pre-extracted ImageNet VAE latents, which this "
        "version cannot produce yet; train on the embedded default with --config configs/digits.py")
  raise ValueError(f"unknown dataset {data_config.name!r}; use 'digits' or 'imagenet_latents'")
