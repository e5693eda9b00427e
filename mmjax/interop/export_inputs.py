"""What an exported model takes, and how raw examples become it (TensorFlow: host side).

An export's function starts where the host pipeline ends: its inputs are the examples of
`data.preprocess_eval` (uint8 pixels, token ids + mask, int16 waveforms, ...), and the
device ops (`data.device_preprocess_eval`) run inside it. This module finds those inputs
from the dataset's stored features by tracing the host spec (no data is read), refuses
inputs that are not fully known, and replays the host spec on raw examples a user has
(a decoded PNG, a line of text, a WAV's samples) for `mmjax.predict`.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from mmjax.errors import ConfigError

# Keys of the host examples that are not model inputs.
NOT_INPUTS = ("label", "mask")
_FIX = ("Make every model input a fixed-shape array in data.preprocess_eval (e.g. "
        "resize(H) or center_crop(H) for images, tokenize(..., max_len=N) for text, "
        "audio_fit(N) for audio), then export again.")


@dataclasses.dataclass(frozen=True)
class ExportInputs:
  """inputs: {name: {'shape': [dims without batch], 'dtype'}} of the exported function;
  raw: {stored feature: {'shape', 'dtype', 'kind'}} that the host spec reads to make
  them (kind: image | text | audio | array); class_names: the label's names or None."""
  inputs: dict[str, dict[str, Any]]
  raw: dict[str, dict[str, Any]]
  class_names: tuple[str, ...] | None


def _kind(shape: Sequence, dtype: str) -> str:
  if dtype == "string":
    return "text"
  if dtype == "uint8" and len(shape) == 3:
    return "image"
  if dtype in ("int16", "float32") and len(shape) in (1, 2):
    return "audio"
  return "array"


def _raw_specs(features: dict) -> dict:
  import tensorflow as tf
  return {k: tf.TensorSpec(v.shape, v.tf_dtype) for k, v in features.items()}


def _trace(preprocess, specs: dict) -> dict:
  """The host spec's output {key: TensorSpec} for examples shaped like `specs`."""
  import tensorflow as tf
  fn = tf.function(lambda example: preprocess(example, tf.constant([0, 0], tf.int64)),
                   autograph=False)
  out = fn.get_concrete_function(specs).structured_outputs
  return {k: tf.TensorSpec(v.shape, v.dtype) for k, v in out.items()}


def model_inputs(specs: dict, host_spec: str) -> dict[str, dict[str, Any]]:
  """The host spec's output {key: tf.TensorSpec} -> the export's inputs {name: {'shape',
  'dtype'}} (label and mask left out; int64 as int32, as the pipeline casts). Raises
  ConfigError for a string input, a dimension that is not fixed, or no input at all."""
  inputs = {}
  for key, spec in specs.items():
    if key in NOT_INPUTS:
      continue
    if spec.dtype.name == "string":
      raise ConfigError(
          f"Cannot export: model input {key!r} is still text (a string) after "
          f"data.preprocess_eval={host_spec!r}, so its shape and dtype are unknown. "
          f"Tokenize it there (tokenize({key!r}, 'text', max_len=N)) or drop it with "
          "keep(...).")
    dims = spec.shape.as_list()
    if None in dims:
      raise ConfigError(
          f"Cannot export: model input {key!r} has shape {dims} after "
          f"data.preprocess_eval; the None dimensions are not known, and only the batch "
          f"may vary in an export. {_FIX}")
    dtype = spec.dtype.name
    inputs[key] = {"shape": dims, "dtype": "int32" if dtype == "int64" else dtype}
  if not inputs:
    raise ConfigError(f"Cannot export: data.preprocess_eval={host_spec!r} leaves no model "
                      "input (only label/mask). Keep the inputs there.")
  return inputs


def describe(data_config: Any) -> ExportInputs:
  """The exported function's inputs for `data_config` (its eval host spec over the
  dataset's stored features), the raw features they come from, and the class names.
  Raises ConfigError when an input is a string or has a dimension that is not fixed."""
  from mmjax.data import ops, pipeline
  preprocess = ops.build_preprocess_fn(data_config.preprocess_eval)
  info = pipeline.get_builder(data_config).info
  stored = info.features.get_tensor_info()
  specs = _raw_specs(stored)
  out = _trace(preprocess, specs)
  inputs = model_inputs(out, data_config.preprocess_eval)
  raw = {}
  for key in stored:
    if key in NOT_INPUTS:
      continue
    try:
      _trace(preprocess, {k: v for k, v in specs.items() if k != key})
    except (ConfigError, KeyError):
      t = stored[key]
      dims = [d if d is None else int(d) for d in t.shape]
      dtype = t.tf_dtype.name
      raw[key] = {"shape": dims, "dtype": dtype, "kind": _kind(dims, dtype)}
  label = info.features["label"] if "label" in info.features.keys() else None
  names = tuple(label.names) if hasattr(label, "names") else None
  return ExportInputs(inputs=inputs, raw=raw, class_names=names)


def host_batch(raw_examples: Sequence[dict], host_spec: str, raw: dict,
               inputs: dict) -> dict[str, np.ndarray]:
  """Raw examples [{stored feature: value}] -> the model inputs {name: [N, ...]} by the
  host spec of the export (deterministic: eval specs are). Features the spec needs but an
  example lacks are a ConfigError; stored features it does not read are filled with
  zeros of their kind (e.g. the label)."""
  import tensorflow as tf
  from mmjax.data import ops
  preprocess = ops.build_preprocess_fn(host_spec)
  rows = []
  for example in raw_examples:
    missing = sorted(set(raw) - set(example))
    if missing:
      raise ConfigError(f"This model needs the raw feature(s) {missing} per example, "
                        f"got {sorted(example)}.")
    tensors = {k: tf.constant(v, dtype=raw[k]["dtype"]) for k, v in example.items()}
    tensors.setdefault("label", tf.constant(0, tf.int64))
    out = preprocess(tensors, tf.constant([0, 0], tf.int64))
    rows.append({k: np.asarray(out[k]) for k in inputs})
  return {k: np.stack([r[k] for r in rows]).astype(inputs[k]["dtype"]) for k in inputs}
