"""The privacy ledger of a DP run as a loop hook: the steps taken with each (sampling
rate, noise multiplier), saved with every checkpoint so a resumed run reports the ε an
unbroken one would; ε at δ in every eval row; the run stopped when its budget is spent.
"""
from __future__ import annotations

from absl import logging

from mmjax.errors import ConfigError
from mmjax.train import hooks

LEDGER_KEY = "privacy_ledger"


def ledger_from(data: dict) -> list:
  """The accounting.Segment list stored in a checkpoint's data item ([] if none)."""
  from mmjax.privacy import accounting
  return [accounting.Segment.from_json(s) for s in data.get(LEDGER_KEY, [])]


@hooks.register_hook("privacy")
class PrivacyHook(hooks.Hook):
  """Counts DP steps into the ledger, puts `privacy/epsilon` (and `privacy/delta`) in
  each eval row and stops the run before a step would spend more than
  privacy.epsilon_budget."""
  order = 25   # before checkpointing (30), which saves the ledger, and evals (40)

  def __init__(self, plan, restored: dict):
    self.plan = plan
    self.done = ledger_from(restored)   # segments of earlier runs (or settings)
    self.steps = 0                       # steps this run took with this plan's settings
    self.allowed = None                  # further steps the budget allows (None: no cap)
    self._epsilon_at = (None, None)      # (steps, ε) of the last computation

  @classmethod
  def from_experiment(cls, exp):
    if exp.privacy is None:
      return None
    return cls(exp.privacy, exp.checkpointer.restored_data)

  def ledger(self) -> list:
    """Every segment so far, this run's steps merged into the last one when the
    settings match (so one unbroken run and a resumed one have the same ledger)."""
    mine = self.plan.segment(self.steps)
    if self.done and _same_settings(self.done[-1], mine):
      last = self.done[-1]
      return self.done[:-1] + [self.plan.segment(last.steps + self.steps)]
    return self.done + ([mine] if self.steps else [])

  def epsilon(self) -> float:
    if self._epsilon_at[0] != self.steps:
      self._epsilon_at = (self.steps, self.plan.epsilon(self.ledger()))
    return self._epsilon_at[1]

  def at_start(self, run: hooks.Run) -> None:
    taken = sum(s.steps for s in self.done)
    if taken != run.start:
      logging.warning("The privacy ledger counts %d steps but the checkpoint is at step "
                      "%d (a checkpoint from a run without privacy?); ε counts the "
                      "ledger's.", taken, run.start)
    if self.plan.epsilon_budget > 0:
      from mmjax.privacy import accounting
      self.allowed = accounting.max_steps(
          self.plan.sampling_rate, self.plan.noise_multiplier, self.plan.epsilon_budget,
          self.plan.delta, accountant=self.plan.accountant, sampling=self.plan.sampling,
          done=self.done)
      if self.allowed == 0 and run.end > run.start:
        raise ConfigError(
            f"The privacy budget ε = {self.plan.epsilon_budget:g} (δ = "
            f"{self.plan.delta:g}) is spent: the {taken} steps taken so far cost ε = "
            f"{self.plan.epsilon(self.done):.4g}. Raise privacy.epsilon_budget to train "
            "on (the guarantee then weakens to it), or evaluate with --mode=eval.")
      logging.info("privacy: the budget ε = %g allows %d more steps (the run asks for %d).",
                   self.plan.epsilon_budget, self.allowed, run.end - run.start)
    run.eval_extras["privacy/epsilon"] = self.epsilon
    run.eval_extras["privacy/delta"] = self.plan.delta
    run.eval_extras["privacy/noise_multiplier"] = self.plan.noise_multiplier
    run.checkpoint_extras[LEDGER_KEY] = [s.to_json() for s in self.ledger()]

  def after_step(self, run: hooks.Run) -> None:
    self.steps += 1
    run.checkpoint_extras[LEDGER_KEY] = [s.to_json() for s in self.ledger()]
    if self.allowed is not None and self.steps >= self.allowed and not run.final:
      logging.warning("privacy: the budget ε = %g is spent after step %d; stopping.",
                      self.plan.epsilon_budget, run.step)
      run.stop = True

  def at_end(self, run: hooks.Run) -> None:
    logging.info("privacy: (ε = %.4g, δ = %g) after %d DP steps (noise multiplier %.4g, "
                 "sampling rate %.5f, %s accountant).", self.epsilon(), self.plan.delta,
                 sum(s.steps for s in self.ledger()), self.plan.noise_multiplier,
                 self.plan.sampling_rate, self.plan.accountant)


def _same_settings(a, b) -> bool:
  return (a.sampling_rate == b.sampling_rate
          and a.noise_multiplier == b.noise_multiplier)
