"""Pruning as a train-loop hook: each eval's value of the sweep metric is reported to
the Optuna trial, and the run stops cleanly (after that step's checkpoint and eval,
before the next step) when the trial's pruner says so.

The hook exists only inside `reporting_to(reporter)`, the block in which the sweep runs
one trial; ordinary runs build no such hook. Importing this module registers it.
"""
from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import math
from typing import Any, Iterator

from absl import logging

from mmjax.errors import ConfigError
from mmjax.train.hooks import Hook, Run, register_hook

# The trial the running train_and_evaluate reports to (set by the sweep around one run):
# a context variable, not a config entry, because a trial is a live storage handle.
_ACTIVE: contextvars.ContextVar["TrialReporter | None"] = contextvars.ContextVar(
    "mmjax_sweep_trial", default=None)


@dataclasses.dataclass
class TrialReporter:
  """What one trial's run reports to: `trial` (optuna.Trial), `metric` (a key of the eval
  metrics); after the run, `pruned_at` is the step it was pruned at, or None."""
  trial: Any
  metric: str
  worst: float = -math.inf   # what a NaN is reported as: -inf maximizing, inf minimizing
  pruned_at: int | None = None
  last_value: float | None = None
  preempted: bool = False   # the run stopped on SIGTERM (checkpoint saved, no final eval)


@contextlib.contextmanager
def reporting_to(reporter: TrialReporter) -> Iterator[TrialReporter]:
  """Runs inside this block report their evals to `reporter.trial`."""
  token = _ACTIVE.set(reporter)
  try:
    yield reporter
  finally:
    _ACTIVE.reset(token)


@register_hook("sweep_pruning")
class PruningHook(Hook):
  """After each eval: trial.report(metric, step), then stop if trial.should_prune()."""
  order = 45   # after the checkpoint (30) and the evaluators (40) of the same step

  def __init__(self, reporter: TrialReporter):
    self.reporter = reporter
    self.seen = None

  @classmethod
  def from_experiment(cls, exp):
    reporter = _ACTIVE.get()
    return None if reporter is None else cls(reporter)

  def at_start(self, run: Run) -> None:
    self.seen = run.last_eval

  def after_step(self, run: Run) -> None:
    if run.last_eval is self.seen:   # the evaluators made a new dict: an eval just ran
      return
    self.seen = run.last_eval
    metric = self.reporter.metric
    if metric not in run.last_eval:
      raise ConfigError(f"sweep.metric={metric!r} is not among the eval metrics of this "
                        f"run: {', '.join(sorted(run.last_eval))}. Set "
                        "--config.sweep.metric to one of them.")
    value = float(run.last_eval[metric])
    self.reporter.last_value = value
    # A NaN would poison the pruner's medians: it is the worst value instead.
    self.reporter.trial.report(self.reporter.worst if math.isnan(value) else value,
                               run.step)
    if not run.final and not run.preempted and self.reporter.trial.should_prune():
      run.stop = True
      self.reporter.pruned_at = run.step
      logging.info("Trial %d pruned at step %d (%s %.4g): stopping this run.",
                   self.reporter.trial.number, run.step, metric, value)

  def at_end(self, run: Run) -> None:
    self.reporter.preempted = run.preempted
