import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from gspn_jax.convert import dit_from_torch, gspn_from_torch
from gspn_jax.models import DiT, DiT_models, GSPN, GSPN_models, count_params
from gspn_jax.models.gspn import Block

DATA = pathlib.Path(__file__).parent / "data"

PARAM_COUNTS = {
    "GSPN-S/2": 20_151_812, "GSPN-B/2": 144_016_356, "GSPN-L/2": 465_230_660, "GSPN-XL/2": 723_513_260,
    "DiT-S/2": 32_963_360, "DiT-B/2": 130_512_416, "DiT-L/2": 458_102_816, "DiT-XL/2": 675_129_632,
}


@pytest.mark.parametrize("name", PARAM_COUNTS)
def test_parameter_counts_match_the_papers(name):
  registry = GSPN_models if name.startswith("GSPN") else DiT_models
  model = nnx.eval_shape(lambda: registry[name](input_size=32, in_channels=4, num_classes=1000,
                                                rngs=nnx.Rngs(0)))
  assert count_params(model) == PARAM_COUNTS[name]


def test_registries_are_complete():
  assert sorted(GSPN_models) == sorted(f"GSPN-{s}/{p}" for s in "S B L XL".split() for p in (2, 4))
  assert sorted(DiT_models) == sorted(f"DiT-{s}/{p}" for s in "S B L XL".split() for p in (2, 4, 8))


def tiny_gspn(**kw):
  kw = {"input_size": 8, "patch_size": 2, "in_channels": 4, "hidden_size": 32, "depth": 4,
        "num_classes": 10, "rngs": nnx.Rngs(0), **kw}
  return GSPN(**kw)


def _batch(b=2, size=8, c=4, seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  return (jax.random.normal(k1, (b, size, size, c)), jax.random.randint(k2, (b,), 0, 1000),
          jax.random.randint(k3, (b,), 0, 10))


def _perturb(model, seed=1):
  """Move every parameter off its (partly zero) initialisation."""
  leaves, tree = jax.tree.flatten(nnx.state(model, nnx.Param))
  rng = np.random.default_rng(seed)  # numpy: no compile per parameter shape
  nnx.update(model, jax.tree.unflatten(tree, [
      jnp.asarray(np.asarray(l, np.float32) + 0.05 * rng.standard_normal(l.shape), l.dtype) for l in leaves]))
  return model


@pytest.mark.parametrize("merge", ["aligned", "released"])
def test_gspn_output_shape_and_zero_init_head(merge):
  model = tiny_gspn(merge=merge)
  out = model(*_batch())
  assert out.shape == (2, 8, 8, 8)
  np.testing.assert_array_equal(out, 0.0)  # adaLN-Zero style final layer


def test_gspn_segment_settings():
  design = tiny_gspn(depth=8)
  released = tiny_gspn(depth=8, global_last_blocks=False)
  assert [b.spn.chunk for b in design.out_blocks] == [2, 2, None, None]
  assert all(b.spn.chunk == 2 for b in [*released.in_blocks, released.mid_block, *released.out_blocks])


def test_gspn_is_resolution_free_and_aligned_merge_takes_non_square_grids():
  model = _perturb(tiny_gspn())
  x, t, y = _batch()
  assert model(jnp.zeros((2, 12, 16, 4)), t, y).shape == (2, 12, 16, 8)
  with pytest.raises(ValueError, match="square"):
    _perturb(tiny_gspn(merge="released"))(jnp.zeros((2, 12, 16, 4)), t, y)


def test_gspn_matches_the_released_pytorch_model():
  f = np.load(DATA / "gspn_released_tiny.npz")
  sd = {k[3:]: f[k] for k in f.files if k.startswith("sd/")}
  model = gspn_from_torch(tiny_gspn(merge="released", global_last_blocks=False), sd)
  out = model(jnp.asarray(f["x"]).transpose(0, 2, 3, 1), jnp.asarray(f["t"]), jnp.asarray(f["y"]))
  ref = f["out"].transpose(0, 2, 3, 1)
  assert np.abs(np.asarray(out) - ref).max() <= 1e-4 * np.abs(ref).max()


def test_converter_rejects_wrong_checkpoints():
  f = np.load(DATA / "gspn_released_tiny.npz")
  sd = {k[3:]: f[k] for k in f.files if k.startswith("sd/")}
  with pytest.raises(KeyError, match="lacks"):
    gspn_from_torch(tiny_gspn(), {k: v for k, v in sd.items() if k != "norm_f.bias"})
  with pytest.raises(KeyError, match="no counterpart"):
    gspn_from_torch(tiny_gspn(), {**sd, "pos_embed": np.zeros((1, 16, 32))})
  with pytest.raises(ValueError, match="shape"):
    gspn_from_torch(tiny_gspn(), {**sd, "norm_f.weight": np.zeros(33)})
  with pytest.raises(ValueError, match="expects"):
    gspn_from_torch(tiny_gspn(hidden_size=48), sd)  # a checkpoint of another size


def test_dit_matches_the_official_pytorch_model():
  f = np.load(DATA / "dit_official_tiny.npz")
  sd = {k[3:]: f[k] for k in f.files if k.startswith("sd/")}
  model = DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=32, depth=2, num_heads=4,
              num_classes=10, rngs=nnx.Rngs(0))
  np.testing.assert_allclose(model.pos_embed[...].reshape(sd["pos_embed"].shape), sd["pos_embed"], atol=1e-7)
  dit_from_torch(model, sd)
  x, t, y = jnp.asarray(f["x"]).transpose(0, 2, 3, 1), jnp.asarray(f["t"]), jnp.asarray(f["y"])
  for out, name in ((model(x, t, y), "out"), (model.forward_with_cfg(x, t, y, 1.5), "cfg")):
    ref = f[name].transpose(0, 2, 3, 1)
    assert np.abs(np.asarray(out) - ref).max() <= 1e-4 * np.abs(ref).max()


@pytest.mark.parametrize("arch", ["gspn", "dit"])
def test_forward_with_cfg_guides_the_first_channels_only(arch):
  model = tiny_gspn() if arch == "gspn" else DiT(input_size=8, patch_size=2, in_channels=4, hidden_size=32,
                                                 depth=2, num_heads=4, num_classes=10, rngs=nnx.Rngs(0))
  _perturb(model)
  x, t, _ = _batch(b=4)
  y = jnp.array([3, 7, 10, 10])
  xx = jnp.concatenate([x[:2], x[:2]])
  raw = model(xx, t, y)
  for channels in (3, 4):
    out = model.forward_with_cfg(x, t, y, 1.5, cfg_channels=channels)
    cond, uncond = raw[:2], raw[2:]
    guided = uncond[..., :channels] + 1.5 * (cond[..., :channels] - uncond[..., :channels])
    np.testing.assert_allclose(out[:2, ..., :channels], guided, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out[:2, ..., channels:], cond[..., channels:], rtol=1e-5, atol=1e-6)


def test_label_drop_and_drop_path_need_a_key():
  model = _perturb(tiny_gspn(class_dropout_prob=1.0, drop_path_rate=0.0))
  x, t, y = _batch()
  null = jnp.full_like(y, 10)
  np.testing.assert_allclose(model(x, t, y, key=jax.random.key(0)), model(x, t, null), rtol=1e-5, atol=1e-6)
  assert not np.allclose(model(x, t, y), model(x, t, null))
  dp = _perturb(tiny_gspn(drop_path_rate=0.9, class_dropout_prob=0.0))
  assert not np.allclose(dp(x, t, y, key=jax.random.key(3)), dp(x, t, y))


def _grads(model, x, t, y):
  target = jnp.ones(x.shape[:3] + (8,))
  return nnx.grad(lambda m: jnp.mean((m(x, t, y) - target) ** 2))(model)


def test_remat_gives_the_same_gradients():
  x, t, y = _batch()
  g1 = _grads(_perturb(tiny_gspn()), x, t, y)
  g2 = _grads(_perturb(tiny_gspn(remat=True)), x, t, y)
  for a, b in zip(jax.tree.leaves(nnx.state(g1)), jax.tree.leaves(nnx.state(g2))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_bf16_compute_keeps_fp32_params_and_tracks_fp32():
  x, t, y = _batch()
  m32 = _perturb(tiny_gspn())
  m16 = _perturb(tiny_gspn(dtype=jnp.bfloat16))
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(nnx.state(m16, nnx.Param)))
  o32, o16 = m32(x, t, y), m16(x, t, y)
  assert o16.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(o16)))
  assert float(jnp.abs(o16 - o32).max()) < 0.05 * float(jnp.abs(o32).max())
  g = _grads(m16, x, t, y)
  assert all(bool(jnp.all(jnp.isfinite(a))) for a in jax.tree.leaves(nnx.state(g)))


def test_gspn_s2_forward_and_backward_on_cpu():
  # 4 x 4 tokens: local (two-step) and global segments alike, at ~60 % of 8 x 8 tokens' compile time
  model = GSPN_models["GSPN-S/2"](input_size=8, in_channels=4, num_classes=1000, rngs=nnx.Rngs(0))
  _perturb(model)  # the zero-initialised head would otherwise stop every gradient before it
  x, t, y = _batch(b=2, size=8)
  y = y * 100
  loss, grads = nnx.jit(nnx.value_and_grad(lambda m: jnp.mean((m(x, t, y, key=jax.random.key(1)) - 1.0) ** 2)))(model)
  assert np.isfinite(float(loss))
  norms = [float(jnp.linalg.norm(g)) for g in jax.tree.leaves(nnx.state(grads))]
  assert all(np.isfinite(norms)) and all(n > 0 for n in norms)


def test_gspn_train_step_lowers_for_tpu_on_the_xla_path():
  # Exported for TPU (what a TPU would compile): the XLA path, which impl="auto" takes
  # wherever Triton does not run, has a TPU lowering for every op and no custom call. Pinned
  # to "xla" so that on a GPU host, where "auto" is Triton, the test checks the same thing.
  model = _perturb(tiny_gspn(scan_impl="xla"))
  graphdef, params = nnx.split(model, nnx.Param)
  x, t, y = _batch()

  def loss(params):
    return jnp.mean(nnx.merge(graphdef, params)(x, t, y) ** 2)

  module = jax.export.export(jax.jit(jax.value_and_grad(loss)), platforms=("tpu",))(params).mlir_module()
  assert "stablehlo.dot_general" in module
  assert "stablehlo.custom_call" not in module


def test_adaln_conditioning_starts_as_the_released_model_and_conditions_every_block():
  released = tiny_gspn()
  adaln = tiny_gspn(conditioning="adaln")
  d, blocks = 32, 5  # depth 4: 2 encoder + 1 middle + 2 decoder blocks
  assert count_params(adaln) - count_params(released) == blocks * (3 * d * d + 3 * d)
  # adaLN-Zero: zero modulation, so each block's output is gated to zero at initialisation.
  _perturb(released)
  x, t, y = _batch()
  hidden = released.x_embedder(x)
  out, _ = adaln.in_blocks[0](hidden, None, c=jnp.ones((2, d)))
  np.testing.assert_array_equal(out, 0.0)
  _perturb(adaln)
  y2 = (y + 1) % 10
  blk = adaln.in_blocks[0]
  a, _ = blk(hidden, None, c=adaln.y_embedder(y))
  b, _ = blk(hidden, None, c=adaln.y_embedder(y2))
  assert not np.allclose(a, b)  # the label reaches the block directly, not only through its input
  with pytest.raises(ValueError, match="conditioning"):
    tiny_gspn(conditioning="film")


def test_core_norm_adds_a_layernorm_per_block_and_is_off_by_default():
  shape = lambda **kw: nnx.eval_shape(lambda: tiny_gspn(**kw))
  released, normed = shape(), shape(core_norm=True)
  assert all(blk.core_norm is None for blk in [*released.in_blocks, released.mid_block, *released.out_blocks])
  assert count_params(normed) - count_params(released) == 5 * 2 * 32  # 5 blocks, scale and bias of width 32


def test_core_rank_sets_the_gate_bottleneck_and_defaults_to_the_release():
  shape = lambda **kw: nnx.eval_shape(lambda: tiny_gspn(**kw))
  released, wide = shape(), shape(core_rank=8)
  assert released.in_blocks[0].spn.x_conv_down.kernel.shape == (32, 2)  # hidden // 16
  # per block: down 32 x r, ups r x (12 + 4 + 4 + 4) * 32
  assert count_params(wide) - count_params(released) == 5 * (8 - 2) * (32 + 24 * 32)
  with pytest.raises(ValueError, match="core_rank"):
    tiny_gspn(core_rank=0)


def test_core_cond_feeds_c_into_the_gate_bottleneck_zero_initialised_and_is_off_by_default():
  shape = lambda **kw: nnx.eval_shape(lambda: tiny_gspn(**kw))
  released, cond = shape(), shape(core_cond=True)
  assert released.in_blocks[0].spn.c_proj is None
  assert count_params(cond) - count_params(released) == 5 * (32 * 2 + 2)  # per block: c (32) -> rank 2, and a bias
  blk = nnx.jit(lambda: Block(32, chunk=2, drop_path=0.0, skip=False, merge="aligned", impl="auto", dtype=jnp.float32,
                              rngs=nnx.Rngs(0), core_cond=True))()  # one compile, not one per initialiser
  rng = np.random.default_rng(0)
  hidden, c1, c2 = (jnp.asarray(rng.standard_normal(s), jnp.float32) for s in ((2, 4, 4, 32), (2, 32), (2, 32)))
  out = nnx.jit(lambda blk, c: blk(hidden, None, c=c)[0])  # one compile for the four calls
  np.testing.assert_array_equal(out(blk, c1), out(blk, c2))  # zero-initialised
  _perturb(blk)
  # no adaLN in the block (adaln=False), so c reaches its output only through the core
  assert not np.allclose(out(blk, c1), out(blk, c2))


def test_pos_embed_adds_dits_fixed_embedding_and_is_off_by_default():
  released, pos = nnx.eval_shape(tiny_gspn), nnx.eval_shape(lambda: tiny_gspn(pos_embed=True))
  assert released.pos_embed is None and pos.pos_embed.shape == (4, 4, 32)
  assert count_params(pos) - count_params(released) == 4 * 4 * 32  # fixed, counted as DiT's
  graphdef, state = nnx.split(pos)
  x, t, y = _batch(size=16)
  with pytest.raises(ValueError, match="pos_embed"):  # traced only: the check is on static shapes
    jax.eval_shape(lambda s: nnx.merge(graphdef, s)(x, t, y), state)


def test_gate_channels_share_the_gates_and_are_off_by_default():
  shape = lambda **kw: nnx.eval_shape(lambda: tiny_gspn(**kw))
  released, shared = shape(), shape(gate_channels=1)
  assert released.in_blocks[0].spn.w_conv_up.kernel.shape == (2, 12 * 32)  # None: one gate per channel
  assert shared.in_blocks[0].spn.w_conv_up.kernel.shape == (2, 12)  # one gate triple per pixel and group
  assert count_params(released) - count_params(shared) == 5 * 2 * 12 * (32 - 1)  # 5 blocks, rank 2
  with pytest.raises(ValueError, match="gate_channels=3; use a divisor of hidden_size"):
    tiny_gspn(gate_channels=3)
  # one SGD step on the shared-gate model lowers the loss, its gate weights get a gradient
  model = _perturb(tiny_gspn(gate_channels=1, depth=2, input_size=4))  # 2x2 tokens: a cheap compile
  x, t, y = _batch(size=4)
  target = jnp.ones(x.shape[:3] + (8,))
  step = nnx.jit(nnx.value_and_grad(lambda m: jnp.mean((m(x, t, y) - target) ** 2)))
  before, grads = step(model)
  assert float(jnp.abs(grads.in_blocks[0].spn.w_conv_up.kernel[...]).max()) > 0
  params = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(lambda p, g: p - 0.05 * g, params, nnx.state(grads, nnx.Param)))
  assert float(step(model)[0]) < float(before)
