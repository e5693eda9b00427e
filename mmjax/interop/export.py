"""--mode=export: a checkpoint as artifacts other systems run (docs/deployment.md).

    WORKDIR/export/
      model.jax_export   serialized jax.export.Exported (StableHLO), batch-polymorphic
      saved_model/       TensorFlow SavedModel (jax2tf, native serialization), same function
      manifest.json      inputs, outputs, class names, preprocessing, versions, checksums

The exported function is the model in eval mode *with* the eval device preprocessing
(`data.device_preprocess_eval`: to_float, log_mel, ...) in front of it: it takes the
host pipeline's examples (uint8 / float pixels, token ids + mask, raw int16 audio) with
any batch size and returns 'logits' and 'probabilities' [B, K] for a classifier, else
the model's per-example vectors [B, D] (pooled features, projections).
"""
from __future__ import annotations

import datetime
import json
import logging as std_logging
import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

import mmjax
from mmjax.errors import CheckpointError, ConfigError

ARTIFACT = "model.jax_export"
SAVED_MODEL = "saved_model"
MANIFEST = "manifest.json"
FORMAT = "mmjax-export/1"
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")   # jax.export's lowering platforms


def check_config(config) -> None:
  """config.export, checked before anything is read or lowered."""
  unknown = [p for p in config.export.platforms if p not in PLATFORMS]
  if unknown:
    raise ConfigError(f"export.platforms={tuple(config.export.platforms)}: {unknown} "
                      f"unknown; choose from {PLATFORMS} (NVIDIA GPUs are 'cuda').")


def select_outputs(outputs: dict) -> dict[str, jax.Array]:
  """encode's outputs -> what an export returns: {'logits', 'probabilities'} [B, K] for
  a classifier, else every per-example vector [B, D] (pooled, projections)."""
  if "logits" in outputs:
    logits = outputs["logits"].astype(jnp.float32)
    return {"logits": logits, "probabilities": jax.nn.softmax(logits, axis=-1)}
  vectors = {k: v.astype(jnp.float32) for k, v in outputs.items()
             if v.ndim == 2 and jnp.issubdtype(v.dtype, jnp.floating)}
  if not vectors:
    raise ConfigError(f"Cannot export: the model returns no per-example output (it "
                      f"returns {sorted(outputs)}); set model.num_classes > 0 for a "
                      "classifier.")
  return vectors


def predict_fn(model, config) -> Callable[[dict, dict], dict]:
  """(variables, inputs {name: [B, ...]}) -> outputs: device eval preprocessing, then
  the model's embed and encode in eval mode, then `select_outputs`."""
  from mmjax.data import device_ops
  device = device_ops.device_fn(config.data, "eval")

  def apply(variables, inputs):
    batch = device(dict(inputs), jax.random.key(0)) if device else dict(inputs)
    embedded = model.apply(variables, batch, method="embed", train=False)
    return select_outputs(model.apply(variables, embedded, method="encode", train=False))
  return apply


def _missing_input_error(key: str, inputs: dict, what: str) -> ConfigError:
  return ConfigError(
      f"Cannot export: the model reads {what} {key!r}, which the eval examples do not "
      f"hold (they hold {sorted(inputs)} after data.preprocess_eval and "
      f"data.device_preprocess_eval). Keep or make {key!r} there (e.g. keep(..., "
      f"{key!r}) in data.preprocess_eval, log_mel in data.device_preprocess_eval for a "
      "spectrogram), or drop that modality from model.modalities.")


def check_inputs_known(model, config, apply, variables, inputs: dict) -> dict:
  """Traces `apply` abstractly on `inputs` ({name: {'shape', 'dtype'}}): a model input
  that the examples lack is one ConfigError naming it, before anything is lowered (a
  multimodal model skips absent modalities in training, so each of model.modalities is
  required here: an export must not silently drop one). Returns the outputs' {name:
  {'shape', 'dtype'}} (batch dimension left out)."""
  from mmjax.data import device_ops
  from mmjax.models import multimodal
  abstract = {k: jax.ShapeDtypeStruct((2, *v["shape"]), v["dtype"]) for k, v in inputs.items()}
  device = device_ops.device_fn(config.data, "eval")
  if isinstance(model, multimodal.MultimodalTransformer):
    after = (jax.eval_shape(lambda x: device(x, jax.random.key(0)), abstract) if device
             else abstract)
    for modality in model.modalities:
      if multimodal.INPUT_KEY[modality] not in after:
        raise _missing_input_error(multimodal.INPUT_KEY[modality], after,
                                   f"the {modality} input")
  try:
    out = jax.eval_shape(apply, variables, abstract)
  except KeyError as e:
    raise _missing_input_error(e.args[0], inputs, "input") from None
  return {k: {"shape": list(v.shape[1:]), "dtype": np.dtype(v.dtype).name}
          for k, v in out.items()}


def _symbolic_args(inputs: dict) -> dict:
  """{name: ShapeDtypeStruct((b, ...))}: one symbolic batch `b` shared by every input."""
  b, = jax.export.symbolic_shape("b")
  return {k: jax.ShapeDtypeStruct((b, *v["shape"]), v["dtype"]) for k, v in inputs.items()}


def export_stablehlo(apply, variables, inputs: dict, platforms=None) -> bytes:
  """The serialized jax.export of `apply` with `variables` baked in as constants,
  polymorphic in the batch."""
  fn = jax.jit(lambda x: apply(variables, x))
  exported = jax.export.export(fn, platforms=platforms)(_symbolic_args(inputs))
  return bytes(exported.serialize())


def save_saved_model(apply, variables, inputs: dict, directory: str, platforms=None
                     ) -> None:
  """A TensorFlow SavedModel of `apply` (jax2tf, native serialization), parameters as
  tf.Variables; signature 'serving_default' takes the inputs by name with any batch."""
  import tensorflow as tf
  from jax.experimental import jax2tf
  names = list(inputs)
  poly = {k: "(b, ...)" for k in names}
  tf_fn = jax2tf.convert(apply, polymorphic_shapes=[None, poly], with_gradient=False,
                         native_serialization_platforms=platforms)
  module = tf.Module()
  module.variables_tree = tf.nest.map_structure(
      lambda x: tf.Variable(np.asarray(x), trainable=False), variables)
  specs = [tf.TensorSpec([None, *inputs[k]["shape"]], inputs[k]["dtype"], name=k)
           for k in names]
  module.serve = tf.function(
      lambda *args: tf_fn(module.variables_tree, dict(zip(names, args))),
      input_signature=specs, autograph=False)
  # TensorFlow's SavedModel writer sets the `absl` logger to WARNING as a side effect,
  # which would silence mmjax's INFO logs for the rest of an in-process caller.
  absl_logger = std_logging.getLogger("absl")
  level = absl_logger.level
  try:
    tf.saved_model.save(module, directory,
                        signatures={"serving_default": module.serve.get_concrete_function()})
  finally:
    absl_logger.setLevel(level)


def file_checksums(directory: str) -> dict[str, dict]:
  """{relative path: {'sha256', 'bytes'}} of every file under `directory` but the
  manifest (sorted: the manifest is reproducible)."""
  from mmjax.train import checkpoint   # the checkpoints' own sha256 walk
  sums = checkpoint.file_checksums(directory)
  sums.pop(MANIFEST, None)
  return {rel: {"sha256": digest, "bytes": os.path.getsize(os.path.join(directory, rel))}
          for rel, digest in sums.items()}


def write_artifacts(directory: str, *, model, config, variables, described,
                    saved_model: bool = True, extra: dict | None = None) -> dict:
  """Exports `model` with `variables` for `config`'s eval inputs into `directory`:
  model.jax_export, saved_model/ (unless saved_model=False) and manifest.json. Checks
  that every input is known before lowering. Returns the manifest."""
  apply = predict_fn(model, config)
  outputs = check_inputs_known(model, config, apply, variables, described.inputs)
  platforms = tuple(config.export.platforms) or None
  os.makedirs(directory, exist_ok=True)
  with open(os.path.join(directory, ARTIFACT), "wb") as f:
    f.write(export_stablehlo(apply, variables, described.inputs, platforms))
  if saved_model:
    save_saved_model(apply, variables, described.inputs,
                     os.path.join(directory, SAVED_MODEL), platforms)
  manifest = {
      "format": FORMAT,
      "inputs": {k: {"shape": [None, *v["shape"]], "dtype": v["dtype"]}
                 for k, v in described.inputs.items()},
      "outputs": {k: {"shape": [None, *v["shape"]], "dtype": v["dtype"]}
                  for k, v in outputs.items()},
      "class_names": list(described.class_names or ()) if "logits" in outputs else [],
      "preprocessing": {
          "host": config.data.preprocess_eval,
          "in_function": config.data.device_preprocess_eval,
          "raw_features": described.raw,
          "dataset": config.data.name},
      "model": config.model.name,
      "platforms": list(platforms or (jax.default_backend(),)),
      "mmjax_version": mmjax.__version__, "jax_version": jax.__version__,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      **(extra or {}),
      "files": file_checksums(directory),
  }
  with open(os.path.join(directory, MANIFEST), "w") as f:
    json.dump(manifest, f, indent=2)
  return manifest


def export_checkpoint(config, workdir: str) -> dict:
  """--mode=export: the newest checkpoint in `workdir` (EMA parameters when training kept
  them, as evaluators use) -> WORKDIR/export/ (or config.export.dir). Returns the
  manifest."""
  from mmjax.evals import batched
  from mmjax.interop import export_inputs
  from mmjax.train import checkpoint as checkpoint_lib, loop
  check_config(config)
  checkpoint_lib.require_checkpoints(workdir)
  described = export_inputs.describe(config.data)   # unknown inputs: refused here
  exp = loop.build_experiment(config, workdir, "eval")
  try:
    restored = exp.checkpointer.restore_latest(exp.abstract_state)
    if restored is None:
      raise CheckpointError(f"No readable checkpoint in {exp.checkpointer.directory} to "
                            "export. Train first with --mode=train and the same --workdir.")
    state, _, step = restored
  finally:
    exp.close()
  use_ema = state.ema_params is not None
  variables = jax.device_get(batched.model_variables(
      state.ema_params if use_ema else state.params, state.model_state))
  directory = config.export.dir or os.path.join(exp.workdir, "export")
  manifest = write_artifacts(
      directory, model=exp.model, config=config, variables=variables, described=described,
      saved_model=config.export.saved_model,
      extra={"checkpoint": {"workdir": exp.workdir, "step": int(step),
                            "parameters": "ema" if use_ema else "live"}})
  sizes = {k: v["bytes"] for k, v in manifest["files"].items()}
  logging.info("Exported step %d to %s: %s (%s bytes StableHLO, %s bytes SavedModel).",
               step, directory, ", ".join(manifest["inputs"]), sizes[ARTIFACT],
               sum(v for k, v in sizes.items() if k.startswith(SAVED_MODEL)))
  return manifest
