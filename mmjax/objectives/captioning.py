"""`captioning`: teacher-forced caption loss of the multimodal model's text decoder."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.objectives import losses
from mmjax.objectives.base import (ENCODE, OBJECTIVES, Objective, example_weights,
                                   stage_rngs)
from mmjax.objectives.ssl import text_mask


@OBJECTIVES.register("captioning")
@dataclasses.dataclass(frozen=True, eq=False)
class Captioning(Objective):
  """Next-token cross-entropy of `model.caption`: the decoder reads the encoded
  `model.caption_source` (image or audio) and predicts batch[text_key].

  `prepare` moves the caption out of the model's batch (to private keys), so neither the
  encoder nor an attack on this term sees it: the caption is the target, not an input.
  Examples lacking the source modality carry no loss. Metrics: `loss` (NLL per token),
  `perplexity`, `token_accuracy`.
  """
  text_key: str = "text"

  def __post_init__(self):
    if getattr(self.model, "caption_depth", 0) <= 0:
      raise ConfigError("Objective 'captioning' needs a model with a text decoder: use "
                        "model.name='multimodal' with model.caption_depth > 0.")

  def prepare(self, batch, rng):
    del rng
    if self.text_key not in batch:
      raise ConfigError(f"Objective 'captioning' reads captions from batch"
                        f"[{self.text_key!r}], which the batch lacks (it has "
                        f"{sorted(batch)}); tokenize them there or set "
                        "objective.text_key.")
    caption_keys = {self.text_key, f"{self.text_key}_mask", f"{self.text_key}_present"}
    prepared = {k: v for k, v in batch.items() if k not in caption_keys}
    prepared["_caption"] = jnp.asarray(batch[self.text_key], jnp.int32)
    prepared["_caption_mask"] = text_mask(batch, self.text_key)
    return prepared

  def loss_from_inputs(self, params, inputs, batch, rng, *, model_state, train):
    caption = batch["_caption"]
    logits, new_state = self.apply_model(params, model_state, inputs, caption,
                                         method="caption", rngs=stage_rngs(rng, ENCODE),
                                         train=train)
    weights = (example_weights(batch, caption.shape[0]) *
               inputs[f"{self.model.caption_source}_present"].astype(jnp.float32))
    loss, metrics = losses.next_token_loss(logits, caption, batch["_caption_mask"],
                                           weights)
    return loss, (metrics, new_state)
