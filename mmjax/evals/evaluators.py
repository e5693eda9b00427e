"""Every registered evaluator type, and what the trainer does with `config.evals`: check
it before any compute, build it once per run, and run the entries that are due.

The built-in types register when this module imports them (loss, robust, report,
retrieval, zero_shot, probe, caption, caption_grounding, fairness, attribution,
privacy_audit, dialogue); a plug-in registers from anywhere with
`mmjax.evals.base.register_evaluator` before the run starts.
"""
from __future__ import annotations

import os
import time

import ml_collections
from absl import logging

from mmjax.errors import ConfigError
from mmjax.evals import base
# Imported for their registrations.
from mmjax.evals import (attribution_eval, dialogue_eval, fairness_eval,  # noqa: F401
                         grounding_eval, loss_eval, privacy_audit_eval, quantization_eval,
                         report_eval, representation_eval, robust_eval)


def check_config(config: ml_collections.ConfigDict, batch_shards: int) -> None:
  """ConfigError for any bad entry of config.evals (type, option name, type or value),
  before any compute. `batch_shards`: how many ways the mesh splits a batch."""
  prefixes: dict[str, str] = {}
  for name, (cls, options) in base.resolve_all(config).items():
    if options.prefix in prefixes:
      raise ConfigError(f"evals.{name} and evals.{prefixes[options.prefix]} both write "
                        f"metrics under the prefix {options.prefix!r}; give one its own "
                        f"(e.g. --config.evals.{name}.prefix={name}/).")
    prefixes[options.prefix] = name
    if options.batch_size % batch_shards:
      raise ConfigError(f"evals.{name}.batch_size={options.batch_size} is not divisible "
                        f"by the {batch_shards} devices the mesh splits the batch over; "
                        f"use a multiple of {batch_shards}.")
    cls.check_options(options, f"evals.{name}", config)


def check_names(config: ml_collections.ConfigDict, names) -> None:
  """ConfigError for a name in `names` that config.evals lacks (--evals of --mode=eval)."""
  unknown = [n for n in names if n not in config.evals]
  if unknown:
    raise ConfigError(f"--evals names {unknown}, but config.evals has only "
                      f"{', '.join(config.evals) or 'no evaluators'}.")


class Scheduled:
  """One built evaluator with its cadence, prefix and parameter choice."""

  def __init__(self, evaluator: base.Evaluator, every: int):
    self.evaluator, self.every = evaluator, every
    self.options = evaluator.cfg

  @property
  def name(self) -> str:
    return self.evaluator.name

  def due(self, step: int, final: bool) -> bool:
    return final or bool(self.every and step % self.every == 0)

  def __call__(self, state, step: int) -> dict[str, float]:
    use_ema = self.options.use_ema and state.ema_params is not None
    params = state.ema_params if use_ema else state.params
    metrics = self.evaluator(params, state.model_state, step)
    return {f"{self.options.prefix}{k}": v for k, v in metrics.items()}


def build(exp, names=None) -> list[Scheduled]:
  """The evaluators of exp.config.evals (or those in `names`), in config order, each
  built (examples read, settings checked against the model and data)."""
  out = []
  for name, (cls, options) in base.resolve_all(exp.config).items():
    if names is not None and name not in names:
      continue
    every = options.every or exp.config.train.eval_every
    out.append(Scheduled(cls(exp, name, options), every))
  return out


def evaluate(scheduled: list[Scheduled], state, step: int, final: bool = True,
             progress: bool = True, writer=None) -> dict[str, float]:
  """The metrics of the evaluators due at `step` (all of them when `final`); with
  `progress`, a log line as each one starts and ends (some take minutes). The pictures
  they drew (reports, charts, heatmaps) go to `writer`'s sinks (TensorBoard, W&B, ...)
  when given, and so do the JSON reports they wrote under the workdir."""
  metrics: dict[str, float] = {}
  due = [e for e in scheduled if e.due(step, final)]
  for i, entry in enumerate(due):
    started = time.perf_counter()
    if progress:
      logging.info("eval at step %d: %s (%s, %d/%d)...", step, entry.name,
                   entry.evaluator.type_name, i + 1, len(due))
    before = _reports(entry.evaluator.workdir) if writer is not None else {}
    metrics.update(entry(state, step))
    pictures = entry.evaluator.take_pictures()
    if writer is not None:
      for tag, path in pictures:
        writer.write_image(step, tag, path)
      after = _reports(entry.evaluator.workdir)
      for path in sorted(p for p, stamp in after.items() if before.get(p) != stamp):
        writer.write_artifact(step, path)
    if progress:
      logging.info("eval at step %d: %s done in %.1f s.", step, entry.name,
                   time.perf_counter() - started)
  return metrics


# Folders of the workdir that hold no evaluator output (checkpoints, sinks, plots).
_NOT_REPORTS = ("checkpoints", "checkpoints_corrupt", "tensorboard", "wandb", "mlruns",
                "plots")


def _reports(workdir: str) -> dict[str, tuple[int, int]]:
  """{path: (mtime_ns, size)} of the JSON files in the workdir's subfolders: an
  evaluator's reports are the ones its call created or changed. Found by looking rather
  than declared, so every evaluator's files count without each one saying so."""
  out = {}
  for top in os.listdir(workdir) if os.path.isdir(workdir) else ():
    folder = os.path.join(workdir, top)
    if top in _NOT_REPORTS or not os.path.isdir(folder):
      continue
    for root, _, files in os.walk(folder):
      for f in files:
        if f.endswith(".json"):
          st = os.stat(os.path.join(root, f))
          out[os.path.join(root, f)] = (st.st_mtime_ns, st.st_size)
  return out
