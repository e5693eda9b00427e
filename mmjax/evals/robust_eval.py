"""Robustness inside the trainer: robust evals with sanity verdicts, and the
catastrophic-overfitting guard.

Both attack the experiment's model at its embed/encode seam through the public API of
`mmjax.evals.robustness`, with the parameters passed as an argument
(`logits_fn(variables, inputs)`), so each attack compiles once per run however many
evals or checks there are.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from mmjax.errors import ConfigError
from mmjax.evals import autoattack, robustness
from mmjax.objectives.adversarial import attack_specs
from mmjax.registry import to_plain


class ModelLogits:
  """(variables, inputs) -> class logits [B,K] of `model.encode`, in eval mode.

  One instance per run (`Experiment.model_logits`): the robustness module caches
  compiled attacks per callable.
  """

  def __init__(self, model):
    self.model = model
    self.embed = jax.jit(
        lambda variables, batch: model.apply(variables, batch, method="embed", train=False))
    self.encode = jax.jit(
        lambda variables, inputs: model.apply(variables, inputs, method="encode",
                                              train=False))

  def __call__(self, variables, inputs):
    outputs = self.model.apply(variables, inputs, method="encode", train=False)
    if "logits" not in outputs:
      raise ConfigError("Robust evaluation needs class logits, but the model returns only "
                        f"{sorted(outputs)}. Set model.num_classes > 0, or unset "
                        "evals.robust.attack and adversarial.guard_every.")
    return outputs["logits"]

  def inputs(self, variables, batch: dict, batch_size: int) -> Any:
    """The embedded inputs (numpy pytree [N,...]) of a host batch, in chunks."""
    model_batch = {k: v for k, v in batch.items() if k not in ("label", "mask")}
    return in_chunks(lambda b: self.embed(variables, b), model_batch, batch_size)

  def outputs(self, variables, inputs, batch_size: int) -> dict:
    """`encode`'s outputs (numpy [N,...]; scalars dropped) for embedded inputs [N,...]."""
    return in_chunks(lambda x: {k: v for k, v in self.encode(variables, x).items()
                                if v.ndim}, inputs, batch_size)


def in_chunks(fn, tree, batch_size: int):
  """fn over a numpy pytree [N,...] in chunks of `batch_size` (the last one padded by
  repeating its final row, so every call has one shape and compiles once) -> numpy
  pytree [N,...]."""
  n = len(jax.tree.leaves(tree)[0])
  chunks = []
  for i in range(0, n, batch_size):
    size = min(batch_size, n - i)
    pad = lambda x: np.concatenate([x[i:i + size], np.repeat(x[i + size - 1:i + size],
                                                             batch_size - size, axis=0)])
    out = jax.device_get(fn(jax.tree.map(pad, tree)))
    chunks.append(jax.tree.map(lambda x: x[:size], out))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *chunks)


def model_variables(params, model_state) -> dict:
  """The variables dict `model.apply` takes: params plus the other collections."""
  return {"params": params, **model_state}


def eval_examples(data_config, num_examples: int, batch_size: int, *,
                  require_label: bool = True) -> dict:
  """The first `num_examples` real examples of the eval split, as one numpy batch."""
  from mmjax import data
  rows, have = [], 0
  for batch in data.make_eval_iterator(data_config, batch_size=batch_size):
    real = np.asarray(batch["mask"]) > 0
    rows.append({k: np.asarray(v)[real] for k, v in batch.items() if k != "mask"})
    have += int(real.sum())
    if have >= num_examples:
      break
  if require_label and (not rows or "label" not in rows[0]):
    raise ConfigError("This eval needs labelled eval examples: keep 'label' in "
                      "config.data.preprocess_eval.")
  return jax.tree.map(lambda *xs: np.concatenate(xs)[:num_examples], *rows)


class RobustEvaluator:
  """Robust accuracy (and sanity suite, eps curve) of the model on held eval examples.

  Metrics, all floats: 'robust/clean_accuracy', 'robust/accuracy' ({attack} at eps), the
  same number under a key naming what produced it ('robust/{label}', e.g.
  'robust/pgd-50x10_linf_eps0.3'), for AutoAttack the accuracy after each member
  ('robust/after/{stage}'), with `per_modality` and several modalities each one attacked
  alone ('robust/{modality}/accuracy', ...), and with `sanity` 'robust/sanity_passed'
  (1/0) and 'robust/sanity/{check}' (1/0) per check; failed checks are logged by name with
  their evidence. Files: `workdir/robustness/step_{N}.json` (everything, incl. the attack
  settings and check details) and, with `curve_eps`,
  `workdir/robustness/step_{N}/robustness_curve.{json,png}`.
  """

  def __init__(self, exp):
    cfg = exp.config.evals.robust
    self.cfg, self.workdir = cfg, exp.workdir
    self.batch_size = exp.config.evals.batch_size // jax.process_count()
    self.logits = exp.model_logits
    self.examples = eval_examples(exp.config.data, cfg.num_examples, self.batch_size)
    self.labels = self.examples.pop("label").astype(np.int32)
    self.key = jax.random.PRNGKey(exp.config.train.seed + 7)

  def _specs(self, inputs, eps, modalities=None):
    """perturb's spec trees; `modalities` (a subset, for the per-modality attacks) keeps
    only their entries of per-modality dicts."""
    modalities = tuple(modalities or self.cfg.modalities)
    only = lambda v: ({m: x for m, x in v.items() if m in modalities}
                      if isinstance(v, dict) else v)
    return attack_specs(inputs, modalities, only(to_plain(eps)),
                        only(to_plain(self.cfg.step_size)), config_key="evals.robust",
                        norm=only(to_plain(self.cfg.norm)))

  def _accuracy_at(self, x, eps: float, common: dict) -> float:
    """Robust accuracy at a scalar eps of the curve; a given step size scales with eps
    (so the attack's reach stays the same fraction of the ball)."""
    cfg = self.cfg
    step = None
    if cfg.step_size is not None:
      step = self._specs(x, 0.0)["step_size"] if not cfg.eps else jax.tree.map(
          lambda s: s * eps / cfg.eps, self._specs(x, eps)["step_size"])
    return robustness.robust_accuracy(self.logits, x, self.labels, self.key,
                                      attack=cfg.attack, eps=self._specs(x, eps)["eps"],
                                      step_size=step, version=cfg.version, **common)

  def label(self) -> str:
    cfg = self.cfg
    return robustness.attack_label(cfg.attack, eps=to_plain(cfg.eps), norm=to_plain(cfg.norm),
                                   steps=cfg.steps, restarts=cfg.restarts,
                                   version=cfg.version)

  def _attack(self, x, variables, modalities) -> dict:
    """{'accuracy', 'stages' (AutoAttack only), 'description'} for one modality set."""
    cfg = self.cfg
    specs = self._specs(x, cfg.eps, modalities)
    common = dict(norm=specs["norm"], bounds=specs["bounds"], batch_size=self.batch_size,
                  params=variables)
    if cfg.attack == "autoattack":
      res = autoattack.autoattack(self.logits, x, self.labels, self.key, eps=specs["eps"],
                                  version=cfg.version, attacks=tuple(cfg.attacks), **common)
      for warning in res["warnings"]:
        logging.warning("Robust eval (%s): %s", "+".join(modalities), warning)
      return {"accuracy": res["robust_accuracy"], "stages": res["stages"],
              "description": res["description"], "warnings": res["warnings"]}
    acc = robustness.robust_accuracy(
        self.logits, x, self.labels, self.key, attack=cfg.attack, eps=specs["eps"],
        steps=cfg.steps, restarts=cfg.restarts,
        step_size=specs["step_size"] if cfg.step_size is not None else None, **common)
    return {"accuracy": acc, "description": f"{cfg.attack}, {cfg.steps} steps, "
                                            f"{cfg.restarts} restart(s)"}

  def __call__(self, params, model_state, step: int) -> dict[str, float]:
    cfg = self.cfg
    variables = model_variables(params, model_state)
    x = self.logits.inputs(variables, self.examples, self.batch_size)
    specs = self._specs(x, cfg.eps)
    common = dict(norm=specs["norm"], steps=cfg.steps, restarts=cfg.restarts,
                  bounds=specs["bounds"], batch_size=self.batch_size, params=variables)
    clean = robustness.clean_accuracy(self.logits, x, self.labels, self.batch_size,
                                      params=variables)
    modalities = tuple(cfg.modalities)
    joint = self._attack(x, variables, modalities)
    robust, label = joint["accuracy"], self.label()
    metrics = {"robust/clean_accuracy": clean, "robust/accuracy": robust,
               f"robust/{label}": robust, "robust/num_examples": float(len(self.labels))}
    for row in joint.get("stages", ()):
      metrics[f"robust/after/{row['attack']}"] = row["robust_accuracy"]
    report: dict[str, Any] = {
        "step": step, "attack": cfg.attack, "label": label, "eps": to_plain(cfg.eps),
        "norm": to_plain(cfg.norm), "steps": cfg.steps, "restarts": cfg.restarts,
        "step_size": to_plain(cfg.step_size), "modalities": list(modalities),
        "description": joint["description"], "stages": joint.get("stages"),
        "warnings": joint.get("warnings", []), "metrics": dict(metrics)}
    if cfg.per_modality and len(modalities) > 1:
      report["per_modality"] = {}
      for m in modalities:
        alone = self._attack(x, variables, (m,))
        metrics[f"robust/{m}/accuracy"] = alone["accuracy"]
        for row in alone.get("stages", ()):
          metrics[f"robust/{m}/after/{row['attack']}"] = row["robust_accuracy"]
        report["per_modality"][m] = alone
    logging.info("Robust eval at step %d: clean %.4f, robust %.4f under %s (%s; %s at eps "
                 "%s; %d examples).", step, clean, robust, label, joint["description"],
                 to_plain(cfg.norm), to_plain(cfg.eps), len(self.labels))
    if cfg.sanity:
      # Default step sizes (relative to eps), so that the eps sweep scales them; the
      # robust accuracy above is reused when it was measured with them too.
      checks = robustness.sanity_checks(
          self.logits, x, self.labels, self.key, eps=specs["eps"], attack=cfg.attack,
          clean=clean, robust=robust if cfg.step_size is None else None, **common)
      metrics["robust/sanity_passed"] = float(checks["all_passed"])
      for name, verdict in checks.items():
        if isinstance(verdict, dict):
          metrics[f"robust/sanity/{name}"] = float(verdict["passed"])
      for name in checks["failed"]:
        logging.warning("Robust eval at step %d FAILED sanity check %r: %s. The robust "
                        "accuracy may be overestimated (docs/robustness.md).", step, name,
                        checks[name]["detail"])
      report["sanity"] = checks
    report["metrics"] = dict(metrics)
    out_dir = os.path.join(self.workdir, "robustness")
    if cfg.curve_eps:
      curve = {"eps": [float(e) for e in cfg.curve_eps], "accuracy": [
          self._accuracy_at(x, e, common) for e in cfg.curve_eps]}
      report["curve"] = curve
      if jax.process_index() == 0:
        robustness.save_curve(curve, os.path.join(out_dir, f"step_{step}"),
                              attack=cfg.attack, norm=cfg.norm, steps=cfg.steps,
                              restarts=cfg.restarts, step=step, label=label)
    if jax.process_index() == 0:
      os.makedirs(out_dir, exist_ok=True)
      with open(os.path.join(out_dir, f"step_{step}.json"), "w") as f:
        json.dump(report, f, indent=2, default=str)
    return metrics


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


class OverfittingGuard:
  """Wong et al.'s early stop for single-step adversarial training, made safe.

  Every `adversarial.guard_every` steps from `guard_start` on, it measures PGD accuracy
  (`guard_steps` steps at adversarial.eps) and FGSM accuracy on a held training batch (the
  first batch of the training data, as the step saw it). It keeps a device copy of the
  state at the best PGD accuracy so far. When PGD accuracy falls more than
  `guard_max_drop` below that best at `guard_patience` checks in a row (catastrophic
  overfitting: robustness to multi-step attacks collapses within an epoch and stays
  collapsed; a transient dip recovers), `after_step` returns the best state (its step
  counter set to now, so the data position stays consistent) and says stop.

  What this never does: stop on a single noisy check early in training, or restore
  parameters older than its first check (before it there is no best to fall from); a run
  whose first check is already collapsed trains on, and the eval shows it. The FGSM-PGD
  gap is recorded with each check as a diagnostic only: early in a healthy run FGSM
  accuracy far exceeds PGD accuracy too. History persists in `workdir/guard.json`; a
  resumed run compares against the best check before the resume and, as the parameters of
  that check are not saved, keeps the resumed state as its fallback (never older than the
  first check).
  """

  def __init__(self, exp, held_batch: dict, start_step: int, state):
    adv = exp.config.adversarial
    self.adv, self.workdir = adv, exp.workdir
    self.logits = exp.model_logits
    self.batch = {k: np.asarray(v) for k, v in held_batch.items() if k != "mask"}
    if "label" not in self.batch:
      raise ConfigError("adversarial.guard_every needs labelled training examples: keep "
                        "'label' in config.data.preprocess_train.")
    self.labels = self.batch.pop("label").astype(np.int32)
    self.path = os.path.join(exp.workdir, "guard.json")
    self.history: list[dict] = []
    if os.path.exists(self.path):
      with open(self.path) as f:
        # Checks after the step this run resumes from belong to a lost future (e.g. a
        # rerun from scratch without checkpoints): forget them.
        self.history = [h for h in json.load(f)["history"] if h["step"] <= start_step]
    self.best_state = _copy(state) if self.history else None
    self.record: dict | None = None   # the early stop, once it happened
    self.fallen_checks = 0   # consecutive checks below best - guard_max_drop
    self.key = jax.random.PRNGKey(exp.config.train.seed + 11)

  @property
  def best(self) -> dict | None:
    """The check with the highest PGD accuracy so far (the earliest among equals)."""
    return max(reversed(self.history), key=lambda h: h["pgd_accuracy"], default=None)

  def due(self, step: int) -> bool:
    adv = self.adv
    return step >= adv.guard_start and step % adv.guard_every == 0

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

  def after_step(self, state, step: int, writer) -> tuple[Any, bool]:
    """-> (state, stop). On a collapse, the state holds the best check's parameters."""
    if not self.due(step):
      return state, False
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
      return state, False
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
    return self.best_state.replace(step=state.step), True


def _copy(state):
  """A device copy of `state` that survives the train step donating `state`."""
  return jax.tree.map(jnp.copy, state)
