"""Objectives (loss functions): `make_objective(config.objective, model) -> loss_fn`.

    loss_fn(params, batch, rng, *, model_state, train) -> (loss, (metrics, new_model_state))

Registered names: supervised, token_classification, regression, clm, mlm, mae, simclr,
contrastive, captioning, sum, group_dro, group_balanced, distillation. The returned loss_fn is an
`Objective`, whose `prepare` / `embed` / `loss_from_inputs` steps let an adversary
perturb the embedded inputs (see `mmjax.objectives.base`). The pure math is in
`mmjax.objectives.losses`, the SimCLR augmentation in `mmjax.objectives.augment`.
"""
from __future__ import annotations

from typing import Any

import flax.linen as nn

from mmjax.errors import ConfigError
from mmjax.objectives import augment, losses
from mmjax.objectives.augment import simclr_augment, simclr_views
from mmjax.objectives.base import OBJECTIVES, Objective, build_objective
from mmjax.objectives.captioning import Captioning
from mmjax.objectives.composite import WeightedSum
from mmjax.objectives.dialogue import Dialogue
from mmjax.objectives.group_robust import GroupBalanced, GroupDRO
from mmjax.objectives.distillation import Distillation
from mmjax.objectives.contrastive import CrossModalContrastive, clip_loss, sigmoid_loss
from mmjax.objectives.losses import (contrastive_logits, l2_normalize, mae_patch_loss,
                                     next_token_targets, nt_xent, softmax_cross_entropy,
                                     top1_correct, weighted_mean)
from mmjax.objectives.ssl import CausalLM, MaskedAutoencoder, MaskedLM, SimCLR, mlm_mask
from mmjax.objectives.supervised import Supervised
from mmjax.objectives.tasks import Regression, TokenClassification
from mmjax.registry import to_plain


def make_objective(objective_config: Any, model: nn.Module) -> Objective:
  """Builds the loss_fn named by `objective_config.name` for `model`.

  Args:
    objective_config: ConfigDict or dict: `name` plus that objective's options.
    model: the flax module (built by `mmjax.models.build_model`).
  Returns:
    An Objective, called as loss_fn(params, batch, rng, *, model_state, train).
  Raises:
    ConfigError: missing or unknown name (listing the choices), unknown option key
      (naming it), or an option value / model the objective cannot use.
  """
  options = to_plain(objective_config)
  if not isinstance(options, dict):
    raise ConfigError(f"config.objective must be a dict with a 'name', got {options!r}.")
  name = options.pop("name", None)
  if name is None:
    raise ConfigError(f"config.objective.name is missing. Choose one of: "
                      f"{', '.join(OBJECTIVES.names())}.")
  return build_objective(name, options, model, config_key="objective")


__all__ = [
    "OBJECTIVES", "Objective", "make_objective", "build_objective",
    "Supervised", "TokenClassification", "Regression", "CausalLM", "MaskedLM",
    "MaskedAutoencoder", "SimCLR", "WeightedSum", "GroupDRO", "GroupBalanced", "Distillation",
    "Dialogue",
    "CrossModalContrastive", "clip_loss", "sigmoid_loss",
    "mlm_mask", "simclr_views", "simclr_augment", "augment", "losses",
    "weighted_mean", "softmax_cross_entropy", "top1_correct", "next_token_targets",
    "l2_normalize", "contrastive_logits", "nt_xent", "mae_patch_loss",
]
