"""Evaluation reports with each trainer eval (`type: report`).

  kind='classification'  per-class precision/recall/F1, accuracy, micro/macro/weighted
                         averages (sklearn's layout) and a confusion matrix, from the
                         model's 'logits' against the examples' 'label'.
  kind='tokens'          entity-level precision/recall/F1 (seqeval's) from 'token_logits'
                         against `label_key` (BIO tag ids; negative = not scored) and
                         `class_names` (the tag names), plus token accuracy.
  kind='perplexity'      exp(mean next-token NLL) of 'lm_logits' over the real tokens of
                         'text' (a causal LM).

Files per eval: WORKDIR/reports/step_{N}/report.{json,txt} (+ report_confusion.png).
Metrics (after the entry's prefix, 'report/' for an entry named report): 'accuracy',
'macro_f1', 'weighted_f1' (classification); 'entity_f1', 'token_accuracy' (tokens);
'perplexity'.
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
from mmjax.evals.base import Evaluator, register_evaluator
from mmjax.evals.batched import eval_examples, in_chunks, model_variables

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


@register_evaluator("report")
class ReportEvaluator(Evaluator):
  """Writes a report per eval and returns its headline numbers; see the module doc.
  `num_examples` 0 reads the whole split."""
  options = dict(kind="", class_names=(), num_examples=0, label_key="token_labels")
  required = {"kind": "classification"}
  choices = {"kind": KINDS}

  @classmethod
  def check_options(cls, options, key, config):
    if options.kind == "tokens" and not options.class_names:
      raise ConfigError(f"{key}.kind='tokens' needs {key}.class_names: the BIO tag names "
                        "in id order, e.g. mmjax.data.ner_tags.CAPTION_NER_TAGS.")
    if options.num_examples < 0:
      raise ConfigError(f"{key}.num_examples={options.num_examples} must be >= 0 "
                        "(0: all).")

  def __init__(self, exp, name, options):
    super().__init__(exp, name, options)
    cfg = options
    self.kind, self.label_key = cfg.kind, cfg.label_key
    self.class_names = tuple(cfg.class_names) or None
    if self.kind == "perplexity" and not getattr(exp.model, "causal", False):
      raise ConfigError(f"{self.key}.kind='perplexity' needs a causal language model "
                        "(model.causal=True): a bidirectional model sees the next token.")
    self.logits = exp.model_logits
    self.examples = eval_examples(self.data_config, cfg.num_examples or _ALL,
                                  self.batch_size,
                                  require_label=self.kind == "classification")
    if self.kind == "tokens" and self.label_key not in self.examples:
      raise ConfigError(f"{self.key}.label_key={self.label_key!r} is not in the eval "
                        "examples; keep it in config.data.preprocess_eval.")
    model = exp.model
    self._nll = jax.jit(lambda v, x: _next_token_nll(model, v, x))

  def _inputs(self, variables) -> dict:
    """The embedded eval examples (labels, of either kind, are not model inputs)."""
    batch = {k: v for k, v in self.examples.items() if k != self.label_key}
    return self.logits.inputs(variables, batch, self.batch_size)

  def __call__(self, params, model_state, step: int) -> dict[str, float]:
    variables = model_variables(params, model_state)
    out_dir = os.path.join(self.output_dir("reports"), f"step_{step}")
    if self.kind == "perplexity":
      inputs = dict(self._inputs(variables), text_ids=self.examples["text"])
      sums = in_chunks(lambda x: self._nll(variables, x), inputs, self.batch_size).sum(0)
      ppl = report_lib.perplexity(float(sums[0]), float(sums[1]))
      if jax.process_index() == 0:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "report.json"), "w") as f:
          json.dump({"perplexity": ppl, "tokens": int(sums[1]),
                     "mean_nll": float(sums[0] / max(sums[1], 1))}, f, indent=2)
      return {"perplexity": ppl}
    outputs = self.logits.outputs(variables, self._inputs(variables), self.batch_size)
    if self.kind == "classification":
      return self._classification(outputs, out_dir)
    return self._tokens(outputs, out_dir)

  def _classification(self, outputs: dict, out_dir: str) -> dict[str, float]:
    if "logits" not in outputs:
      raise ConfigError(f"{self.key}.kind='classification' needs class logits: set "
                        "model.num_classes > 0.")
    logits = outputs["logits"]
    k = logits.shape[-1]
    y, pred = self.examples["label"].reshape(-1), logits.argmax(-1)
    report = report_lib.classification_report(y, pred, num_classes=k,
                                               class_names=self.class_names)
    confusion = report_lib.confusion_matrix(y, pred, k)
    if jax.process_index() == 0:
      paths = report_lib.write_report(report, out_dir, "report", confusion=confusion,
                                      class_names=self.class_names)
      if "png" in paths:
        self.add_picture("confusion", paths["png"])
      logging.info("Classification report (%d examples):\n%s", len(y),
                   report_lib.format_report(report))
    return {"accuracy": report["accuracy"],
            "macro_f1": report["macro avg"]["f1-score"],
            "weighted_f1": report["weighted avg"]["f1-score"]}

  def _tokens(self, outputs: dict, out_dir: str) -> dict[str, float]:
    if "token_logits" not in outputs:
      raise ConfigError(f"{self.key}.kind='tokens' needs token logits: set "
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
    return {"entity_f1": report["micro avg"]["f1-score"],
            "token_accuracy": token_accuracy}
