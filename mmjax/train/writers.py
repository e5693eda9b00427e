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
from absl import logging


class MetricWriter:
  """Writes scalars to `<workdir>/metrics.jsonl` and `<workdir>/tensorboard/`."""

  def __init__(self, workdir: str):
    self.enabled = jax.process_index() == 0
    self._jsonl = None
    self._tb = None
    if self.enabled:
      self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
      from tensorboardX import SummaryWriter  # no TensorFlow needed
      self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

  def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    row = {"step": int(step), "split": split, "time": time.time()}
    row.update({k: float(v) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(row) + "\n")
    for k, v in scalars.items():
      self._tb.add_scalar(f"{split}/{k}", float(v), int(step))

  def close(self) -> None:
    if self.enabled:
      self._jsonl.close()
      self._tb.close()


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
