"""Evaluation reports in the trainer (`type: report`): classification tables that match
sklearn, entity reports that match seqeval, perplexity that matches the clm loss."""
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from seqeval.metrics import f1_score as seqeval_f1
from sklearn.metrics import classification_report as sk_report

from mmjax import models
from mmjax.config import default_config
from mmjax.data.ner_tags import CAPTION_NER_TAGS, DIGIT_WORDS
from mmjax.errors import ConfigError
from mmjax.evals import evaluators
from mmjax.evals.batched import eval_examples
from mmjax.train import loop

NER = ("caption_ner|tokenize_words(tokenizer='bytes', max_len=48)"
       "|keep('text', 'text_mask', 'token_labels', 'label')")
CAPTIONS = "tokenize('caption', 'text', max_len=24)|keep('text', 'text_mask')"
TEXT = dict(name="text_transformer", vocab_size=260, width=32, depth=2, num_heads=2,
            mlp_dim=64)


def _restore(workdir, step):
  """(params, model_state) of the checkpoint at `step`."""
  with ocp.PyTreeCheckpointer() as ckptr:
    state = ckptr.restore(os.path.join(workdir, "checkpoints", str(step), "state"))
  return state["params"], state.get("model_state") or {}


def _encode(config, workdir, step, examples, batch_size):
  """The model's eval outputs for `examples` (chunks of `batch_size`), from the checkpoint."""
  params, model_state = _restore(workdir, step)
  model = models.build_model(config.model)
  apply = jax.jit(lambda v, b: model.apply(v, b, train=False))
  variables = {"params": params, **model_state}
  keys = [k for k in ("image", "text", "text_mask") if k in examples]
  n = len(examples[keys[0]])
  outs = [jax.device_get(apply(variables, {k: examples[k][i:i + batch_size] for k in keys}))
          for i in range(0, n, batch_size)]
  return {k: np.concatenate([o[k] for o in outs]) for k in outs[0]}


def _read(workdir, step):
  base = os.path.join(workdir, "reports", f"step_{step}")
  with open(os.path.join(base, "report.json")) as f:
    return json.load(f), base


def _text_config(data_dir, preprocess, model, objective, **report):
  c = default_config()
  c.data.update(dict(data_dir=data_dir, shuffle_buffer=512, preprocess_train=preprocess,
                     preprocess_eval=preprocess))
  c.model = model
  c.objective = dict(name=objective)
  c.optim.update(dict(learning_rate=3e-3, schedule="constant"))
  c.evals.report = dict(type="report", **report)
  return c


def test_classification_report_matches_sklearn(tiny_config, tmp_path):
  """report.json has every digit and the averages, equal to sklearn's report of the
  model's predictions; its accuracy is the eval accuracy; txt and PNG are written."""
  workdir = str(tmp_path / "run")
  config = tiny_config(total_steps=10, checkpoint_every=10)
  config.evals.report = dict(type="report", kind="classification", class_names=DIGIT_WORDS)
  result = loop.train_and_evaluate(config, workdir)
  report, base = _read(workdir, 10)
  assert set(report) == {*DIGIT_WORDS, "accuracy", "micro avg", "macro avg", "weighted avg"}
  assert report["macro avg"]["support"] == 1000
  assert result["report/accuracy"] == pytest.approx(result["accuracy"], abs=1e-6)
  assert result["report/accuracy"] > 0.2   # trained: chance is 0.1
  assert result["report/macro_f1"] == pytest.approx(report["macro avg"]["f1-score"])
  assert result["report/weighted_f1"] == pytest.approx(report["weighted avg"]["f1-score"])

  examples = eval_examples(config.data, 1000, 500)
  pred = _encode(config, workdir, 10, examples, 500)["logits"].argmax(-1)
  want = sk_report(examples["label"], pred, labels=list(range(10)), target_names=DIGIT_WORDS,
                   output_dict=True, zero_division=0)
  assert report["accuracy"] == pytest.approx(want["accuracy"])
  for key in (*DIGIT_WORDS, "macro avg", "weighted avg"):
    for metric in ("precision", "recall", "f1-score", "support"):
      assert report[key][metric] == pytest.approx(want[key][metric], abs=1e-9), (key, metric)
  with open(os.path.join(base, "report.txt")) as f:
    text = f.read()
  assert all(name in text for name in DIGIT_WORDS) and "weighted avg" in text
  with open(os.path.join(base, "report_confusion.png"), "rb") as f:
    assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_token_report_matches_seqeval(digits_data_dir, tmp_path):
  """kind='tokens' on caption_ner: micro entity F1 = seqeval's on tags decoded from the
  model's own predictions, and token accuracy over the scored tokens."""
  workdir = str(tmp_path / "run")
  config = _text_config(digits_data_dir, NER, dict(TEXT, max_len=48, token_classes=7,
                                                   lm_head=False),
                        "token_classification", kind="tokens",
                        class_names=CAPTION_NER_TAGS)
  config.train.update(dict(total_steps=40, batch_size=32, checkpoint_every=40))
  config.train.eval_batch_size = 500
  result = loop.train_and_evaluate(config, workdir)
  report, base = _read(workdir, 40)
  assert {"NUM", "STYLE", "BG", "micro avg", "macro avg", "weighted avg"} <= set(report)
  assert result["report/entity_f1"] == report["micro avg"]["f1-score"]

  examples = eval_examples(config.data, 1000, 500, require_label=False)
  labels = examples["token_labels"]
  pred = _encode(config, workdir, 40, examples, 500)["token_logits"].argmax(-1)
  keep = labels >= 0
  names = np.array(CAPTION_NER_TAGS)
  true_tags = [list(names[row[m]]) for row, m in zip(labels, keep)]
  pred_tags = [list(names[row[m]]) for row, m in zip(pred, keep)]
  assert sum(map(len, true_tags)) > 3000   # every word of 1000 captions
  f1 = seqeval_f1(true_tags, pred_tags)
  assert f1 > 0.3   # it learned something, so the comparison is not 0 == 0
  assert result["report/entity_f1"] == pytest.approx(f1, abs=1e-9)
  assert result["report/token_accuracy"] == pytest.approx((pred == labels)[keep].mean())
  assert os.path.isfile(os.path.join(base, "report.txt"))


def test_perplexity_report_matches_clm_loss(digits_data_dir, tmp_path):
  """kind='perplexity' = exp(mean next-token NLL over real target tokens): the clm eval
  loss when one batch holds the whole split, and a hand computation from the model."""
  workdir = str(tmp_path / "run")
  config = _text_config(digits_data_dir, CAPTIONS, dict(TEXT, max_len=24, causal=True),
                        "clm", kind="perplexity")
  config.train.update(dict(total_steps=10, batch_size=32, checkpoint_every=10))
  # One eval batch: the clm loss is then the token-weighted mean over the split too
  # (batches are averaged per example count, the report per token).
  config.train.eval_batch_size = 1000
  result = loop.train_and_evaluate(config, workdir)
  report, _ = _read(workdir, 10)
  assert result["report/perplexity"] == report["perplexity"]
  assert report["mean_nll"] == pytest.approx(result["loss"], rel=1e-5)
  assert result["report/perplexity"] == pytest.approx(np.exp(result["loss"]), rel=1e-5)
  assert result["report/perplexity"] < 200   # trained below uniform over 260 ids

  examples = eval_examples(config.data, 1000, 1000, require_label=False)
  logits = _encode(config, workdir, 10, examples, 1000)["lm_logits"].astype(np.float64)
  logits -= logits.max(-1, keepdims=True)
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  ids, mask = examples["text"], examples["text_mask"][:, 1:] > 0
  nll = -np.take_along_axis(logp[:, :-1], ids[:, 1:, None], -1)[..., 0]
  assert report["tokens"] == mask.sum()
  assert report["mean_nll"] == pytest.approx(nll[mask].mean(), rel=1e-5)
  assert report["perplexity"] == pytest.approx(np.exp(nll[mask].mean()), rel=1e-5)


@pytest.mark.parametrize("report,match", [
    (dict(kind="roc"), r"Unknown evals.report.kind='roc'; choose one of classification, "
                       r"tokens, perplexity"),
    (dict(kind="tokens"), r"kind='tokens' needs evals.report.class_names"),
], ids=["unknown_kind", "tokens_without_names"])
def test_bad_report_settings_are_config_errors(tiny_config, tmp_path, report, match):
  """An unknown kind, or 'tokens' without class_names, is a ConfigError from the config
  checks, before any experiment (or checkpoint) exists."""
  config = tiny_config(total_steps=1)
  config.evals.report = dict(type="report", **report)
  with pytest.raises(ConfigError, match=match):
    loop.build_experiment(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_perplexity_needs_a_causal_model(tiny_config, tmp_path):
  """Perplexity of a model that sees the next token is meaningless: a ConfigError."""
  config = tiny_config(total_steps=1)
  config.evals.report = dict(type="report", kind="perplexity")
  exp = loop.build_experiment(config, str(tmp_path / "run"))
  try:
    with pytest.raises(ConfigError, match="needs a causal language model"):
      evaluators.build(exp)
  finally:
    exp.checkpointer.close()
