"""The ADM evaluator's metrics (guided-diffusion evaluations/evaluator.py), in numpy.

Each function computes what the evaluator computes, with its numerical safeguards:
FID/sFID from (mu, sigma) with scipy's sqrtm (1e-6 * I added when the product is
singular; an error when the imaginary part exceeds 1e-3), Inception Score over splits
of 5,000, and k-NN Precision/Recall (Kynkaanniemi et al. 2019) with blocked distances.
"""

import warnings

import numpy as np
from scipy import linalg


def compute_statistics(activations):
  """(mu, sigma) of (N, D) activations: mean and np.cov with rows as observations."""
  activations = np.asarray(activations, np.float64)
  return np.mean(activations, axis=0), np.cov(activations, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
  """||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2))."""
  mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
  sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
  if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
    raise ValueError(f"statistics of different dimensions: mu {mu1.shape} vs {mu2.shape}, "
                     f"sigma {sigma1.shape} vs {sigma2.shape}")
  diff = mu1 - mu2
  covmean = linalg.sqrtm(sigma1.dot(sigma2))
  if not np.isfinite(covmean).all():
    warnings.warn(f"fid calculation produces singular product; adding {eps} to diagonal of cov estimates")
    offset = np.eye(sigma1.shape[0]) * eps
    covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))
  if np.iscomplexobj(covmean):
    if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
      raise ValueError(f"Imaginary component {np.max(np.abs(covmean.imag))}")
    covmean = covmean.real
  return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def inception_score(logits, split_size=5000):
  """exp(E_x KL(p(y|x) || p(y))) per split of split_size, averaged over splits.

  logits: (N, 1008) = pool_3 @ W, as the evaluator's softmax graph computes them."""
  logits = np.asarray(logits, np.float64)
  logits = logits - logits.max(axis=1, keepdims=True)
  preds = np.exp(logits)
  preds /= preds.sum(axis=1, keepdims=True)
  scores = []
  for i in range(0, len(preds), split_size):
    part = preds[i:i + split_size]
    kl = part * (np.log(part) - np.log(np.mean(part, 0, keepdims=True)))
    scores.append(np.exp(np.mean(np.sum(kl, 1))))
  return float(np.mean(scores))


def pairwise_distances(u, v):
  """Squared Euclidean distances as the evaluator's DistanceBlock computes them: in half
  precision (|u|^2 - 2 u.v + |v|^2 with each term and step rounded to float16, products
  accumulated in float32), and in float32 where half precision overflows."""
  u, v = np.asarray(u, np.float32), np.asarray(v, np.float32)
  u16, v16 = u.astype(np.float16), v.astype(np.float16)
  with np.errstate(over="ignore", invalid="ignore"):
    nu = np.square(u16.astype(np.float32)).sum(1).astype(np.float16)
    nv = np.square(v16.astype(np.float32)).sum(1).astype(np.float16)
    mm = (u16.astype(np.float32) @ v16.astype(np.float32).T).astype(np.float16)
    d16 = np.maximum(nu[:, None] - np.float16(2) * mm + nv[None, :], np.float16(0))
  if np.isfinite(d16).all():
    return d16.astype(np.float32)
  d = np.square(u).sum(1)[:, None] - 2 * u @ v.T + np.square(v).sum(1)[None, :]
  return np.maximum(d, 0.0)


def _blocks(n, size):
  return [(i, min(i + size, n)) for i in range(0, n, size)]


def manifold_radii(features, k=3, block=10000):
  """Squared distance of each point to its k-th nearest neighbour (itself excluded)."""
  n = len(features)
  radii = np.zeros(n, np.float32)
  for b0, b1 in _blocks(n, block):
    d = np.concatenate([pairwise_distances(features[b0:b1], features[c0:c1]) for c0, c1 in _blocks(n, block)], 1)
    radii[b0:b1] = np.partition(d, k, axis=1)[:, k]  # index 0 is the point itself
  return radii


def precision_recall(ref_features, sample_features, k=3, block=10000):
  """Improved Precision and Recall (Kynkaanniemi et al. 2019): the fraction of samples
  inside the reference manifold, and of references inside the sample manifold, each
  manifold the union of k-NN balls."""
  ref, sam = np.asarray(ref_features, np.float32), np.asarray(sample_features, np.float32)
  r_ref, r_sam = manifold_radii(ref, k, block), manifold_radii(sam, k, block)
  ref_in = np.zeros(len(ref), bool)  # covered by some sample's ball: recall
  sam_in = np.zeros(len(sam), bool)  # inside some reference's ball: precision
  for a0, a1 in _blocks(len(ref), block):
    for b0, b1 in _blocks(len(sam), block):
      d = pairwise_distances(ref[a0:a1], sam[b0:b1])
      ref_in[a0:a1] |= (d <= r_sam[None, b0:b1]).any(1)
      sam_in[b0:b1] |= (d <= r_ref[a0:a1, None]).any(0)
  return float(sam_in.mean()), float(ref_in.mean())
