"""Where a run's metrics go: one registered class per sink, chosen by train.loggers.

A sink receives what the `MetricWriter` (mmjax/train/writers.py) is given: scalar rows
(`scalars`), the PNGs evaluators draw (`image`) and the JSON reports they write
(`artifact`); it is opened once per run on process 0 and closed at the end. A new sink is
one class registered with `register_sink(name)` (and imported by
mmjax/train/writers.py) plus, if it takes options, an entry `config.tracking.NAME` in
mmjax/config.py; the loop knows no sink by name.

Sinks whose library is optional (W&B, MLflow) name it in `requires`: writers.check_config
refuses the config before any compute when it cannot be imported, naming the extra.
"""
from __future__ import annotations

import json
import os
from typing import Any, ClassVar, Mapping

import ml_collections
import numpy as np

from mmjax.registry import Registry

SINKS = Registry("logger")


def register_sink(name: str):
  """Class decorator: registers a Sink subclass as the logger `name` of train.loggers."""
  return SINKS.register_class(name, "name")


class Sink:
  """Base class. `requires` = (module, extra): the optional package the sink imports and
  the mmjax extra that installs it. Methods are called on process 0 only."""
  name: ClassVar[str] = ""
  requires: ClassVar[tuple[str, str] | None] = None

  def __init__(self, workdir: str, options: Mapping[str, Any],
               config: ml_collections.ConfigDict | None, resume_step: int | None):
    """Opens the sink for the run in `workdir`; `options` is config.tracking.NAME
    (empty when the section has none); `resume_step` the checkpoint step a resumed
    run continues from (None: a fresh run, or an eval)."""

  @classmethod
  def check_options(cls, options: Mapping[str, Any], key: str) -> None:
    """ConfigError for a bad option value (`key` is 'tracking.NAME'); before compute."""

  def scalars(self, step: int, split: str, scalars: Mapping[str, float],
              time: float) -> None:
    """One row: {metric: value} of `split` ('train', 'eval', ...) at `step`, logged at
    unix `time`."""

  def image(self, step: int, tag: str, png_path: str) -> None:
    """The PNG an evaluator drew, as image `tag` ('<evaluator>/<name>') at `step`."""

  def artifact(self, step: int, path: str, name: str) -> None:
    """A file an evaluator wrote at `step` (a JSON report); `name` is its path relative
    to the workdir ('report/report.json')."""

  def close(self, failed: bool = False) -> None:
    """At the end of the run; `failed` when it ends by an exception."""


@register_sink("jsonl")
class JsonlSink(Sink):
  """WORKDIR/metrics.jsonl, one JSON object per row: {step, split, time, metric...}.

  A run resumed from the checkpoint at `resume_step` first drops the rows a killed run
  wrote after it (the file rewritten atomically), so it keeps one row per step and split.
  """

  def __init__(self, workdir, options, config, resume_step):
    path = os.path.join(workdir, "metrics.jsonl")
    if resume_step is not None:
      drop_rows_after(path, resume_step)
    self._file = open(path, "a", buffering=1)

  def scalars(self, step, split, scalars, time):
    row = {"step": int(step), "split": split, "time": time}
    row.update({k: float(v) for k, v in scalars.items()})
    self._file.write(json.dumps(row) + "\n")

  def close(self, failed=False):
    self._file.close()


@register_sink("tensorboard")
class TensorBoardSink(Sink):
  """WORKDIR/tensorboard/ event files (tensorboardX: no TensorFlow needed); a resumed
  run tells TensorBoard to purge the steps after its checkpoint."""

  def __init__(self, workdir, options, config, resume_step):
    from tensorboardX import SummaryWriter
    purge = resume_step + 1 if resume_step else None
    self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=purge)

  def scalars(self, step, split, scalars, time):
    for k, v in scalars.items():
      self._tb.add_scalar(f"{split}/{k}", float(v), int(step))

  def image(self, step, tag, png_path):
    self._tb.add_image(tag, read_png(png_path), int(step), dataformats="HWC")

  def close(self, failed=False):
    self._tb.close()


def read_png(path: str) -> np.ndarray:
  """The PNG at `path` as RGB pixels [H, W, 3] uint8."""
  from PIL import Image   # Pillow arrives with matplotlib, which drew the PNG
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB"))


def drop_rows_after(path: str, step: int) -> int:
  """Rewrites the JSONL file `path` without its rows whose 'step' is above `step`
  (atomically: a new file renamed over the old); -> how many rows were dropped."""
  from absl import logging
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


def flat_config(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """{'optim.learning_rate': 0.003, ...}: the config flattened to dotted keys, with
  numbers and bools kept and anything else (tuples, None, dicts of a tuple) as text."""
  out: dict[str, Any] = {}

  def walk(node, prefix):
    if hasattr(node, "items") and node:
      for k, v in node.items():
        walk(v, f"{prefix}{k}.")
      return
    key = prefix[:-1]
    if isinstance(node, (bool, int, float, str)):
      out[key] = node
    else:
      out[key] = json.dumps(node, default=str) if node is not None else "None"

  walk(config.to_dict() if hasattr(config, "to_dict") else config, "")
  return out


def run_name(options: Mapping[str, Any], workdir: str, key: str = "name") -> str:
  """The tracking run's name: options[key], else the workdir's basename."""
  return options.get(key) or os.path.basename(os.path.normpath(workdir))


def read_id(workdir: str, filename: str) -> str | None:
  """The tracking run id stored in WORKDIR/`filename` by an earlier run, else None."""
  path = os.path.join(workdir, filename)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return f.read().strip() or None


def write_id(workdir: str, filename: str, run_id: str) -> None:
  """Stores `run_id` in WORKDIR/`filename` (atomically), for a resumed run to continue."""
  path = os.path.join(workdir, filename)
  tmp = f"{path}.tmp{os.getpid()}"
  with open(tmp, "w") as f:
    f.write(run_id + "\n")
  os.replace(tmp, path)
