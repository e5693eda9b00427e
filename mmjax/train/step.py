"""The jitted train and eval steps, built from a loss_fn and an optimizer."""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax

from mmjax.models import peft
from mmjax.objectives.base import StepContract
from mmjax.train.state import TrainState

# An Objective or an adversarial method: called as the loss, asked for its step contract.
LossFn = StepContract


# What `first_nonfinite_what` codes: the first non-finite quantity of a step.
NONFINITE = {1: "the training loss", 2: "the gradient norm", 3: "the updated parameters"}


def init_metric_accumulator(metric_shapes: dict) -> dict:
  """Device-side running sums of metrics between log steps (no host sync per step).

  `first_nonfinite_step` is -1 until a step's loss, gradient norm or updated parameters
  hold a NaN/Inf, then that step's number; `first_nonfinite_what` says which (NONFINITE).
  """
  return {"sums": jax.tree.map(lambda s: jnp.zeros((), jnp.float32), metric_shapes),
          "count": jnp.zeros((), jnp.int32),
          "first_nonfinite_step": jnp.full((), -1, jnp.int32),
          "first_nonfinite_what": jnp.zeros((), jnp.int32)}


def nonfinite_code(loss, grad_norm, params) -> jax.Array:
  """0 when loss, gradient norm and every parameter are finite, else the NONFINITE code
  of the first that is not (int32 scalar)."""
  params_finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(p))
                                     for p in jax.tree.leaves(params)]))
  return jnp.where(~jnp.isfinite(loss), 1, jnp.where(
      ~jnp.isfinite(grad_norm), 2, jnp.where(~params_finite, 3, 0))).astype(jnp.int32)


def _split_microbatches(batch: dict, n: int) -> dict:
  return jax.tree.map(lambda x: x.reshape((n, x.shape[0] // n) + x.shape[1:]), batch)


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation, *,
                    grad_accum_steps: int = 1, ema_decay: float = 0.0,
                    trainable: Callable[[Any], Any] | None = None,
                    privacy=None,
                    regularizer: Callable[[Any], dict] | None = None,
                    ) -> Callable[[TrainState, dict, dict], tuple[TrainState, dict]]:
  """Returns train_step(state, batch, acc) -> (state, acc), to be jitted with donation.

  With grad_accum_steps=A the batch [B, ...] is split into A micro-batches of B/A that are
  scanned over; their gradients and metrics are averaged, so one step still sees B
  examples but holds only B/A examples' activations at a time.

  `loss_fn` is an Objective or an adversarial method, so it carries the step contract of
  `mmjax.objectives.base.StepContract`: one whose `makes_own_updates` is true (free
  adversarial training) makes this step's updates itself, through
  `loss_fn.replay_updates(tx, params, opt_state, model_state, batch, rng) -> (params,
  opt_state, model_state, loss, metrics, grads)`; `loss_fn.check_step` refuses step
  options it cannot train under (ConfigError).

  `trainable(params) -> tree of bools` (fine-tuning) stops the gradients of the frozen
  parameters, so their weight gradients are never computed (the optimizer already
  ignores them).

  `privacy` (a `mmjax.privacy.gradients.DPSettings`) makes the gradient DP-SGD's: each
  example's gradient of the trainable parameters clipped, the clipped sums of all
  micro-batches added, the noise drawn once per step and the sum divided by the
  expected batch size (mmjax/privacy/gradients.py).

  `regularizer(params) -> {name: weighted penalty}` (AdaLoRA's orthogonality term) adds
  its values to the training loss and reports each as a metric.
  """
  loss_fn.check_step(grad_accum_steps=grad_accum_steps)

  def loss_of_trainable(params, *args, **kwargs):
    if trainable is not None:
      params = peft.stop_frozen_gradients(params, trainable(params))
    loss, (metrics, model_state) = loss_fn(params, *args, **kwargs)
    if regularizer is not None:
      penalties = regularizer(params)
      loss = loss + sum(penalties.values())
      metrics = {**metrics, **penalties}
    return loss, (metrics, model_state)

  grad_fn = jax.value_and_grad(loss_of_trainable, has_aux=True)

  def micro_step(params, model_state, batch, rng):
    (loss, (metrics, model_state)), grads = grad_fn(
        params, batch, rng, model_state=model_state, train=True)
    return loss, metrics, model_state, grads

  def gradient_update(state: TrainState, batch: dict, rng):
    """One optimizer update from the (accumulated) gradient of loss_fn."""
    if grad_accum_steps == 1:
      loss, metrics, model_state, grads = micro_step(
          state.params, state.model_state, batch, rng)
    else:
      def body(carry, xs):
        model_state, grad_sum = carry
        micro, i = xs
        loss, metrics, model_state, grads = micro_step(
            state.params, model_state, micro, jax.random.fold_in(rng, i))
        grad_sum = jax.tree.map(jnp.add, grad_sum, grads)
        return (model_state, grad_sum), (loss, metrics)

      zeros = jax.tree.map(jnp.zeros_like, state.params)
      (model_state, grad_sum), (losses, metrics) = jax.lax.scan(
          body, (state.model_state, zeros),
          (_split_microbatches(batch, grad_accum_steps), jnp.arange(grad_accum_steps)))
      grads = jax.tree.map(lambda g: g / grad_accum_steps, grad_sum)
      loss, metrics = losses.mean(), jax.tree.map(jnp.mean, metrics)

    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return params, opt_state, model_state, loss, metrics, grads

  if privacy is not None:
    gradient_update = _private_gradient_update(loss_fn, tx, privacy, grad_accum_steps,
                                               trainable)

  def train_step(state: TrainState, batch: dict, acc: dict):
    rng = jax.random.fold_in(state.rng, state.step)
    if loss_fn.makes_own_updates:
      # E.g. free adversarial training: the loss_fn runs several updates on this batch.
      params, opt_state, model_state, loss, metrics, grads = loss_fn.replay_updates(
          tx, state.params, state.opt_state, state.model_state, batch, rng)
    else:
      params, opt_state, model_state, loss, metrics, grads = gradient_update(
          state, batch, rng)
    ema_params = state.ema_params
    if ema_params is not None:
      ema_params = optax.incremental_update(params, ema_params, 1.0 - ema_decay)
    metrics = dict(metrics, grad_norm=optax.tree.norm(grads))

    code = nonfinite_code(loss, metrics["grad_norm"], params)
    first = (acc["first_nonfinite_step"] < 0) & (code > 0)
    acc = {"sums": jax.tree.map(lambda s, m: s + m.astype(jnp.float32), acc["sums"], metrics),
           "count": acc["count"] + 1,
           "first_nonfinite_step": jnp.where(first, state.step, acc["first_nonfinite_step"]),
           "first_nonfinite_what": jnp.where(first, code, acc["first_nonfinite_what"])}
    new_state = state.replace(step=state.step + 1, params=params, model_state=model_state,
                              opt_state=opt_state, ema_params=ema_params)
    return new_state, acc

  return train_step


def _private_gradient_update(loss_fn, tx, settings, grad_accum_steps: int, trainable):
  """gradient_update(state, batch, rng) of DP-SGD; metrics are means over the batch's
  real examples plus dp/clipped_fraction and dp/batch_size (the realised count)."""
  from mmjax.privacy import gradients   # the optional privacy extra

  clipped_sums = gradients.clipped_sums_fn(loss_fn, settings)

  def update(state: TrainState, batch: dict, rng):
    split = gradients.TrainableSplit(
        state.params, None if trainable is None else trainable(state.params))
    if grad_accum_steps == 1:
      sums = clipped_sums(split, state.model_state, batch, rng)
    else:
      def body(total, xs):
        micro, i = xs
        return total + clipped_sums(split, state.model_state, micro,
                                    jax.random.fold_in(rng, i)), None
      first = jax.tree.map(lambda x: x[:x.shape[0] // grad_accum_steps], batch)
      zero = jax.eval_shape(lambda b: clipped_sums(split, state.model_state, b, rng),
                            first)
      zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), zero)
      sums, _ = jax.lax.scan(body, zero, (_split_microbatches(batch, grad_accum_steps),
                                          jnp.arange(grad_accum_steps)))
    noised = gradients.privatize(sums.grads, gradients.noise_key(rng), settings)
    grads = split.grads_with(noised)
    count = jnp.maximum(sums.count, 1.0)
    metrics = dict(jax.tree.map(lambda m: m / count, sums.metrics),
                   **{"dp/clipped_fraction": sums.clipped / count,
                      "dp/batch_size": sums.count})
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    return params, opt_state, state.model_state, sums.loss / count, metrics, grads

  return update


def make_eval_step(loss_fn: LossFn) -> Callable[[Any, Any, dict], dict]:
  """Returns eval_step(params, model_state, batch) -> {metric: sum over real examples}.

  Metrics from loss_fn are means over real examples; multiplying by their count makes
  sums that add up exactly across batches of different fill.
  """
  def eval_step(params, model_state, batch):
    n = batch["mask"].sum() if "mask" in batch else jnp.float32(
        jax.tree.leaves(batch)[0].shape[0])
    _, (metrics, _) = loss_fn(params, batch, jax.random.key(0), model_state=model_state,
                              train=False)
    sums = jax.tree.map(lambda m: m.astype(jnp.float32) * n, metrics)
    return dict(sums, num_examples=n.astype(jnp.float32))

  return eval_step
