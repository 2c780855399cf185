"""Running the project's commands from tests: a failure shows the command's own error."""

import subprocess
import sys


def run_ok(args, timeout):
  """Runs `python *args`; fails with the tail of its stderr unless it exits 0."""
  out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, f"python {' '.join(map(str, args))} exited {out.returncode}:\n{out.stderr[-4000:]}"
  return out
