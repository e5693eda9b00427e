"""Flax model zoo: build a model by name from `config.model`, initialise it, count it.

Importing this package registers every model family in `MODELS`.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import flax.linen as nn
import jax

from mmjax.errors import ConfigError, MmjaxError
from mmjax.models.registry import MODELS
from mmjax.registry import checked_kwargs, to_plain
from mmjax.rngs import INIT_STREAMS, split_rngs
# Imported for their registration side effect.
from mmjax.models import cnn, multimodal, text, vit  # noqa: F401,E402
from mmjax.models.layers import patchify  # noqa: E402
from mmjax.models.vit import unpatchify  # noqa: E402

RNG_STREAMS = INIT_STREAMS   # model.init's streams

__all__ = ["MODELS", "build_model", "config_with_defaults", "init_variables",
           "abstract_variables", "param_count", "logical_partition_specs", "patchify",
           "unpatchify", "RNG_STREAMS"]


def build_model(model_config: Any) -> nn.Module:
  """config.model (ConfigDict or dict with 'name' + dataclass fields) -> unbound Module.

  Raises ConfigError for a missing/unknown name or an unknown field.
  """
  cfg = to_plain(model_config)
  if not isinstance(cfg, Mapping) or "name" not in cfg:
    raise ConfigError("config.model needs a 'name' key choosing the model; one of: "
                      f"{', '.join(MODELS.names())}.")
  cfg = dict(cfg)
  cls = MODELS.get(cfg.pop("name"), config_key="config.model.name")
  return cls(**checked_kwargs(cls, cfg, config_key="config.model"))


def config_with_defaults(model_config: Any) -> dict:
  """config.model (ConfigDict or dict with 'name') -> a plain dict with every field of
  that model class, the class defaults filled in where the config leaves them out."""
  cfg = dict(to_plain(model_config))
  cls = MODELS.get(cfg["name"], config_key="config.model.name")
  defaults = {f.name: f.default for f in dataclasses.fields(cls)
              if f.init and f.name not in ("parent", "name")
              and f.default is not dataclasses.MISSING}
  return {**defaults, **cfg}


def config_fields(model_config: Any) -> set[str]:
  """Every key config.model may hold for its model class (the class's fields), or an
  empty set when the name is unknown (that error comes when the model is built)."""
  try:
    return set(config_with_defaults(model_config))
  except (MmjaxError, KeyError):
    return set()


def _boxed_init(model: nn.Module, batch: Mapping[str, Any], rng: jax.Array):
  return model.init(split_rngs(rng, INIT_STREAMS), batch, method="initialize")


def _abstract_boxed(model: nn.Module, batch: Mapping[str, Any]):
  # The module is closed over: it is not a pytree, so it cannot be an eval_shape argument.
  return jax.eval_shape(lambda b, r: _boxed_init(model, b, r), batch, jax.random.key(0))


def init_variables(model: nn.Module, batch: Mapping[str, Any], rng: jax.Array) -> dict:
  """Creates all variables ({'params': ..., maybe 'batch_stats': ...}), unboxed.

  `batch` is an example batch (dict of [B,...] arrays); only its shapes matter.
  """
  # Jitted: one compile instead of op-by-op dispatch, and no transient copies on device.
  return jax.jit(lambda b, r: nn.meta.unbox(_boxed_init(model, b, r)))(batch, rng)


def abstract_variables(model: nn.Module, batch: Mapping[str, Any]) -> dict:
  """Like `init_variables` but returns jax.ShapeDtypeStruct leaves; allocates nothing.

  `batch` may hold arrays or jax.ShapeDtypeStructs.
  """
  return nn.meta.unbox(_abstract_boxed(model, batch))


def logical_partition_specs(model: nn.Module, batch: Mapping[str, Any]) -> dict:
  """Variables tree of PartitionSpecs over *logical* axis names ('embed', 'layers', ...).

  Unannotated variables (e.g. BatchNorm statistics) get PartitionSpec() (replicated).
  `mmjax.parallel` maps logical names to mesh axes with its rule table.
  """
  return nn.get_partition_spec(_abstract_boxed(model, batch))


def param_count(params_tree: Any) -> int:
  """Total number of scalars in a tree of arrays or ShapeDtypeStructs (boxed or not)."""
  return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params_tree))
