"""`ard`: adversarially robust distillation (Goldblum et al. 2020).

    δ* = argmax_{‖δ‖ ≤ ε} KL(softmax(t(x)) ‖ softmax(s(x + δ)))
    L  = α · T² · KL(softmax(t(x)/T) ‖ softmax(s(x + δ*)/T)) + (1 - α) · CE(s(x), y)

The student s matches the frozen teacher's clean outputs t(x) in a ball around each
input, and keeps its hard-label loss on the clean input; α and T are the wrapped
`distillation` objective's. The attack is the shared training attack of every method
(`AdversarialMethod.attack_inputs`: FGSM / PGD / APGD, any norm, per modality), run on
the student with train=False; its loss is per example (the per-example worst case over
restarts), at T = 1 as in ARD's code.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.objectives import losses
from mmjax.objectives.adversarial.base import AdversarialMethod, register_method
from mmjax.objectives.base import example_weights
from mmjax.objectives.distillation import Distillation, distillation_terms


@register_method("ard")
@dataclasses.dataclass(frozen=True, eq=False)
class RobustDistillation(AdversarialMethod):
  """ARD around a `distillation` objective: the common attack options only. Metrics are
  the objective's (`kd/kl` at x + δ*, `kd/ce` and `accuracy` at x) plus `adv/accuracy`
  and `adv/agreement` with the teacher at x + δ*."""

  def __post_init__(self):
    super().__post_init__()
    if not isinstance(self.objective, Distillation):
      raise ConfigError("adversarial.kind='ard' distils a teacher's clean outputs into a "
                        "robust student: it needs objective.name='distillation' (with a "
                        f"teacher), not {type(self.objective).__name__}. For another "
                        "objective use adversarial.kind='madry' or 'trades'.")

  def __call__(self, params, batch, rng, *, model_state, train):
    obj: Distillation = self.objective
    prepared, inputs = self.prepare_and_embed(params, batch, rng, model_state, train)
    teacher = obj.teacher_logits(prepared)

    def kl_to_teacher(adv_inputs):
      adv_logits, _ = obj.student_logits(params, adv_inputs, rng, model_state=model_state,
                                         train=False)
      return losses.soft_target_kl(teacher, adv_logits)

    adv = self.attack_inputs(inputs, rng, kl_to_teacher)
    clean_logits, state = obj.student_logits(params, inputs, rng, model_state=model_state,
                                             train=train)
    adv_logits, state = obj.student_logits(params, adv, jax.random.fold_in(rng, 1),
                                           model_state=state, train=train)
    labels = jnp.asarray(prepared["label"]).reshape(clean_logits.shape[0])
    weights = example_weights(prepared, clean_logits.shape[0])
    loss, kl, ce = distillation_terms(adv_logits, teacher, labels,
                                      temperature=obj.temperature, alpha=obj.alpha,
                                      hard_logits=clean_logits)
    metrics = obj.metrics(loss, kl, ce, clean_logits, teacher, labels, weights)
    adv_metrics = obj.metrics(loss, kl, ce, adv_logits, teacher, labels, weights)
    metrics.update({"adv/accuracy": adv_metrics["accuracy"],
                    "adv/agreement": adv_metrics["kd/agreement"]})
    return metrics["loss"], (metrics, state)
