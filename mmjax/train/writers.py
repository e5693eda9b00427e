"""Metric sinks: a JSONL file, TensorBoard event files and a human progress line.

Only process 0 writes; other processes get a writer that does nothing.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import time
from typing import Mapping

import jax
import numpy as np
from absl import logging


class MetricWriter:
  """Writes scalars to `<workdir>/metrics.jsonl` and `<workdir>/tensorboard/`.

  `resume_step`: a run resumed from the checkpoint at that step first drops the rows a
  killed run wrote after it (metrics.jsonl rewritten atomically; TensorBoard told to
  purge those steps), so both keep one row per step and split.
  """

  def __init__(self, workdir: str, resume_step: int | None = None):
    self.enabled = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if self.enabled:
      path = os.path.join(workdir, "metrics.jsonl")
      if resume_step is not None:
        drop_rows_after(path, resume_step)
      self._jsonl = open(path, "a", buffering=1)
      from tensorboardX import SummaryWriter  # no TensorFlow needed
      purge = resume_step + 1 if resume_step else None
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)

  def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), "split": split, "time": time.time()}
    row.update({k: float(v) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(row) + "\n")
    for k, v in scalars.items():
      self._tb.add_scalar(f"{split}/{k}", float(v), int(step))

  def write_image(self, step: int, tag: str, png_path: str) -> None:
    """Shows the PNG file `png_path` in TensorBoard as image `tag` at `step`."""
    if not self.enabled:
      return
    from PIL import Image   # Pillow arrives with matplotlib, which drew the PNG
    with Image.open(png_path) as image:
      pixels = np.asarray(image.convert("RGB"))   # [H, W, 3] uint8
    self._tb.add_image(tag, pixels, int(step), dataformats="HWC")

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


def drop_rows_after(path: str, step: int) -> int:
  """Rewrites the JSONL file `path` without its rows whose 'step' is above `step`
  (atomically: a new file renamed over the old); -> how many rows were dropped."""
  if not os.path.exists(path):
    return 0
  with open(path) as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      row_step = json.loads(line).get("step", -1)
    except ValueError:   # a line cut short by a kill: drop it too
      continue
    if row_step <= step:
      keep.append(line if line.endswith("\n") else line + "\n")
  dropped = len(lines) - len(keep)
  if dropped:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
      f.writelines(keep)
    os.replace(tmp, path)
    logging.info("Dropped %d metric rows after step %d from %s (written by a run that "
                 "did not checkpoint them).", dropped, step, path)
  return dropped


class Progress:
  """Formats `step 30/300 | loss 0.4321 | 12.3 steps/s | ETA 0:00:22` lines."""

  def __init__(self, total_steps: int, start_step: int):
    self.total = total_steps
    self._last_step = start_step
    self._last_time = time.perf_counter()

  def log(self, step: int, scalars: Mapping[str, float]) -> float:
    """Logs the progress line; returns steps/s since the previous call."""
    now = time.perf_counter()
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    self._last_step, self._last_time = step, now
    eta = datetime.timedelta(seconds=round((self.total - step) / rate)) if rate > 0 else "?"
    shown = " | ".join(f"{k} {_fmt(v)}" for k, v in scalars.items()
                       if k in ("loss", "accuracy", "lr") or k.endswith("/loss"))
    logging.info("step %d/%d | %s | %.2f steps/s | ETA %s", step, self.total, shown, rate,
                 eta)
    return rate


def _fmt(v: float) -> str:
  if math.isnan(v) or math.isinf(v):
    return str(v)
  return f"{v:.4g}"
