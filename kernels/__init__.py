"""Triton GPU kernels, called from JAX through jax-triton.

jax-triton imports only where a GPU jaxlib is installed, so this package is imported
lazily: `available()` says whether the Triton path can run here.
"""

import functools


@functools.cache
def available():
  import jax

  if jax.default_backend() != "gpu":
    return False
  try:
    import jax_triton  # noqa: F401
  except ImportError:
    return False
  return True


def gspn_scan_triton(x, gl, gc, gr, lam, *, direction, chunk=None, normalize=False):
  if not available():
    raise RuntimeError("impl='triton' needs a CUDA GPU with jax-triton installed (pip install -e '.[gpu]'); "
                       "use impl='xla' elsewhere")
  from kernels.jax_op import gspn_scan_triton as op

  return op(x, gl, gc, gr, lam, direction, chunk, normalize)
