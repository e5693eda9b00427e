"""Per-group fairness of the model, clean and under attack (`type: fairness`).

Groups come from the eval examples: `group_key` names an integer feature ('label' for
per-class groups), and `cross_with_label` crosses it with the label (label x attribute).
Each eval measures, per group, the size, accuracy and error, per-class selection rate,
TPR and FPR, and the calibration error; with `attack`, the robust accuracy per group on
the same examples. Metrics (after the prefix): worst_group_accuracy, max_gap,
demographic_parity_difference / _ratio, equalized_odds_difference, mean ece, and per group
'group/<name>/accuracy' (and '/robust_accuracy'), plus 'robust/worst_group_accuracy' and
'robust/max_gap'. Files (`output_dir('fairness')`): step_N.json, step_N.md (a table per
group) and step_N.png (clean vs robust accuracy per group). Definitions:
mmjax/evals/fairness.py (equal to fairlearn's).
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np
from absl import logging

from mmjax import figures
from mmjax.errors import ConfigError
from mmjax.evals import fairness, robustness
from mmjax.evals.base import Evaluator, register_evaluator
from mmjax.evals.batched import eval_examples, model_variables
from mmjax.objectives.adversarial import attack_specs
from mmjax.registry import to_plain


@register_evaluator("fairness")
class FairnessEvaluator(Evaluator):
  """See the module docstring."""
  options = dict(group_key="label", cross_with_label=False, group_names=(), num_groups=0,
                 num_examples=1000, ece_bins=15, attack="", eps=0.0, norm="linf",
                 steps=10, step_size=None, restarts=1, modalities=("image",))
  per_modality_options = ("eps", "norm", "step_size")
  choices = {"attack": ("",) + robustness.EVAL_ATTACKS}

  @classmethod
  def check_options(cls, options, key, config):
    if not options.group_key:
      raise ConfigError(f"{key}.group_key is empty: name the example feature holding each "
                        "example's group (an integer), or 'label' for per-class groups.")
    if options.cross_with_label and options.group_key == "label":
      raise ConfigError(f"{key}.cross_with_label crosses group_key with the label; "
                        "group_key='label' already is the label.")
    if options.num_examples < 1 or options.ece_bins < 1 or options.num_groups < 0:
      raise ConfigError(f"{key}.num_examples and ece_bins must be positive and num_groups "
                        ">= 0 (0: the groups present).")
    if options.attack:
      eps = to_plain(options.eps)
      if not isinstance(eps, dict) and eps <= 0:
        raise ConfigError(f"{key}.attack is set but {key}.eps={eps!r} is not positive.")
      robustness.check_step_size(options.attack, to_plain(options.step_size),
                                 f"{key}.step_size")

  def __init__(self, exp, name, options):
    super().__init__(exp, name, options)
    cfg = options
    self.logits = exp.model_logits
    examples = eval_examples(self.data_config, cfg.num_examples, self.batch_size)
    if cfg.group_key not in examples:
      raise ConfigError(
          f"{self.key}.group_key={cfg.group_key!r} is not in the eval examples, which hold "
          f"{sorted(examples)}; keep that feature in config.data.preprocess_eval (e.g. "
          f"keep(..., '{cfg.group_key}')) or choose one of those keys.")
    raw = np.asarray(examples[cfg.group_key]).reshape(len(examples["label"]), -1)
    if raw.shape[1] != 1 or not np.issubdtype(raw.dtype, np.integer) or raw.min() < 0:
      raise ConfigError(f"{self.key}.group_key={cfg.group_key!r} must hold one integer >= 0 "
                        f"per example (a group id); it holds {raw.dtype} of shape "
                        f"{raw.shape[1:]}" + (f" with values down to {raw.min()}"
                                               if raw.size else "") + ".")
    self.labels = np.asarray(examples.pop("label")).astype(np.int32).reshape(-1)
    attribute = raw[:, 0].astype(np.int64)
    if cfg.group_key != "label":
      examples.pop(cfg.group_key)
    self.num_attribute = max(cfg.num_groups, int(attribute.max()) + 1)
    if cfg.cross_with_label:
      self.groups = fairness.crossed_groups(self.labels, attribute, self.num_attribute)
    else:
      self.groups = attribute
    self.examples = examples
    self.group_ids = self._expected_groups()
    self.names = {g: self._name(g) for g in self.group_ids}
    empty = [self.names[g] for g in self.group_ids if not (self.groups == g).any()]
    if empty:
      logging.warning("%s: groups %s have no eval examples among the first %d; they are "
                      "reported as empty.", self.key, empty, len(self.labels))
    self.key_rng = jax.random.PRNGKey(exp.config.train.seed + 13)

  def _expected_groups(self) -> list[int]:
    cfg = self.cfg
    present = sorted(set(self.groups.tolist()))
    if not cfg.num_groups:
      return present
    if cfg.cross_with_label:
      k = int(self.labels.max()) + 1
      return sorted(set(present) | {c * self.num_attribute + a for c in range(k)
                                    for a in range(cfg.num_groups)})
    return sorted(set(present) | set(range(cfg.num_groups)))

  def _name(self, g: int) -> str:
    names = tuple(self.cfg.group_names)
    if self.cfg.cross_with_label:
      label, attr = divmod(g, self.num_attribute)
      attr_name = names[attr] if attr < len(names) else str(attr)
      return f"label{label}_{self.cfg.group_key}{attr_name}"
    return names[g] if g < len(names) else f"{self.cfg.group_key}{g}"

  def __call__(self, params, model_state, step: int) -> dict[str, float]:
    cfg = self.cfg
    variables = model_variables(params, model_state)
    x = self.logits.inputs(variables, self.examples, self.batch_size)
    logits = self.logits.outputs(variables, x, self.batch_size)
    if "logits" not in logits:
      raise ConfigError(f"{self.key} needs class logits: set model.num_classes > 0.")
    logits = np.asarray(logits["logits"], np.float64)
    k = logits.shape[-1]
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    pred = logits.argmax(-1)
    per_group = fairness.group_metrics(self.labels, pred, self.groups, k, probs=probs,
                                       group_ids=self.group_ids, bins=cfg.ece_bins)
    summary = fairness.disparities(per_group, k)
    robust = None
    if cfg.attack:
      specs = attack_specs(x, tuple(cfg.modalities), to_plain(cfg.eps),
                           to_plain(cfg.step_size), config_key=self.key,
                           norm=to_plain(cfg.norm))
      robust = robustness.robust_correct(
          self.logits, x, self.labels, self.key_rng, attack=cfg.attack, eps=specs["eps"],
          norm=specs["norm"], steps=cfg.steps, restarts=cfg.restarts,
          step_size=specs["step_size"] if cfg.step_size is not None else None,
          bounds=specs["bounds"], batch_size=self.batch_size, params=variables)
      for g, row in per_group.items():
        in_g = self.groups == g
        row["robust_accuracy"] = float(robust[in_g].mean()) if in_g.any() else float("nan")
    metrics = {k_: summary[k_] for k_ in ("worst_group_accuracy", "max_gap",
                                          "demographic_parity_difference",
                                          "demographic_parity_ratio",
                                          "equalized_odds_difference")}
    eces = [r["ece"] for r in per_group.values() if r["count"]]
    metrics["mean_ece"] = float(np.mean(eces)) if eces else float("nan")
    for g, row in per_group.items():
      if row["count"]:
        metrics[f"group/{self.names[g]}/accuracy"] = row["accuracy"]
        if robust is not None:
          metrics[f"group/{self.names[g]}/robust_accuracy"] = row["robust_accuracy"]
    if robust is not None:
      raccs = [r["robust_accuracy"] for r in per_group.values() if r["count"]]
      metrics["robust/worst_group_accuracy"] = min(raccs)
      metrics["robust/max_gap"] = max(raccs) - min(raccs)
      metrics["robust/accuracy"] = float(robust.mean())
    metrics["accuracy"] = float((pred == self.labels).mean())
    if jax.process_index() == 0:
      self._write(step, per_group, summary, metrics)
    return {k_: float(v) for k_, v in metrics.items() if np.isfinite(v)}

  def _write(self, step: int, per_group: dict, summary: dict, metrics: dict) -> None:
    out_dir = self.output_dir("fairness")
    os.makedirs(out_dir, exist_ok=True)
    report = {"step": step, "group_key": self.cfg.group_key,
              "cross_with_label": self.cfg.cross_with_label, "attack": self.cfg.attack,
              "eps": to_plain(self.cfg.eps), "summary": summary, "metrics": metrics,
              "groups": {self.names[g]: row for g, row in per_group.items()}}
    base = os.path.join(out_dir, f"step_{step}")
    with open(base + ".json", "w") as f:
      json.dump(report, f, indent=2, default=float)
    robust = self.cfg.attack != ""
    head = "| group | examples | accuracy |" + (" robust accuracy |" if robust else "") + \
        " ECE |\n|---|---|---|" + ("---|" if robust else "") + "---|\n"
    lines = []
    for g, row in per_group.items():
      cells = [self.names[g], str(row["count"]), _pct(row["accuracy"])]
      if robust:
        cells.append(_pct(row.get("robust_accuracy", float("nan"))))
      cells.append(_num(row.get("ece", float("nan"))))
      lines.append("| " + " | ".join(cells) + " |")
    with open(base + ".md", "w") as f:
      f.write(f"Fairness at step {step} ({self.cfg.group_key}"
              f"{' x label' if self.cfg.cross_with_label else ''}): worst-group accuracy "
              f"{_pct(summary['worst_group_accuracy'])}, gap {_pct(summary['max_gap'])}, "
              f"demographic parity difference {_num(summary['demographic_parity_difference'])}"
              f", equalized odds difference {_num(summary['equalized_odds_difference'])}."
              "\n\n" + head + "\n".join(lines) + "\n")
    _bar_chart(base + ".png", [self.names[g] for g in per_group],
               [row["accuracy"] for row in per_group.values()],
               [row.get("robust_accuracy") for row in per_group.values()] if robust else None,
               title=f"{self.name} at step {step}")
    self.add_picture("groups", base + ".png")


def _pct(v: float) -> str:
  return "—" if not np.isfinite(v) else f"{100 * v:.1f}%"


def _num(v: float) -> str:
  return "—" if not np.isfinite(v) else f"{v:.3f}"


def _bar_chart(path: str, names, clean, robust, *, title: str) -> None:
  """Clean (and robust) accuracy per group as grouped bars."""
  x = np.arange(len(names))
  width = 0.4 if robust is not None else 0.8
  fig = figures.new_figure(max(4, 0.5 * len(names) + 2), 3.2)
  ax = fig.add_subplot()
  ax.bar(x - (width / 2 if robust is not None else 0), np.nan_to_num(clean), width,
         label="clean")
  if robust is not None:
    ax.bar(x + width / 2, np.nan_to_num(np.asarray(robust, float)), width, label="robust")
  ax.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
  ax.set_ylim(0, 1)
  ax.set_ylabel("accuracy")
  ax.set_title(title, fontsize=9)
  ax.legend(fontsize=7)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
