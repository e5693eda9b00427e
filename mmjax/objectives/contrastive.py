"""Cross-modal contrastive objective: InfoNCE (CLIP) or the sigmoid loss (SigLIP).

For each pair of modalities (a, b) the model's projections (else pooled features) are L2-
normalised and compared all-against-all within the batch, with the model's learnable
scale t = exp(logit_scale) (CLIP's 1/temperature, capped at `max_scale`: 100 as in
CLIP; 0 leaves it uncapped, as SigLIP's reference code does) and, for the sigmoid loss,
its learnable bias. Only examples where both modalities are present (and that are
real, `batch['mask']`) take part: missing pairs are masked out of the loss, never
zero-filled into it.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.objectives import losses
from mmjax.objectives.base import OBJECTIVES, Objective, example_weights, require_output

LOSSES = ("infonce", "sigmoid")
MAX_LOGIT_SCALE = 100.0   # CLIP clips exp(logit_scale) at 100


def clip_loss(za: jax.Array, zb: jax.Array, scale: jax.Array, valid: jax.Array
              ) -> tuple[jax.Array, jax.Array]:
  """Symmetric InfoNCE (Radford et al. 2021) over the valid examples.

  Args:
    za, zb: [B,P] L2-normalised embeddings; row i of both is a positive pair.
    scale: scalar, multiplies the cosine similarities.
    valid: [B] float weights (0 = example not in the loss, as a row or as a negative).
  Returns:
    (loss, accuracy): loss = mean over valid i of ½(CE_a→b(i) + CE_b→a(i)); accuracy =
    the fraction of valid rows (both directions) whose top-1 match is their positive.
  """
  sims = scale * jnp.einsum("ip,jp->ij", za, zb, preferred_element_type=jnp.float32)
  # Invalid examples are no candidates: masked columns in both directions.
  logits = jnp.where(valid[None, :] > 0, sims, losses.NEG_INF)
  logits_t = jnp.where(valid[None, :] > 0, sims.T, losses.NEG_INF)
  labels = jnp.arange(za.shape[0])
  ce = 0.5 * (losses.softmax_cross_entropy(logits, labels)
              + losses.softmax_cross_entropy(logits_t, labels))
  correct = 0.5 * (losses.top1_correct(logits, labels) + losses.top1_correct(logits_t, labels))
  return losses.weighted_mean(ce, valid), losses.weighted_mean(correct, valid)


def sigmoid_loss(za: jax.Array, zb: jax.Array, scale: jax.Array, bias: jax.Array,
                 valid: jax.Array) -> jax.Array:
  """SigLIP (Zhai et al. 2023): -1/n Σ_i Σ_j log σ(z_ij (t·a_i·b_j + bias)), z_ij = +1 on
  the diagonal and -1 off it, over the n valid examples (pairs of valid examples only)."""
  logits = scale * jnp.einsum("ip,jp->ij", za, zb, preferred_element_type=jnp.float32) + bias
  signs = 2.0 * jnp.eye(za.shape[0]) - 1.0
  pair_weight = valid[:, None] * valid[None, :]
  total = jnp.sum(jnp.where(pair_weight > 0, -jax.nn.log_sigmoid(signs * logits), 0.0)
                  * pair_weight)
  return total / jnp.maximum(jnp.sum(valid), 1.0)


@OBJECTIVES.register("contrastive")
@dataclasses.dataclass(frozen=True, eq=False)
class CrossModalContrastive(Objective):
  """Contrastive alignment of modality pairs; see the module docstring.

  Options: pairs (e.g. (('image', 'text'), ('image', 'audio'))), loss ('infonce' or
  'sigmoid'), max_scale (cap on t = exp(logit_scale); 0 = none). Metrics: `loss` (mean
  over pairs), '{a}_{b}/loss', '{a}_{b}/accuracy' (in-batch top-1 retrieval, both
  directions; InfoNCE), '{a}_{b}/pairs' (valid pairs), `temperature` (1/t).
  """
  # Each example's loss contrasts it with the rest of the batch.
  per_example_loss: ClassVar[bool] = False
  pairs: tuple = (("image", "text"),)
  loss: str = "infonce"
  max_scale: float = MAX_LOGIT_SCALE

  def __post_init__(self):
    pairs = tuple(tuple(p) for p in self.pairs)
    object.__setattr__(self, "pairs", pairs)
    if self.loss not in LOSSES:
      raise ConfigError(f"objective.loss={self.loss!r}: choose one of {LOSSES}.")
    if isinstance(self.max_scale, bool) or not isinstance(self.max_scale, (int, float)) \
        or self.max_scale < 0:
      raise ConfigError(f"objective.max_scale={self.max_scale!r} must be a number >= 0 "
                        "(the cap on exp(logit_scale): 100 in CLIP; 0 = uncapped).")
    if not pairs or any(len(p) != 2 or p[0] == p[1] for p in pairs):
      raise ConfigError(f"objective.pairs={pairs!r} must list pairs of two different "
                        "modalities, e.g. (('image', 'text'), ('image', 'audio')).")
    known = getattr(self.model, "modalities", None)
    if known is not None:
      unknown = sorted({m for p in pairs for m in p} - set(known))
      if unknown:
        raise ConfigError(f"objective.pairs name {unknown}, which the model does not "
                          f"have; config.model.modalities is {tuple(known)}.")

  def _embedding(self, outputs, m):
    key = f"{m}_projection" if f"{m}_projection" in outputs else f"{m}_pooled"
    z = require_output(outputs, key, "contrastive",
                       f"Give the batch the {m!r} input, or drop {m!r} from objective.pairs.")
    return losses.l2_normalize(z)

  def loss_from_inputs(self, params, inputs, batch, rng, *, model_state, train):
    outputs, new_state = self.encode(params, inputs, rng, model_state=model_state,
                                     train=train)
    scale = jnp.exp(outputs["logit_scale"])
    if self.max_scale > 0:   # CLIP clips; past the cap the scale gets no gradient
      scale = jnp.minimum(scale, self.max_scale)
    weights = example_weights(batch, outputs["pooled"].shape[0])
    metrics, total = {"temperature": 1.0 / scale}, 0.0
    for a, b in self.pairs:
      za, zb = self._embedding(outputs, a), self._embedding(outputs, b)
      valid = weights * outputs[f"{a}_present"] * outputs[f"{b}_present"]
      name = f"{a}_{b}"
      if self.loss == "infonce":
        loss, acc = clip_loss(za, zb, scale, valid)
        metrics[f"{name}/accuracy"] = acc
      else:
        loss = sigmoid_loss(za, zb, scale, outputs["logit_bias"], valid)
      metrics[f"{name}/loss"] = loss
      metrics[f"{name}/pairs"] = jnp.sum(valid)
      total = total + loss / len(self.pairs)
    metrics["loss"] = total
    return total, (metrics, new_state)
