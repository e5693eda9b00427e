"""Adversarial objectives: any objective, evaluated at attacked inputs.

    combined:  L = clean_weight · L(x) + lam · L(x + δ*)     (L_ssl + λ·L_adv; RoCL/ACL-style
               when L is a self-supervised loss: the attack maximises that loss)
    madry:     L = L(x + δ*)                                  (Madry et al. 2018)
    trades:    L = CE(f(x), y) + beta · KL(f(x) ‖ f(x + δ*))  (Zhang et al. 2019; the attack
               maximises the KL)
    alum:      L = L(x) + lam · symKL(f(x), f(x + δ*))        (ALUM, Liu et al. 2020; SMART,
               Jiang et al. 2020; the attack maximises the symmetric KL of `consistency_on`)
    freelb:    L = (1/K) Σ_k L(x + δ_k), δ_{k+1} = Π(δ_k + α·dir(∇_δ L))   (Zhu et al. 2020;
               K = steps ascent steps whose parameter gradients are accumulated: K forward
               and backward passes in all, each serving both δ and the parameters)
    free:      `replays` optimizer updates on each batch, each from one backward pass that
               also moves δ by eps·dir(∇_δ L)   (Shafahi et al. 2019; done by the train step
               through `replay_updates`, and δ starts uniformly in the ball instead of being
               carried over from the previous batch)

δ* = argmax over the ε-ball (per modality, `mmjax.attacks.perturb`) of the attack loss:
the wrapped objective's own loss (`attack_loss='objective'`), or the per-example
cross-entropy of the class logits (`attack_loss='ce'`). The attack runs with train=False
(BatchNorm on running statistics, no dropout) and δ* is a constant for the update; it is
added back onto the embedded inputs, so embedding parameters (text) still get gradients.

With `attack_loss='objective'` the attack sees one batch loss, so a restart is kept or
dropped for the whole batch; 'ce' keeps the per-example worst case. For a `sum` objective,
`attack_loss` may also name one of its terms (e.g. 'mae'): the attack maximises that term's
loss alone (the self-supervised loss, as in RoCL/ACL) and the δ it finds is applied to every
term's inputs, which must then be alike (the same image for 'mae' and 'supervised').
"""
from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

import optax

from mmjax import attacks
from mmjax.attacks import core as attacks_core
from mmjax.errors import ConfigError
from mmjax.objectives import losses
from mmjax.objectives.base import Objective, example_weights, require_output
from mmjax.registry import check_known_keys, to_plain

KINDS = ("none", "madry", "combined", "trades", "alum", "freelb", "free")
ATTACK_LOSSES = ("objective", "ce")
TRAIN_ATTACKS = ("fgsm", "fgsm_rs", "pgd", "apgd")
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
  consistency_on: str = "logits"   # alum: the model output compared clean vs attacked
  replays: int = 4                 # free: optimizer updates per batch
  # PGD's best iterate (strongest) or its last (the published training recipes; cheaper).
  best_iterate: bool = False
  # Clip the random start into the bounds (Wong et al.'s CIFAR code, Madry et al.) or only
  # each step's result (Wong et al.'s MNIST code); see attacks.core.Problem.random_start.
  clip_start: bool = True

  def __post_init__(self):
    if self.kind not in KINDS[1:]:
      raise ConfigError(f"Unknown adversarial.kind {self.kind!r}. Choose one of: "
                        f"{', '.join(KINDS)}.")
    terms = tuple(getattr(self.objective, "objectives", {}))
    if self.attack_loss not in ATTACK_LOSSES + terms:
      raise ConfigError(f"Unknown adversarial.attack_loss {self.attack_loss!r}. Choose "
                        f"one of: {', '.join(ATTACK_LOSSES + terms)} (a term name only for "
                        "a 'sum' objective).")
    if self.attack not in TRAIN_ATTACKS:
      raise ConfigError(f"adversarial.attack={self.attack!r} cannot train: choose one of "
                        f"{', '.join(TRAIN_ATTACKS)} (Square and FAB are evaluation attacks: "
                        "evals.robust.attack).")
    if self.attack == "apgd" and to_plain(self.step_size):
      raise ConfigError(f"adversarial.step_size={to_plain(self.step_size)!r} with "
                        "adversarial.attack='apgd': APGD sets its own step (2 eps, adapted "
                        "per example); unset adversarial.step_size.")
    if not self.modalities:
      raise ConfigError("adversarial.modalities is empty: name the inputs to perturb, "
                        "e.g. ('image',) or ('text',).")
    if self.kind == "free" and (not isinstance(self.replays, int) or self.replays < 1):
      raise ConfigError(f"adversarial.replays={self.replays!r} must be a positive int "
                        "(free adversarial training's minibatch replays, e.g. 8).")

  @property
  def uses_replays(self) -> bool:
    """True for 'free': the train step must call `replay_updates` instead of grad."""
    return self.kind == "free"

  @property
  def updates_per_step(self) -> int:
    """Optimizer updates per train step: `replays` for 'free', else 1."""
    return self.replays if self.uses_replays else 1

  # ---- the attack ----
  def _attack_specs(self, inputs: dict) -> dict:
    """perturb's eps / step_size / bounds trees for `inputs` (see `attack_specs`)."""
    return attack_specs(inputs, self.modalities, self.eps, self.step_size,
                        config_key="adversarial", norm=self.norm)

  def attack_inputs(self, inputs: dict, rng, attack_loss_fn) -> dict:
    """Perturbed copy of `inputs` (δ* held constant); `attack_loss_fn(inputs) -> [B]`."""
    clean = jax.lax.stop_gradient(inputs)
    adv = attacks.perturb(
        attack_loss_fn, clean, jax.random.fold_in(rng, 101), attack=self.attack,
        steps=self.steps, restarts=self.restarts, best_iterate=self.best_iterate,
        clip_start=self.clip_start, **self._attack_specs(inputs))
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

  def _attack_one_term(self, params, inputs, prepared, rng, model_state):
    """δ maximising one term of a `sum` objective, applied to every term's inputs."""
    obj, term = self.objective, self.attack_loss
    sub, term_rng = obj.objectives[term], obj.term_rngs(rng)[term]

    def loss_of(term_inputs):
      loss, _ = sub.loss_from_inputs(params, term_inputs, prepared[term], term_rng,
                                     model_state=model_state, train=False)
      return jnp.full((jax.tree.leaves(term_inputs)[0].shape[0],), loss)

    adv = self.attack_inputs(inputs[term], rng, loss_of)
    # δ lives on the attacked modalities only; every term must hold them, alike.
    delta = {k: jax.lax.stop_gradient(adv[k] - v) for k, v in inputs[term].items()
             if k in self.modalities}
    for other, other_inputs in inputs.items():
      for k, d in delta.items():
        if k not in other_inputs or other_inputs[k].shape != d.shape:
          raise ConfigError(
              f"adversarial.attack_loss={term!r} applies its δ on {k!r} to every term, "
              f"but term {other!r} embeds no {k!r} of shape {d.shape}. Use "
              "attack_loss='objective'.")
    return {t: {**x, **{k: x[k] + d for k, d in delta.items()}} for t, x in inputs.items()}

  # ---- the loss_fn ----
  def __call__(self, params, batch, rng, *, model_state, train):
    obj = self.objective
    if self.kind in ("freelb", "free"):
      return self._freelb(params, batch, rng, model_state, train)
    prepared = obj.prepare(batch, rng)
    inputs = obj.embed(params, prepared, rng, model_state=model_state, train=train)
    if self.kind == "trades":
      return self._trades(params, inputs, prepared, rng, model_state, train)
    if self.kind == "alum":
      return self._alum(params, inputs, prepared, rng, model_state, train)
    if self.attack_loss in ATTACK_LOSSES:
      adv = self.attack_inputs(
          inputs, rng, self._objective_attack_loss(params, prepared, rng, model_state))
    else:
      adv = self._attack_one_term(params, inputs, prepared, rng, model_state)
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


  def _alum(self, params, inputs, batch, rng, model_state, train):
    obj, name = self.objective, self.consistency_on
    fix = (f"Set adversarial.consistency_on to an output the model has (e.g. 'logits' or "
           f"'lm_logits').")
    loss, (metrics, state) = obj.loss_from_inputs(params, inputs, batch, rng,
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
                                       example_weights(batch, per_example.shape[0]))
    total = loss + self.lam * consistency
    metrics = {f"clean/{k}": v for k, v in metrics.items()}
    metrics.update({"loss": total, "alum/sym_kl": consistency})
    return total, (metrics, state)

  # ---- FreeLB and free AT: ascent steps that also yield parameter gradients ----
  def _ascent_problem(self, clean_inputs):
    """An attacks.core.Problem over `clean_inputs`, for its projection geometry and
    random start. Default step: eps for 'free' (Shafahi et al.), 2.5·eps/steps else."""
    prob = attacks_core.make_problem(
        None, clean_inputs, attack="fgsm" if self.uses_replays else "pgd",
        steps=self.steps, **self._attack_specs(clean_inputs))
    if prob is None:
      raise ConfigError(f"adversarial.kind={self.kind!r} found no float inputs to perturb.")
    return prob

  def _ascent_setup(self, params, batch, rng, model_state, train):
    """(prepared batch, Problem over its clean embedding, random start) for FreeLB/free."""
    obj = self.objective
    prepared = obj.prepare(batch, rng)
    clean = jax.lax.stop_gradient(
        obj.embed(params, prepared, rng, model_state=model_state, train=train))
    prob = self._ascent_problem(clean)
    return prepared, prob, prob.random_start(jax.random.fold_in(rng, 101))

  def _grads_at(self, prob, params, xs, prepared, rng, model_state, train):
    """((loss, (metrics, state)), (param grads, grads of xs)) of L(embed(params) + δ).

    `xs` are the perturbed float leaves of `prob` (δ = xs - clean); the loss depends on
    the parameters through the embedding too (text), as in FreeLB.
    """
    obj, clean = self.objective, prob.merge(prob.x0)

    def loss_at(p, xs):
      inputs = obj.embed(p, prepared, rng, model_state=model_state, train=train)
      adv = jax.tree.map(lambda e, a, c: e + (a - c), inputs, prob.merge(xs), clean)
      return obj.loss_from_inputs(p, adv, prepared, rng, model_state=model_state,
                                  train=train)

    return jax.value_and_grad(loss_at, argnums=(0, 1), has_aux=True)(params, xs)

  def _freelb(self, params, batch, rng, model_state, train):
    fixed = jax.lax.stop_gradient(params)
    prepared, prob, start = self._ascent_setup(fixed, batch, rng, model_state, train)

    def body(carry, _):
      xs, state, grad_sum = carry
      # One rng for all K ascent steps: the same dropout masks, so δ ascends one loss.
      (loss, (metrics, state)), (g_params, g_xs) = self._grads_at(
          prob, fixed, xs, prepared, rng, state, train)
      grad_sum = jax.tree.map(jnp.add, grad_sum, g_params)
      return (prob.ascend(xs, g_xs), state, grad_sum), (loss, metrics)

    zeros = jax.tree.map(jnp.zeros_like, fixed)
    (_, state, grad_sum), (step_losses, metrics) = jax.lax.scan(
        body, (start, model_state, zeros), jnp.arange(self.steps))
    grads = jax.tree.map(lambda g: g / self.steps, grad_sum)
    loss = jnp.mean(step_losses)
    # Value: the mean loss over the K perturbations. Gradient with respect to params:
    # exactly the accumulated FreeLB gradient (a linear surrogate around `fixed`), so the
    # ordinary train step applies it without a second backward pass.
    surrogate = jax.lax.stop_gradient(loss) + sum(
        jnp.vdot(jax.lax.stop_gradient(g), p - f) for g, p, f in
        zip(jax.tree.leaves(grads), jax.tree.leaves(params), jax.tree.leaves(fixed)))
    metrics = {f"adv/{k}": jnp.mean(v) for k, v in metrics.items()}
    metrics["loss"] = loss
    return surrogate, (metrics, state)

  def replay_updates(self, tx, params, opt_state, model_state, batch, rng):
    """Free adversarial training on one batch: `replays` updates, δ moved by each.

    -> (params, opt_state, model_state, loss, metrics, grads of the last replay); the
    loss and metrics are means over the replays.
    """
    prepared, prob, start = self._ascent_setup(params, batch, rng, model_state, True)

    def body(carry, r):
      xs, params, opt_state, state, _ = carry
      (loss, (metrics, state)), (grads, g_xs) = self._grads_at(
          prob, params, xs, prepared, jax.random.fold_in(rng, r), state, True)
      updates, opt_state = tx.update(grads, opt_state, params)
      params = optax.apply_updates(params, updates)
      return (prob.ascend(xs, g_xs), params, opt_state, state, grads), (loss, metrics)

    zeros = jax.tree.map(jnp.zeros_like, params)
    (_, params, opt_state, state, grads), (replay_losses, metrics) = jax.lax.scan(
        body, (start, params, opt_state, model_state, zeros), jnp.arange(self.replays))
    metrics = {f"adv/{k}": jnp.mean(v) for k, v in metrics.items()}
    loss = jnp.mean(replay_losses)
    metrics["loss"] = loss
    return params, opt_state, state, loss, metrics, grads


def attack_specs(inputs: dict, modalities, eps, step_size, *, config_key: str,
                 norm="linf") -> dict:
  """perturb's per-leaf `eps`, `step_size`, `norm` and `bounds` trees for `inputs`.

  A leaf is attacked when its own key is one of `modalities`, at any depth, so ('image',)
  also reaches into a `sum` objective's per-term inputs ({'mae': {'image': ...}, ...}).
  Other leaves get eps 0 (perturb leaves them exactly where they are). eps, step_size and
  norm are one value or a {modality: value} dict; bounds are DEFAULT_BOUNDS (pixels
  [0, 1], embeddings unbounded).

  Raises ConfigError when a modality is not an input leaf (naming `config_key`).
  """
  leaf_keys = {getattr(p[-1], "key", None)
               for p, _ in jax.tree_util.tree_flatten_with_path(inputs)[0]}
  missing = [m for m in modalities if m not in leaf_keys]
  if missing:
    raise ConfigError(f"{config_key}.modalities {missing} are not model inputs; the model's "
                      f"embed() gives {sorted(k for k in leaf_keys if k is not None)}.")

  def tree(value, fixed):
    def spec(path, _):
      key = getattr(path[-1], "key", None)
      return value(key) if key in modalities else fixed
    return jax.tree_util.tree_map_with_path(spec, inputs)

  eps, step_size, norm = to_plain(eps), to_plain(step_size), to_plain(norm)
  for name, value in (("eps", eps), ("step_size", step_size), ("norm", norm)):
    if isinstance(value, dict) and set(value) - set(modalities):
      raise ConfigError(f"{config_key}.{name} names {sorted(set(value) - set(modalities))}, "
                        f"which are not among {config_key}.modalities {tuple(modalities)}.")
  if isinstance(eps, dict) and set(modalities) - set(eps):
    raise ConfigError(f"{config_key}.eps has no value for {sorted(set(modalities) - set(eps))}"
                      f"; give one per attacked modality.")
  per_modality = lambda v, default: (lambda m: v.get(m, default) if isinstance(v, dict)
                                     else v)
  return {"eps": tree(per_modality(eps, 0.0), 0.0),
          "step_size": tree(per_modality(step_size, None), None),
          "norm": tree(per_modality(norm, "linf"), "linf"),
          "bounds": tree(DEFAULT_BOUNDS.get, None)}


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


def make_adversarial(adversarial_config: Any, objective: Objective):
  """`objective` itself when adversarial.kind is 'none', else the Adversarial wrapper.

  Raises ConfigError for an unknown kind or key (naming it).
  """
  options = to_plain(adversarial_config)
  kind = options.pop("kind", "none")
  # The guard's options belong to the trainer (mmjax/train/robust_eval.py).
  options = {k: v for k, v in options.items() if not k.startswith("guard_")}
  if kind == "none":
    return objective
  valid = [f.name for f in dataclasses.fields(Adversarial) if f.name != "objective"]
  check_known_keys(options, valid, where="config.adversarial", shown=valid)
  if isinstance(options.get("modalities"), str):
    options["modalities"] = (options["modalities"],)
  return Adversarial(objective=objective, kind=kind, **options)
