"""Triton GPU kernels, called from JAX through jax-triton.

jax-triton imports only where a GPU jaxlib is installed, so this package is imported
lazily: `available()` says whether the Triton path can run here. `cuda_target(cc)` lets
a CPU machine lower the Triton path for CUDA (jax-triton's real lowering rule, compiled
for compute capability cc) without running it: the audit in kernels/audit.py.
`interpreted()` runs the same path on CPU through the Triton interpreter (tests).
"""

import contextlib
import contextvars
import functools

INSTALL_HINT = ("pip install -e '.[gpu]' where a CUDA jax is installed, pip install -e '.[gpu,cuda13]' "
                "on a bare CUDA machine (README, GPU install)")
_TARGET = contextvars.ContextVar("kernels_cuda_target", default=None)
_INTERPRET = contextvars.ContextVar("kernels_interpret", default=False)


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


@contextlib.contextmanager
def interpreted():
  """Within: impl='triton' runs the kernels under the Triton interpreter on the host
  (needs TRITON_INTERPRET=1 set before kernels/ was imported, and torch); slow, for tests."""
  import os

  if os.environ.get("TRITON_INTERPRET") != "1":
    raise RuntimeError("kernels.interpreted() needs TRITON_INTERPRET=1 set before importing kernels")
  token = _INTERPRET.set(True)
  try:
    yield
  finally:
    _INTERPRET.reset(token)


def launch_options():
  """(compute_capability, interpret) for the launches traced now; raises where the
  Triton path can neither run nor be lowered."""
  compute_capability, interpret = _TARGET.get(), _INTERPRET.get()
  if compute_capability is None and not interpret and not available():
    raise RuntimeError(f"impl='triton' needs a CUDA GPU with jax-triton 0.3.1 ({INSTALL_HINT}); "
                       "use impl='xla' elsewhere")
  return compute_capability, interpret


def gspn_scan_triton(x, gl, gc, gr, lam, *, direction, chunk=None, normalize=False):
  compute_capability, interpret = launch_options()
  from kernels.jax_op import gspn_scan_triton as op

  return op(x, gl, gc, gr, lam, direction, chunk, normalize, compute_capability, interpret)


def gspn_core_triton(x, xp, w, m, *, chunk):
  """A GSPN layer (merge="aligned") on the kernels: kernels/core_op.py."""
  compute_capability, interpret = launch_options()
  from kernels.core_op import gspn_core_triton as op

  return op(x, xp, w, m, chunk, compute_capability, interpret)
