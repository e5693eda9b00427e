"""Fine-tuning task losses beyond sequence/image classification (`supervised`).

  token_classification  per-token softmax cross-entropy (NER with BIO tags): the model's
                        'token_logits' [B,T,K] against batch['token_labels'] [B,T], where
                        -1 (or any negative label) marks positions that do not count
                        (padding, special tokens, non-first word pieces).
  regression            mean squared error of the model's 'logits' [B,K] (K =
                        model.num_classes outputs) against batch['target'] [B] or [B,K].
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.objectives import losses
from mmjax.objectives.base import OBJECTIVES, Objective, example_weights, require_output


@OBJECTIVES.register("token_classification")
@dataclasses.dataclass(frozen=True, eq=False)
class TokenClassification(Objective):
  """Metrics `loss` and `accuracy`: means over the labelled tokens of real examples.

  Options:
    label_key: the batch key of the token labels.
  """
  label_key: str = "token_labels"

  def loss_from_inputs(self, params, inputs, batch, rng, *, model_state, train):
    outputs, new_state = self.encode(params, inputs, rng, model_state=model_state,
                                     train=train)
    logits = require_output(outputs, "token_logits", "token_classification",
                            "Set model.token_classes > 0 (a text_transformer).")
    labels = jnp.asarray(batch[self.label_key]).astype(jnp.int32)
    weights = example_weights(batch, logits.shape[0])[:, None] * (labels >= 0)
    safe = jnp.maximum(labels, 0)   # ignored positions: any valid id, weighted 0
    loss = losses.weighted_mean(losses.softmax_cross_entropy(logits, safe), weights)
    accuracy = losses.weighted_mean(losses.top1_correct(logits, safe), weights)
    return loss, ({"loss": loss, "accuracy": accuracy}, new_state)


@OBJECTIVES.register("regression")
@dataclasses.dataclass(frozen=True, eq=False)
class Regression(Objective):
  """Metrics `loss` (= `mse`) and `mae`, means over real examples and outputs.

  Options:
    target_key: the batch key of the regression targets.
  """
  target_key: str = "target"

  def loss_from_inputs(self, params, inputs, batch, rng, *, model_state, train):
    outputs, new_state = self.encode(params, inputs, rng, model_state=model_state,
                                     train=train)
    pred = require_output(outputs, "logits", "regression",
                          "Set model.num_classes to the number of regression outputs.")
    target = jnp.asarray(batch[self.target_key], jnp.float32).reshape(pred.shape[0], -1)
    if target.shape != pred.shape:   # a [B] target would broadcast against [B,K] outputs
      raise ConfigError(f"Regression targets {self.target_key!r} have {target.shape[1]} "
                        f"value(s) per example but the model has {pred.shape[1]} outputs; "
                        "set model.num_classes to the number of targets.")
    err = pred - target
    weights = example_weights(batch, pred.shape[0])
    mse = losses.weighted_mean(jnp.mean(err ** 2, axis=-1), weights)
    mae = losses.weighted_mean(jnp.mean(jnp.abs(err), axis=-1), weights)
    return mse, ({"loss": mse, "mse": mse, "mae": mae}, new_state)
