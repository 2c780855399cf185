"""Progress bars whose rate and ETA leave out compile time.

The first unit of a jitted job includes its compilation (seconds to minutes), which
would inflate the ETA of everything after it; Progress restarts its clock when the first
unit completes. In a log file (stderr not a terminal) it prints a line every 30 s.
"""

import sys

from tqdm import tqdm


class Progress:
  def __init__(self, total, desc=None, unit="it", initial=0, enabled=True):
    self.enabled = enabled
    self._first = True
    if enabled:
      self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, dynamic_ncols=True, file=sys.stderr,
                      smoothing=0, mininterval=0.5 if sys.stderr.isatty() else 30)

  def update(self, n=1):
    if not self.enabled:
      return
    if not self._first:
      self.bar.update(n)
      return
    self._first = False  # the clock starts now: rate and ETA exclude the compile time
    b = self.bar
    b.n += n
    b.start_t = b.last_print_t = b._time()
    b.initial = b.last_print_n = b.n
    b.refresh()

  def set_postfix(self, values):
    if self.enabled:
      self.bar.set_postfix(values, refresh=False)

  def write(self, message):
    if self.enabled:
      self.bar.write(message, file=sys.stderr)
    else:
      print(message, file=sys.stderr, flush=True)

  def close(self):
    if self.enabled:
      self.bar.close()
