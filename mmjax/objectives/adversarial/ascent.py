"""Methods whose ascent steps on δ also yield the parameter gradients.

    freelb:  L = (1/K) Σ_k L(x + δ_k), δ_{k+1} = Π(δ_k + α·dir(∇_δ L))   (Zhu et al. 2020;
             K = steps ascent steps whose parameter gradients are accumulated: K forward
             and backward passes in all, each serving both δ and the parameters)
    free:    `replays` optimizer updates on each batch, each from one backward pass that
             also moves δ by eps·dir(∇_δ L)   (Shafahi et al. 2019; done by the train step
             through `replay_updates`, and δ starts uniformly in the ball instead of being
             carried over from the previous batch)

Both ignore `attack`, `restarts` and `attack_loss`: the ascent maximises L itself.
"""
from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax

from mmjax.attacks import core as attacks_core
from mmjax.errors import ConfigError
from mmjax.objectives.adversarial.base import AdversarialMethod, register_method


@dataclasses.dataclass(frozen=True, eq=False)
class AscentMethod(AdversarialMethod):
  """Shared machinery: δ moved by the gradients of the training loss itself."""
  # The attack whose geometry and default step the ascent takes: 'pgd' (2.5·eps/steps)
  # or 'fgsm' (eps, as Shafahi et al.).
  ascent_attack: ClassVar[str] = "pgd"

  def _ascent_problem(self, clean_inputs):
    """An attacks.core.Problem over `clean_inputs`, for its projection geometry and
    random start."""
    prob = attacks_core.make_problem(
        None, clean_inputs, attack=self.ascent_attack, steps=self.steps,
        **self._attack_specs(clean_inputs))
    if prob is None:
      raise ConfigError(f"adversarial.kind={self.kind!r} found no float inputs to perturb.")
    return prob

  def _ascent_setup(self, params, batch, rng, model_state, train):
    """(prepared batch, Problem over its clean embedding, random start)."""
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

  def __call__(self, params, batch, rng, *, model_state, train):
    """The mean loss over K = `steps` ascent steps, with FreeLB's accumulated gradient."""
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


@register_method("freelb")
@dataclasses.dataclass(frozen=True, eq=False)
class FreeLB(AscentMethod):
  """(1/K) Σ_k L(x + δ_k) with the parameter gradients of all K ascent steps."""


@register_method("free")
@dataclasses.dataclass(frozen=True, eq=False)
class Free(AscentMethod):
  """Free adversarial training: `replays` updates per batch, made by `replay_updates`.

  Called as a loss_fn (eval steps, metric shapes) it is FreeLB's mean over `steps` ascent
  steps, with the free step size.
  """
  ascent_attack: ClassVar[str] = "fgsm"
  makes_own_updates: ClassVar[bool] = True
  replays: int = 4   # optimizer updates per batch (Shafahi et al.: 8 on CIFAR-10)

  def __post_init__(self):
    super().__post_init__()
    if isinstance(self.replays, bool) or not isinstance(self.replays, int) or self.replays < 1:
      raise ConfigError(f"adversarial.replays={self.replays!r} must be a positive int "
                        "(free adversarial training's minibatch replays, e.g. 8).")

  @property
  def updates_per_step(self) -> int:
    return self.replays

  def check_step(self, *, grad_accum_steps: int) -> None:
    if grad_accum_steps != 1:
      raise ConfigError("adversarial.kind='free' replays whole batches and cannot be "
                        f"combined with optim.grad_accum_steps={grad_accum_steps} > 1; set "
                        "one of them back to default.")

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
