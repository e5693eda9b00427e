"""Self-supervised objectives: `clm`, `mlm` (text), `mae`, `simclr` (images)."""
from __future__ import annotations

import dataclasses
from typing import ClassVar, Optional

import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.objectives import augment, losses
from mmjax.objectives.base import (ENCODE, OBJECTIVES, PREPARE, Objective,
                                   example_weights, require_output, stage_rngs)

_LM_FIX = "Use a text model, whose outputs include 'lm_logits'."


def text_mask(batch, key: str = "text") -> jax.Array:
  """batch[key + '_mask'], or (batch[key] != PAD) when the batch has none."""
  if f"{key}_mask" in batch:
    return jnp.asarray(batch[f"{key}_mask"])
  return (jnp.asarray(batch[key]) != 0).astype(jnp.int32)


# ----------------------------------------------------------------------------- clm
@OBJECTIVES.register("clm")
@dataclasses.dataclass(frozen=True, eq=False)
class CausalLM(Objective):
  """Next-token prediction: lm_logits[:, t] predicts text[:, t+1].

  Metrics (means over real target tokens of real examples): `loss` (NLL per token),
  `perplexity` = exp(loss), `token_accuracy`.
  """

  def __post_init__(self):
    if getattr(self.model, "causal", None) is False:
      raise ConfigError("Objective 'clm' needs a causal model (else every position sees "
                        "the token it predicts). Set model.causal=True.")

  def loss_from_inputs(self, params, inputs, batch, rng, *, model_state, train):
    outputs, new_state = self.encode(params, inputs, rng, model_state=model_state,
                                     train=train)
    lm_logits = require_output(outputs, "lm_logits", "clm", _LM_FIX)
    loss, metrics = losses.next_token_loss(
        lm_logits, jnp.asarray(batch["text"]), text_mask(batch),
        example_weights(batch, lm_logits.shape[0]))
    return loss, (metrics, new_state)


# ----------------------------------------------------------------------------- mlm
def mlm_mask(tokens: jax.Array, text_mask: jax.Array, rng: jax.Array, *,
             mask_prob: float = 0.15, mask_token_id: int = 3, num_special_tokens: int = 4,
             vocab_size: int) -> tuple[jax.Array, jax.Array, jax.Array]:
  """BERT masking (Devlin et al. 2019).

  Each real, non-special token (text_mask = 1, id >= num_special_tokens) is selected
  independently with probability `mask_prob`; a selected token becomes MASK with
  probability 0.8, a uniformly random non-special token with probability 0.1, and stays
  unchanged with probability 0.1.

  Args:
    tokens: [B, T] int token ids.
    text_mask: [B, T], 1 for real tokens.
    rng: PRNG key.
  Returns:
    (masked_tokens [B, T] int32, targets [B, T] int32 = the original tokens,
     weights [B, T] float32 = 1 at selected positions).
  """
  tokens = jnp.asarray(tokens, jnp.int32)
  k_select, k_kind, k_random = jax.random.split(rng, 3)
  eligible = (jnp.asarray(text_mask) > 0) & (tokens >= num_special_tokens)
  selected = eligible & jax.random.bernoulli(k_select, mask_prob, tokens.shape)
  kind = jax.random.uniform(k_kind, tokens.shape)
  random_tokens = jax.random.randint(k_random, tokens.shape, num_special_tokens,
                                     vocab_size, dtype=jnp.int32)
  masked = jnp.where(selected & (kind < 0.8), jnp.int32(mask_token_id),
                     jnp.where(selected & (kind < 0.9), random_tokens, tokens))
  return masked, tokens, selected.astype(jnp.float32)


@OBJECTIVES.register("mlm")
@dataclasses.dataclass(frozen=True, eq=False)
class MaskedLM(Objective):
  """Masked language modelling; loss and `accuracy` on the selected positions only.

  Options: mask_prob, mask_token_id, num_special_tokens (ids below it are never
  selected), vocab_size (default: model.vocab_size). See `mlm_mask`.
  """
  mask_prob: float = 0.15
  mask_token_id: int = 3
  num_special_tokens: int = 4
  vocab_size: Optional[int] = None

  def __post_init__(self):
    if getattr(self.model, "causal", None) is True:
      raise ConfigError("Objective 'mlm' needs a bidirectional model. "
                        "Set model.causal=False.")
    if self.vocab_size is None:
      vocab = getattr(self.model, "vocab_size", None)
      if vocab is None:
        raise ConfigError("Objective 'mlm' needs objective.vocab_size (the model has no "
                          "vocab_size field).")
      object.__setattr__(self, "vocab_size", int(vocab))
    if not 0.0 < self.mask_prob <= 1.0:
      raise ConfigError(f"objective.mask_prob must be in (0, 1], got {self.mask_prob}.")
    if not 0 <= self.num_special_tokens < self.vocab_size:
      raise ConfigError(
          f"objective.num_special_tokens={self.num_special_tokens} must be in "
          f"[0, vocab_size={self.vocab_size}).")

  def prepare(self, batch, rng):
    """Replaces batch['text'] by its masked version; targets go to private keys."""
    masked, targets, weights = mlm_mask(
        batch["text"], text_mask(batch), stage_rngs(rng, PREPARE)["mask"],
        mask_prob=self.mask_prob, mask_token_id=self.mask_token_id,
        num_special_tokens=self.num_special_tokens, vocab_size=self.vocab_size)
    return {**batch, "text": masked, "_mlm_targets": targets, "_mlm_weights": weights}

  def loss_from_inputs(self, params, inputs, batch, rng, *, model_state, train):
    outputs, new_state = self.encode(params, inputs, rng, model_state=model_state,
                                     train=train)
    logits = require_output(outputs, "lm_logits", "mlm", _LM_FIX)
    targets = batch["_mlm_targets"]
    weights = batch["_mlm_weights"] * example_weights(batch, logits.shape[0])[:, None]
    loss = losses.weighted_mean(losses.softmax_cross_entropy(logits, targets), weights)
    metrics = {"loss": loss, "accuracy": losses.weighted_mean(
        losses.top1_correct(logits, targets), weights)}
    return loss, (metrics, new_state)


# ----------------------------------------------------------------------------- mae
@OBJECTIVES.register("mae")
@dataclasses.dataclass(frozen=True, eq=False)
class MaskedAutoencoder(Objective):
  """MAE (He et al. 2021) through `model.mae`: per-patch MSE over the hidden patches.

  The loss is Σ(patch loss · hidden) / Σ hidden over the batch's real examples, as in the
  reference code. Options: mask_ratio, norm_pix_loss, and `modality` ('image' or 'audio')
  for a model with several patch modalities (the multimodal model); examples lacking it
  (`{modality}_present` = 0) carry no loss.
  """
  mask_ratio: float = 0.75
  norm_pix_loss: bool = True
  modality: Optional[str] = None

  def __post_init__(self):
    if not hasattr(self.model, "mae"):
      raise ConfigError(f"Objective 'mae' needs a model with a `mae` method (e.g. 'vit'); "
                        f"{type(self.model).__name__} has none.")
    if not 0.0 < self.mask_ratio < 1.0:
      raise ConfigError(f"objective.mask_ratio must be in (0, 1), got {self.mask_ratio}.")
    modalities = getattr(self.model, "modalities", None)
    if modalities is not None and self.modality not in set(modalities) - {"text"}:
      raise ConfigError(
          f"Objective 'mae' on a multimodal model needs objective.modality, one of the "
          f"model's patch modalities {sorted(set(modalities) - {'text'})}; got "
          f"{self.modality!r}.")
    if modalities is None and self.modality is not None:
      raise ConfigError(f"objective.modality={self.modality!r} applies only to a "
                        "multimodal model; remove it.")

  def loss_from_inputs(self, params, inputs, batch, rng, *, model_state, train):
    extra = {} if self.modality is None else {"modality": self.modality}
    outputs, new_state = self.apply_model(
        params, model_state, inputs, method="mae", rngs=stage_rngs(rng, ENCODE),
        train=train, mask_ratio=self.mask_ratio, **extra)
    hidden = jnp.asarray(outputs["mask"], jnp.float32)
    per_example = losses.mae_patch_loss(outputs["pred"], outputs["target"], hidden,
                                        norm_pix=self.norm_pix_loss)
    # Weighting each example's mean by its hidden-patch count gives the reference
    # Σ loss·mask / Σ mask over the batch, even if counts differed between examples.
    weights = example_weights(batch, hidden.shape[0]) * jnp.sum(hidden, axis=-1)
    if "present" in outputs:
      weights = weights * outputs["present"]
    loss = losses.weighted_mean(per_example, weights)
    return loss, ({"loss": loss}, new_state)


# -------------------------------------------------------------------------- simclr
@OBJECTIVES.register("simclr")
@dataclasses.dataclass(frozen=True, eq=False)
class SimCLR(Objective):
  """SimCLR (Chen et al. 2020): NT-Xent between two augmented views of each image.

  `prepare` makes both views on device (see `augment.simclr_views`) and stacks them
  along the batch, [2B, H, W, C], so one model call sees both (BatchNorm statistics then
  cover both views, as in the reference). The representation is outputs['projection']
  if the model has a projection head, else outputs['pooled'].

  Metrics: `loss`, `contrastive_accuracy` (the positive is the top-1 match among the
  2B-1 candidates, averaged over both directions).
  """
  # Each example's loss contrasts it with the rest of the batch.
  per_example_loss: ClassVar[bool] = False
  temperature: float = 0.5
  crop_scale: tuple[float, float] = (0.5, 1.0)
  flip: bool = True
  jitter: float = 0.4
  jitter_prob: float = 1.0      # SimCLR: 0.8
  grayscale_prob: float = 0.0   # SimCLR: 0.2

  def __post_init__(self):
    object.__setattr__(self, "crop_scale", tuple(float(s) for s in self.crop_scale))
    if self.temperature <= 0:
      raise ConfigError(f"objective.temperature must be > 0, got {self.temperature}.")
    lo, hi = self.crop_scale
    if not 0.0 < lo <= hi <= 1.0:
      raise ConfigError(f"objective.crop_scale must satisfy 0 < lo <= hi <= 1, got "
                        f"{self.crop_scale}.")
    if not 0.0 <= self.jitter <= 1.0:
      raise ConfigError(f"objective.jitter must be in [0, 1], got {self.jitter}.")
    for name in ("jitter_prob", "grayscale_prob"):
      if not 0.0 <= getattr(self, name) <= 1.0:
        raise ConfigError(f"objective.{name} must be a probability in [0, 1], got "
                          f"{getattr(self, name)}.")

  def prepare(self, batch, rng):
    """-> {'image': [2B, H, W, C] (view 1 then view 2), 'mask': [B] if present}."""
    view1, view2 = augment.simclr_views(
        jnp.asarray(batch["image"]), stage_rngs(rng, PREPARE)["augment"],
        crop_scale=self.crop_scale, flip=self.flip, jitter=self.jitter,
        jitter_prob=self.jitter_prob, grayscale_prob=self.grayscale_prob)
    prepared = {"image": jnp.concatenate([view1, view2], axis=0)}
    if "mask" in batch:
      prepared["mask"] = batch["mask"]
    return prepared

  def loss_from_inputs(self, params, inputs, batch, rng, *, model_state, train):
    outputs, new_state = self.encode(params, inputs, rng, model_state=model_state,
                                     train=train)
    if "projection" in outputs:
      z = outputs["projection"]
    else:
      z = require_output(outputs, "pooled", "simclr",
                         "Use a model with a 'pooled' or 'projection' output.")
    b = z.shape[0] // 2
    mask = batch["mask"] if "mask" in batch else None
    weights = example_weights(batch, b)
    z1, z2 = z[:b], z[b:]
    per_example = losses.nt_xent(z1, z2, self.temperature, mask)
    logits, positives = losses.contrastive_logits(z1, z2, self.temperature, mask)
    correct = losses.top1_correct(logits, positives)
    loss = losses.weighted_mean(per_example, weights)
    metrics = {"loss": loss, "contrastive_accuracy": losses.weighted_mean(
        0.5 * (correct[:b] + correct[b:]), weights)}
    return loss, (metrics, new_state)
