import importlib.util
import json
import sys
import types

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from scipy import linalg, special
from scipy.spatial.distance import cdist

from fid import metrics
from fid.evaluate import NpzImages, write_batch
from fid.inception import InceptionV3, resize_bilinear_tf1
from fid.weights import load_state_dict
from tests.cli import run_ok


def _random_cov(rng, d, n=500):
  a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
  return np.cov(a, rowvar=False)


def test_frechet_distance_against_the_symmetric_formula():
  rng = np.random.default_rng(0)
  mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
  s1, s2 = _random_cov(rng, 16), _random_cov(rng, 16)
  r1 = linalg.sqrtm(s1).real
  want = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * linalg.sqrtm(r1 @ s2 @ r1).real)
  assert metrics.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(want, rel=1e-6)
  # Diagonal covariances: sum (sqrt(a) - sqrt(b))^2.
  a, b = rng.uniform(0.5, 2, 8), rng.uniform(0.5, 2, 8)
  got = metrics.frechet_distance(np.zeros(8), np.diag(a), np.zeros(8), np.diag(b))
  assert got == pytest.approx(np.sum((np.sqrt(a) - np.sqrt(b)) ** 2), rel=1e-6)
  with pytest.raises(ValueError, match="dimensions"):
    metrics.frechet_distance(mu1, s1, mu2[:4], s2[:4, :4])


def test_frechet_distance_safeguards(monkeypatch):
  rng = np.random.default_rng(1)
  s1, s2 = _random_cov(rng, 6), _random_cov(rng, 6)
  want = metrics.frechet_distance(np.zeros(6), s1, np.zeros(6), s2)
  real_sqrtm, calls = linalg.sqrtm, []

  def singular_once(a):  # the first product "fails", as a singular one can
    calls.append(a)
    return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

  monkeypatch.setattr(metrics.linalg, "sqrtm", singular_once)
  with pytest.warns(UserWarning, match="singular product"):
    got = metrics.frechet_distance(np.zeros(6), s1, np.zeros(6), s2)
  np.testing.assert_allclose(calls[1], (s1 + 1e-6 * np.eye(6)) @ (s2 + 1e-6 * np.eye(6)))
  assert got == pytest.approx(want, rel=1e-5)
  monkeypatch.setattr(metrics.linalg, "sqrtm", lambda a: real_sqrtm(a) + 1e-2j * np.eye(len(a)))
  with pytest.raises(ValueError, match="Imaginary component"):
    metrics.frechet_distance(np.zeros(6), s1, np.zeros(6), s2)
  monkeypatch.setattr(metrics.linalg, "sqrtm", lambda a: real_sqrtm(a) + 1e-5j * np.eye(len(a)))
  assert metrics.frechet_distance(np.zeros(6), s1, np.zeros(6), s2) == pytest.approx(want, rel=1e-6)


def test_inception_score_against_direct_kl():
  rng = np.random.default_rng(2)
  logits = rng.normal(size=(300, 20)) * 3
  p = special.softmax(logits, axis=1)
  want = np.mean([np.exp(np.mean([np.sum(special.rel_entr(q, part.mean(0))) for q in part]))
                  for part in (p[:100], p[100:200], p[200:])])
  assert metrics.inception_score(logits, split_size=100) == pytest.approx(want, rel=1e-6)
  assert metrics.inception_score(np.zeros((50, 10))) == pytest.approx(1.0)
  assert metrics.inception_score(np.eye(10) * 100) == pytest.approx(10.0, rel=1e-6)


def _brute_force_pr(ref, sam, k=3):
  d_rr, d_ss, d_rs = cdist(ref, ref, "sqeuclidean"), cdist(sam, sam, "sqeuclidean"), cdist(ref, sam, "sqeuclidean")
  r_ref, r_sam = np.sort(d_rr, 1)[:, k], np.sort(d_ss, 1)[:, k]
  precision = np.mean([(d_rs[:, j] <= r_ref).any() for j in range(len(sam))])
  recall = np.mean([(d_rs[i] <= r_sam).any() for i in range(len(ref))])
  return precision, recall


def test_precision_recall_on_constructed_clouds():
  rng = np.random.default_rng(3)
  ref = rng.normal(size=(200, 8)).astype(np.float32)
  assert metrics.precision_recall(ref, ref) == (1.0, 1.0)
  assert metrics.precision_recall(ref, ref + 100.0) == (0.0, 0.0)
  # Half of the samples are copies of reference points, half lie far away: precision 1/2.
  sam = np.concatenate([ref[:100], rng.normal(size=(100, 8)).astype(np.float32) + 50])
  precision, recall = metrics.precision_recall(ref, sam, block=64)  # blocks smaller than the sets
  assert precision == 0.5
  assert (precision, recall) == pytest.approx(_brute_force_pr(ref, sam), abs=1e-12)
  sam2 = ref[:150] + rng.normal(size=(150, 8)).astype(np.float32) * 0.5
  assert metrics.precision_recall(ref, sam2) == pytest.approx(_brute_force_pr(ref, sam2), abs=0.011)


def test_pairwise_distances_half_precision_and_overflow_fallback():
  rng = np.random.default_rng(4)
  u, v = rng.uniform(0, 3, (20, 64)), rng.uniform(0, 3, (30, 64))
  exact = cdist(u, v, "sqeuclidean")
  np.testing.assert_allclose(metrics.pairwise_distances(u, v), exact, rtol=5e-3, atol=0.5)
  big_u, big_v = u * 100, v * 100  # squared norms beyond float16's 65504
  np.testing.assert_allclose(metrics.pairwise_distances(big_u, big_v), exact * 1e4, rtol=1e-4)


def test_resize_matches_tensorflow1_semantics():
  x = np.arange(4 * 6, dtype=np.float32).reshape(1, 4, 6, 1)
  y = np.asarray(resize_bilinear_tf1(jnp.asarray(x), 8))
  # TF1 (no half-pixel centres): output row i samples input row i * 4 / 8, clamped at the edge.
  assert y.shape == (1, 8, 8, 1)
  np.testing.assert_allclose(y[0, :, 0, 0], [0, 3, 6, 9, 12, 15, 18, 18])
  np.testing.assert_allclose(y[0, 0, :, 0], [0, 0.75, 1.5, 2.25, 3, 3.75, 4.5, 5])


def _random_torch_state_dict(seed=0):
  """pytorch-fid-named random weights, scaled so activations stay O(1) through the net."""
  rng = np.random.default_rng(seed)
  sd = {}
  for path, var in nnx.to_flat_state(nnx.state(InceptionV3())):
    *module, leaf = map(str, path)
    name = ".".join(module)
    shape = tuple(var.shape)
    if leaf == "kernel" and len(shape) == 4:
      kh, kw, cin, cout = shape
      sd[name + ".weight"] = rng.normal(0, np.sqrt(2 / (kh * kw * cin)), (cout, cin, kh, kw)).astype(np.float32)
    elif leaf == "kernel":
      sd[name + ".weight"] = rng.normal(0, 0.05, shape[::-1]).astype(np.float32)
    elif leaf == "scale":
      sd[name + ".weight"] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
    elif leaf == "bias":
      sd[name + ".bias"] = rng.normal(0, 0.1, shape).astype(np.float32)
    elif leaf == "mean":
      sd[name + ".running_mean"] = rng.normal(0, 0.1, shape).astype(np.float32)
    elif leaf == "var":
      sd[name + ".running_var"] = rng.uniform(0.5, 1.5, shape).astype(np.float32)
  sd["fc.bias"] = rng.normal(size=1008).astype(np.float32)
  return sd


def _torch_fidelity_extractor(weights_path):
  """torch-fidelity's TF-exact InceptionV3, imported without its package __init__ (which
  needs torchvision, absent from CPU-only installs)."""
  pytest.importorskip("torch", reason="the independent reference runs on torch CPU")
  spec = importlib.util.find_spec("torch_fidelity")
  if spec is None:
    pytest.skip("torch-fidelity is not installed (make test installs it)")
  saved = sys.modules.get("torch_fidelity")
  shim = types.ModuleType("torch_fidelity")
  shim.__path__ = list(spec.submodule_search_locations)
  sys.modules["torch_fidelity"] = shim
  try:
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
  finally:
    if saved is None:
      sys.modules.pop("torch_fidelity")
  return FeatureExtractorInceptionV3("inception", ["2048", "logits_unbiased"],
                                     feature_extractor_weights_path=str(weights_path))


def test_inception_matches_torch_fidelity_with_the_same_random_weights(tmp_path):
  import torch

  sd = _random_torch_state_dict()
  torch.save({k: torch.from_numpy(v) for k, v in sd.items()}, tmp_path / "w.pth")
  ref_model = _torch_fidelity_extractor(tmp_path / "w.pth")
  spatial = {}
  ref_model.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: spatial.setdefault("x", o))
  images = np.random.default_rng(5).integers(0, 256, (2, 37, 45, 3), dtype=np.uint8)  # odd size: resize matters
  with torch.no_grad():
    pool, logits = ref_model(torch.from_numpy(images).permute(0, 3, 1, 2))
  ref_spatial = spatial["x"].permute(0, 2, 3, 1)[..., :7].reshape(2, -1).numpy()

  ours = load_state_dict(InceptionV3(), sd)(jnp.asarray(images, jnp.float32))
  for got, want in ((ours["pool_3"], pool.numpy()), (ours["logits"], logits.numpy()),
                    (ours["spatial"], ref_spatial)):
    got = np.asarray(got)
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_weights_loader_rejects_other_files():
  sd = _random_torch_state_dict()
  with pytest.raises(KeyError, match="lack"):
    load_state_dict(InceptionV3(), {k: v for k, v in sd.items() if not k.startswith("Mixed_7c.branch_pool")})
  sd["fc.weight"] = sd["fc.weight"][:1000]
  with pytest.raises(ValueError, match="fc.weight"):
    load_state_dict(InceptionV3(), sd)


def test_npz_batches_stream_and_round_trip(tmp_path):
  images = np.random.default_rng(6).integers(0, 256, (10, 4, 5, 3), dtype=np.uint8)
  write_batch(tmp_path / "b.npz", images, with_statistics={"mu": np.zeros(3)})
  batches = list(NpzImages(tmp_path / "b.npz").batches(4))
  assert [len(b) for b in batches] == [4, 4, 2]
  np.testing.assert_array_equal(np.concatenate(batches), images)
  np.savez(tmp_path / "bad.npz", arr_0=images.astype(np.float32))
  with pytest.raises(ValueError, match="uint8"):
    NpzImages(tmp_path / "bad.npz")
  np.savez(tmp_path / "none.npz", images=images)
  with pytest.raises(ValueError, match="arr_0"):
    NpzImages(tmp_path / "none.npz")


def test_evaluate_cli_end_to_end(tmp_path):
  np.savez(tmp_path / "w.npz", **_random_torch_state_dict())
  rng = np.random.default_rng(7)
  ref = rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
  sam = np.clip(ref.astype(int) + rng.integers(-20, 20, ref.shape), 0, 255).astype(np.uint8)
  write_batch(tmp_path / "ref.npz", ref)
  write_batch(tmp_path / "sam.npz", sam)
  out = run_ok(["-m", "fid.evaluate", str(tmp_path / "ref.npz"), str(tmp_path / "sam.npz"),
                "--inception", str(tmp_path / "w.npz"), "--out", str(tmp_path / "m.json")], timeout=900)
  for name in ("Inception Score:", "FID:", "sFID:", "Precision:", "Recall:"):
    assert name in out.stdout
  result = json.loads((tmp_path / "m.json").read_text())
  assert result["num_samples"] == 12 and 0 <= result["precision"] <= 1 and result["fid"] > 0


def test_reference_batch_statistics_are_used_when_stored(tmp_path):
  from fid.evaluate import evaluate
  from fid.reference import write_reference_batch

  rng = np.random.default_rng(8)
  features = lambda images: {"pool_3": images.reshape(len(images), -1)[:, :6] / 255.0,
                             "spatial": images.reshape(len(images), -1)[:, 6:10] / 255.0,
                             "logits": images.reshape(len(images), -1)[:, :5] / 25.0}
  everything = rng.integers(0, 256, (40, 2, 2, 3), dtype=np.uint8)
  write_batch(tmp_path / "all.npz", everything)
  write_reference_batch(tmp_path / "all.npz", tmp_path / "ref.npz", features, keep=12)
  ref = np.load(tmp_path / "ref.npz")
  assert ref["arr_0"].shape == (12, 2, 2, 3)
  mu, sigma = metrics.compute_statistics(features(everything.astype(np.float32))["pool_3"])
  np.testing.assert_allclose(ref["mu"], mu, rtol=1e-6)
  np.testing.assert_allclose(ref["sigma"], sigma, rtol=1e-6)
  write_batch(tmp_path / "sam.npz", everything[20:])
  with_stats = evaluate(tmp_path / "ref.npz", tmp_path / "sam.npz", features)
  write_batch(tmp_path / "ref_plain.npz", ref["arr_0"])  # the same 12 images, no statistics
  without = evaluate(tmp_path / "ref_plain.npz", tmp_path / "sam.npz", features)
  smu, ssig = metrics.compute_statistics(features(everything[20:].astype(np.float32))["pool_3"])
  assert with_stats["fid"] == pytest.approx(metrics.frechet_distance(smu, ssig, mu, sigma), rel=1e-6)
  assert with_stats["fid"] != pytest.approx(without["fid"], rel=1e-3)
  assert with_stats["precision"] == without["precision"]  # P/R always use the stored images
