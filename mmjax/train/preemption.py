"""Preemption: on SIGTERM (a TPU or SLURM preemption notice, `kill`), the run saves a
checkpoint at the next step and exits cleanly, so the same command resumes it.

On several processes, every process must stop at the same step: JAX's preemption sync
point (`multihost_utils.reached_preemption_sync_point`, fed by the coordination service
that `jax.distributed` starts) says when, and this hook stops there; one process alone
uses its own signal handler.
"""
from __future__ import annotations

import signal
import threading

import jax
from absl import logging

from mmjax.train.hooks import Hook, Run, register_hook


@register_hook("preemption")
class PreemptionHook(Hook):
  """Stops the run after the step during which SIGTERM arrived (the checkpoint hook then
  saves it; evaluators are skipped: a preemption notice leaves little time)."""
  order = 5   # before the guard, logging, checkpointing and evaluation

  def __init__(self):
    self.signalled = threading.Event()
    self.previous = None

  @classmethod
  def from_experiment(cls, exp):
    return cls()

  def at_start(self, run: Run) -> None:
    if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
      self.previous = signal.signal(signal.SIGTERM, self._on_signal)

  def _on_signal(self, signum, frame) -> None:
    del frame
    logging.warning("Received signal %d: saving a checkpoint after this step, then "
                    "stopping.", signum)
    self.signalled.set()

  def _preempted(self, step: int) -> bool:
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils   # pylint: disable=g-import-not-at-top
      try:
        return bool(multihost_utils.reached_preemption_sync_point(step))
      except RuntimeError:   # no preemption service in this runtime
        return False
    return self.signalled.is_set()

  def after_step(self, run: Run) -> None:
    if not run.final and self._preempted(run.step):
      run.stop = run.preempted = True
      logging.warning("Preempted at step %d: the checkpoint of this step is saved and the "
                      "run stops; rerun the same command to resume.", run.step)

  def close(self) -> None:
    if self.previous is not None:
      signal.signal(signal.SIGTERM, self.previous)
      self.previous = None
