"""Running the project's commands from tests: a failure shows the command's own error."""

import subprocess
import sys


def run_ok(args, timeout):
  """Runs `python *args`; fails with the tail of its stderr unless it exits 0."""
  out = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)
  assert out.returncode == 0, f"python {' '.join(map(str, args))} exited {out.returncode}:\n{out.stderr[-4000:]}"
  return out


# Runs a command's entry point once per argv inside one Python process, so the imports
# (JAX: seconds) are paid once; each run's exit code and stderr are kept apart.
_DRIVER = r'''
import contextlib, io, json, runpy, sys, traceback
from absl import flags
target, cases = sys.argv[1], json.loads(sys.argv[2])
results = []
for argv in cases:
  for name in list(flags.FLAGS):  # main.py defines its flags (and the config's overrides) each time it runs
    if name.split(".")[0] in ("config", "workdir", "coordinator_address", "num_processes", "process_id"):
      delattr(flags.FLAGS, name)
  flags.FLAGS.unparse_flags()
  sys.argv, err, code = [target, *argv], io.StringIO(), 0
  with contextlib.redirect_stderr(err):
    try:
      if target.endswith(".py"):
        runpy.run_path(target, run_name="__main__")
      else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)
    except SystemExit as e:
      code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:
      traceback.print_exc()
      code = 1
  results.append([code, err.getvalue()])
print("\n" + json.dumps(results))
'''


def run_each(target, argvs, timeout, env=None):
  """[(exit code, stderr)] of `python target *argv` for each argv (target: a script path or
  a module name), all in one process."""
  import json
  import os

  out = subprocess.run([sys.executable, "-c", _DRIVER, str(target), json.dumps([list(map(str, a)) for a in argvs])],
                       capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
  assert out.returncode == 0, f"the driver for {target} exited {out.returncode}:\n{out.stderr[-4000:]}"
  return [tuple(r) for r in json.loads(out.stdout.strip().splitlines()[-1])]


def error_line(stderr):
  """The one line a failed command printed on stderr (progress bars and warnings aside)."""
  lines = [l for l in stderr.splitlines() if l.startswith("error: ")]
  assert len(lines) == 1, f"expected one 'error:' line, got:\n{stderr[-3000:]}"
  return lines[0]
