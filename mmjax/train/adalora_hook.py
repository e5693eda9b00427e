"""The `adalora_ranks` hook: AdaLoRA's rank allocation as the run goes (the allocation
itself runs inside the train step, mmjax/models/adalora.py).

Every train.log_every steps an 'adalora' row: `adalora/budget` (the schedule's b(t)) and
`adalora/total_rank` (singular values the allocator keeps, over all adapters). At the
end, the rank of every adapter per layer as `adalora/rank/<adapter path>[/<layer>]` metrics and in
WORKDIR/adalora_ranks.json ({'step', 'budget', 'ranks': {path: [rank per layer]}}).
"""
from __future__ import annotations

import json
import os

import jax
from absl import logging

from mmjax.models import adalora
from mmjax.train import hooks

RANKS_FILE = "adalora_ranks.json"


@hooks.register_hook("adalora_ranks")
class AdaLoraRanksHook(hooks.Hook):
  """On for runs whose config.model.adalora is set."""
  order = 25   # after the log row of the same step

  def __init__(self, settings: adalora.Settings, every: int, workdir: str):
    self.settings, self.every, self.workdir = settings, every, workdir

  @classmethod
  def from_experiment(cls, exp):
    if exp.adalora is None:
      return None
    return cls(exp.adalora, exp.config.train.log_every, exp.workdir)

  def _ranks(self, run: hooks.Run) -> tuple[dict, int]:
    params = jax.device_get(adalora.adapters(run.state.params))
    ranks = adalora.allocated_ranks(run.state.opt_state)
    if ranks is None:   # a state without the allocator: count the nonzero Λ
      ranks = adalora.ranks(params)
    budget = int(adalora.budget_at(run.step, self.settings, adalora.num_matrices(params)))
    return ranks, budget

  def after_step(self, run: hooks.Run) -> None:
    if self.due(run) and not run.final:
      ranks, budget = self._ranks(run)
      run.writer.write(run.step, "adalora", {
          "adalora/budget": budget,
          "adalora/total_rank": sum(sum(r) for r in ranks.values())})

  def at_end(self, run: hooks.Run) -> None:
    ranks, budget = self._ranks(run)
    metrics = {"adalora/budget": budget,
               "adalora/total_rank": sum(sum(r) for r in ranks.values())}
    for path, per_layer in ranks.items():
      if len(per_layer) == 1:
        metrics[f"adalora/rank/{path}"] = per_layer[0]
      else:
        metrics.update({f"adalora/rank/{path}/{i}": r for i, r in enumerate(per_layer)})
    run.writer.write(run.step, "adalora", metrics)
    if jax.process_index() == 0:
      with open(os.path.join(self.workdir, RANKS_FILE), "w") as f:
        json.dump({"step": run.step, "budget": budget, "ranks": ranks}, f, indent=1)
    logging.info("AdaLoRA ranks at step %d (budget %d): %s", run.step, budget,
                 json.dumps(ranks))
