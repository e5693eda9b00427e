"""Adversarial objectives: any objective, evaluated at attacked inputs.

    combined:  L = clean_weight · L(x) + lam · L(x + δ*)     (L_ssl + λ·L_adv; RoCL/ACL-style
               when L is a self-supervised loss: the attack maximises that loss)
    madry:     L = L(x + δ*)                                  (Madry et al. 2018)
    trades:    L = CE(f(x), y) + beta · KL(f(x) ‖ f(x + δ*))  (Zhang et al. 2019; the attack
               maximises the KL)

δ* = argmax over the ε-ball (per modality, `mmjax.attacks.perturb`) of the attack loss:
the wrapped objective's own loss (`attack_loss='objective'`), or the per-example
cross-entropy of the class logits (`attack_loss='ce'`). The attack runs with train=False
(BatchNorm on running statistics, no dropout) and δ* is a constant for the update; it is
added back onto the embedded inputs, so embedding parameters (text) still get gradients.

With `attack_loss='objective'` the attack sees one batch loss, so a restart is kept or
dropped for the whole batch; 'ce' keeps the per-example worst case.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from mmjax import attacks
from mmjax.errors import ConfigError
from mmjax.objectives import losses
from mmjax.objectives.base import Objective, example_weights, require_output, to_plain

KINDS = ("none", "madry", "combined", "trades")
ATTACK_LOSSES = ("objective", "ce")
# Inputs with a natural valid range; every other input (embeddings) is unbounded.
DEFAULT_BOUNDS = {"image": (0.0, 1.0)}


@dataclasses.dataclass(frozen=True, eq=False)
class Adversarial:
  """The loss_fn of docs/interfaces.md around `objective`; see the module docstring."""
  objective: Objective
  kind: str = "madry"
  modalities: tuple = ("image",)
  attack: str = "pgd"
  eps: Any = 0.3
  step_size: Any = None
  steps: int = 10
  restarts: int = 1
  norm: str = "linf"
  lam: float = 1.0
  clean_weight: float = 1.0
  beta: float = 6.0
  attack_loss: str = "objective"

  def __post_init__(self):
    if self.kind not in KINDS[1:]:
      raise ConfigError(f"Unknown adversarial.kind {self.kind!r}. Choose one of: "
                        f"{', '.join(KINDS)}.")
    if self.attack_loss not in ATTACK_LOSSES:
      raise ConfigError(f"Unknown adversarial.attack_loss {self.attack_loss!r}. Choose "
                        f"one of: {', '.join(ATTACK_LOSSES)}.")
    if not self.modalities:
      raise ConfigError("adversarial.modalities is empty: name the inputs to perturb, "
                        "e.g. ('image',) or ('text',).")

  # ---- the attack ----
  def _leaf_specs(self, inputs: dict, value, fixed_value) -> dict:
    """A tree like `inputs`: value(modality) at attacked leaves, fixed_value elsewhere.

    A leaf is attacked when its own key is a modality, at any depth, so ('image',) also
    reaches into a `sum` objective's per-term inputs ({'mae': {'image': ...}, ...}).
    """
    def spec(path, _):
      key = getattr(path[-1], "key", None)
      return value(key) if key in self.modalities else fixed_value
    return jax.tree_util.tree_map_with_path(spec, inputs)

  def attack_inputs(self, inputs: dict, rng, attack_loss_fn) -> dict:
    """Perturbed copy of `inputs` (δ* held constant); `attack_loss_fn(inputs) -> [B]`."""
    leaf_keys = {getattr(p[-1], "key", None)
                 for p, _ in jax.tree_util.tree_flatten_with_path(inputs)[0]}
    missing = [m for m in self.modalities if m not in leaf_keys]
    if missing:
      raise ConfigError(f"adversarial.modalities {missing} are not model inputs; the model's "
                        f"embed() gives {sorted(k for k in leaf_keys if k is not None)}.")
    per_modality = lambda v: (lambda m: v[m] if isinstance(v, dict) else v)
    clean = jax.lax.stop_gradient(inputs)
    # Leaves that are not attacked get eps 0: perturb leaves them exactly where they are.
    adv = attacks.perturb(
        attack_loss_fn, clean, jax.random.fold_in(rng, 101), attack=self.attack,
        eps=self._leaf_specs(inputs, per_modality(self.eps), 0.0),
        step_size=self._leaf_specs(inputs, per_modality(self.step_size), None),
        bounds=self._leaf_specs(inputs, DEFAULT_BOUNDS.get, None),
        steps=self.steps, restarts=self.restarts, norm=self.norm)
    # inputs + constant δ: gradients still reach the parameters that made `inputs`.
    return jax.tree.map(lambda x, a, c: x + jax.lax.stop_gradient(a - c), inputs, adv, clean)

  def _objective_attack_loss(self, params, prepared, rng, model_state):
    obj = self.objective

    def loss_of(inputs):
      if self.attack_loss == "ce":
        outputs, _ = obj.encode(params, inputs, rng, model_state=model_state, train=False)
        logits = require_output(outputs, "logits", "adversarial attack_loss='ce'",
                                "Set model.num_classes > 0 or attack_loss='objective'.")
        labels = jnp.asarray(prepared["label"]).reshape(logits.shape[0])
        return losses.softmax_cross_entropy(logits, labels)
      loss, _ = obj.loss_from_inputs(params, inputs, prepared, rng,
                                     model_state=model_state, train=False)
      batch_size = jax.tree.leaves(inputs)[0].shape[0]
      return jnp.full((batch_size,), loss)
    return loss_of

  # ---- the loss_fn ----
  def __call__(self, params, batch, rng, *, model_state, train):
    obj = self.objective
    prepared = obj.prepare(batch, rng)
    inputs = obj.embed(params, prepared, rng, model_state=model_state, train=train)
    if self.kind == "trades":
      return self._trades(params, inputs, prepared, rng, model_state, train)
    adv = self.attack_inputs(
        inputs, rng, self._objective_attack_loss(params, prepared, rng, model_state))
    metrics, total, state = {}, 0.0, model_state
    if self.kind == "combined" and self.clean_weight:
      clean_loss, (clean_metrics, state) = obj.loss_from_inputs(
          params, inputs, prepared, rng, model_state=state, train=train)
      total = self.clean_weight * clean_loss
      metrics.update({f"clean/{k}": v for k, v in clean_metrics.items()})
    adv_loss, (adv_metrics, state) = obj.loss_from_inputs(
        params, adv, prepared, jax.random.fold_in(rng, 1), model_state=state, train=train)
    weight = self.lam if self.kind == "combined" else 1.0
    total = total + weight * adv_loss
    metrics.update({f"adv/{k}": v for k, v in adv_metrics.items()})
    metrics["loss"] = total
    return total, (metrics, state)

  def _trades(self, params, inputs, batch, rng, model_state, train):
    obj = self.objective
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
    labels = jnp.asarray(batch["label"]).reshape(logits.shape[0])
    weights = example_weights(batch, logits.shape[0])
    ce = losses.weighted_mean(losses.softmax_cross_entropy(logits, labels), weights)
    kl = losses.weighted_mean(_kl(jax.nn.softmax(logits), adv_out["logits"]), weights)
    total = ce + self.beta * kl
    metrics = {"loss": total, "clean/loss": ce, "trades/kl": kl,
               "clean/accuracy": losses.weighted_mean(
                   losses.top1_correct(logits, labels), weights),
               "adv/accuracy": losses.weighted_mean(
                   losses.top1_correct(adv_out["logits"], labels), weights)}
    return total, (metrics, state)


def _kl(p: jax.Array, logits_q: jax.Array) -> jax.Array:
  """KL(p ‖ softmax(logits_q)) per example: [B,K], [B,K] -> [B]."""
  log_q = jax.nn.log_softmax(logits_q)
  return jnp.sum(p * (jnp.log(jnp.clip(p, 1e-12)) - log_q), axis=-1)


def make_adversarial(adversarial_config: Any, objective: Objective):
  """`objective` itself when adversarial.kind is 'none', else the Adversarial wrapper.

  Raises ConfigError for an unknown kind or key (naming it).
  """
  options = to_plain(adversarial_config)
  kind = options.pop("kind", "none")
  if kind == "none":
    return objective
  valid = [f.name for f in dataclasses.fields(Adversarial) if f.name != "objective"]
  unknown = sorted(set(options) - set(valid))
  if unknown:
    raise ConfigError(f"Unknown key(s) {unknown} in config.adversarial. Valid keys: "
                      f"{', '.join(valid)}.")
  if isinstance(options.get("modalities"), str):
    options["modalities"] = (options["modalities"],)
  return Adversarial(objective=objective, kind=kind, **options)
