"""Evaluation reports with each trainer eval (config `evals.report`).

  kind='classification'  per-class precision/recall/F1, accuracy, micro/macro/weighted
                         averages (sklearn's layout) and a confusion matrix, from the
                         model's 'logits' against the examples' 'label'.
  kind='tokens'          entity-level precision/recall/F1 (seqeval's) from 'token_logits'
                         against `label_key` (BIO tag ids; negative = not scored) and
                         `class_names` (the tag names), plus token accuracy.
  kind='perplexity'      exp(mean next-token NLL) of 'lm_logits' over the real tokens of
                         'text' (a causal LM).

Files per eval: WORKDIR/reports/step_{N}/report.{json,txt} (+ report_confusion.png).
Metrics: 'report/accuracy', 'report/macro_f1', 'report/weighted_f1' (classification);
'report/entity_f1', 'report/token_accuracy' (tokens); 'report/perplexity'.
"""
from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from mmjax.errors import ConfigError
from mmjax.evals import report as report_lib
from mmjax.train.robust_eval import eval_examples, in_chunks, model_variables

KINDS = ("classification", "tokens", "perplexity")
_ALL = 1 << 30   # num_examples=0: the whole eval split


def _next_token_nll(model, variables, inputs) -> jax.Array:
  """[B] (sum of next-token NLL over real target tokens, count) pairs, as [B, 2]."""
  logits = model.apply(variables, inputs, method="encode", train=False)["lm_logits"]
  ids = inputs["text_ids"]
  mask = inputs["text_mask"][:, 1:].astype(jnp.float32)
  logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32))
  nll = -jnp.take_along_axis(logp, ids[:, 1:, None], axis=-1)[..., 0]
  return jnp.stack([(nll * mask).sum(axis=1), mask.sum(axis=1)], axis=1)


def check_config(report_config) -> None:
  """ConfigError for an unknown evals.report.kind or a token report without tag names
  (config.validate calls this before anything runs)."""
  if report_config.kind not in KINDS:
    raise ConfigError(f"Unknown evals.report.kind={report_config.kind!r}; choose one of "
                      f"{', '.join(KINDS)} (or '' for none).")
  if report_config.kind == "tokens" and not report_config.class_names:
    raise ConfigError("evals.report.kind='tokens' needs evals.report.class_names: the "
                      "BIO tag names in id order, e.g. mmjax.data.ner_tags.CAPTION_NER_TAGS.")


class ReportEvaluator:
  """Writes a report per eval and returns its headline numbers; see the module doc."""

  def __init__(self, exp):
    cfg = exp.config.evals.report
    check_config(cfg)
    self.kind, self.label_key = cfg.kind, cfg.label_key
    self.class_names = tuple(cfg.class_names) or None
    if self.kind == "perplexity" and not getattr(exp.model, "causal", False):
      raise ConfigError("evals.report.kind='perplexity' needs a causal language model "
                        "(model.causal=True): a bidirectional model sees the next token.")
    self.workdir = exp.workdir
    self.logits = exp.model_logits
    self.batch_size = exp.config.evals.batch_size // jax.process_count()
    self.examples = eval_examples(exp.config.data, cfg.num_examples or _ALL,
                                  self.batch_size,
                                  require_label=self.kind == "classification")
    if self.kind == "tokens" and self.label_key not in self.examples:
      raise ConfigError(f"evals.report.label_key={self.label_key!r} is not in the eval "
                        "examples; keep it in config.data.preprocess_eval.")
    model = exp.model
    self._nll = jax.jit(lambda v, x: _next_token_nll(model, v, x))

  def _inputs(self, variables) -> dict:
    """The embedded eval examples (labels, of either kind, are not model inputs)."""
    batch = {k: v for k, v in self.examples.items() if k != self.label_key}
    return self.logits.inputs(variables, batch, self.batch_size)

  def __call__(self, params, model_state, step: int) -> dict[str, float]:
    variables = model_variables(params, model_state)
    out_dir = os.path.join(self.workdir, "reports", f"step_{step}")
    if self.kind == "perplexity":
      inputs = dict(self._inputs(variables), text_ids=self.examples["text"])
      sums = in_chunks(lambda x: self._nll(variables, x), inputs, self.batch_size).sum(0)
      ppl = report_lib.perplexity(float(sums[0]), float(sums[1]))
      if jax.process_index() == 0:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "report.json"), "w") as f:
          json.dump({"perplexity": ppl, "tokens": int(sums[1]),
                     "mean_nll": float(sums[0] / max(sums[1], 1))}, f, indent=2)
      return {"report/perplexity": ppl}
    outputs = self.logits.outputs(variables, self._inputs(variables), self.batch_size)
    if self.kind == "classification":
      return self._classification(outputs, out_dir)
    return self._tokens(outputs, out_dir)

  def _classification(self, outputs: dict, out_dir: str) -> dict[str, float]:
    if "logits" not in outputs:
      raise ConfigError("evals.report.kind='classification' needs class logits: set "
                        "model.num_classes > 0.")
    logits = outputs["logits"]
    k = logits.shape[-1]
    y, pred = self.examples["label"].reshape(-1), logits.argmax(-1)
    report = report_lib.classification_report(y, pred, num_classes=k,
                                               class_names=self.class_names)
    confusion = report_lib.confusion_matrix(y, pred, k)
    if jax.process_index() == 0:
      report_lib.write_report(report, out_dir, "report", confusion=confusion,
                              class_names=self.class_names)
      logging.info("Classification report (%d examples):\n%s", len(y),
                   report_lib.format_report(report))
    return {"report/accuracy": report["accuracy"],
            "report/macro_f1": report["macro avg"]["f1-score"],
            "report/weighted_f1": report["weighted avg"]["f1-score"]}

  def _tokens(self, outputs: dict, out_dir: str) -> dict[str, float]:
    if "token_logits" not in outputs:
      raise ConfigError("evals.report.kind='tokens' needs token logits: set "
                        "model.token_classes > 0.")
    labels = np.asarray(self.examples[self.label_key])
    pred = outputs["token_logits"].argmax(-1)
    true_tags = report_lib.tags_from_ids(labels, labels, self.class_names)
    pred_tags = report_lib.tags_from_ids(pred, labels, self.class_names)
    report = report_lib.entity_report(true_tags, pred_tags)
    scored = labels >= 0
    token_accuracy = float((pred[scored] == labels[scored]).mean()) if scored.any() else 0.0
    if jax.process_index() == 0:
      report_lib.write_report(report, out_dir, "report")
      logging.info("Entity report (%d sequences):\n%s", len(labels),
                   report_lib.format_report(report))
    return {"report/entity_f1": report["micro avg"]["f1-score"],
            "report/token_accuracy": token_accuracy}
