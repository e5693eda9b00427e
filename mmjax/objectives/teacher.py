"""A frozen teacher for knowledge distillation: a model and its variables, read from an
mmjax run (its workdir's config.json and newest checkpoint) or from a Hugging Face folder
(config.json + safetensors, through `mmjax.interop`).

    teacher = load_teacher(workdir=PATH)            # or hf_folder=PATH
    logits = teacher.logits(batch)                  # [B, K], no gradient

Every check that can fail (missing files, no checkpoint, a model without class logits,
a checkpoint that does not fit its config) fails here, before a student step runs.
"""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import CheckpointError, ConfigError


@dataclasses.dataclass(frozen=True, eq=False)
class Teacher:
  """A frozen classifier: `model` (unbound flax module), its `variables` ({'params', ...}
  on the devices), `num_classes` and where it came from (`source`, for messages)."""
  model: nn.Module
  variables: Mapping[str, Any]
  num_classes: int
  source: str

  def logits(self, batch: Mapping[str, jax.Array]) -> jax.Array:
    """The teacher's class logits on `batch` (eval mode, no dropout) -> [B, K] float32,
    gradient stopped. Keys starting with '_' (objective-private) are not model input."""
    model_batch = {k: v for k, v in batch.items() if not k.startswith("_")}
    out = self.model.apply(dict(self.variables), model_batch, train=False)
    return jax.lax.stop_gradient(jnp.asarray(out["logits"], jnp.float32))


def load_teacher(*, workdir: str = "", config: str = "", hf_folder: str = "") -> Teacher:
  """The teacher of `workdir` (an mmjax run; its model config from `config`, a config
  file 'PATH[:ARG]', else WORKDIR/config.json) or of `hf_folder` (an imported Hugging
  Face classifier). Exactly one of workdir / hf_folder.

  Raises:
    ConfigError: neither or both sources, a missing config, a model without class logits.
    CheckpointError: no checkpoint in the workdir, or one that does not fit the config.
  """
  if bool(workdir) == bool(hf_folder):
    raise ConfigError("Objective 'distillation' needs exactly one teacher: "
                      "objective.teacher_workdir (an mmjax run's --workdir) or "
                      "objective.teacher_hf (a Hugging Face folder); got "
                      f"teacher_workdir={workdir!r}, teacher_hf={hf_folder!r}.")
  if hf_folder:
    return _from_hf_folder(hf_folder)
  return _from_workdir(workdir, config)


def _require_logits(model_config: Mapping[str, Any], source: str) -> int:
  classes = int(model_config.get("num_classes", 0) or 0)
  if classes < 1:
    raise ConfigError(f"The teacher from {source} has no class logits (its "
                      "model.num_classes is 0); distillation needs a classifier teacher.")
  return classes


def _from_hf_folder(folder: str) -> Teacher:
  from mmjax import interop   # pylint: disable=import-outside-toplevel
  if not os.path.isfile(os.path.join(folder, "config.json")):
    raise ConfigError(f"objective.teacher_hf={folder!r} holds no config.json: give a "
                      "Hugging Face folder (config.json + model.safetensors).")
  classes = _require_logits(interop.model_config_from_pretrained(folder), folder)
  model, params = interop.load_pretrained(folder)
  return Teacher(model, {"params": params}, classes, folder)


def _model_config(workdir: str, config: str) -> dict:
  from mmjax import config as config_lib   # pylint: disable=import-outside-toplevel
  if config:
    path, _, arg = config.partition(":")
    return config_lib.load_config_file(path, arg or None).model.to_dict()
  path = os.path.join(workdir, "config.json")
  if not os.path.isfile(path):
    raise ConfigError(f"objective.teacher_workdir={workdir!r} holds no config.json (an "
                      "mmjax run writes one when it starts); train the teacher there "
                      "first, or name its config with objective.teacher_config=PATH[:ARG].")
  with open(path) as f:
    return dict(json.load(f)["model"])


def _from_workdir(workdir: str, config: str) -> Teacher:
  from mmjax import models   # pylint: disable=import-outside-toplevel
  workdir = os.path.abspath(os.path.expanduser(workdir))
  directory = os.path.join(workdir, "checkpoints")
  steps = sorted(int(d) for d in os.listdir(directory) if d.isdigit()) \
      if os.path.isdir(directory) else []
  if not steps:
    raise CheckpointError(
        f"No teacher checkpoint in {directory}. Train the teacher first (python -m "
        f"mmjax.main --config=TEACHER_CONFIG --workdir={workdir}) or fix "
        "objective.teacher_workdir.")
  model_config = _model_config(workdir, config)
  classes = _require_logits(model_config, workdir)
  model = models.build_model(model_config)
  variables = _restore_variables(directory, steps[-1])
  return Teacher(model, variables, classes, f"{workdir} (step {steps[-1]})")


def _restore_variables(directory: str, step: int) -> dict:
  """{'params', 'batch_stats'?} of the checkpoint at `step` (its optimizer state is
  read too and dropped)."""
  import orbax.checkpoint as ocp   # pylint: disable=import-outside-toplevel
  from mmjax.train import checkpoint as checkpoint_lib   # pylint: disable=import-outside-toplevel
  step_dir = os.path.join(directory, str(step))
  changed = checkpoint_lib.verify_checksums(step_dir)
  if changed is not None:
    raise CheckpointError(f"The teacher checkpoint {step_dir} is damaged ({changed}); "
                          "retrain the teacher or point at an intact run.")
  try:
    state = ocp.StandardCheckpointer().restore(os.path.join(step_dir, "state"))
  except Exception as e:   # orbax raises many kinds for unreadable files
    raise CheckpointError(f"Cannot read the teacher checkpoint {step_dir} "
                          f"({type(e).__name__}: {str(e)[:200]}).") from None
  variables = {"params": state["params"], **(state.get("model_state") or {})}
  variables = {k: v for k, v in variables.items() if k in ("params", "batch_stats")}
  return jax.tree.map(jnp.asarray, variables)


def check_fits(teacher: Teacher, batch: Mapping[str, Any]) -> None:
  """CheckpointError when the teacher's variables are not the shapes its model makes for
  `batch` (arrays or ShapeDtypeStructs; abstract, so cheap at trace time)."""
  from mmjax import models   # pylint: disable=import-outside-toplevel
  from mmjax.tree import path_str   # pylint: disable=import-outside-toplevel
  shapes = lambda tree: {path_str(p): tuple(x.shape)
                         for p, x in jax.tree_util.tree_leaves_with_path(tree)}
  one = jax.tree.map(lambda x: jax.ShapeDtypeStruct((1, *x.shape[1:]), x.dtype), batch)
  made = models.abstract_variables(teacher.model, one)
  want = shapes({k: v for k, v in made.items() if k in teacher.variables})
  have = shapes(teacher.variables)
  if want != have:
    differ = sorted(set(want) ^ set(have)) or [k for k in want if want[k] != have[k]]
    raise CheckpointError(f"The teacher checkpoint of {teacher.source} does not fit its "
                          f"model config (e.g. {differ[:3]}); name the config that trained "
                          "it with objective.teacher_config=PATH[:ARG].")
