"""Quality of class-conditional samples on the embedded digits dataset.

A small CNN trained on the real training split judges the samples: its accuracy on
class-conditional samples, and FID in its penultimate-layer feature space against the
held-out real digits (fid.metrics, the same code as FID-50K). The FID of held-out real
digits against the training digits is reported as the floor a perfect model would reach.
The classifier is retrained from a fixed seed when needed (a few seconds on a CPU), so
every report uses the same judge.
"""

import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fid.metrics import compute_statistics, frechet_distance
from gspn_jax.data import digits
from gspn_jax.sampling import to_uint8

CLASSIFIER_SEED = 0
CLASSIFIER_EPOCHS = 40


class DigitClassifier(nnx.Module):
  def __init__(self, rngs):
    self.conv1 = nnx.Conv(1, 32, (3, 3), rngs=rngs)
    self.conv2 = nnx.Conv(32, 64, (3, 3), rngs=rngs)
    self.fc = nnx.Linear(4 * 4 * 64, 64, rngs=rngs)
    self.head = nnx.Linear(64, digits.NUM_CLASSES, rngs=rngs)

  def features(self, x):
    x = nnx.relu(self.conv2(nnx.relu(self.conv1(x))))
    x = nnx.avg_pool(x, (2, 2), strides=(2, 2))
    return nnx.relu(self.fc(x.reshape(x.shape[0], -1)))

  def __call__(self, x):
    return self.head(self.features(x))


def train_classifier(epochs=CLASSIFIER_EPOCHS):
  """The judge, trained deterministically on the real training split (fewer epochs: a weaker
  judge, for smoke runs only)."""
  x, y = digits.load_split("train")
  model = DigitClassifier(nnx.Rngs(CLASSIFIER_SEED))
  opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)

  @nnx.jit
  def step(model, opt, xb, yb):
    loss_fn = lambda m: optax.softmax_cross_entropy_with_integer_labels(m(xb), yb).mean()
    loss, grads = nnx.value_and_grad(loss_fn)(model)
    opt.update(model, grads)
    return loss

  rng = np.random.default_rng(CLASSIFIER_SEED)
  batch = 64
  for _ in range(epochs):
    perm = rng.permutation(len(x))
    for i in range(0, len(x) - batch + 1, batch):
      idx = perm[i:i + batch]
      step(model, opt, jnp.asarray(x[idx]), jnp.asarray(y[idx]))
  return model


def _quantize(images):
  """Real and generated images alike go through uint8, as in the ADM pipeline."""
  return (to_uint8(images).astype(np.float32) - 128.0) / 127.5


class Judge:
  """evaluate_samples' two numbers for many sample sets: the classifier's functions are
  compiled and the held-out statistics computed once."""

  def __init__(self, classifier=None):
    self.classifier = classifier or train_classifier()
    self._predict = nnx.jit(lambda m, x: (jnp.argmax(m(x), -1), m.features(x)))
    test_x, _ = digits.load_split("test")
    self._test_stats = compute_statistics(np.asarray(self._predict(self.classifier, jnp.asarray(_quantize(test_x)))[1]))

  def __call__(self, samples, labels):
    """(conditional accuracy, feature FID against the held-out digits) of samples in [-1, 1]."""
    pred, feats = self._predict(self.classifier, jnp.asarray(_quantize(samples)))
    fid = frechet_distance(*compute_statistics(np.asarray(feats)), *self._test_stats)
    return float(np.mean(np.asarray(pred) == labels)), float(fid)


def evaluate_samples(samples, labels, classifier=None):
  """Report for (N, 8, 8, 1) samples in [-1, 1] generated for the given labels."""
  classifier = classifier or train_classifier()
  predict = nnx.jit(lambda m, x: m(x))
  feats = nnx.jit(lambda m, x: m.features(x))
  test_x, test_y = digits.load_split("test")
  train_x, _ = digits.load_split("train")
  samples, test_x, train_x = (_quantize(a) for a in (samples, test_x, train_x))
  f_test, f_train, f_samples = (np.asarray(feats(classifier, jnp.asarray(a))) for a in (test_x, train_x, samples))
  mu_t, sig_t = compute_statistics(f_test)
  return {
      "conditional_accuracy": float(np.mean(np.argmax(predict(classifier, jnp.asarray(samples)), -1) == labels)),
      "classifier_test_accuracy": float(np.mean(np.argmax(predict(classifier, jnp.asarray(test_x)), -1) == test_y)),
      "fid_samples_vs_test": frechet_distance(*compute_statistics(f_samples), mu_t, sig_t),
      "fid_train_vs_test_floor": frechet_distance(*compute_statistics(f_train), mu_t, sig_t),
      "num_samples": int(len(samples)),
      "num_test": int(len(test_x)),
  }


def format_report(report, cfg_scale):
  how = f"{report['objective']} model, {report['sampling_steps']}-step {report['sampler']}, " if "sampler" in report else ""
  return "\n".join([
      f"digits quality ({how}cfg {cfg_scale}, {report['num_samples']} samples vs {report['num_test']} held-out real):",
      f"  conditional accuracy            {100 * report['conditional_accuracy']:6.2f} %"
      f"   (judge's accuracy on held-out real digits: {100 * report['classifier_test_accuracy']:.2f} %)",
      f"  FID in classifier features      {report['fid_samples_vs_test']:8.3f}",
      f"  floor: train vs held-out real   {report['fid_train_vs_test_floor']:8.3f}",
  ])
