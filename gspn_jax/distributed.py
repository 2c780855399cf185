"""Multi-host start-up and pre-emption, on JAX's own distributed runtime.

initialize(): jax.distributed.initialize, from explicit flags or, on a cluster that JAX
recognises (SLURM, Open MPI, Kubernetes, TPU pods), from its environment; nothing on a
single machine without one.

Preemption: the first SIGTERM (or SIGINT) sets a flag; the training loop finishes its
step, and every process agrees through a collective whether any was signalled, so all
save the same step, then exit 0. A second signal is handled as the default would.
"""

import os
import signal

import jax
import numpy as np
from jax.experimental import multihost_utils

_CLUSTER_VARS = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "JOBSET_NAME", "TPU_WORKER_HOSTNAMES")


def initialize(coordinator_address=None, num_processes=None, process_id=None, local_device_ids=None):
  """Returns True when more than one process takes part."""
  if coordinator_address:
    _cpu_collectives()
    jax.distributed.initialize(coordinator_address, num_processes, process_id, local_device_ids=local_device_ids)
  elif _on_cluster():
    _cpu_collectives()
    jax.distributed.initialize()
  return jax.process_count() > 1


def _on_cluster():
  if "SLURM_JOB_ID" in os.environ:
    return int(os.environ.get("SLURM_NTASKS", "1")) > 1
  return any(v in os.environ for v in _CLUSTER_VARS[1:])


def _cpu_collectives():
  # CPU-only processes (tests, debugging) need a cross-process collective backend.
  if os.environ.get("JAX_PLATFORMS", "") == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")


class Preemption:
  """A context in which SIGTERM/SIGINT request a clean stop instead of killing."""

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self.signals = signals
    self.requested = False
    self._previous = {}

  def __enter__(self):
    for s in self.signals:
      self._previous[s] = signal.signal(s, self._handle)
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)

  def _handle(self, signum, frame):
    if self.requested:  # a second signal: stop now
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
      os.kill(os.getpid(), signum)
    self.requested = True

  def should_stop(self):
    """True on every process once any process was signalled (a collective when multi-host)."""
    if jax.process_count() == 1:
      return self.requested
    flags = multihost_utils.process_allgather(np.asarray(self.requested))
    return bool(np.any(flags))
