"""Metrics a person can read: JSON lines, TensorBoard, and a progress bar with ETA.

Only process 0 writes; the other processes get a writer that does nothing.
"""

import json
import pathlib
import sys

import numpy as np
from tqdm import tqdm


class MetricWriter:
  def __init__(self, workdir, *, total_steps, initial_step=0, enabled=True):
    self.enabled = enabled
    if not enabled:
      return
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    self._jsonl = open(workdir / "metrics.jsonl", "a")
    from tensorboardX import SummaryWriter

    self._tb = SummaryWriter(str(workdir / "tensorboard"))
    # Redraw often on a terminal; in a log file, a line every 30 s is enough.
    self._bar = tqdm(total=total_steps, initial=initial_step, unit="step", dynamic_ncols=True,
                     mininterval=0.5 if sys.stderr.isatty() else 30)

  def write(self, step, metrics):
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(np.asarray(v)) for k, v in metrics.items()}}
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    for k, v in row.items():
      if k != "step":
        self._tb.add_scalar(k, v, int(step))
    self._bar.set_postfix({k: f"{row[k]:.4g}" for k in ("loss", "grad_norm") if k in row}, refresh=False)

  def advance(self, steps=1):
    if self.enabled:
      self._bar.update(steps)

  def log(self, message):
    if self.enabled:
      tqdm.write(message)

  def end_progress(self):
    """Closes the progress bar (its rate then covers training only)."""
    if self.enabled:
      self._bar.close()

  def add_image(self, tag, step, image_hwc_uint8):
    if self.enabled:
      self._tb.add_image(tag, image_hwc_uint8, int(step), dataformats="HWC")

  def close(self):
    if self.enabled:
      self._bar.close()
      self._jsonl.close()
      self._tb.close()
