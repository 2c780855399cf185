"""One persistent XLA compilation cache per test run, shared with the scripts the tests start.

Many tests compile the same step again (a run and its resume, the CLI scripts, one model in
several tests); the cache compiles each once. A fresh directory per run, so no test depends
on what an earlier run left; set JAX_COMPILATION_CACHE_DIR to keep one across runs.
Set here, before any test imports jax, so subprocesses inherit it through the environment.
"""

import os
import shutil
import tempfile

_OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if _OWN_CACHE:
  os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="gspn-jax-test-xla-cache-")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


def pytest_sessionfinish(session, exitstatus):
  if _OWN_CACHE:
    shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)
