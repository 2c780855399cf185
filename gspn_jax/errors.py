"""One-line errors for the command-line entry points.

UsageError: bad input, found before any long work; exit code 2 (like argparse's).
RunError: a run that cannot go on (a non-finite loss, no usable checkpoint); exit code 1.
A missing file (FileNotFoundError, whose messages here name the file and the fix) counts
as bad input. Each prints one line on stderr; the traceback is for --verbosity=1.
"""

import contextlib
import sys


class UsageError(ValueError):
  """Bad input: the message names the value, the rule and the fix."""


class RunError(RuntimeError):
  """A run stopped for a reason its message explains (and the fix, where there is one)."""


@contextlib.contextmanager
def one_line_errors(verbose=False):
  """Turns the expected failures into one line on stderr and an exit code; with verbose,
  they propagate with their tracebacks."""
  try:
    yield
  except (UsageError, FileNotFoundError, RunError) as e:
    if verbose:
      raise
    _close_progress_bars()  # so that the error is the last line, not drawn over by a bar
    message = " ".join(str(e).split("\n"))  # one line, whatever the message held
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(1 if isinstance(e, RunError) else 2)


def _close_progress_bars():
  from tqdm import tqdm

  for bar in list(getattr(tqdm, "_instances", ())):
    bar.close()


def add_verbosity_flag(parser):
  """--verbosity for argparse entry points, as absl's on main.py: 1 shows tracebacks."""
  parser.add_argument("--verbosity", type=int, default=0, help="1: show the traceback of an error")


def quiet_libraries(verbose=False):
  """Libraries' warnings (Orbax logs through absl) kept out of the one-line output."""
  from absl import logging

  logging.set_verbosity(logging.INFO if verbose else logging.ERROR)
