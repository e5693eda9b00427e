"""`supervised`: softmax cross-entropy of the model's class logits against batch['label']."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.objectives import losses
from mmjax.objectives.base import OBJECTIVES, Objective, example_weights, require_output


@OBJECTIVES.register("supervised")
@dataclasses.dataclass(frozen=True, eq=False)
class Supervised(Objective):
  """Classification: metrics `loss`, `accuracy` (means over real examples).

  Options:
    label_smoothing: α in [0, 1); the target is (1-α)·onehot + α/K.
  """
  label_smoothing: float = 0.0

  def __post_init__(self):
    if not 0.0 <= self.label_smoothing < 1.0:
      raise ConfigError(
          f"objective.label_smoothing must be in [0, 1), got {self.label_smoothing}.")
    if getattr(self.model, "num_classes", None) == 0:
      raise ConfigError("Objective 'supervised' needs class logits, but the model has "
                        "num_classes=0. Set model.num_classes to the number of classes.")

  def loss_from_inputs(self, params, inputs, batch, rng, *, model_state, train):
    outputs, new_state = self.encode(params, inputs, rng, model_state=model_state,
                                     train=train)
    logits = require_output(outputs, "logits", "supervised",
                            "Set model.num_classes > 0.")
    labels = jnp.asarray(batch["label"]).reshape(logits.shape[0])
    weights = example_weights(batch, logits.shape[0])
    per_example = losses.softmax_cross_entropy(
        logits, labels, label_smoothing=self.label_smoothing)
    loss = losses.weighted_mean(per_example, weights)
    correct = losses.top1_correct(logits, labels)
    metrics = {"loss": loss, "accuracy": losses.weighted_mean(correct, weights)}
    return loss, (metrics, new_state)
