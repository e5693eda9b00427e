"""Methods that train on the wrapped objective at the attacked inputs.

    madry:     L = L(x + δ*)                                (Madry et al. 2018)
    combined:  L = clean_weight · L(x) + lam · L(x + δ*)    (L_ssl + λ·L_adv; RoCL/ACL-style
               when L is a self-supervised loss: the attack maximises that loss)

δ* maximises `attack_loss` (see `mmjax.objectives.adversarial.base`).
"""
from __future__ import annotations

import dataclasses

import jax

from mmjax.objectives.adversarial.base import (AdversarialMethod, register_method,
                                               require_non_negative)


def clean_and_attacked_loss(method: AdversarialMethod, params, batch, rng, model_state,
                            train, *, clean_weight: float, adv_weight: float):
  """clean_weight · L(x) + adv_weight · L(x + δ*) -> (loss, (metrics, model_state)).

  Metrics are the objective's, prefixed `clean/` (only when clean_weight != 0) and `adv/`.
  """
  obj = method.objective
  prepared, inputs = method.prepare_and_embed(params, batch, rng, model_state, train)
  adv = method.adversarial_inputs(params, inputs, prepared, rng, model_state)
  metrics, total, state = {}, 0.0, model_state
  if clean_weight:
    clean_loss, (clean_metrics, state) = obj.loss_from_inputs(
        params, inputs, prepared, rng, model_state=state, train=train)
    total = clean_weight * clean_loss
    metrics.update({f"clean/{k}": v for k, v in clean_metrics.items()})
  adv_loss, (adv_metrics, state) = obj.loss_from_inputs(
      params, adv, prepared, jax.random.fold_in(rng, 1), model_state=state, train=train)
  total = total + adv_weight * adv_loss
  metrics.update({f"adv/{k}": v for k, v in adv_metrics.items()})
  metrics["loss"] = total
  return total, (metrics, state)


@register_method("madry")
@dataclasses.dataclass(frozen=True, eq=False)
class Madry(AdversarialMethod):
  """L(x + δ*): the common options only."""

  def __call__(self, params, batch, rng, *, model_state, train):
    return clean_and_attacked_loss(self, params, batch, rng, model_state, train,
                                   clean_weight=0.0, adv_weight=1.0)


@register_method("combined")
@dataclasses.dataclass(frozen=True, eq=False)
class Combined(AdversarialMethod):
  """clean_weight · L(x) + lam · L(x + δ*)."""
  lam: float = 1.0            # weight of the attacked loss (λ)
  clean_weight: float = 1.0   # weight of the clean loss; 0 skips its forward pass

  def __post_init__(self):
    super().__post_init__()
    require_non_negative(self.kind, "lam", self.lam, "the weight of the attacked loss")
    require_non_negative(self.kind, "clean_weight", self.clean_weight,
                         "the weight of the clean loss")

  def __call__(self, params, batch, rng, *, model_state, train):
    return clean_and_attacked_loss(self, params, batch, rng, model_state, train,
                                   clean_weight=self.clean_weight, adv_weight=self.lam)
