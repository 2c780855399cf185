import json

import jax
import numpy as np
import pytest
from PIL import Image

from gspn_jax import train, vae as vae_lib
from gspn_jax.data import extract as extract_lib, imagenet, latents
from tests.test_train import tiny_config


def synthetic(h, w):
  y, x = np.mgrid[0:h, 0:w]
  return np.stack([(x * 7 + y * 3) % 256, (x * y) % 251, (x ^ y) % 256], -1).astype(np.uint8)


# DiT's center_crop_arr (facebookresearch/DiT train.py) on the images above, Pillow 13:
# (h, w, size) -> per-channel sums, the pixel at (size // 2, size // 3), a weighted checksum.
CROP_REFERENCE = {
    (300, 517, 64): ([525628, 513412, 524741], [123, 123, 77], 60754719),
    (64, 48, 32): ([130949, 121178, 32031], [202, 198, 32], 14612442),
    (129, 130, 32): ([131714, 126047, 68588], [235, 125, 107], 14998936),
    (40, 90, 40): ([206208, 191883, 62752], [70, 7, 50], 23483762),
}


@pytest.mark.parametrize("h, w, s", list(CROP_REFERENCE))
def test_center_crop_matches_dit(h, w, s):
  arr = imagenet.center_crop_arr(Image.fromarray(synthetic(h, w)), s)
  sums, pixel, checksum = CROP_REFERENCE[(h, w, s)]
  assert arr.shape == (s, s, 3)
  assert arr.reshape(-1, 3).sum(0).tolist() == sums
  assert arr[s // 2, s // 3].tolist() == pixel
  assert int((arr.astype(np.int64) * np.arange(arr.size).reshape(arr.shape) % 9973).sum()) == checksum


def make_image_folder(root, sizes=((40, 56), (33, 33), (64, 20)), classes=("n02", "n01", "n03")):
  for c, name in enumerate(classes):
    (root / name).mkdir(parents=True)
    for i, (h, w) in enumerate(sizes):
      Image.fromarray(np.roll(synthetic(h, w), 17 * c + i, axis=1)).save(root / name / f"img_{i}.JPEG")
  (root / "n01" / "notes.txt").write_text("not an image")
  return root


def test_image_folder_lists_classes_like_imagefolder(tmp_path):
  src = imagenet.ImageFolderSource(make_image_folder(tmp_path / "train"))
  assert src.classes == ["n01", "n02", "n03"] and len(src) == 9 and src.num_classes == 3
  images, labels = src.read([0, 4, 8], 16)
  assert images.shape == (3, 16, 16, 3) and images.dtype == np.uint8
  assert labels.tolist() == [0, 1, 2]
  with pytest.raises(FileNotFoundError, match="wnid"):
    imagenet.ImageFolderSource(tmp_path / "nowhere")


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory):
  """A random-weight AutoencoderKL (8x -> 2x downsampling) saved as a diffusers folder."""
  from flax import nnx
  from safetensors.numpy import save_file

  config = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=[8, 16], layers_per_block=1,
                norm_num_groups=4, scaling_factor=0.18215)
  model = vae_lib.from_config(config, rngs=nnx.Rngs(3))
  sd = {}
  for path, var in nnx.to_flat_state(nnx.state(model, nnx.Param)):
    *module, leaf = map(str, path)
    value = np.asarray(var[...])
    if leaf == "kernel":
      value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
    sd[".".join(module + ["weight" if leaf in ("kernel", "scale") else leaf])] = np.ascontiguousarray(value)
  folder = tmp_path_factory.mktemp("vae")
  save_file(sd, str(folder / vae_lib.WEIGHTS))
  (folder / "config.json").write_text(json.dumps(config))
  return folder


def _extract(source, folder, out, **kw):
  encoder = extract_lib.sharded_encoder(vae_lib.scaled_encoder(vae_lib.load_vae(folder)))
  return extract_lib.extract(source, encoder, out, image_size=16, shard_size=4, batch_size=3, **kw)


def _files(path):
  return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


@pytest.mark.parametrize("store", ["mean_std", "samples"])
def test_extraction_resumes_and_stores_both_flips(tmp_path, tiny_vae, store):
  source = imagenet.ImageFolderSource(make_image_folder(tmp_path / "train"))
  meta = _extract(source, tiny_vae, tmp_path / "a", store=store)
  assert (meta["num_shards"], meta["latent_size"], meta["channels"]) == (3, 8, 4)

  class Interrupted(Exception):
    pass

  calls = []

  def failing_encoder(images):
    calls.append(len(images))
    if len(calls) > 3:  # the probe, then both batches of shard 0, then dies in shard 1
      raise Interrupted
    return extract_lib.sharded_encoder(vae_lib.scaled_encoder(vae_lib.load_vae(tiny_vae)))(images)

  with pytest.raises(Interrupted):
    extract_lib.extract(source, failing_encoder, tmp_path / "b", image_size=16, shard_size=4, batch_size=3,
                        store=store)
  assert sorted(p.name for p in (tmp_path / "b").glob("*.array_record")) == [latents.shard_name(0, 3)]
  _extract(source, tiny_vae, tmp_path / "b", store=store)
  assert _files(tmp_path / "a") == _files(tmp_path / "b")

  from array_record.python.array_record_data_source import ArrayRecordDataSource

  records = ArrayRecordDataSource([str(tmp_path / "a" / latents.shard_name(i, 3)) for i in range(3)])
  label, arr = latents.decode_record(records[4], meta)
  assert label == 1 and arr.dtype == np.float16 and arr.shape == latents.record_shape(meta)
  image = imagenet.to_model_range(source.read([4], 16)[0])
  mean, std = vae_lib.load_encoder(tiny_vae)(np.concatenate([image, image[:, :, ::-1]]))
  if store == "mean_std":
    np.testing.assert_allclose(arr[:, 0].astype(np.float32), mean, rtol=2e-3, atol=2e-3)
    np.testing.assert_allclose(arr[:, 1].astype(np.float32), std, rtol=2e-3, atol=2e-3)
  else:
    assert np.all(np.abs(arr.astype(np.float32) - mean) <= 6 * std + 2e-3)


def test_training_on_latents_resumes_mid_epoch_with_the_same_batches(tmp_path, tiny_vae):
  source = imagenet.ImageFolderSource(make_image_folder(tmp_path / "train"))
  _extract(source, tiny_vae, tmp_path / "latents")

  def config(steps):
    c = tiny_config(num_steps=steps, batch_size=2, ckpt_every=1, sample_every=6)
    c.data.name, c.data.path = "imagenet_latents", str(tmp_path / "latents")
    c.data.image_size, c.data.channels, c.data.num_classes = 8, 4, 3
    c.sample.cfg_channels, c.sample.vae, c.sample.grid_classes = 3, str(tiny_vae), (0, 1, 2)
    return c

  straight, _ = train.train_and_evaluate(config(6), tmp_path / "straight")  # 4 steps per epoch
  train.train_and_evaluate(config(3), tmp_path / "resumed")
  resumed, _ = train.train_and_evaluate(config(6), tmp_path / "resumed")
  for a, b in zip(jax.tree.leaves(straight["params"]), jax.tree.leaves(resumed["params"])):
    np.testing.assert_array_equal(a, b)
  grid = Image.open(tmp_path / "straight" / "samples" / "step_00000006.png")
  assert grid.size == (8 * (3 * (16 + 2) + 2), 8 * (16 + 2 + 2))  # decoded to 16 px, shown 8x

  bad = config(1)
  bad.data.image_size = 32
  with pytest.raises(ValueError, match="latent size"):
    train.train_and_evaluate(bad, tmp_path / "bad")
  bad.data.path = str(tmp_path / "missing")
  with pytest.raises(FileNotFoundError, match="extract one first"):
    train.train_and_evaluate(bad, tmp_path / "bad")


def test_tfds_source_on_a_generated_dataset(tmp_path):
  tfds = pytest.importorskip("tensorflow_datasets", reason="the tfds input path needs tensorflow-datasets")

  class TinyImagenet(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
          {"image": tfds.features.Image(shape=(None, None, 3)), "label": tfds.features.ClassLabel(num_classes=4)}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i in range(7):
        yield i, {"image": synthetic(20 + 3 * i, 30), "label": i % 4}

  TinyImagenet(data_dir=str(tmp_path)).download_and_prepare()
  src = imagenet.open_source(f"tfds:tiny_imagenet:train@{tmp_path}")
  assert len(src) == 7 and src.num_classes == 4
  all_images, all_labels = src.read(range(7), 16)  # tfds's own (key-hashed) example order
  crops = {i: imagenet.center_crop_arr(Image.fromarray(synthetic(20 + 3 * i, 30)), 16) for i in range(7)}
  matched = [next(i for i, c in crops.items() if np.array_equal(c, img)) for img in all_images]
  assert sorted(matched) == list(range(7)) and [i % 4 for i in matched] == all_labels.tolist()
  images, labels = src.read(range(2, 5), 16)
  np.testing.assert_array_equal(images, all_images[2:5])
  np.testing.assert_array_equal(labels, all_labels[2:5])
  with pytest.raises(FileNotFoundError, match="tfds build"):
    imagenet.open_source(f"tfds:imagenet2012@{tmp_path / 'none'}")
