"""A tiny training run killed with SIGKILL while its step-4 checkpoint is being written
(after the arrays, before Orbax's final rename), as a crash or `kill -9` would.

  python -m tests.crash_during_save WORKDIR
"""

import os
import signal
import sys

from orbax.checkpoint._src.path import atomicity

from gspn_jax import train
from tests.test_train import tiny_config


def main(workdir):
  finalize = atomicity.AtomicRenameTemporaryPath.finalize

  async def killed_at_step_4(self):
    if self._final_path.name == "4":
      os.kill(os.getpid(), signal.SIGKILL)
    return await finalize(self)

  atomicity.AtomicRenameTemporaryPath.finalize = killed_at_step_4
  train.train_and_evaluate(tiny_config(), workdir)


if __name__ == "__main__":
  main(sys.argv[1])
