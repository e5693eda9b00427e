"""The run's metric writer, which hands every row, picture and report to the sinks of
train.loggers (mmjax/train/sinks.py), the check of train.loggers before compute, and
the human progress line.

Only process 0 writes; other processes get a writer that does nothing.
"""
from __future__ import annotations

import datetime
import importlib
import math
import os
import sys
import time
from typing import Any, Mapping

import jax
import ml_collections
from absl import logging

from mmjax.errors import ConfigError
from mmjax.registry import check_known_keys
from mmjax.train import sinks
# The optional sinks register here; their libraries are imported only when opened.
from mmjax.train import sink_mlflow, sink_wandb  # noqa: F401
from mmjax.train.sinks import drop_rows_after  # noqa: F401  (its old home)


class MetricWriter:
  """Writes scalars, pictures and reports to each sink of `config.train.loggers`
  (without a config: metrics.jsonl and TensorBoard, as before loggers existed).

  `resume_step`: a run resumed from the checkpoint at that step; sinks that can, first
  drop what a killed run wrote after it (metrics.jsonl rewritten, TensorBoard told to
  purge those steps), and tracking services continue the same run.
  """

  def __init__(self, workdir: str, resume_step: int | None = None,
               config: ml_collections.ConfigDict | None = None):
    self.enabled = jax.process_index() == 0
    self.workdir = workdir
    self._sinks: list[sinks.Sink] = []
    if not self.enabled:
      return
    try:
      for name in loggers(config):
        self._sinks.append(sinks.SINKS.get(name)(
            workdir, options_of(config, name), config, resume_step))
    except BaseException:
      self.close()
      raise

  def write(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
    """One row of `split` ('train', 'eval', ...) at `step`: {metric: value}."""
    now = time.time()
    for sink in self._sinks:
      sink.scalars(int(step), split, scalars, now)

  def write_image(self, step: int, tag: str, png_path: str) -> None:
    """Shows the PNG file `png_path` as image `tag` at `step` (TensorBoard, W&B, ...)."""
    for sink in self._sinks:
      sink.image(int(step), tag, png_path)

  def write_artifact(self, step: int, path: str) -> None:
    """Keeps the file `path` under the workdir (an evaluator's JSON report of `step`) in
    the tracking sinks, named by its path relative to the workdir."""
    name = os.path.relpath(path, self.workdir)
    for sink in self._sinks:
      sink.artifact(int(step), path, name)

  def close(self) -> None:
    """Closes every sink; called in a `finally`, so an exception on its way out marks
    tracking runs failed."""
    failed = sys.exc_info()[0] is not None
    sinks_, self._sinks = self._sinks, []
    errors = []
    for sink in sinks_:
      try:
        sink.close(failed=failed)
      except Exception as e:   # one sink's failure must not lose the others' data
        errors.append(e)
    if errors and not failed:   # else the run's own error is the one to report
      raise errors[0]
    for e in errors:
      logging.warning("A metric sink failed to close: %s", e)


def loggers(config: ml_collections.ConfigDict | None) -> tuple[str, ...]:
  """The sink names of config.train.loggers (today's pair without a config)."""
  if config is None:
    return ("tensorboard", "jsonl")
  return tuple(config.train.get("loggers", ("tensorboard", "jsonl")))


def options_of(config: ml_collections.ConfigDict | None, name: str) -> dict[str, Any]:
  """config.tracking.NAME as a plain dict ({} when the config has none)."""
  if config is None or name not in config.get("tracking", {}):
    return {}
  section = config.tracking[name]
  return section.to_dict() if hasattr(section, "to_dict") else dict(section)


def check_config(config: ml_collections.ConfigDict, installed: bool = True) -> None:
  """ConfigError, before any compute, for train.loggers: not a list of names, an
  unknown or repeated name (with did-you-mean), an unknown or bad option under
  config.tracking, or (with `installed`: modes that log) a sink whose package is not
  installed, naming the extra."""
  names = config.train.get("loggers", ())
  if isinstance(names, str) or not all(isinstance(n, str) for n in names):
    raise ConfigError(f"train.loggers={names!r} must be a tuple of names, e.g. "
                      "('tensorboard', 'jsonl', 'mlflow').")
  repeated = sorted({n for n in names if list(names).count(n) > 1})
  if repeated:
    raise ConfigError(f"train.loggers names {repeated} more than once.")
  from mmjax import config as config_lib
  schema = config_lib.default_config().tracking
  for name in names:
    cls = sinks.SINKS.get(name, config_key="train.loggers")
    options = options_of(config, name)
    if name in schema:
      check_known_keys(options, schema[name].keys(), where=f"config.tracking.{name}")
    cls.check_options(options, f"tracking.{name}")
    if installed:
      check_installed(cls)
  if config.train.get("plots", False) and "jsonl" not in names:
    raise ConfigError("train.plots draws WORKDIR/metrics.jsonl, which train.loggers "
                      f"{tuple(names)} does not write: add 'jsonl' or set "
                      "--config.train.plots=False.")


def check_installed(cls: type[sinks.Sink]) -> None:
  """ConfigError naming `pip install 'mmjax[EXTRA]'` when the sink's package is missing."""
  if cls.requires is None:
    return
  module, extra = cls.requires
  try:
    importlib.import_module(module)
  except ImportError as e:
    raise ConfigError(
        f"train.loggers has {cls.name!r}, which needs the {module!r} package ({e}). "
        f"Install it with: pip install 'mmjax[{extra}]' (or drop {cls.name!r} from "
        "train.loggers).") from None


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
