"""The train state: one pytree holding everything a step reads and writes."""
from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """step: int32 scalar; params: the 'params' collection; model_state: other collections
  (e.g. {'batch_stats': ...}); opt_state: optax state; rng: base key (per-step keys are
  fold_in(rng, step), so a resumed run draws the same keys); ema_params: EMA of params or
  None."""
  step: jax.Array
  params: Any
  model_state: Any
  opt_state: Any
  rng: jax.Array
  ema_params: Any = None


def create_train_state(variables: dict, tx: optax.GradientTransformation, rng: jax.Array,
                       *, ema: bool) -> TrainState:
  """Splits init variables into params and model_state and initialises the optimizer."""
  variables = dict(variables)
  params = variables.pop("params")
  return TrainState(
      step=jnp.zeros((), jnp.int32), params=params, model_state=variables,
      opt_state=tx.init(params), rng=rng,
      ema_params=jax.tree.map(jnp.copy, params) if ema else None)
