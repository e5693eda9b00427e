"""The catastrophic-overfitting guard (Wong et al. 2020) as a train hook, made safe:
it watches single-step adversarial training and stops a run whose robustness to
multi-step attacks collapses, keeping the best parameters it saw.

Options (config.adversarial): guard_every (0 = off), guard_start, guard_steps,
guard_step_size, guard_max_drop, guard_patience; checked by `check_config` before any
compute.
"""
from __future__ import annotations

import json
import os
import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from mmjax.data import device_ops   # JAX only
from mmjax.errors import ConfigError
from mmjax.evals import robustness
from mmjax.evals.batched import model_variables
from mmjax.objectives.adversarial import attack_specs
from mmjax.train.hooks import Hook, Run, register_hook


def check_config(config) -> None:
  """ConfigError for guard options that cannot work, before any compute."""
  adv = config.adversarial
  if not adv.guard_every:
    return
  if adv.kind == "none":
    raise ConfigError("adversarial.guard_every is set but adversarial.kind is 'none': the "
                      "catastrophic-overfitting guard watches adversarial training.")
  if (not isinstance(adv.eps, (int, float)) or not 0 < adv.guard_max_drop <= 1
      or adv.guard_start < 0 or adv.guard_patience < 1):
    raise ConfigError("adversarial.guard_every needs a scalar adversarial.eps, "
                      "guard_max_drop in (0, 1], guard_start >= 0 and guard_patience >= 1, "
                      f"got eps={adv.eps!r}, guard_patience={adv.guard_patience!r}, "
                      f"guard_max_drop={adv.guard_max_drop!r}, "
                      f"guard_start={adv.guard_start!r}.")


EARLY_STOP_FILE = "early_stop.json"


def early_stop_record(workdir: str) -> dict | None:
  """The guard's record of an early stop in `workdir` (early_stop.json), or None."""
  path = os.path.join(workdir, EARLY_STOP_FILE)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def early_stop_metrics(record: dict | None) -> dict[str, float]:
  """Eval fields that say a run was stopped early: {} for a run that was not."""
  if record is None:
    return {}
  return {"guard/stopped": 1.0, "guard/stopped_at_step": float(record["step"]),
          "guard/parameters_of_step": float(record["parameters_of_step"]),
          "guard/best_pgd_accuracy": float(record["best_pgd_accuracy"]),
          "guard/pgd_accuracy": float(record["pgd_accuracy"])}


@register_hook("overfitting_guard")
class OverfittingGuard(Hook):
  """Wong et al.'s early stop for single-step adversarial training, made safe.

  Every `adversarial.guard_every` steps from `guard_start` on, it measures PGD accuracy
  (`guard_steps` steps at adversarial.eps) and FGSM accuracy on a held training batch (the
  first batch of the training data, as the step saw it). It keeps a device copy of the
  state at the best PGD accuracy so far. When PGD accuracy falls more than
  `guard_max_drop` below that best at `guard_patience` checks in a row (catastrophic
  overfitting: robustness to multi-step attacks collapses within an epoch and stays
  collapsed; a transient dip recovers), `after_step` puts the best state in the run (its
  step counter set to now, so the data position stays consistent) and stops it.

  What this never does: stop on a single noisy check early in training, or restore
  parameters older than its first check (before it there is no best to fall from); a run
  whose first check is already collapsed trains on, and the eval shows it. The FGSM-PGD
  gap is recorded with each check as a diagnostic only: early in a healthy run FGSM
  accuracy far exceeds PGD accuracy too. History persists in `workdir/guard.json`; a
  resumed run compares against the best check before the resume and, as the parameters of
  that check are not saved, keeps the resumed state as its fallback (never older than the
  first check).
  """

  order = 10   # first: a stop makes this step the final one for the hooks after it

  def __init__(self, exp):
    self.exp, self.adv, self.workdir = exp, exp.config.adversarial, exp.workdir
    self.logits = exp.model_logits
    self.path = os.path.join(exp.workdir, "guard.json")
    self.record = early_stop_record(exp.workdir)   # the early stop, once it happened
    self.history: list[dict] = []
    self.best_state = None
    self.fallen_checks = 0   # consecutive checks below best - guard_max_drop
    self.key = jax.random.PRNGKey(exp.config.train.seed + 11)

  @classmethod
  def from_experiment(cls, exp):
    """On with adversarial.guard_every, and in a workdir it stopped before (its record
    goes with every later eval, so no one reads those numbers as a full run)."""
    if exp.config.adversarial.guard_every or early_stop_record(exp.workdir) is not None:
      return cls(exp)
    return None

  def at_start(self, run: Run) -> None:
    if self.record is not None:
      run.eval_extras.update(early_stop_metrics(self.record))
      if int(self.record["step"]) == run.start:
        logging.warning("The catastrophic-overfitting guard stopped this run at step %d "
                        "(%s): evaluating without training further. Delete that file to "
                        "train on.", run.start, os.path.join(self.workdir, EARLY_STOP_FILE))
        run.end, run.evaluate_at_start = run.start, True
    if self.adv.guard_every and run.end > run.start:
      self._hold_batch()
      if os.path.exists(self.path):
        with open(self.path) as f:
          # Checks after the step this run resumes from belong to a lost future (e.g. a
          # rerun from scratch without checkpoints): forget them.
          self.history = [h for h in json.load(f)["history"] if h["step"] <= run.start]
      self.best_state = _copy(run.state) if self.history else None

  def _hold_batch(self) -> None:
    """The held batch: the first training batch as the train step saw it (fixed, so
    every check sees the same one)."""
    from mmjax import data
    exp = self.exp
    held = next(data.make_train_iterator(
        exp.config.data, batch_size=exp.per_process_batch, seed=exp.config.train.seed,
        start_batch=0))
    transform = device_ops.train_transform(exp.config.data, seed=exp.config.train.seed)
    if transform is not None:
      held = jax.device_get(transform(held, 0))
    self.batch = {k: np.asarray(v) for k, v in held.items() if k != "mask"}
    if "label" not in self.batch:
      raise ConfigError("adversarial.guard_every needs labelled training examples: keep "
                        "'label' in config.data.preprocess_train.")
    self.labels = self.batch.pop("label").astype(np.int32)

  @property
  def best(self) -> dict | None:
    """The check with the highest PGD accuracy so far (the earliest among equals)."""
    return max(reversed(self.history), key=lambda h: h["pgd_accuracy"], default=None)

  def check_due(self, step: int) -> bool:
    adv = self.adv
    return bool(adv.guard_every) and step >= adv.guard_start and step % adv.guard_every == 0

  def measure(self, params, model_state) -> dict[str, float]:
    """{'pgd_accuracy', 'fgsm_accuracy'} on the held batch."""
    adv = self.adv
    variables = model_variables(params, model_state)
    x = self.logits.inputs(variables, self.batch, len(self.labels))
    specs = attack_specs(x, tuple(adv.modalities), adv.eps, adv.guard_step_size,
                         config_key="adversarial", norm=adv.norm)
    common = dict(eps=specs["eps"], norm=specs["norm"], bounds=specs["bounds"],
                  batch_size=len(self.labels), params=variables)
    pgd = robustness.robust_accuracy(
        self.logits, x, self.labels, self.key, attack="pgd", steps=adv.guard_steps,
        step_size=specs["step_size"] if adv.guard_step_size is not None else None,
        **common)
    fgsm = robustness.robust_accuracy(self.logits, x, self.labels, self.key,
                                      attack="fgsm", **common)
    return {"pgd_accuracy": pgd, "fgsm_accuracy": fgsm}

  def after_step(self, run: Run) -> None:
    """A check when due; on a collapse, run.state gets the best check's parameters and
    the run stops."""
    if run.preempted or not self.check_due(run.step):
      return
    state, step, writer = run.state, run.step, run.writer
    accs = self.measure(state.params, state.model_state)
    best = self.best
    acc = accs["pgd_accuracy"]
    fallen = best is not None and acc < best["pgd_accuracy"] - self.adv.guard_max_drop
    self.fallen_checks = self.fallen_checks + 1 if fallen else 0
    collapsed = self.fallen_checks >= self.adv.guard_patience
    writer.write(step, "guard", dict(accs, stopped=float(collapsed), fallen=float(fallen)))
    if fallen and not collapsed:
      logging.warning("overfitting guard at step %d: PGD accuracy %.4f is more than %g below "
                      "its best %.4f (step %d); %d more such check(s) stop the run.", step,
                      acc, self.adv.guard_max_drop, best["pgd_accuracy"], best["step"],
                      self.adv.guard_patience - self.fallen_checks)
    if not collapsed:
      self.history.append({"step": step, **accs})
      if best is None or acc > best["pgd_accuracy"]:
        self.best_state = _copy(state)
      if jax.process_index() == 0:
        with open(self.path, "w") as f:
          json.dump({"history": self.history}, f, indent=2)
      logging.info("overfitting guard at step %d: PGD accuracy %.4f (best %.4f), FGSM %.4f "
                   "on the held batch.", step, acc, self.best["pgd_accuracy"],
                   accs["fgsm_accuracy"])
      return
    kept = int(jax.device_get(self.best_state.step))
    record = {"step": step, "parameters_of_step": kept, "reason": "drop",
              "pgd_accuracy": acc, "fgsm_accuracy": accs["fgsm_accuracy"],
              "best_pgd_accuracy": best["pgd_accuracy"], "best_step": best["step"]}
    logging.error(
        "\n%s\nCATASTROPHIC OVERFITTING at step %d: PGD accuracy on the held training batch "
        "fell to %.4f from its best %.4f (step %d), more than adversarial.guard_max_drop="
        "%g. Training STOPS here with the parameters of step %d; the final eval measures "
        "them and reports guard/stopped=1. Details: %s. Remedies: a smaller "
        "adversarial.step_size, adversarial.clip_start=False on saturated inputs, or PGD "
        "training.\n%s", "!" * 78, step, acc, best["pgd_accuracy"], best["step"],
        self.adv.guard_max_drop, kept, os.path.join(self.workdir, EARLY_STOP_FILE), "!" * 78)
    self.record = record
    if jax.process_index() == 0:
      with open(os.path.join(self.workdir, EARLY_STOP_FILE), "w") as f:
        json.dump(record, f, indent=2)
    # Keep the step counter (and so the data position) at `step`: the checkpoint written
    # now is consistent, and a rerun resumes here and sees the early-stop file.
    run.state, run.stop = self.best_state.replace(step=state.step), True
    run.eval_extras.update(early_stop_metrics(record))


def _copy(state):
  """A device copy of `state` that survives the train step donating `state`."""
  return jax.tree.map(jnp.copy, state)
