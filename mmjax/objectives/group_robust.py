"""Objectives that close accuracy gaps between groups of the training data.

  group_dro       Group DRO (Sagawa et al. 2020, Algorithm 1): online weights q over the
                  groups, q_g <- q_g · exp(eta · (loss_g + adjustment / sqrt(n_g))),
                  normalised, and the loss sum_g q_g · loss_g, so training leans on the
                  worst groups. q lives in the train state (model_state['group_dro']),
                  so it is checkpointed and resumed with the parameters.
  group_balanced  group-balanced reweighting: each group present in a batch weighs the
                  same, whatever its size (the mean over groups of the group's mean loss).

Both classify with softmax cross-entropy on the model's logits against batch['label'];
groups are the integer feature `group_key` of the training examples (keep it in
data.preprocess_train), crossed with the label when `cross_with_label`. Adversarial
methods wrap them like any objective (madry: the group losses are taken at the attacked
inputs), which is robust and fair training.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.objectives import losses
from mmjax.objectives.base import OBJECTIVES, Objective, example_weights, require_output

STATE = "group_dro"   # the model_state collection holding Group DRO's weights


@dataclasses.dataclass(frozen=True, eq=False)
class _GroupObjective(Objective):
  """Per-example cross-entropy and per-group sums; subclasses combine the groups."""
  group_key: str = ""
  num_groups: int = 0           # groups of group_key (of the pairs when crossed)
  cross_with_label: bool = False
  num_classes: int = 0          # with cross_with_label: the labels' count

  def __post_init__(self):
    name = type(self).__name__
    if not self.group_key:
      raise ConfigError(f"Objective {name} needs objective.group_key: the integer feature "
                        "of the training examples holding each one's group (keep it in "
                        "data.preprocess_train), e.g. 'colour'.")
    if self.num_groups < 2:
      raise ConfigError(f"objective.num_groups={self.num_groups} must be >= 2 (the values "
                        "of group_key).")
    if self.cross_with_label and self.num_classes < 2:
      raise ConfigError("objective.cross_with_label needs objective.num_classes (>= 2).")

  @property
  def total_groups(self) -> int:
    return self.num_groups * (self.num_classes if self.cross_with_label else 1)

  def group_losses(self, params, inputs, batch, rng, *, model_state, train):
    """-> (per-group mean loss [G], per-group weight of real examples [G], metrics,
    new model_state)."""
    outputs, new_state = self.encode(params, inputs, rng, model_state=model_state,
                                     train=train)
    logits = require_output(outputs, "logits", type(self).__name__,
                            "Set model.num_classes > 0.")
    b = logits.shape[0]
    if self.group_key not in batch:
      raise ConfigError(f"objective.group_key={self.group_key!r} is not in the training "
                        f"batch, which holds {sorted(batch)}; keep it in "
                        "data.preprocess_train.")
    labels = jnp.asarray(batch["label"]).reshape(b).astype(jnp.int32)
    groups = jnp.asarray(batch[self.group_key]).reshape(b).astype(jnp.int32)
    if self.cross_with_label:
      groups = labels * self.num_groups + groups
    weights = example_weights(batch, b)
    per_example = losses.softmax_cross_entropy(logits, labels)
    member = jax.nn.one_hot(groups, self.total_groups) * weights[:, None]   # [B, G]
    counts = member.sum(0)
    group_loss = (member * per_example[:, None]).sum(0) / jnp.maximum(counts, 1.0)
    correct = losses.top1_correct(logits, labels)
    group_acc = (member * correct[:, None]).sum(0) / jnp.maximum(counts, 1.0)
    present = counts > 0
    metrics = {"accuracy": losses.weighted_mean(correct, weights),
               "mean_loss": losses.weighted_mean(per_example, weights),
               "worst_group_loss": jnp.max(jnp.where(present, group_loss, -jnp.inf)),
               "worst_group_accuracy": jnp.min(jnp.where(present, group_acc, jnp.inf))}
    return group_loss, counts, metrics, new_state


@OBJECTIVES.register("group_dro")
@dataclasses.dataclass(frozen=True, eq=False)
class GroupDRO(_GroupObjective):
  """Group DRO; metrics `loss` (sum_g q_g loss_g), `mean_loss`, `accuracy`,
  `worst_group_loss`, `worst_group_accuracy` (of the batch), `max_group_weight`.

  Options: eta (the step size of q, 0.01 in Sagawa et al.), adjustment (C of the
  generalisation adjustment C / sqrt(n_g); 0 = none) with group_counts (n_g, the
  training examples per group).
  """
  eta: float = 0.01
  adjustment: float = 0.0
  group_counts: tuple = ()

  def __post_init__(self):
    super().__post_init__()
    if not self.eta > 0:
      raise ConfigError(f"objective.eta={self.eta} must be > 0 (Group DRO's step size for "
                        "its group weights; Sagawa et al. use 0.01).")
    if self.adjustment < 0:
      raise ConfigError(f"objective.adjustment={self.adjustment} must be >= 0.")
    if self.adjustment and (len(self.group_counts) != self.total_groups
                            or min(self.group_counts) < 1):
      raise ConfigError(f"objective.adjustment needs objective.group_counts: the "
                        f"{self.total_groups} groups' training example counts (each >= 1).")

  def initial_state(self) -> dict:
    return {STATE: {"q": jnp.full((self.total_groups,), 1.0 / self.total_groups)}}

  def loss_from_inputs(self, params, inputs, batch, rng, *, model_state, train):
    if STATE not in model_state:
      raise ConfigError("Group DRO's weights are missing from the train state: build the "
                        "state with the trainer (it adds loss_fn.initial_state()).")
    group_loss, counts, metrics, new_state = self.group_losses(
        params, inputs, batch, rng, model_state=model_state, train=train)
    q = model_state[STATE]["q"]
    if train:
      step = jax.lax.stop_gradient(group_loss)
      if self.adjustment:
        step = step + self.adjustment / jnp.sqrt(jnp.asarray(self.group_counts, jnp.float32))
      # Only groups in this batch move (an absent group has no loss to measure).
      q = q * jnp.exp(self.eta * step * (counts > 0))
      q = q / q.sum()
      new_state = {**new_state, STATE: {"q": q}}
    loss = jnp.sum(jax.lax.stop_gradient(q) * group_loss)
    metrics = dict(metrics, loss=loss, max_group_weight=jnp.max(q))
    return loss, (metrics, new_state)


@OBJECTIVES.register("group_balanced")
@dataclasses.dataclass(frozen=True, eq=False)
class GroupBalanced(_GroupObjective):
  """Group-balanced reweighting; metrics `loss` (mean over present groups of their mean
  loss), `mean_loss`, `accuracy`, `worst_group_loss`, `worst_group_accuracy`."""

  def loss_from_inputs(self, params, inputs, batch, rng, *, model_state, train):
    group_loss, counts, metrics, new_state = self.group_losses(
        params, inputs, batch, rng, model_state=model_state, train=train)
    present = (counts > 0).astype(jnp.float32)
    loss = jnp.sum(group_loss * present) / jnp.maximum(present.sum(), 1.0)
    return loss, (dict(metrics, loss=loss), new_state)
