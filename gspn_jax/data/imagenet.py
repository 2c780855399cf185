"""ImageNet input for latent extraction: an ImageFolder tree or tensorflow-datasets.

Images are cropped as DiT crops them (ADM's centre crop: halve with a BOX filter while
the short side is at least twice the target, resize the short side to the target with
BICUBIC, take the centre) and mapped to [-1, 1]. Both sources are random-access by
example index, so extraction can be split into shards and resumed shard by shard.
"""

import pathlib

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def center_crop_arr(pil_image, image_size):
  """ADM's centre crop (guided-diffusion image_datasets.py, as DiT's train.py uses it)."""
  while min(*pil_image.size) >= 2 * image_size:
    pil_image = pil_image.resize(tuple(x // 2 for x in pil_image.size), resample=Image.BOX)
  scale = image_size / min(*pil_image.size)
  pil_image = pil_image.resize(tuple(round(x * scale) for x in pil_image.size), resample=Image.BICUBIC)
  arr = np.array(pil_image)
  crop_y = (arr.shape[0] - image_size) // 2
  crop_x = (arr.shape[1] - image_size) // 2
  return arr[crop_y:crop_y + image_size, crop_x:crop_x + image_size]


def to_model_range(uint8_images):
  """uint8 -> [-1, 1], as ToTensor + Normalize(0.5, 0.5) do."""
  return np.asarray(uint8_images, np.float32) / 127.5 - 1.0


class ImageFolderSource:
  """root/<class>/<image>: classes are the sorted folder names (ImageFolder's order)."""

  def __init__(self, root):
    root = pathlib.Path(root)
    if not root.is_dir():
      raise FileNotFoundError(f"ImageFolder root {root} not found: expected {root}/<wnid>/*.JPEG")
    self.classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    self.samples = [(f, label) for label, c in enumerate(self.classes)
                    for f in sorted((root / c).iterdir()) if f.suffix.lower() in IMAGE_EXTENSIONS]
    if not self.samples:
      raise FileNotFoundError(f"no images under {root}/<class>/: is this the ImageNet train folder?")

  @property
  def num_classes(self):
    return len(self.classes)

  def __len__(self):
    return len(self.samples)

  def read(self, indices, image_size):
    """(uint8 crops (n, S, S, 3), labels (n,)) for example indices."""
    images, labels = [], []
    for i in indices:
      path, label = self.samples[i]
      with Image.open(path) as img:
        images.append(center_crop_arr(img.convert("RGB"), image_size))
      labels.append(label)
    return np.stack(images), np.asarray(labels, np.int32)


class TfdsSource:
  """A tensorflow-datasets split, e.g. imagenet2012 prepared from the manual download
  (tfds build imagenet2012 --manual_dir ...). Read in contiguous index ranges."""

  def __init__(self, name="imagenet2012", split="train", data_dir=None):
    import tensorflow as tf
    import tensorflow_datasets as tfds

    tf.config.set_visible_devices([], "GPU")  # TF only reads files; the accelerators are JAX's

    self.name, self.split, self.data_dir = name, split, data_dir
    try:
      builder = tfds.builder(name, data_dir=data_dir)
      info = builder.info
      self._len = info.splits[split].num_examples
    except Exception as e:  # tfds raises many kinds for an unprepared dataset
      raise FileNotFoundError(
          f"tensorflow-datasets {name}/{split} is not prepared under {data_dir or '~/tensorflow_datasets'} ({e}); "
          f"download ImageNet manually and run `tfds build {name} --manual_dir <dir>`, or use an ImageFolder "
          "tree (--source imagefolder:<train dir>)") from e
    self.num_classes = info.features["label"].num_classes

  def __len__(self):
    return self._len

  def read(self, indices, image_size):
    import tensorflow_datasets as tfds

    start, stop = int(indices[0]), int(indices[-1]) + 1
    if list(indices) != list(range(start, stop)):
      raise ValueError("TfdsSource reads contiguous index ranges")
    ds = tfds.load(self.name, split=f"{self.split}[{start}:{stop}]", data_dir=self.data_dir,
                   shuffle_files=False, download=False)
    images, labels = [], []
    for ex in tfds.as_numpy(ds):
      images.append(center_crop_arr(Image.fromarray(ex["image"]).convert("RGB"), image_size))
      labels.append(ex["label"])
    return np.stack(images), np.asarray(labels, np.int32)


def open_source(spec):
  """"imagefolder:<root>" or "tfds:<name>[:<split>][@<data_dir>]"."""
  kind, _, rest = spec.partition(":")
  if kind == "imagefolder" and rest:
    return ImageFolderSource(rest)
  if kind == "tfds" and rest:
    rest, _, data_dir = rest.partition("@")
    name, _, split = rest.partition(":")
    return TfdsSource(name, split or "train", data_dir or None)
  raise ValueError(f"--source {spec!r}: use imagefolder:<train dir> or tfds:imagenet2012[:train][@<data_dir>]")
