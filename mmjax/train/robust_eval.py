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
import numpy as np
from absl import logging

from mmjax.errors import ConfigError
from mmjax.evals import robustness
from mmjax.objectives.adversarial import attack_specs


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

  Metrics, all floats: 'robust/clean_accuracy', 'robust/accuracy' ({attack} at eps) and,
  with `sanity`, 'robust/sanity_passed' (1/0) and 'robust/sanity/{check}' (1/0) per check;
  failed checks are logged by name with their evidence. Files:
  `workdir/robustness/step_{N}.json` (everything, incl. the check details) and, with
  `curve_eps`, `workdir/robustness/step_{N}/robustness_curve.{json,png}`.
  """

  def __init__(self, exp):
    cfg = exp.config.evals.robust
    self.cfg, self.workdir = cfg, exp.workdir
    self.batch_size = exp.config.evals.batch_size // jax.process_count()
    self.logits = exp.model_logits
    self.examples = eval_examples(exp.config.data, cfg.num_examples, self.batch_size)
    self.labels = self.examples.pop("label").astype(np.int32)
    self.key = jax.random.PRNGKey(exp.config.train.seed + 7)

  def _specs(self, inputs, eps):
    return attack_specs(inputs, tuple(self.cfg.modalities), eps, self.cfg.step_size,
                        config_key="evals.robust", norm=self.cfg.norm)

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
                                      step_size=step, **common)

  def __call__(self, params, model_state, step: int) -> dict[str, float]:
    cfg = self.cfg
    variables = model_variables(params, model_state)
    x = self.logits.inputs(variables, self.examples, self.batch_size)
    specs = self._specs(x, cfg.eps)
    common = dict(norm=specs["norm"], steps=cfg.steps, restarts=cfg.restarts,
                  bounds=specs["bounds"], batch_size=self.batch_size, params=variables)
    step_size = specs["step_size"] if cfg.step_size is not None else None
    clean = robustness.clean_accuracy(self.logits, x, self.labels, self.batch_size,
                                      params=variables)
    robust = robustness.robust_accuracy(self.logits, x, self.labels, self.key,
                                        attack=cfg.attack, eps=specs["eps"],
                                        step_size=step_size, **common)
    metrics = {"robust/clean_accuracy": clean, "robust/accuracy": robust,
               "robust/num_examples": float(len(self.labels))}
    report: dict[str, Any] = {"step": step, "attack": cfg.attack, "eps": cfg.eps,
                              "metrics": dict(metrics)}
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
    out_dir = os.path.join(self.workdir, "robustness")
    if cfg.curve_eps:
      curve = {"eps": [float(e) for e in cfg.curve_eps], "accuracy": [
          self._accuracy_at(x, e, common) for e in cfg.curve_eps]}
      report["curve"] = curve
      if jax.process_index() == 0:
        robustness.save_curve(curve, os.path.join(out_dir, f"step_{step}"),
                              attack=cfg.attack, norm=cfg.norm, steps=cfg.steps,
                              restarts=cfg.restarts, step=step)
    if jax.process_index() == 0:
      os.makedirs(out_dir, exist_ok=True)
      with open(os.path.join(out_dir, f"step_{step}.json"), "w") as f:
        json.dump(report, f, indent=2, default=str)
    return metrics


class OverfittingGuard:
  """Wong et al.'s early stop for single-step adversarial training.

  Every `adversarial.guard_every` steps it measures PGD accuracy (`guard_steps` steps,
  eps = adversarial.eps) on a held training batch, the first batch of the training data.
  If it falls by more than `guard_max_drop` since the previous check, or FGSM accuracy on
  the same batch exceeds it by more than `guard_max_gap` (a single-step attack that no
  longer finds what PGD finds: the gradient-masked state of catastrophic overfitting,
  which a fall never shows when it set in before the first check), training is
  catastrophically overfitting: `check` says stop, and the trainer keeps the parameters
  of the previous check (or the initial ones). The previous accuracy persists in
  `workdir/guard.json`, so a resumed run compares against the check before the
  interruption.
  """

  def __init__(self, exp, held_batch: dict, start_step: int):
    adv = exp.config.adversarial
    self.adv = adv
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
    self.key = jax.random.PRNGKey(exp.config.train.seed + 11)

  @property
  def previous(self) -> float | None:
    return self.history[-1]["pgd_accuracy"] if self.history else None

  def check(self, params, model_state, step: int) -> tuple[dict[str, float], str]:
    """-> ({'pgd_accuracy', 'fgsm_accuracy'} on the held batch, why training must stop:
    '' (it need not), 'drop' or 'gap')."""
    adv = self.adv
    variables = model_variables(params, model_state)
    x = self.logits.inputs(variables, self.batch, len(self.labels))
    specs = attack_specs(x, tuple(adv.modalities), adv.eps, adv.guard_step_size,
                         config_key="adversarial", norm=adv.norm)
    common = dict(eps=specs["eps"], norm=specs["norm"], bounds=specs["bounds"],
                  batch_size=len(self.labels), params=variables)
    acc = robustness.robust_accuracy(
        self.logits, x, self.labels, self.key, attack="pgd", steps=adv.guard_steps,
        step_size=specs["step_size"] if adv.guard_step_size is not None else None,
        **common)
    fgsm = robustness.robust_accuracy(self.logits, x, self.labels, self.key,
                                      attack="fgsm", **common)
    why = ""
    if self.previous is not None and acc < self.previous - adv.guard_max_drop:
      why = "drop"
    elif adv.guard_max_gap and fgsm - acc > adv.guard_max_gap:
      why = "gap"
    if not why:
      self.history.append({"step": step, "pgd_accuracy": acc, "fgsm_accuracy": fgsm})
      if jax.process_index() == 0:
        with open(self.path, "w") as f:
          json.dump({"history": self.history}, f, indent=2)
    return {"pgd_accuracy": acc, "fgsm_accuracy": fgsm}, why
