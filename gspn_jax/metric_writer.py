"""Metrics a person can read: JSON lines, TensorBoard, and a progress bar with ETA.

Only process 0 writes; the other processes get a writer that does nothing. A resumed
run first drops the rows past its checkpoint (logged before the interruption, and about
to be logged again), so metrics.jsonl holds each step once.
"""

import json
import os
import pathlib

import numpy as np
from tqdm import tqdm

from gspn_jax.progress import Progress


class MetricWriter:
  def __init__(self, workdir, *, total_steps, initial_step=0, enabled=True):
    self.enabled = enabled
    self._bar = Progress(total_steps, unit="step", initial=initial_step, enabled=enabled)
    if not enabled:
      return
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _truncate_after(workdir / "metrics.jsonl", initial_step)
    self._jsonl = open(workdir / "metrics.jsonl", "a")
    from tensorboardX import SummaryWriter

    self._tb = SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step, metrics):
    if not self.enabled:
      return
    row = {"step": int(step), **{k: float(np.asarray(v)) for k, v in metrics.items()}}
    self._jsonl.write(json.dumps(row) + "\n")
    self._jsonl.flush()
    for k, v in row.items():
      if k != "step" and np.isfinite(v):  # a non-finite loss stays in metrics.jsonl; TensorBoard warns on it
        self._tb.add_scalar(k, v, int(step))
    self._bar.set_postfix({k: f"{row[k]:.4g}" for k in ("loss", "grad_norm") if k in row})

  def advance(self, steps=1):
    self._bar.update(steps)

  def log(self, message):
    if self.enabled:
      tqdm.write(message)

  def end_progress(self):
    """Closes the progress bar (its rate then covers training only)."""
    self._bar.close()

  def add_image(self, tag, step, image_hwc_uint8):
    if self.enabled:
      self._tb.add_image(tag, image_hwc_uint8, int(step), dataformats="HWC")

  def close(self):
    if self.enabled:
      self._bar.close()
      self._jsonl.close()
      self._tb.close()


def _truncate_after(path, step):
  if not path.exists():
    return
  lines = path.read_text().splitlines(keepends=True)
  keep = [l if l.endswith("\n") else l + "\n" for l in lines if _step(l) is not None and _step(l) <= step]
  if keep != lines:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(keep))
    os.replace(tmp, path)


def _step(line):
  try:  # a line cut short by a crash is dropped with the rest
    return int(json.loads(line)["step"])
  except (ValueError, KeyError, TypeError):
    return None
