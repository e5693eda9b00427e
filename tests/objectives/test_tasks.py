"""Task objectives: token_classification and regression, against hand-computed numbers."""
import flax.linen as nn
import jax
import numpy as np
import pytest

from mmjax import models
from mmjax.errors import ConfigError
from mmjax.objectives import make_objective

RNG = jax.random.key(0)


class PassThrough(nn.Module):
  """A parameter-free stand-in whose outputs are batch['out'] under the key `key`, so a
  test fixes the logits (or predictions) it scores."""
  key: str = "token_logits"

  def embed(self, batch, *, train=False):
    return {"out": batch["out"]}

  def encode(self, inputs, *, train=False):
    return {self.key: inputs["out"]}

  def initialize(self, batch):
    return self.encode(self.embed(batch))


def _loss(name, model, batch, **options):
  objective = make_objective(dict(name=name, **options), model)
  loss, (metrics, _) = jax.jit(
      lambda b: objective({}, b, RNG, model_state={}, train=False))(batch)
  return float(loss), {k: float(v) for k, v in metrics.items()}


def _log_softmax(x):
  x = np.asarray(x, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


# A fixed example: B=2 sequences of T=3 tokens, K=3 tags; -1 = not scored.
LOGITS = np.array([[[2.0, 0.5, -1.0], [0.1, 0.3, 0.2], [1.0, 1.5, 3.0]],
                   [[-1.0, 0.0, 1.0], [0.4, -0.2, 0.0], [2.5, 0.0, 0.5]]], np.float32)
LABELS = np.array([[0, 2, -1], [2, 0, 1]], np.int32)


def _hand_token_metrics(logits, labels, example_mask):
  """Mean CE and accuracy over scored tokens (label >= 0) of real examples."""
  logp = _log_softmax(logits)
  nll, right, n = 0.0, 0, 0
  for b in range(labels.shape[0]):
    for t in range(labels.shape[1]):
      if labels[b, t] >= 0 and example_mask[b]:
        nll -= logp[b, t, labels[b, t]]
        right += int(np.argmax(logits[b, t]) == labels[b, t])
        n += 1
  return nll / n, right / n


def test_token_classification_is_masked_mean_cross_entropy():
  """loss = mean CE over labelled tokens, -1 ignored; accuracy likewise (5 tokens)."""
  loss, metrics = _loss("token_classification", PassThrough(),
                        {"out": LOGITS, "token_labels": LABELS})
  want_loss, want_acc = _hand_token_metrics(LOGITS, LABELS, [1, 1])
  assert loss == pytest.approx(want_loss, rel=1e-5)
  assert metrics["loss"] == loss
  assert metrics["accuracy"] == pytest.approx(want_acc, abs=1e-6) == 3 / 5
  # Explicitly: tokens (0,0) label 0, (0,1) label 2, (1,0) 2, (1,1) 0, (1,2) 1.
  logp = _log_softmax(LOGITS)
  by_hand = -(logp[0, 0, 0] + logp[0, 1, 2] + logp[1, 0, 2] + logp[1, 1, 0]
              + logp[1, 2, 1]) / 5
  assert loss == pytest.approx(by_hand, rel=1e-5)


def test_token_classification_weights_examples_by_batch_mask():
  """A padded example (batch['mask'] = 0) counts for nothing, NaN logits included."""
  logits = LOGITS.copy()
  logits[1] = np.nan   # padding rows may hold anything
  loss, metrics = _loss("token_classification", PassThrough(),
                        {"out": logits, "token_labels": LABELS,
                         "mask": np.array([1, 0], np.int32)})
  want_loss, want_acc = _hand_token_metrics(LOGITS, LABELS, [1, 0])
  assert loss == pytest.approx(want_loss, rel=1e-5)
  assert metrics["accuracy"] == pytest.approx(want_acc) == 1 / 2


def test_token_classification_label_key_and_all_ignored():
  """label_key picks the labels; -100 (HF's) is ignored too; no scored token -> 0."""
  labels = np.where(LABELS == -1, -100, LABELS)
  loss, _ = _loss("token_classification", PassThrough(), {"out": LOGITS, "ner": labels},
                  label_key="ner")
  assert loss == pytest.approx(_hand_token_metrics(LOGITS, LABELS, [1, 1])[0], rel=1e-5)
  loss, metrics = _loss("token_classification", PassThrough(),
                        {"out": LOGITS, "token_labels": np.full((2, 3), -1, np.int32)})
  assert loss == 0.0 and metrics["accuracy"] == 0.0


def test_token_classification_through_text_transformer():
  """A text_transformer with token_classes gives [B,T,K] token_logits scored at the
  labelled positions only; without token_classes it is a ConfigError naming the fix."""
  cfg = dict(name="text_transformer", vocab_size=50, max_len=8, width=16, depth=1,
             num_heads=2, mlp_dim=32)
  batch = {"text": np.arange(12, dtype=np.int32).reshape(2, 6) + 4,
           "text_mask": np.ones((2, 6), np.int32),
           "token_labels": np.array([[-1, 0, 1, 2, 3, -1], [-1, 4, 0, 0, -1, -1]], np.int32)}
  model = models.build_model(dict(cfg, token_classes=5))
  params = models.init_variables(model, batch, jax.random.key(0))["params"]
  out = model.apply({"params": params}, batch)
  assert out["token_logits"].shape == (2, 6, 5)
  objective = make_objective(dict(name="token_classification"), model)
  loss, (metrics, _) = objective(params, batch, RNG, model_state={}, train=False)
  logp = _log_softmax(out["token_logits"])
  labels = batch["token_labels"]
  scored = labels >= 0
  want = -np.take_along_axis(logp, np.maximum(labels, 0)[..., None], -1)[..., 0][scored]
  assert float(loss) == pytest.approx(want.mean(), rel=1e-4)
  right = (np.asarray(out["token_logits"]).argmax(-1) == labels)[scored]
  assert float(metrics["accuracy"]) == pytest.approx(right.mean(), abs=1e-6)
  plain = models.build_model(dict(cfg, num_classes=3))
  params = models.init_variables(plain, batch, jax.random.key(0))["params"]
  objective = make_objective(dict(name="token_classification"), plain)
  with pytest.raises(ConfigError, match=r"needs the model output 'token_logits'.*"
                                        r"Set model.token_classes > 0"):
    objective(params, batch, RNG, model_state={}, train=False)


# ------------------------------------------------------------------------- regression

def test_regression_mse_and_mae_scalar_targets():
  """[B] targets against [B,1] predictions: exact MSE and MAE."""
  pred = np.array([[1.0], [2.0], [-0.5]], np.float32)
  target = np.array([0.5, 4.0, -0.5], np.float32)
  loss, metrics = _loss("regression", PassThrough("logits"), {"out": pred, "target": target})
  assert loss == pytest.approx((0.25 + 4.0 + 0.0) / 3)
  assert metrics["mse"] == metrics["loss"] == loss
  assert metrics["mae"] == pytest.approx((0.5 + 2.0 + 0.0) / 3)


def test_regression_mse_and_mae_vector_targets_with_padding():
  """[B,K] targets: means over outputs then real examples (batch['mask'])."""
  pred = np.array([[1.0, 0.0], [2.0, 2.0], [9.0, 9.0]], np.float32)
  target = np.array([[0.0, 0.0], [0.0, 3.0], [0.0, 0.0]], np.float32)
  batch = {"out": pred, "y": target, "mask": np.array([1, 1, 0], np.int32)}
  loss, metrics = _loss("regression", PassThrough("logits"), batch, target_key="y")
  # Example 0: errors (1, 0); example 1: (2, -1); example 2 is padding.
  assert loss == pytest.approx(((1 + 0) / 2 + (4 + 1) / 2) / 2)
  assert metrics["mae"] == pytest.approx(((1 + 0) / 2 + (2 + 1) / 2) / 2)


def test_regression_target_width_must_match_outputs():
  """[B] targets against [B,2] outputs would broadcast silently: a ConfigError instead."""
  with pytest.raises(ConfigError, match=r"1 value\(s\) per example but the model has 2"):
    _loss("regression", PassThrough("logits"), {"out": np.zeros((3, 2), np.float32),
                                                "target": np.zeros(3, np.float32)})


def test_regression_needs_logits():
  """A model without 'logits' (num_classes = 0) is a ConfigError naming num_classes."""
  with pytest.raises(ConfigError, match=r"'regression' needs the model output 'logits'.*"
                                        r"model.num_classes"):
    _loss("regression", PassThrough("hidden"), {"out": np.zeros((2, 1), np.float32),
                                                "target": np.zeros(2, np.float32)})
