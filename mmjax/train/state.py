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


def state_shardings(abstract_state: TrainState, logical_specs: dict, tx, mesh, rules
                    ) -> TrainState:
  """NamedShardings for every leaf of `abstract_state` (a TrainState of
  ShapeDtypeStructs): params (and their EMA) by their logical axes and `rules`, the
  optimizer state like its parameters, everything else replicated.

  `logical_specs` is the variables tree of logical PartitionSpecs
  (`models.logical_partition_specs`); unannotated collections (batch statistics) are
  replicated.
  """
  from mmjax import parallel  # pylint: disable=g-import-not-at-top
  rep = parallel.replicated(mesh)
  params = parallel.param_shardings(logical_specs["params"], abstract_state.params, mesh,
                                    rules)
  return TrainState(
      step=rep, params=params,
      model_state=jax.tree.map(lambda _: rep, abstract_state.model_state),
      opt_state=parallel.opt_state_shardings(tx, abstract_state.opt_state,
                                             abstract_state.params, params, mesh),
      rng=rep, ema_params=None if abstract_state.ema_params is None else params)
