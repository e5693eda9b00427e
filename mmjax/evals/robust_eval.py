"""Robust accuracy with each eval (`type: robust`): an attack or AutoAttack at eps on
held eval examples, with the sanity suite's verdicts and an accuracy-vs-eps curve.

It attacks the experiment's model at its embed/encode seam through the public API of
`mmjax.evals.robustness`, with the parameters passed as an argument
(`logits_fn(variables, inputs)`), so each attack compiles once per run however many
evals there are.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np
from absl import logging

from mmjax.errors import ConfigError
from mmjax.evals import autoattack, robustness
from mmjax.evals.base import Evaluator, register_evaluator
from mmjax.evals.batched import eval_examples, model_variables
from mmjax.objectives.adversarial import attack_specs
from mmjax.registry import to_plain


@register_evaluator("robust")
class RobustEvaluator(Evaluator):
  """Robust accuracy (and sanity suite, eps curve) of the model on held eval examples.

  Metrics, all floats, after the entry's prefix ('robust/' for an entry named robust):
  'clean_accuracy', 'accuracy' ({attack} at eps), the same number under a key naming what
  produced it ('{label}', e.g. 'pgd-50x10_linf_eps0.3'), for AutoAttack the accuracy after
  each member ('after/{stage}'), with `per_modality` and several modalities each one
  attacked alone ('{modality}/accuracy', ...), and with `sanity` 'sanity_passed' (1/0)
  and 'sanity/{check}' (1/0) per check; failed checks are logged by name with their
  evidence. Files (`output_dir('robustness')`): `step_{N}.json` (everything, incl. the
  attack settings and check details) and, with `curve_eps`,
  `step_{N}/robustness_curve.{json,png}`.
  """

  options = dict(attack="", eps=0.0, norm="linf", steps=10, step_size=None, restarts=1,
                 modalities=("image",), num_examples=500, sanity=True, curve_eps=(),
                 version="standard", attacks=(), per_modality=False)
  per_modality_options = ("eps", "norm", "step_size")
  required = {"attack": "autoattack"}
  choices = {"attack": robustness.EVAL_ATTACKS}

  @classmethod
  def check_options(cls, options, key, config):
    eps = to_plain(options.eps)
    if not isinstance(eps, dict) and eps <= 0:
      raise ConfigError(f"{key}.eps={eps!r} must be positive (or one per modality); "
                        f"e.g. --config.{key}.eps=0.3.")
    if options.curve_eps and isinstance(eps, dict):
      raise ConfigError(f"{key}.curve_eps needs a scalar {key}.eps (a curve over one eps "
                        "for every modality); unset curve_eps or eps's dict.")
    if options.num_examples < 1:
      raise ConfigError(f"{key}.num_examples={options.num_examples} must be positive.")
    if options.steps < 1 or options.restarts < 1:
      raise ConfigError(f"{key}.steps={options.steps} and restarts={options.restarts} "
                        "must be positive.")
    robustness.check_step_size(options.attack, to_plain(options.step_size),
                               f"{key}.step_size")
    if options.attack == "autoattack":
      autoattack.version_stages(options.version, tuple(options.attacks))
    elif options.attacks:
      raise ConfigError(f"{key}.attacks lists AutoAttack members, read only with "
                        f"{key}.attack='autoattack' and version='custom'.")

  def __init__(self, exp, name, options):
    super().__init__(exp, name, options)
    self.logits = exp.model_logits
    self.examples = eval_examples(self.data_config, options.num_examples, self.batch_size)
    self.labels = self.examples.pop("label").astype(np.int32)
    self.key = jax.random.PRNGKey(exp.config.train.seed + 7)

  def _specs(self, inputs, eps, modalities=None):
    """perturb's spec trees; `modalities` (a subset, for the per-modality attacks) keeps
    only their entries of per-modality dicts."""
    modalities = tuple(modalities or self.cfg.modalities)
    only = lambda v: ({m: x for m, x in v.items() if m in modalities}
                      if isinstance(v, dict) else v)
    return attack_specs(inputs, modalities, only(to_plain(eps)),
                        only(to_plain(self.cfg.step_size)), config_key=self.key,
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
    metrics = {"clean_accuracy": clean, "accuracy": robust, label: robust,
               "num_examples": float(len(self.labels))}
    for row in joint.get("stages", ()):
      metrics[f"after/{row['attack']}"] = row["robust_accuracy"]
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
        metrics[f"{m}/accuracy"] = alone["accuracy"]
        for row in alone.get("stages", ()):
          metrics[f"{m}/after/{row['attack']}"] = row["robust_accuracy"]
        report["per_modality"][m] = alone
    logging.info("Robust eval %r at step %d: clean %.4f, robust %.4f under %s (%s; %s at eps "
                 "%s; %d examples).", self.name, step, clean, robust, label, joint["description"],
                 to_plain(cfg.norm), to_plain(cfg.eps), len(self.labels))
    if cfg.sanity:
      # Default step sizes (relative to eps), so that the eps sweep scales them; the
      # robust accuracy above is reused when it was measured with them too.
      checks = robustness.sanity_checks(
          self.logits, x, self.labels, self.key, eps=specs["eps"], attack=cfg.attack,
          clean=clean, robust=robust if cfg.step_size is None else None, **common)
      metrics["sanity_passed"] = float(checks["all_passed"])
      for name, verdict in checks.items():
        if isinstance(verdict, dict):
          metrics[f"sanity/{name}"] = float(verdict["passed"])
      for name in checks["failed"]:
        logging.warning("Robust eval at step %d FAILED sanity check %r: %s. The robust "
                        "accuracy may be overestimated (docs/robustness.md).", step, name,
                        checks[name]["detail"])
      report["sanity"] = checks
    report["metrics"] = dict(metrics)
    out_dir = self.output_dir("robustness")
    if cfg.curve_eps:
      curve = {"eps": [float(e) for e in cfg.curve_eps], "accuracy": [
          self._accuracy_at(x, e, common) for e in cfg.curve_eps]}
      report["curve"] = curve
      if jax.process_index() == 0:
        robustness.save_curve(curve, os.path.join(out_dir, f"step_{step}"),
                              attack=cfg.attack, norm=cfg.norm, steps=cfg.steps,
                              restarts=cfg.restarts, step=step, label=label)
        png = os.path.join(out_dir, f"step_{step}", "robustness_curve.png")
        if os.path.exists(png):
          self.add_picture("curve", png)
    if jax.process_index() == 0:
      os.makedirs(out_dir, exist_ok=True)
      with open(os.path.join(out_dir, f"step_{step}.json"), "w") as f:
        json.dump(report, f, indent=2, default=str)
    return metrics


