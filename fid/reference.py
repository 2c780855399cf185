"""Write an ADM reference batch: statistics over a whole image set, plus a subset.

  python -m fid.reference train_images.npz VIRTUAL_myset.npz [--keep 10000]

Like VIRTUAL_imagenet256_labeled.npz: arr_0 holds --keep images (for Precision/Recall),
mu/sigma (pool_3) and mu_s/sigma_s (spatial) are computed over every input image.
"""

import argparse

import numpy as np

from fid import metrics
from fid.evaluate import BATCH_SIZE, NpzImages, compute_activations, write_batch
from fid.inception import extractor
from fid.weights import load_inception


def write_reference_batch(images_path, out_path, features_fn, keep=10_000):
  images = NpzImages(images_path)
  pool, spatial, _ = compute_activations(features_fn, images.batches(BATCH_SIZE), desc="reference",
                                        total=-(-len(images) // BATCH_SIZE))
  (mu, sigma), (mu_s, sigma_s) = metrics.compute_statistics(pool), metrics.compute_statistics(spatial)
  kept = np.concatenate(list(images.batches(BATCH_SIZE)))[:keep] if keep else np.zeros((0,) + images.shape[1:])
  write_batch(out_path, kept.astype(np.uint8), with_statistics={"mu": mu, "sigma": sigma, "mu_s": mu_s,
                                                                 "sigma_s": sigma_s})
  return out_path


def main(argv=None):
  p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  p.add_argument("images", help=".npz with arr_0: uint8 images (N, H, W, 3)")
  p.add_argument("out", help="reference batch to write")
  p.add_argument("--keep", type=int, default=10_000, help="images stored in arr_0")
  p.add_argument("--inception", default=None, help="pt_inception-2015-12-05-6726825d.pth (or .npz)")
  args = p.parse_args(argv)
  write_reference_batch(args.images, args.out, extractor(load_inception(args.inception)), args.keep)
  print(f"wrote {args.out}")


if __name__ == "__main__":
  main()
