"""Training input: grain pipelines over random-access sources, resumable exactly.

The global batch at step p is a pure function of (seed, p): each epoch is a fresh
permutation of the examples (the remainder dropped), global batch p takes positions
[p*G, (p+1)*G) of that order, and process i reads its contiguous slice. Per-example
randomness (flips, posterior samples) is seeded by the global position. So a resumed
run sees exactly the batches an uninterrupted one would, and so does a restart on a
different number of hosts. The grain iterator's state is saved in every checkpoint.
"""

import functools
import sys

import grain
import numpy as np


class GlobalOrder:
  """Element k of this process's stream -> (global position, example index)."""

  def __init__(self, num_examples, *, global_batch_size, seed, process_index=0, process_count=1):
    if global_batch_size % process_count:
      raise ValueError(f"global batch {global_batch_size} is not divisible by {process_count} processes")
    if global_batch_size > num_examples:
      raise ValueError(f"global batch {global_batch_size} exceeds the dataset's {num_examples} examples; "
                       "lower config.batch_size")
    self.num_examples = num_examples
    self.global_batch = global_batch_size
    self.local_batch = global_batch_size // process_count
    self.seed, self.process_index = seed, process_index
    self.steps_per_epoch = num_examples // global_batch_size

  def __len__(self):
    return sys.maxsize // 2  # endless: epochs follow each other

  @functools.lru_cache(maxsize=2)
  def permutation(self, epoch):
    return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

  def __getitem__(self, k):
    step, j = divmod(k, self.local_batch)
    position = step * self.global_batch + self.process_index * self.local_batch + j
    epoch, i = divmod(position, self.steps_per_epoch * self.global_batch)
    return position, int(self.permutation(epoch)[i])


class TrainIterator:
  """Batches of a grain pipeline, with get_state/set_state for checkpoints."""

  def __init__(self, dataset, order, num_threads):
    self.steps_per_epoch = order.steps_per_epoch
    self.num_examples = order.num_examples
    self._iter = iter(dataset.to_iter_dataset(grain.ReadOptions(num_threads=num_threads,
                                                                prefetch_buffer_size=4 * max(num_threads, 1))))

  def __iter__(self):
    return self

  def __next__(self):
    return next(self._iter)

  def get_state(self):
    return dict(self._iter.get_state())

  def set_state(self, state):
    self._iter.set_state(dict(state))


def make_iterator(read, num_examples, *, global_batch_size, seed, process_index=0, process_count=1,
                  num_threads=0):
  """read(position, index) -> example dict; batches of global_batch_size / process_count."""
  order = GlobalOrder(num_examples, global_batch_size=global_batch_size, seed=seed,
                      process_index=process_index, process_count=process_count)
  dataset = grain.MapDataset.source(order).map(lambda pi: read(*pi)).batch(order.local_batch)
  return TrainIterator(dataset, order, num_threads)


def create_train_iterator(data_config, *, global_batch_size, seed, process_index=0, process_count=1):
  kwargs = dict(global_batch_size=global_batch_size, seed=seed, process_index=process_index,
                process_count=process_count)
  if data_config.name == "digits":
    from gspn_jax.data import digits

    images, labels = digits.load_split("train")
    return make_iterator(lambda pos, i: {"image": images[i], "label": labels[i]}, len(images), **kwargs)
  if data_config.name == "imagenet_latents":
    from gspn_jax.data import latents

    return latents.create_train_iterator(data_config, **kwargs)
  raise ValueError(f"unknown dataset {data_config.name!r}; use 'digits' or 'imagenet_latents'")
