"""Evaluate a sample batch against a reference batch, as the ADM evaluator does.

  python -m fid.evaluate VIRTUAL_imagenet256_labeled.npz samples.npz [--out metrics.json]

Both files are ADM batches: arr_0 = uint8 images (N, H, W, 3). A reference batch's
stored statistics (mu, sigma for pool_3; mu_s, sigma_s for the spatial features) are
used for FID and sFID when present; its images serve Precision/Recall. Prints Inception
Score, FID, sFID, Precision and Recall in the evaluator's format and writes them as JSON.
Both files are opened and checked (type, shape, resolution, count) before the Inception
weights are loaded; a bad one is one line on stderr naming it, exit code 2.
"""

import argparse
import json
import pathlib
import zipfile

import numpy as np
from fid import metrics
from fid.inception import extractor
from fid.weights import load_inception
from gspn_jax import errors, validation
from gspn_jax.errors import UsageError
from gspn_jax.progress import Progress

BATCH_SIZE = 64  # the evaluator's
MIN_IMAGES = 4  # Precision/Recall take each point's 3rd nearest neighbour besides itself


class NpzImages:
  """arr_0 of an .npz read in batches straight from the archive: a 50K x 256 x 256 x 3
  batch (9.8 GB) never has to fit in memory."""

  def __init__(self, path):
    self.path = pathlib.Path(path)
    if not self.path.is_file():
      raise UsageError(f"{path}: no such file")
    try:
      with zipfile.ZipFile(self.path) as z, z.open(self._member(z)) as f:
        self.shape, self.dtype = self._header(f)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
      raise UsageError(f"{path} is not a readable .npz batch ({type(e).__name__}: {e})") from e
    if len(self.shape) != 4 or self.shape[-1] != 3 or self.dtype != np.uint8:
      raise UsageError(f"{path}: arr_0 is {self.dtype}{list(self.shape)}; expected uint8 (N, H, W, 3) images "
                       "(fid.generate writes them; convert float images with clip(127.5 x + 128, 0, 255))")

  def _member(self, z):
    if "arr_0.npy" not in z.namelist():
      raise UsageError(f"{self.path} has no arr_0: not an ADM sample/reference batch (it holds {z.namelist()})")
    return "arr_0.npy"

  @staticmethod
  def _header(f):
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, fortran, dtype = read(f)
    if fortran:
      raise ValueError("Fortran-ordered arr_0 is not supported")
    return shape, dtype

  def __len__(self):
    return self.shape[0]

  def batches(self, batch_size):
    row = int(np.prod(self.shape[1:]))
    with zipfile.ZipFile(self.path) as z, z.open(self._member(z)) as f:
      self._header(f)
      for start in range(0, len(self), batch_size):
        n = min(batch_size, len(self) - start)
        yield np.frombuffer(f.read(n * row), np.uint8).reshape((n,) + tuple(self.shape[1:]))


def read_statistics(path):
  """{"mu", "sigma", "mu_s", "sigma_s"} stored in a reference batch, or None."""
  with np.load(path) as f:
    if "mu" not in f.files:
      return None
    return {k: f[k] for k in ("mu", "sigma", "mu_s", "sigma_s")}


def write_batch(path, images, *, with_statistics=None, **extra):
  """An ADM batch: arr_0 plus, optionally, precomputed statistics (a reference batch)."""
  arrays = {"arr_0": np.asarray(images, np.uint8), **extra}
  if with_statistics is not None:
    arrays.update(with_statistics)
  path = pathlib.Path(path)
  tmp = path.with_name(path.name + ".tmp.npz")
  np.savez(tmp, **arrays)
  tmp.replace(path)


def compute_activations(features_fn, batches, desc="activations", total=None):
  """(pool_3 (N, 2048), spatial (N, 2023), logits (N, 1008)) of batches of uint8 images."""
  outs = {"pool_3": [], "spatial": [], "logits": []}
  bar = Progress(total, desc=desc, unit="batch")
  for batch in batches:
    feats = features_fn(np.asarray(batch, np.float32))
    for k in outs:
      outs[k].append(np.asarray(feats[k], np.float32))
    bar.update()
  bar.close()
  return tuple(np.concatenate(outs[k]) for k in ("pool_3", "spatial", "logits"))


def check_batches(ref_path, sample_path):
  """(reference, samples) as NpzImages, opened, typed and compared; UsageError naming the file."""
  ref, samples = NpzImages(ref_path), NpzImages(sample_path)
  for batch in (ref, samples):
    if len(batch) < MIN_IMAGES:
      raise UsageError(f"{batch.path} holds {len(batch)} images; the metrics need at least {MIN_IMAGES} "
                       "(the ADM evaluation uses 50,000 samples and 10,000 reference images)")
  if ref.shape[1:3] != samples.shape[1:3]:
    raise UsageError(f"{sample_path} holds {samples.shape[1]}x{samples.shape[2]} images, the reference {ref_path} "
                     f"{ref.shape[1]}x{ref.shape[2]}: evaluate against a reference batch of the same resolution")
  return ref, samples


def evaluate(ref_path, sample_path, features_fn):
  ref, samples = check_batches(ref_path, sample_path)
  ref_pool, ref_spatial, _ = compute_activations(features_fn, ref.batches(BATCH_SIZE), desc=f"reference {ref_path}",
                                                 total=-(-len(ref) // BATCH_SIZE))
  ref_stats = read_statistics(ref_path)
  if ref_stats is None:
    (mu, sigma), (mu_s, sigma_s) = metrics.compute_statistics(ref_pool), metrics.compute_statistics(ref_spatial)
    ref_stats = {"mu": mu, "sigma": sigma, "mu_s": mu_s, "sigma_s": sigma_s}
  pool, spatial, logits = compute_activations(features_fn, samples.batches(BATCH_SIZE),
                                              desc=f"samples {sample_path}", total=-(-len(samples) // BATCH_SIZE))
  mu, sigma = metrics.compute_statistics(pool)
  mu_s, sigma_s = metrics.compute_statistics(spatial)
  precision, recall = metrics.precision_recall(ref_pool, pool)
  return {
      "inception_score": metrics.inception_score(logits),
      "fid": metrics.frechet_distance(mu, sigma, ref_stats["mu"], ref_stats["sigma"]),
      "sfid": metrics.frechet_distance(mu_s, sigma_s, ref_stats["mu_s"], ref_stats["sigma_s"]),
      "precision": precision,
      "recall": recall,
      "num_samples": int(len(pool)),
      "num_reference": int(len(ref_pool)),
  }


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("ref_batch", help="reference batch .npz (e.g. VIRTUAL_imagenet256_labeled.npz)")
  p.add_argument("sample_batch", help="sample batch .npz (arr_0: uint8 images)")
  p.add_argument("--inception", default=None, help="pt_inception-2015-12-05-6726825d.pth (or .npz)")
  p.add_argument("--out", default=None, help="JSON path (default: next to the sample batch)")
  errors.add_verbosity_flag(p)
  args = p.parse_args(argv)
  with errors.one_line_errors(args.verbosity >= 1):
    return _evaluate_and_report(args)


def _evaluate_and_report(args):
  check_batches(args.ref_batch, args.sample_batch)  # before the weights: a bad file costs nothing
  out = pathlib.Path(args.out or pathlib.Path(args.sample_batch).with_suffix(".metrics.json"))
  validation.check_output(out)
  features_fn = extractor(load_inception(args.inception))
  results = evaluate(args.ref_batch, args.sample_batch, features_fn)
  print("Inception Score:", results["inception_score"])
  print("FID:", results["fid"])
  print("sFID:", results["sfid"])
  print("Precision:", results["precision"])
  print("Recall:", results["recall"])
  out.write_text(json.dumps({"ref_batch": str(args.ref_batch), "sample_batch": str(args.sample_batch),
                             **results}, indent=2))
  print(f"wrote {out}")
  return results


if __name__ == "__main__":
  main()
