"""Methods that add a clean-vs-attacked consistency term to a clean loss.

    trades:  L = CE(f(x), y) + beta · KL(f(x) ‖ f(x + δ*))   (Zhang et al. 2019; the attack
             maximises the KL)
    alum:    L = L(x) + lam · symKL(f(x), f(x + δ*))        (ALUM, Liu et al. 2020; SMART,
             Jiang et al. 2020; the attack maximises the symmetric KL of `consistency_on`)

Both attacks keep the per-example worst case (their attack losses are per example).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.objectives import losses
from mmjax.objectives.adversarial.base import (AdversarialMethod, register_method,
                                               require_non_negative)
from mmjax.objectives.base import example_weights, require_output


@register_method("trades")
@dataclasses.dataclass(frozen=True, eq=False)
class Trades(AdversarialMethod):
  """CE(f(x), y) + beta · KL(f(x) ‖ f(x + δ*)); needs class logits and labels."""
  beta: float = 6.0   # the robustness-accuracy trade-off (1/λ in the paper)

  def __post_init__(self):
    super().__post_init__()
    require_non_negative(self.kind, "beta", self.beta,
                         "the weight of the KL term; TRADES uses 6 on CIFAR-10")

  def __call__(self, params, batch, rng, *, model_state, train):
    obj = self.objective
    prepared, inputs = self.prepare_and_embed(params, batch, rng, model_state, train)
    eval_clean, _ = obj.encode(params, inputs, rng, model_state=model_state, train=False)
    p_clean_fixed = jax.lax.stop_gradient(jax.nn.softmax(
        require_output(eval_clean, "logits", "adversarial kind='trades'",
                       "Set model.num_classes > 0.")))

    def kl_to_clean(adv_inputs):
      out, _ = obj.encode(params, adv_inputs, rng, model_state=model_state, train=False)
      return _kl(p_clean_fixed, out["logits"])

    adv = self.attack_inputs(inputs, rng, kl_to_clean)
    clean_out, state = obj.encode(params, inputs, rng, model_state=model_state, train=train)
    adv_out, state = obj.encode(params, adv, jax.random.fold_in(rng, 1), model_state=state,
                                train=train)
    logits = clean_out["logits"]
    labels = jnp.asarray(prepared["label"]).reshape(logits.shape[0])
    weights = example_weights(prepared, logits.shape[0])
    ce = losses.weighted_mean(losses.softmax_cross_entropy(logits, labels), weights)
    kl = losses.weighted_mean(_kl(jax.nn.softmax(logits), adv_out["logits"]), weights)
    total = ce + self.beta * kl
    metrics = {"loss": total, "clean/loss": ce, "trades/kl": kl,
               "clean/accuracy": losses.weighted_mean(
                   losses.top1_correct(logits, labels), weights),
               "adv/accuracy": losses.weighted_mean(
                   losses.top1_correct(adv_out["logits"], labels), weights)}
    return total, (metrics, state)


@register_method("alum")
@dataclasses.dataclass(frozen=True, eq=False)
class Alum(AdversarialMethod):
  """L(x) + lam · symKL(f(x), f(x + δ*)) on the model output `consistency_on`."""
  lam: float = 1.0                  # weight of the consistency term (ALUM: 10 for BERT)
  consistency_on: str = "logits"    # the model output compared clean vs attacked

  def __post_init__(self):
    super().__post_init__()
    require_non_negative(self.kind, "lam", self.lam, "the weight of the symmetric KL")
    if not isinstance(self.consistency_on, str) or not self.consistency_on:
      raise ConfigError(f"adversarial.consistency_on={self.consistency_on!r} must name a "
                        "model output, e.g. 'logits' or 'lm_logits'.")

  def __call__(self, params, batch, rng, *, model_state, train):
    obj, name = self.objective, self.consistency_on
    fix = ("Set adversarial.consistency_on to an output the model has (e.g. 'logits' or "
           "'lm_logits').")
    prepared, inputs = self.prepare_and_embed(params, batch, rng, model_state, train)
    loss, (metrics, state) = obj.loss_from_inputs(params, inputs, prepared, rng,
                                                  model_state=model_state, train=train)
    # The same rng and mode as inside loss_from_inputs: the same outputs (and XLA shares
    # the computation).
    clean_out, _ = obj.encode(params, inputs, rng, model_state=model_state, train=train)
    clean = require_output(clean_out, name, "adversarial kind='alum'", fix)
    weights = _token_weights(inputs, clean)
    fixed = jax.lax.stop_gradient(clean)

    def sym_kl_to_clean(adv_inputs):
      out, _ = obj.encode(params, adv_inputs, rng, model_state=model_state, train=False)
      return _mean_over_tokens(_sym_kl(fixed, out[name]), weights)

    adv = self.attack_inputs(inputs, rng, sym_kl_to_clean)
    # The clean pass's rng: the same dropout masks, so δ = 0 gives exactly 0.
    adv_out, state = obj.encode(params, adv, rng, model_state=state, train=train)
    per_example = _mean_over_tokens(_sym_kl(clean, adv_out[name]), weights)
    consistency = losses.weighted_mean(per_example,
                                       example_weights(prepared, per_example.shape[0]))
    total = loss + self.lam * consistency
    metrics = {f"clean/{k}": v for k, v in metrics.items()}
    metrics.update({"loss": total, "alum/sym_kl": consistency})
    return total, (metrics, state)


def _token_weights(inputs: dict, outputs: jax.Array):
  """[B,T] text mask for per-token outputs [B,T,V] of a text model, else None."""
  mask = inputs.get("text_mask") if isinstance(inputs, dict) else None
  if mask is not None and outputs.ndim == 3 and mask.shape == outputs.shape[:2]:
    return mask.astype(jnp.float32)
  return None


def _mean_over_tokens(values: jax.Array, weights) -> jax.Array:
  """Per-example mean over all non-batch dims ([B,...] -> [B]), weighted when given."""
  if values.ndim == 1:
    return values
  if weights is None:
    return jnp.mean(values.reshape(values.shape[0], -1), axis=1)
  return jnp.sum(values * weights, axis=1) / jnp.maximum(jnp.sum(weights, axis=1), 1.0)


def _sym_kl(logits_p: jax.Array, logits_q: jax.Array) -> jax.Array:
  """KL(p‖q) + KL(q‖p) over the last axis, from logits: [..., K] -> [...] (float32)."""
  log_p = jax.nn.log_softmax(logits_p.astype(jnp.float32))
  log_q = jax.nn.log_softmax(logits_q.astype(jnp.float32))
  return jnp.sum((jnp.exp(log_p) - jnp.exp(log_q)) * (log_p - log_q), axis=-1)


def _kl(p: jax.Array, logits_q: jax.Array) -> jax.Array:
  """KL(p ‖ softmax(logits_q)) per example: [B,K], [B,K] -> [B]."""
  log_q = jax.nn.log_softmax(logits_q)
  return jnp.sum(p * (jnp.log(jnp.clip(p, 1e-12)) - log_q), axis=-1)
