"""The embedded default dataset: scikit-learn's handwritten digits.

1,797 real 8x8 greyscale scans (values 0..16) in 10 classes, shipped inside
scikit-learn, so a fresh machine trains something real with no download. A fixed,
stratified split keeps a held-out set for evaluation. Pixels map to [-1, 1].
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

NUM_CLASSES = 10
IMAGE_SIZE = 8
HELD_OUT_FRACTION = 0.2
SPLIT_SEED = 0  # the split is part of the dataset's definition, not of a run


def load_split(split):
  """(images (N, 8, 8, 1) float32 in [-1, 1], labels (N,) int32) for "train" or "test"."""
  if split not in ("train", "test"):
    raise ValueError(f"digits split {split!r}; use 'train' or 'test'")
  digits = load_digits()
  images = (digits.images.astype(np.float32) / 8.0 - 1.0)[..., None]
  labels = digits.target.astype(np.int32)
  tr_x, te_x, tr_y, te_y = train_test_split(images, labels, test_size=HELD_OUT_FRACTION,
                                            random_state=SPLIT_SEED, stratify=labels)
  return (tr_x, tr_y) if split == "train" else (te_x, te_y)
