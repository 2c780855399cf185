"""The converters on full-size checkpoints' key names and shapes (zero-stride arrays,
abstract models: no memory), against the tabulated parameter counts."""

import numpy as np
import pytest
from flax import nnx

from gspn_jax import convert
from gspn_jax.models import DiT_models, GSPN_models


def _zeros(shape):
  return np.broadcast_to(np.zeros((), np.float32), shape)


def _embedders(d, p, c, classes):
  return {"x_embedder.proj.weight": (d, c, p, p), "x_embedder.proj.bias": (d,),
          "t_embedder.mlp.0.weight": (d, 256), "t_embedder.mlp.0.bias": (d,),
          "t_embedder.mlp.2.weight": (d, d), "t_embedder.mlp.2.bias": (d,),
          "y_embedder.embedding_table.weight": (classes + 1, d),
          "final_layer.linear.weight": (p * p * 2 * c, d), "final_layer.linear.bias": (p * p * 2 * c,),
          "final_layer.adaLN_modulation.1.weight": (2 * d, d), "final_layer.adaLN_modulation.1.bias": (2 * d,)}


def dit_official_shapes(depth, d, p=2, c=4, classes=1000, grid=16):
  sd = {"pos_embed": (1, grid * grid, d), **_embedders(d, p, c, classes)}
  for i in range(depth):
    b = f"blocks.{i}."
    sd.update({b + "attn.qkv.weight": (3 * d, d), b + "attn.qkv.bias": (3 * d,),
               b + "attn.proj.weight": (d, d), b + "attn.proj.bias": (d,),
               b + "mlp.fc1.weight": (4 * d, d), b + "mlp.fc1.bias": (4 * d,),
               b + "mlp.fc2.weight": (d, 4 * d), b + "mlp.fc2.bias": (d,),
               b + "adaLN_modulation.1.weight": (6 * d, d), b + "adaLN_modulation.1.bias": (6 * d,)})
  return sd


def gspn_released_shapes(depth, d, p=2, c=4, classes=1000):
  ds = d // 16
  sd = {"norm_f.weight": (d,), "norm_f.bias": (d,), **_embedders(d, p, c, classes)}
  blocks = [f"in_blocks.{i}." for i in range(depth // 2)] + ["mid_block."]
  blocks += [f"out_blocks.{i}." for i in range(depth // 2)]
  for b in blocks:
    sd.update({b + "in_proj.weight": (d, d), b + "conv2d.weight": (d, 1, 7, 7), b + "conv2d.bias": (d,),
               b + "out_conv.weight": (d, d, 1, 1), b + "out_dconv.weight": (d, 1, 3, 3),
               b + "out_proj.weight": (d, d), b + "x_conv_down.weight": (ds, d, 1, 1),
               b + "w_conv_up.weight": (12 * d, ds, 1, 1), b + "l_conv_up.weight": (4 * d, ds, 1, 1),
               b + "u_conv_up.weight": (4 * d, ds, 1, 1), b + "d_conv.weight": (4 * d, ds, 1, 1),
               b + "m_conv.weight": (1, 4, 1, 1), b + "norm.weight": (d,), b + "norm.bias": (d,)})
    if b.startswith("out_blocks"):
      sd.update({b + "skip_linear.weight": (d, 2 * d), b + "skip_linear.bias": (d,)})
  return sd


CASES = [
    ("DiT-XL/2", "dit", dit_official_shapes(28, 1152), 675_129_632),
    ("DiT-S/2", "dit", dit_official_shapes(12, 384), 32_963_360),
    ("GSPN-XL/2", "gspn", gspn_released_shapes(56, 1500), 723_513_260),
    ("GSPN-B/2", "gspn", gspn_released_shapes(30, 900), 144_016_356),
]


@pytest.mark.parametrize("name, arch, shapes, count", CASES, ids=[c[0] for c in CASES])
def test_full_size_checkpoint_names_and_shapes(name, arch, shapes, count):
  assert sum(int(np.prod(s)) for s in shapes.values()) == count  # the key list is the real one
  registry = DiT_models if arch == "dit" else GSPN_models
  model = nnx.eval_shape(lambda: registry[name](input_size=32, in_channels=4, num_classes=1000,
                                                rngs=nnx.Rngs(0)))
  filled = convert.match_state_dict(model, {k: _zeros(s) for k, s in shapes.items()}, arch)
  assert sum(v.size for v in filled.values()) == count
  del shapes[next(iter(shapes))]
  with pytest.raises(KeyError, match="lacks"):
    convert.match_state_dict(model, {k: _zeros(s) for k, s in shapes.items()}, arch)


def test_read_torch_state_dict_takes_the_ema_of_training_checkpoints(tmp_path):
  torch = pytest.importorskip("torch", reason="writes a PyTorch checkpoint")
  w = torch.arange(6.0).reshape(2, 3)
  torch.save({"model": {"a": w * 0}, "ema": {"a": w}, "opt": {}}, tmp_path / "train.pt")
  torch.save({"a": w}, tmp_path / "plain.pt")
  for name in ("train.pt", "plain.pt"):
    np.testing.assert_array_equal(convert.read_torch_state_dict(tmp_path / name)["a"], w.numpy())
  np.savez(tmp_path / "sd.npz", a=w.numpy())
  np.testing.assert_array_equal(convert.read_torch_state_dict(tmp_path / "sd.npz")["a"], w.numpy())
  with pytest.raises(FileNotFoundError):
    convert.read_torch_state_dict(tmp_path / "missing.pt")
