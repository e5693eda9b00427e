"""The Objective base class, the OBJECTIVES registry and config -> objective plumbing.

An objective is a frozen dataclass whose fields are its config options (plus `model`). It
is itself the loss function of docs/interfaces.md,

    objective(params, batch, rng, *, model_state, train) -> (loss, (metrics, new_model_state))

computed in three steps that an adversarial wrapper can take apart:

    prepared = objective.prepare(batch, rng)   # on-device data randomness (MLM, views)
    inputs = objective.embed(params, prepared, rng, model_state=..., train=...)
    loss, (metrics, state) = objective.loss_from_inputs(
        params, inputs, prepared, rng, model_state=..., train=...)

An attack perturbs `inputs` and maximises `loss_from_inputs` with everything else fixed.
All three steps take the same `rng` and derive their keys from it the same way, so calling
them separately gives exactly what `__call__` gives.
"""
from __future__ import annotations

import dataclasses
from typing import Any, ClassVar, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.registry import Registry, check_known_keys
from mmjax.rngs import split_rngs

OBJECTIVES = Registry("objective")

# Stages fold distinct constants into the step key so that data-side randomness, the
# embedding call and the encoder call never share a key.
PREPARE, EMBED, ENCODE = 0, 1, 2

Batch = Mapping[str, jax.Array]


def stage_rngs(rng: jax.Array, stage: int) -> dict[str, jax.Array]:
  """The named streams ('dropout', 'mask', 'augment') for one stage (prepare / embed /
  encode) of a loss computation."""
  return split_rngs(jax.random.fold_in(rng, stage))


def example_weights(batch: Batch, batch_size: int) -> jax.Array:
  """[B] float32 example weights: `batch['mask']` when present, else ones."""
  if "mask" in batch:
    return jnp.asarray(batch["mask"], jnp.float32).reshape(batch_size)
  return jnp.ones((batch_size,), jnp.float32)


def require_output(outputs: Mapping[str, Any], key: str, objective: str, fix: str) -> Any:
  """outputs[key], or a ConfigError saying which model option provides it."""
  if key not in outputs:
    raise ConfigError(
        f"Objective {objective!r} needs the model output {key!r}, but the model returned "
        f"only {sorted(outputs)}. {fix}")
  return outputs[key]


class StepContract:
  """What a loss_fn asks of the train step (`mmjax/train/step.py`); the trainer reads
  these instead of probing for attributes.

  The defaults are every objective's: one optimizer update per batch, from the gradient
  of the loss. A loss that makes its own updates from a batch (free adversarial training
  replays it) sets `makes_own_updates`, counts them in `updates_per_step` and implements
  `replay_updates`; one that cannot train under some step option refuses it in
  `check_step`, before any compute.
  """
  makes_own_updates: ClassVar[bool] = False
  # The loss of a batch is the mean of its examples' losses, each a function of that
  # example alone (what DP-SGD clips); false for losses whose negatives are the batch.
  per_example_loss: ClassVar[bool] = True

  @property
  def updates_per_step(self) -> int:
    """Optimizer updates per train step; the LR schedule counts updates, not steps."""
    return 1

  def check_step(self, *, grad_accum_steps: int) -> None:
    """Raises a ConfigError for step options this loss cannot train under (none here)."""
    del grad_accum_steps

  def initial_state(self) -> dict:
    """State the loss keeps across steps ({collection: pytree}), added to the train
    state's model_state, so it is checkpointed and resumed (e.g. Group DRO's weights);
    none by default."""
    return {}

  def replay_updates(self, tx, params, opt_state, model_state, batch, rng):
    """The step's updates from one batch, for a loss with `makes_own_updates`.

    -> (params, opt_state, model_state, loss, metrics, grads of the last update).
    """
    raise NotImplementedError(f"{type(self).__name__} takes the step's one gradient update; "
                              "only a loss with makes_own_updates replays a batch.")


# eq=False everywhere: objectives hash by identity, so `jax.jit(objective)` works even
# when an option is a dict (a frozen dataclass with eq=True would hash its fields).
@dataclasses.dataclass(frozen=True, eq=False)
class Objective(StepContract):
  """Base class: subclasses add option fields (declared with `eq=False` too) and
  implement `loss_from_inputs`; some also override `prepare`."""
  model: nn.Module

  # ---- the model, with variables and RNG streams handled per the contract ----
  def apply_model(self, params, model_state: Mapping[str, Any], *args, method: str,
                  rngs: dict[str, jax.Array], train: bool, mutable_state: bool = True,
                  **kwargs) -> tuple[Any, dict[str, Any]]:
    """model.apply(...) -> (output, new_model_state).

    Non-param collections (e.g. `batch_stats`) are mutable only when training; the
    returned state is the input state when nothing could change.
    """
    variables = {"params": params, **model_state}
    mutable = list(model_state) if (train and model_state and mutable_state) else False
    out = self.model.apply(variables, *args, train=train, method=method, rngs=rngs,
                           mutable=mutable, **kwargs)
    if not mutable:
      return out, dict(model_state)
    out, updates = out
    return out, {**model_state, **updates}

  def encode(self, params, inputs, rng, *, model_state, train):
    """`model.encode(inputs)` -> (outputs dict, new_model_state)."""
    return self.apply_model(params, model_state, inputs, method="encode",
                            rngs=stage_rngs(rng, ENCODE), train=train)

  # ---- the three steps ----
  def prepare(self, batch: Batch, rng: jax.Array) -> dict[str, jax.Array]:
    """Data-side transforms done on device (default: none). Returns the prepared batch."""
    del rng
    return dict(batch)

  def embed(self, params, batch: Batch, rng: jax.Array, *, model_state, train: bool):
    """`model.embed(prepared batch)` -> inputs, the pytree an attack perturbs.

    Embedding layers must not update model state (e.g. no BatchNorm before the seam).
    """
    # Keys starting with '_' are objective-private (e.g. MLM targets): not model input.
    model_batch = {k: v for k, v in batch.items() if not k.startswith("_")}
    inputs, _ = self.apply_model(params, model_state, model_batch, method="embed",
                                 rngs=stage_rngs(rng, EMBED), train=train,
                                 mutable_state=False)
    return inputs

  def loss_from_inputs(self, params, inputs, batch: Batch, rng: jax.Array, *,
                       model_state, train: bool):
    """Loss given embedded inputs -> (loss, (metrics, new_model_state))."""
    raise NotImplementedError

  def __call__(self, params, batch: Batch, rng: jax.Array, *, model_state, train: bool):
    """The loss_fn of docs/interfaces.md: -> (loss, (metrics, new_model_state))."""
    batch = self.prepare(batch, rng)
    inputs = self.embed(params, batch, rng, model_state=model_state, train=train)
    return self.loss_from_inputs(params, inputs, batch, rng,
                                 model_state=model_state, train=train)


def option_names(cls: type) -> list[str]:
  """The config options of objective class `cls` (its init fields, less `model`)."""
  return sorted(f.name for f in dataclasses.fields(cls) if f.init and f.name != "model")


def build_objective(name: str, options: Mapping[str, Any], model: nn.Module, *,
                    config_key: str, also_valid: tuple[str, ...] = ()) -> Objective:
  """Looks up `name` in OBJECTIVES and constructs it with `options`.

  `also_valid` lists keys the caller already consumed (e.g. a sum term's `weight`), for
  the error message.

  Raises:
    ConfigError: for an unknown name (listing the choices) or option (naming the key).
  """
  cls = OBJECTIVES.get(name, config_key=f"{config_key}.name")
  valid = option_names(cls)
  check_known_keys(options, valid, where=f"{config_key} for objective {name!r}",
                   shown=["name", *also_valid, *valid])
  return cls(model=model, **dict(options))
