"""The `plots` hook: PNG curves of the run's metrics.jsonl in WORKDIR/plots/ when the run
ends (train.plots, on by default; mmjax/train/curves.py draws them)."""
from __future__ import annotations

import jax
from absl import logging

from mmjax.train import curves, hooks


@hooks.register_hook("plots")
class PlotHook(hooks.Hook):
  """After the final eval and summary, on process 0 (the one writing metrics.jsonl)."""
  order = 95

  def __init__(self, workdir: str):
    self.workdir = workdir

  @classmethod
  def from_experiment(cls, exp):
    return cls(exp.workdir) if exp.config.train.plots else None

  def at_end(self, run: hooks.Run) -> None:
    if jax.process_index() == 0:
      plot(self.workdir)


def plot(workdir: str) -> list[str]:
  """Draws WORKDIR/plots/*.png from WORKDIR/metrics.jsonl and logs where; -> paths."""
  paths = curves.plot_run(workdir)
  if paths:
    logging.info("Curves of %d metric families in %s/plots/.", len(paths), workdir)
  return paths
