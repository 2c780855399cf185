"""InceptionV3 equal to the TF FID graph (classify_image_graph_def.pb), in Flax NNX.

The architecture is the FID port of the 2015 TF graph (pytorch-fid, torch-fidelity):
TF-style average pools that exclude padding, and a max pool in the last block's pool
branch. The ADM evaluator feeds float32 NHWC images in [0, 255]; inside the graph they
are resized to 299 with TF1's bilinear resize (no half-pixel centres, no antialias)
and mapped by (x - 128) / 128. Outputs:
  pool_3           (N, 2048)   FID, Precision/Recall
  mixed_6/conv     (N, 2023)   sFID: 17 x 17 x first 7 channels, flattened NHWC
  logits           (N, 1008)   Inception Score: pool_3 @ W (softmax/logits/MatMul, no bias)
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

INPUT_SIZE = 299


def resize_bilinear_tf1(x, size):
  """TF1 tf.image.resize_bilinear(align_corners=False): source = dest * in / out."""

  def axis_weights(n_in, n_out):
    src = np.arange(n_out, dtype=np.float64) * (n_in / n_out)
    lo = np.floor(src).astype(np.int32)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (src - lo).astype(np.float32)

  (h_lo, h_hi, h_w), (w_lo, w_hi, w_w) = axis_weights(x.shape[1], size), axis_weights(x.shape[2], size)
  top = x[:, h_lo] + (x[:, h_hi] - x[:, h_lo]) * h_w[None, :, None, None]
  return top[:, :, w_lo] + (top[:, :, w_hi] - top[:, :, w_lo]) * w_w[None, None, :, None]


class BasicConv2d(nnx.Module):
  """Conv (no bias) -> BatchNorm (eps 1e-3, running statistics) -> ReLU."""

  def __init__(self, cin, cout, kernel_size, stride=1, padding=0, *, rngs):
    k = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    p = (padding, padding) if isinstance(padding, int) else padding
    self.conv = nnx.Conv(cin, cout, k, strides=stride, padding=((p[0], p[0]), (p[1], p[1])), use_bias=False,
                         rngs=rngs)
    self.bn = nnx.BatchNorm(cout, epsilon=1e-3, use_running_average=True, rngs=rngs)

  def __call__(self, x):
    return nnx.relu(self.bn(self.conv(x)))


def avg_pool_tf(x):
  """3x3 stride-1 'SAME' average pool that, like TF's, averages over real pixels only."""
  return nnx.avg_pool(x, (3, 3), strides=(1, 1), padding="SAME", count_include_pad=False)


def max_pool(x, stride=2, padding="VALID"):
  return nnx.max_pool(x, (3, 3), strides=(stride, stride), padding=padding)


class InceptionA(nnx.Module):
  def __init__(self, cin, pool_features, *, rngs):
    c = functools.partial(BasicConv2d, rngs=rngs)
    self.branch1x1 = c(cin, 64, 1)
    self.branch5x5_1, self.branch5x5_2 = c(cin, 48, 1), c(48, 64, 5, padding=2)
    self.branch3x3dbl_1, self.branch3x3dbl_2 = c(cin, 64, 1), c(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = c(96, 96, 3, padding=1)
    self.branch_pool = c(cin, pool_features, 1)

  def __call__(self, x):
    return jnp.concatenate([
        self.branch1x1(x),
        self.branch5x5_2(self.branch5x5_1(x)),
        self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
        self.branch_pool(avg_pool_tf(x)),
    ], axis=-1)


class InceptionB(nnx.Module):
  def __init__(self, cin, *, rngs):
    c = functools.partial(BasicConv2d, rngs=rngs)
    self.branch3x3 = c(cin, 384, 3, stride=2)
    self.branch3x3dbl_1, self.branch3x3dbl_2 = c(cin, 64, 1), c(64, 96, 3, padding=1)
    self.branch3x3dbl_3 = c(96, 96, 3, stride=2)

  def __call__(self, x):
    dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
    return jnp.concatenate([self.branch3x3(x), dbl, max_pool(x)], axis=-1)


class InceptionC(nnx.Module):
  def __init__(self, cin, c7, *, rngs):
    c = functools.partial(BasicConv2d, rngs=rngs)
    self.branch1x1 = c(cin, 192, 1)
    self.branch7x7_1, self.branch7x7_2 = c(cin, c7, 1), c(c7, c7, (1, 7), padding=(0, 3))
    self.branch7x7_3 = c(c7, 192, (7, 1), padding=(3, 0))
    self.branch7x7dbl_1, self.branch7x7dbl_2 = c(cin, c7, 1), c(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_3, self.branch7x7dbl_4 = c(c7, c7, (1, 7), padding=(0, 3)), c(c7, c7, (7, 1), padding=(3, 0))
    self.branch7x7dbl_5 = c(c7, 192, (1, 7), padding=(0, 3))
    self.branch_pool = c(cin, 192, 1)

  def __call__(self, x, taps=None):
    b1 = self.branch1x1(x)
    if taps is not None:
      taps["conv"] = b1  # "mixed_N/conv" in the TF graph
    b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
    d = self.branch7x7dbl_1(x)
    for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
      d = layer(d)
    return jnp.concatenate([b1, b7, d, self.branch_pool(avg_pool_tf(x))], axis=-1)


class InceptionD(nnx.Module):
  def __init__(self, cin, *, rngs):
    c = functools.partial(BasicConv2d, rngs=rngs)
    self.branch3x3_1, self.branch3x3_2 = c(cin, 192, 1), c(192, 320, 3, stride=2)
    self.branch7x7x3_1, self.branch7x7x3_2 = c(cin, 192, 1), c(192, 192, (1, 7), padding=(0, 3))
    self.branch7x7x3_3, self.branch7x7x3_4 = c(192, 192, (7, 1), padding=(3, 0)), c(192, 192, 3, stride=2)

  def __call__(self, x):
    b3 = self.branch3x3_2(self.branch3x3_1(x))
    b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
    return jnp.concatenate([b3, b7, max_pool(x)], axis=-1)


class InceptionE(nnx.Module):
  """pool="avg" in Mixed_7b; the FID graph's Mixed_7c pools with max."""

  def __init__(self, cin, pool, *, rngs):
    c = functools.partial(BasicConv2d, rngs=rngs)
    self.pool = pool
    self.branch1x1 = c(cin, 320, 1)
    self.branch3x3_1 = c(cin, 384, 1)
    self.branch3x3_2a, self.branch3x3_2b = c(384, 384, (1, 3), padding=(0, 1)), c(384, 384, (3, 1), padding=(1, 0))
    self.branch3x3dbl_1, self.branch3x3dbl_2 = c(cin, 448, 1), c(448, 384, 3, padding=1)
    self.branch3x3dbl_3a = c(384, 384, (1, 3), padding=(0, 1))
    self.branch3x3dbl_3b = c(384, 384, (3, 1), padding=(1, 0))
    self.branch_pool = c(cin, 192, 1)

  def __call__(self, x):
    b3 = self.branch3x3_1(x)
    d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
    pooled = avg_pool_tf(x) if self.pool == "avg" else max_pool(x, stride=1, padding="SAME")
    return jnp.concatenate([
        self.branch1x1(x),
        self.branch3x3_2a(b3), self.branch3x3_2b(b3),
        self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d),
        self.branch_pool(pooled),
    ], axis=-1)


class InceptionV3(nnx.Module):
  def __init__(self, rngs=None):
    rngs = rngs or nnx.Rngs(0)
    c = functools.partial(BasicConv2d, rngs=rngs)
    self.Conv2d_1a_3x3 = c(3, 32, 3, stride=2)
    self.Conv2d_2a_3x3 = c(32, 32, 3)
    self.Conv2d_2b_3x3 = c(32, 64, 3, padding=1)
    self.Conv2d_3b_1x1 = c(64, 80, 1)
    self.Conv2d_4a_3x3 = c(80, 192, 3)
    self.Mixed_5b = InceptionA(192, 32, rngs=rngs)
    self.Mixed_5c = InceptionA(256, 64, rngs=rngs)
    self.Mixed_5d = InceptionA(288, 64, rngs=rngs)
    self.Mixed_6a = InceptionB(288, rngs=rngs)
    self.Mixed_6b = InceptionC(768, 128, rngs=rngs)
    self.Mixed_6c = InceptionC(768, 160, rngs=rngs)
    self.Mixed_6d = InceptionC(768, 160, rngs=rngs)
    self.Mixed_6e = InceptionC(768, 192, rngs=rngs)
    self.Mixed_7a = InceptionD(768, rngs=rngs)
    self.Mixed_7b = InceptionE(1280, "avg", rngs=rngs)
    self.Mixed_7c = InceptionE(2048, "max", rngs=rngs)
    self.fc = nnx.Linear(2048, 1008, use_bias=False, rngs=rngs)

  def __call__(self, images):
    """images: (N, H, W, 3) float32 in [0, 255] -> {"pool_3", "spatial", "logits"}."""
    x = resize_bilinear_tf1(images.astype(jnp.float32), INPUT_SIZE)
    x = (x - 128) / 128
    x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
    x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(max_pool(x)))
    x = max_pool(x)
    x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
    x = self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(x)))
    taps = {}
    x = self.Mixed_6e(self.Mixed_6d(x, taps))
    x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))
    pool_3 = jnp.mean(x, axis=(1, 2))
    spatial = taps["conv"][..., :7]
    return {"pool_3": pool_3, "spatial": spatial.reshape(spatial.shape[0], -1), "logits": self.fc(pool_3)}


def extractor(model):
  """A jitted images -> features function for a loaded InceptionV3 (weights passed as
  arguments, not baked into the compiled program as constants)."""
  graphdef, state = nnx.split(model)
  return functools.partial(jax.jit(lambda state, images: nnx.merge(graphdef, state)(images)), state)
