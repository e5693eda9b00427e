"""The canary audit of a run (`type: privacy_audit`): an empirical lower bound on ε.

Needs privacy.audit_canaries = m > 0, which plants m mislabelled canaries in the
training set, each with probability 1/2 (mmjax/privacy/audit.py). The evaluator rebuilds
the same canaries from the train split, scores each by the model's log-probability of
its wrong label and asks jax-privacy's auditor how well the scores tell trained-on
canaries from the others. Metrics (after the prefix): epsilon_lower_bound (one run,
Steinke et al. 2023, 95% confidence by default), auroc, canaries_in, canaries_out; the
accountant's privacy/epsilon is in the same eval row when privacy is on. Files
(`output_dir('privacy_audit')`): step_N.json with the scores.
"""
from __future__ import annotations

import json
import os

import jax
import numpy as np

from mmjax.errors import ConfigError
from mmjax.evals.base import Evaluator, register_evaluator
from mmjax.evals.batched import model_variables


@register_evaluator("privacy_audit")
class PrivacyAuditEvaluator(Evaluator):
  """See the module docstring."""
  options = dict(significance=0.05)

  @classmethod
  def check_options(cls, options, key, config):
    if not config.privacy.audit_canaries:
      raise ConfigError(f"{key} audits canaries planted in training: set "
                        "privacy.audit_canaries (e.g. 200) for the run it audits.")
    if not 0 < options.significance < 1:
      raise ConfigError(f"{key}.significance={options.significance} must be in (0, 1) "
                        "(0.05: a 95%-confidence lower bound).")

  def __init__(self, exp, name, options):
    super().__init__(exp, name, options)
    from mmjax import data
    from mmjax.data import device_ops
    from mmjax.privacy import audit
    config = exp.config
    arrays = data.held_train_split(config.data)
    self.canaries = audit.choose(arrays["label"], config.privacy.audit_canaries,
                                 config.model.get("num_classes", 0), config.train.seed)
    examples = self.canaries.examples(arrays)
    transform = device_ops.eval_transform(config.data)
    self.examples = transform(examples) if transform else examples
    self.delta = config.privacy.delta

  def __call__(self, params, model_state, step):
    from mmjax.privacy import audit
    logits_of = self.exp.model_logits
    variables = model_variables(params, model_state)
    inputs = logits_of.inputs(variables, self.examples, self.batch_size)
    logits = logits_of.outputs(variables, inputs, self.batch_size)["logits"]
    logits = np.asarray(logits, np.float64)
    top = logits.max(-1, keepdims=True)
    log_probs = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    scores = np.take_along_axis(log_probs,
                                self.canaries.label[:, None].astype(np.int64), -1)[:, 0]
    metrics = audit.audit(scores, self.canaries.included, self.delta,
                          self.cfg.significance)
    if jax.process_index() == 0:
      out_dir = self.output_dir("privacy_audit")
      os.makedirs(out_dir, exist_ok=True)
      with open(os.path.join(out_dir, f"step_{step}.json"), "w") as f:
        json.dump({"step": step, "significance": self.cfg.significance,
                   "delta": self.delta, "metrics": metrics,
                   "scores": scores.tolist(),
                   "included": self.canaries.included.tolist()}, f)
    return metrics
