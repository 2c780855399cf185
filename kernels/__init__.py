"""Triton GPU kernels, called from JAX through jax-triton.

jax-triton imports only where a GPU jaxlib is installed, so this package is imported
lazily: `available()` says whether the Triton path can run here. `cuda_target(cc)` lets
a CPU machine lower the Triton path for CUDA (jax-triton's real lowering rule, compiled
for compute capability cc) without running it: the audit in kernels/audit.py.
"""

import contextlib
import contextvars
import functools

INSTALL_HINT = ("pip install -e '.[gpu]' where a CUDA jax is installed, pip install -e '.[gpu,cuda13]' "
                "on a bare CUDA machine (README, GPU install)")
_TARGET = contextvars.ContextVar("kernels_cuda_target", default=None)


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


@contextlib.contextmanager
def cuda_target(compute_capability):
  """Within: impl='triton' traces the kernels for CUDA at this compute capability (e.g. 90)
  on any backend, for lowering with lowering_platforms=("cuda",); nothing can run."""
  token = _TARGET.set(int(compute_capability))
  try:
    yield
  finally:
    _TARGET.reset(token)


def gspn_scan_triton(x, gl, gc, gr, lam, *, direction, chunk=None, normalize=False):
  compute_capability = _TARGET.get()
  if compute_capability is None and not available():
    raise RuntimeError(f"impl='triton' needs a CUDA GPU with jax-triton 0.3.1 ({INSTALL_HINT}); "
                       "use impl='xla' elsewhere")
  from kernels.jax_op import gspn_scan_triton as op

  return op(x, gl, gc, gr, lam, direction, chunk, normalize, compute_capability)
