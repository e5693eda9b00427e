"""`distillation`: knowledge distillation from a frozen teacher (Hinton et al. 2015).

    L = α · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 - α) · CE(s, y)

s are the student's (the trained model's) class logits, t the teacher's on the same
clean batch, T the temperature (T² keeps the soft term's gradients on the scale of the
hard one's as T grows). The teacher (`mmjax.objectives.teacher`) comes from an mmjax run
(`teacher_workdir`, its newest checkpoint) or a Hugging Face folder (`teacher_hf`); its
variables are constants of the jitted step, so it runs inside the step, and it never
trains.

Adversarial methods wrap it like any objective: the teacher always sees the clean batch
(`loss_from_inputs` reads it from the prepared batch, not from the attacked inputs), so
`adversarial.kind='madry'` distils at x + δ*, and `adversarial.kind='ard'`
(mmjax/objectives/adversarial/robust_distillation.py) is ARD (Goldblum et al. 2020).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.objectives import losses
from mmjax.objectives import teacher as teacher_lib
from mmjax.objectives.base import OBJECTIVES, Objective, example_weights, require_output


def distillation_terms(student_logits: jax.Array, teacher_logits: jax.Array,
                       labels: jax.Array, *, temperature: float, alpha: float,
                       hard_logits: jax.Array | None = None
                       ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Per-example (loss, soft KL, hard CE), each [B] float32, for student logits [B, K],
  teacher logits [B, K] and int labels [B]:

      loss = alpha · T² · KL(softmax(t/T) ‖ softmax(s/T)) + (1 - alpha) · CE(h, y)

  where h = `hard_logits` (ARD takes the hard term on clean inputs and the soft one on
  attacked ones), default the student logits.
  """
  hard_logits = student_logits if hard_logits is None else hard_logits
  kl = losses.soft_target_kl(teacher_logits, student_logits, temperature)
  ce = losses.softmax_cross_entropy(hard_logits, labels)
  return alpha * temperature ** 2 * kl + (1.0 - alpha) * ce, kl, ce


@OBJECTIVES.register("distillation")
@dataclasses.dataclass(frozen=True, eq=False)
class Distillation(Objective):
  """Knowledge distillation; metrics `loss`, `accuracy`, `kd/kl` (at T), `kd/ce`,
  `kd/teacher_accuracy`, `kd/agreement` (student and teacher argmax agree).

  Options:
    teacher_workdir: an mmjax run's --workdir; its newest checkpoint is the teacher.
    teacher_config: 'PATH[:ARG]' of the config that trained it (default: the workdir's
      config.json).
    teacher_hf: a Hugging Face classifier folder instead (config.json + safetensors).
    temperature: T > 0 (Hinton et al. use 1-20; 4 is common).
    alpha: weight of the soft term in [0, 1]; 1 - alpha weighs the hard labels.
  """
  teacher_workdir: str = ""
  teacher_config: str = ""
  teacher_hf: str = ""
  temperature: float = 4.0
  alpha: float = 0.9
  teacher: Any = dataclasses.field(init=False, default=None)

  def __post_init__(self):
    if not self.temperature > 0:
      raise ConfigError(f"objective.temperature={self.temperature} must be > 0 (the "
                        "softmax temperature T of the soft targets; e.g. 4).")
    if not 0.0 <= self.alpha <= 1.0:
      raise ConfigError(f"objective.alpha={self.alpha} must be in [0, 1] (the weight of "
                        "the soft targets; 1 - alpha weighs the hard labels).")
    student = int(getattr(self.model, "num_classes", 0) or 0)
    if student < 1:
      raise ConfigError("Objective 'distillation' needs a student with class logits; set "
                        "model.num_classes to the teacher's number of classes.")
    teacher = teacher_lib.load_teacher(workdir=self.teacher_workdir,
                                       config=self.teacher_config, hf_folder=self.teacher_hf)
    if teacher.num_classes != student:
      raise ConfigError(
          f"The teacher from {teacher.source} has {teacher.num_classes} classes but the "
          f"student has {student} (model.num_classes): distillation matches their "
          f"outputs class by class. Set model.num_classes={teacher.num_classes} or choose "
          "a teacher trained on the student's classes.")
    object.__setattr__(self, "teacher", teacher)

  def teacher_logits(self, batch) -> jax.Array:
    """The frozen teacher's logits [B, K] on the clean prepared `batch`."""
    teacher_lib.check_fits(self.teacher, {k: v for k, v in batch.items()
                                          if not k.startswith("_")})
    return self.teacher.logits(batch)

  def student_logits(self, params, inputs, rng, *, model_state, train):
    """(student logits [B, K], new model_state) at embedded `inputs`."""
    outputs, new_state = self.encode(params, inputs, rng, model_state=model_state,
                                     train=train)
    return require_output(outputs, "logits", "distillation",
                          "Set model.num_classes > 0."), new_state

  def metrics(self, loss, kl, ce, student, teacher, labels, weights) -> dict:
    """The objective's metrics from per-example terms ([B] each) and logits [B, K]."""
    mean = lambda v: losses.weighted_mean(v, weights)
    agree = (jnp.argmax(student, -1) == jnp.argmax(teacher, -1)).astype(jnp.float32)
    return {"loss": mean(loss), "kd/kl": mean(kl), "kd/ce": mean(ce),
            "accuracy": mean(losses.top1_correct(student, labels)),
            "kd/teacher_accuracy": mean(losses.top1_correct(teacher, labels)),
            "kd/agreement": mean(agree)}

  def loss_from_inputs(self, params, inputs, batch, rng, *, model_state, train):
    student, new_state = self.student_logits(params, inputs, rng,
                                             model_state=model_state, train=train)
    teacher = self.teacher_logits(batch)
    labels = jnp.asarray(batch["label"]).reshape(student.shape[0])
    weights = example_weights(batch, student.shape[0])
    loss, kl, ce = distillation_terms(student, teacher, labels,
                                      temperature=self.temperature, alpha=self.alpha)
    metrics = self.metrics(loss, kl, ce, student, teacher, labels, weights)
    return metrics["loss"], (metrics, new_state)
