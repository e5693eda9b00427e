"""Every check of a config that can run before compute is spent: the trainer's own
sections here, and each component's options by that component (the data ops, in-memory
data, the evaluators, the overfitting guard). The model, objective and adversarial
method check theirs when they are built, also before any compute."""
from __future__ import annotations

import jax
import ml_collections

from mmjax import config as config_lib
from mmjax.errors import ConfigError


def check_config(config: ml_collections.ConfigDict, mode: str = "train",
                 batch_shards: int | None = None) -> None:
  """ConfigError for values and combinations that would otherwise fail after compute is
  spent. `batch_shards`: how many ways the mesh splits the batch (default: every
  device)."""
  if mode not in config_lib.MODES:
    raise ConfigError(f"Unknown --mode={mode!r}. Choose one of: "
                      f"{', '.join(config_lib.MODES)}.")
  config_lib.check_removed(key for key in config_lib.REMOVED_KEYS
                           if key.split(".")[-1] in config.get(key.split(".")[0], {}))
  n_dev = batch_shards or jax.device_count()
  check_train(config, n_dev, batch_shards is not None)
  from mmjax.data import device_ops, in_memory   # no TF: names, arguments, random ops
  for split in ("train", "eval"):
    device_ops.device_fn(config.data, split)
  in_memory.check_config(config.data)
  from mmjax.evals import evaluators
  evaluators.check_config(config, n_dev)
  from mmjax.train import overfitting_guard
  overfitting_guard.check_config(config)
  from mmjax.privacy import plan as privacy_plan   # no dp-accounting unless enabled
  privacy_plan.check_config(config)
  from mmjax.quant import qat
  qat.check_config(config)
  from mmjax.train import writers   # W&B / MLflow imported only to prove they are there
  writers.check_config(config, installed=mode in ("train", "eval", "explain", "quantize"))


def check_train(config: ml_collections.ConfigDict, n_dev: int, mesh_split: bool) -> None:
  """The train, optim sections: integers, batch splits over devices and accumulation."""
  t = config.train
  for key in ("total_steps", "batch_size", "log_every", "eval_every", "checkpoint_every",
              "keep_checkpoints", "seed"):
    if not isinstance(t[key], int) or isinstance(t[key], bool):
      raise ConfigError(f"train.{key} must be an integer, got {t[key]!r}.")
    if t[key] < 0 or (key in ("total_steps", "batch_size") and t[key] == 0):
      raise ConfigError(f"train.{key} must be positive, got {t[key]}.")
  n_proc = jax.process_count()
  devices = "devices the mesh splits the batch over" if mesh_split else "devices"
  if t.batch_size % n_dev:
    raise ConfigError(
        f"train.batch_size={t.batch_size} is not divisible by the {n_dev} {devices}; "
        f"use a multiple of {n_dev}, e.g. --config.train.batch_size="
        f"{max(n_dev, t.batch_size // n_dev * n_dev)}.")
  accum = config.optim.grad_accum_steps
  if accum < 1 or (t.batch_size // n_proc) % accum or (t.batch_size // accum) % n_dev:
    raise ConfigError(
        f"optim.grad_accum_steps={accum} must be >= 1 and split train.batch_size="
        f"{t.batch_size} into equal micro-batches divisible by the {n_dev} {devices}.")
  if not 0.0 <= config.optim.ema_decay < 1.0:
    raise ConfigError(f"optim.ema_decay={config.optim.ema_decay} must be in [0, 1).")
