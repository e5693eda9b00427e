"""Fine-tuning in the one trainer: start from pretrained weights, train a chosen subset.

config.finetune:
  init_from  a Hugging Face folder (config.json + safetensors; `mmjax.interop`) whose
             weights fill the model at step 0, or '' (train from the initialisation).
             Parameters the folder lacks (a new task head, LoRA, adapters) start fresh.
             A resumed run restores its own checkpoint and ignores init_from.
  mode       full | linear_probe | lora | adapter (mmjax/models/peft.py)
  trainable  extra regexes of parameter paths that train in any mode

Frozen parameters carry no optimizer state (`optax.multi_transform` with
`optax.set_to_zero`) and their gradients are stopped inside the step, so the backward pass
skips their weight gradients.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import optax
from absl import logging

from mmjax import models
from mmjax.errors import ConfigError
from mmjax.models import peft


def _is_full(finetune_config) -> bool:
  return finetune_config.mode == "full" and not tuple(finetune_config.trainable)


def trainable_fn(finetune_config) -> Callable[[Any], Any] | None:
  """params -> tree of bools (True = trains), or None when everything trains."""
  peft.check_mode(finetune_config.mode)   # before any compute
  if _is_full(finetune_config):
    return None
  extra = tuple(finetune_config.trainable)
  return lambda params: peft.trainable_mask(params, finetune_config.mode, extra)


def freeze_optimizer(tx: optax.GradientTransformation, finetune_config, params: Any
                     ) -> optax.GradientTransformation:
  """`tx` on the trainable parameters, zero updates and no state for the frozen ones.

  `params` (arrays or ShapeDtypeStructs) fixes the labels as a tree: a labelling
  function would also be called on optax.tree_map_params' placeholder (shardings).
  """
  trainable = trainable_fn(finetune_config)
  if trainable is None:
    return tx
  labels = jax.tree.map(lambda t: "train" if t else "frozen", trainable(params))
  return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def check_init_from(config) -> None:
  """Fails before any compute when finetune.init_from cannot be read or does not fit
  config.model (an early, cheap check of the folder's config.json)."""
  path = config.finetune.init_from
  if not path:
    return
  from mmjax import interop   # pylint: disable=import-outside-toplevel
  hf = interop.model_config_from_pretrained(path)
  # Keys left out of config.model take the model's defaults (e.g. norm_position='pre' for
  # a BERT folder): compare those too.
  model = models.config_with_defaults(config.model)
  keys = ("name", "width", "depth", "num_heads", "mlp_dim", "vocab_size", "image_size",
          "patch_size", "channels", "norm_position", "activation", "layer_norm_eps",
          "type_vocab_size", "embed_norm", "causal")
  wrong = {k: (model[k], hf[k]) for k in keys if k in model and k in hf and model[k] != hf[k]}
  if wrong:
    detail = ", ".join(f"model.{k}={a!r} but the checkpoint has {b!r}"
                       for k, (a, b) in wrong.items())
    raise ConfigError(f"config.model does not match finetune.init_from={path!r}: {detail}. "
                      "Build config.model with interop.model_config_from_pretrained(path).")


def load_initial_params(config, params: Any, shardings: Any) -> Any:
  """`params` (a fresh init) with finetune.init_from's weights, placed by `shardings`."""
  from mmjax import interop   # pylint: disable=import-outside-toplevel
  path = config.finetune.init_from
  loaded, report = interop.import_into(path, models.config_with_defaults(config.model),
                                       params)
  interop.log_import_report(path, report)
  return jax.device_put(loaded, shardings)


def log_trainable(params: Any, finetune_config) -> tuple[int, int]:
  """Logs and returns (trainable, total) parameter counts."""
  total = models.param_count(params)
  trainable = trainable_fn(finetune_config)
  n = total if trainable is None else peft.count(params, trainable(params))
  logging.info("Trainable parameters: %s of %s (%.2f%%), finetune.mode=%s.", f"{n:,}",
               f"{total:,}", 100.0 * n / max(total, 1), finetune_config.mode)
  return n, total
