"""The digit judge: Judge gives evaluate_samples' accuracy and FID."""

import numpy as np
from flax import nnx

from gspn_jax import digits_eval
from gspn_jax.data import digits


def test_judge_matches_evaluate_samples():
  classifier = digits_eval.DigitClassifier(nnx.Rngs(1))  # untrained: the bookkeeping is what is checked
  x, y = digits.load_split("train")
  samples, labels = x[:200] + 0.05 * np.random.default_rng(0).standard_normal(x[:200].shape), y[:200]
  want = digits_eval.evaluate_samples(samples, labels, classifier)
  acc, fid = digits_eval.Judge(classifier)(samples, labels)
  np.testing.assert_allclose(acc, want["conditional_accuracy"], rtol=1e-6)  # float32 vs float64 mean
  np.testing.assert_allclose(fid, want["fid_samples_vs_test"], rtol=1e-6)
  assert fid > 0
