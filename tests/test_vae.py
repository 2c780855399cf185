import json

import jax.numpy as jnp
import numpy as np
import pytest

from gspn_jax import vae as vae_lib

torch = pytest.importorskip("torch", reason="the reference AutoencoderKL runs on torch CPU")
diffusers = pytest.importorskip("diffusers", reason="the reference AutoencoderKL is diffusers'")

TINY = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(32, 64), layers_per_block=1,
            norm_num_groups=8)


def _reference(seed=0):
  torch.manual_seed(seed)
  model = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, **TINY).eval()
  with torch.no_grad():  # move every parameter off its initialisation (GroupNorm affine too)
    for p in model.parameters():
      p.add_(0.1 * torch.randn_like(p))
  return model


def _save_folder(model, path, legacy_names=False):
  from safetensors.torch import save_file

  sd = {k: v.contiguous() for k, v in model.state_dict().items()}
  if legacy_names:  # the naming of older hub checkpoints such as sd-vae-ft-ema
    for new, old in (("to_q", "query"), ("to_k", "key"), ("to_v", "value"), ("to_out.0", "proj_attn")):
      sd = {k.replace(f".{new}.", f".{old}."): v for k, v in sd.items()}
  path.mkdir()
  save_file(sd, str(path / vae_lib.WEIGHTS))
  (path / "config.json").write_text(json.dumps(dict(model.config)))
  return path


def _rel_err(a, b):
  return np.abs(np.asarray(a) - b).max() / np.abs(b).max()


@pytest.mark.parametrize("legacy_names", [False, True])
def test_encode_decode_match_diffusers(tmp_path, legacy_names):
  ref = _reference()
  ours = vae_lib.load_vae(_save_folder(ref, tmp_path / "vae", legacy_names))
  images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 24, 3)).astype(np.float32)
  with torch.no_grad():
    posterior = ref.encode(torch.from_numpy(images).permute(0, 3, 1, 2)).latent_dist
    latents = posterior.mean
    decoded = ref.decode(latents).sample
  mean, std = ours.encode(jnp.asarray(images))
  assert _rel_err(mean, posterior.mean.permute(0, 2, 3, 1).numpy()) <= 1e-4
  assert _rel_err(std, posterior.std.permute(0, 2, 3, 1).numpy()) <= 1e-4
  out = ours.decode(jnp.asarray(latents.permute(0, 2, 3, 1).numpy()))
  assert _rel_err(out, decoded.permute(0, 2, 3, 1).numpy()) <= 1e-4


def test_scaled_encoder_and_decoder(tmp_path):
  folder = _save_folder(_reference(), tmp_path / "vae")
  (folder / "config.json").write_text(json.dumps({**json.loads((folder / "config.json").read_text()),
                                                    "scaling_factor": 0.5}))
  images = np.random.default_rng(1).uniform(-1, 1, (1, 16, 16, 3)).astype(np.float32)
  mean, std = vae_lib.load_encoder(folder)(images)
  raw_mean, raw_std = vae_lib.load_vae(folder).encode(jnp.asarray(images))
  np.testing.assert_allclose(mean, 0.5 * raw_mean, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(std, 0.5 * raw_std, rtol=1e-5, atol=1e-6)
  decoded = vae_lib.load_decoder(folder)(mean)
  np.testing.assert_allclose(decoded, vae_lib.load_vae(folder).decode(raw_mean), rtol=1e-5, atol=1e-5)


def test_missing_vae_says_what_to_provide(tmp_path):
  with pytest.raises(FileNotFoundError, match="diffusers-format folder"):
    vae_lib.resolve(tmp_path / "nowhere" / "vae" / "x")
  (tmp_path / "empty").mkdir()
  with pytest.raises(FileNotFoundError, match="lacks"):
    vae_lib.resolve(tmp_path / "empty")
