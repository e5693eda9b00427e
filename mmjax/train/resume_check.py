"""A resumed run must be the run its checkpoints belong to.

The checkpoint stores the state and the data position, but what they mean depends on the
config: the dataset and its preprocessing, the batch size and seed (the data position is
counted in batches of that size, in that order), the model, objective, adversarial method
and optimizer. The config of the run that wrote the workdir is its config.json; a resume
whose config differs in any of those keys is refused, naming them, unless
train.allow_config_change=True (then config.json is updated and the old one kept as
config.step_<N>.json). Eval settings, logging, checkpointing cadence, the mesh and
total_steps may change freely.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import ml_collections
from absl import logging

from mmjax.errors import ConfigError

# What defines the data stream and the optimisation.
DEFINING_SECTIONS = ("data", "model", "objective", "adversarial", "optim", "finetune",
                     "privacy")
DEFINING_TRAIN_KEYS = ("batch_size", "seed")
# Keys of those sections that change neither the training stream nor its updates.
FREE_KEYS = ("data.data_dir", "data.download", "data.prefetch", "data.eval_split",
             "data.preprocess_eval", "data.device_preprocess_eval",
             "adversarial.guard_every", "adversarial.guard_start", "adversarial.guard_steps",
             "adversarial.guard_step_size", "adversarial.guard_max_drop",
             "adversarial.guard_patience", "privacy.epsilon_budget")


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
  if isinstance(tree, dict):
    out = {}
    for k, v in tree.items():
      out.update(_flat(v, f"{prefix}{k}."))
    return out or {prefix[:-1]: {}}
  return {prefix[:-1]: tree}


def defining_keys(config: dict) -> dict[str, Any]:
  """{dotted key: JSON value} of the keys that define a run, from a config dict."""
  picked = {s: config.get(s, {}) for s in DEFINING_SECTIONS}
  if not picked["privacy"].get("enabled", False):
    # Off, its settings mean nothing (and configs from before it had none).
    del picked["privacy"]
  picked["train"] = {k: config.get("train", {}).get(k) for k in DEFINING_TRAIN_KEYS}
  flat = _flat(json.loads(json.dumps(picked, default=str)))
  return {k: v for k, v in flat.items() if k not in FREE_KEYS}


def check_resume(workdir: str, config: ml_collections.ConfigDict, step: int) -> None:
  """ConfigError when `config` differs from the workdir's config.json in a defining key
  (unless train.allow_config_change); with that switch, config.json is updated."""
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    if jax.process_index() != 0:   # a host without the shared workdir: process 0 checks
      return
    logging.warning("%s is missing: cannot check that this resume uses the config that "
                    "wrote the checkpoints.", path)
    return
  with open(path) as f:
    before = defining_keys(json.load(f))
  now = defining_keys(json.loads(config.to_json_best_effort()))
  changed = sorted(k for k in set(before) | set(now) if before.get(k) != now.get(k))
  if not changed:
    return
  listed = "; ".join(f"{k}: {before.get(k, '(absent)')!r} -> {now.get(k, '(absent)')!r}"
                     for k in changed[:8])
  more = f" (and {len(changed) - 8} more)" if len(changed) > 8 else ""
  if not config.train.allow_config_change:
    raise ConfigError(
        f"This workdir was trained to step {step} with another config: {listed}{more}. "
        "Resuming would continue its checkpoints under different data or optimisation "
        "(e.g. the data position counts batches of the old size). Use the config that "
        "wrote it, a new --workdir, or, if the change is what you want, "
        "--config.train.allow_config_change=True.")
  kept = os.path.join(workdir, f"config.step_{step}.json")
  if jax.process_index() == 0:
    os.replace(path, kept)
    with open(path, "w") as f:
      f.write(config.to_json_best_effort(indent=2))
  logging.warning("Resuming at step %d with a changed config (train.allow_config_change): "
                  "%s%s. config.json now holds this config; the old one is %s.", step,
                  listed, more, kept)
