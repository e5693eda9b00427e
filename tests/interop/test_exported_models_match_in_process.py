"""--mode=export: the jax.export artifact and the SavedModel, reloaded, give the outputs
of the in-process model to 1e-5 at two batch sizes (the batch is polymorphic), for the
digits CNN (from a checkpoint) and a multimodal caption + audio classifier whose log-mel
front end runs inside the exported function. (The ViT export is measured in
docs/deployment.md: a test of it would add another ~10 s of compiles.)"""
import json
import logging
import os

import jax
import numpy as np

from configs.common import use_multimodal_digits
from mmjax import models
from mmjax.data import device_ops
from mmjax.evals import batched
from mmjax.interop import artifact, export, export_inputs
from mmjax.train import loop

BATCHES = (5, 1)


def _raw_batch(inputs: dict, n: int, seed: int = 0) -> dict:
  """Random host-pipeline examples for an export's inputs: uint8 pixels, token ids with
  a ragged mask, int16 audio, float pixels in [0, 1]."""
  rng = np.random.default_rng(seed)
  out = {}
  for name, spec in inputs.items():
    dims = spec["shape"][1:] if spec["shape"][0] is None else spec["shape"]
    shape, dtype = (n, *dims), spec["dtype"]
    if dtype == "uint8":
      out[name] = rng.integers(0, 256, shape).astype(dtype)
    elif dtype == "int16":
      out[name] = rng.integers(-20000, 20000, shape).astype(dtype)
    elif name.endswith("_mask"):
      out[name] = (np.arange(shape[1])[None] < rng.integers(3, shape[1], (n, 1))).astype(dtype)
    elif dtype == "int32":
      out[name] = rng.integers(0, 250, shape).astype(dtype)
    else:
      out[name] = rng.uniform(size=shape).astype(dtype)
  return out


def _reference_logits(model, variables, config, batch: dict) -> np.ndarray:
  """The in-process eval path: the device eval transform, then embed and encode (one jit:
  one compile)."""
  transform = device_ops.eval_transform(config.data)
  batch = transform(batch) if transform else batch
  logits = jax.jit(lambda v, b: model.apply(
      v, model.apply(v, b, method="embed", train=False), method="encode",
      train=False)["logits"])
  return np.asarray(logits(variables, batch))


def _saved_model_logits(directory: str, batch: dict) -> np.ndarray:
  import tensorflow as tf
  serve = tf.saved_model.load(os.path.join(directory, export.SAVED_MODEL)
                              ).signatures["serving_default"]
  return serve(**{k: tf.constant(v) for k, v in batch.items()})["logits"].numpy()


def _check_match(directory: str, inputs: dict, reference, saved_model: bool = True,
                 batches=BATCHES) -> None:
  """The reloaded artifacts (jax.export, and the SavedModel if `saved_model`) at
  `batches` (5 and 1: the first row) against the in-process `reference(batch) ->
  logits` of the batch of 5."""
  batch = _raw_batch(inputs, 5)
  want = reference(batch)
  reloaded = artifact.load_artifact(directory)
  for n in batches:
    rows = {k: v[:n] for k, v in batch.items()}
    np.testing.assert_allclose(reloaded(rows)["logits"], want[:n], atol=1e-5, rtol=1e-5)
    if saved_model:
      np.testing.assert_allclose(_saved_model_logits(directory, rows), want[:n],
                                 atol=1e-5, rtol=1e-5)
  softmax = np.exp(want - want.max(-1, keepdims=True))
  np.testing.assert_allclose(reloaded(batch)["probabilities"],
                             softmax / softmax.sum(-1, keepdims=True), atol=1e-6)


def test_cnn_checkpoint_export_reloads_and_matches_at_two_batch_sizes(tmp_path,
                                                                      digits_data_dir):
  from tests.conftest import tiny_vit_config
  config = tiny_vit_config(digits_data_dir)
  exp = loop.build_experiment(config, str(tmp_path), "train")
  try:
    # Random values of the state's shapes, no initialiser's: a match proves the export
    # holds the checkpoint's parameters (and compiling the initialiser would cost ~10 s).
    rng = np.random.default_rng(3)
    state = jax.tree.map(
        lambda a: jax.random.key(0) if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key)
        else (0.1 * rng.standard_normal(a.shape)).astype(a.dtype), exp.abstract_state)
    exp.checkpointer.save(3, state, 3)
  finally:
    exp.close()
  absl_level = logging.getLogger("absl").level
  manifest = export.export_checkpoint(config, str(tmp_path))
  # TensorFlow's SavedModel writer must not leave mmjax's INFO logs silenced.
  assert logging.getLogger("absl").level == absl_level
  directory = str(tmp_path / "export")
  assert manifest["checkpoint"]["step"] == 3
  assert manifest["inputs"] == {"image": {"shape": [None, 28, 28, 1], "dtype": "float32"}}
  assert manifest["class_names"] == [str(i) for i in range(10)]
  assert json.load(open(os.path.join(directory, export.MANIFEST))) == manifest
  variables = batched.model_variables(state.params, state.model_state)
  _check_match(directory, manifest["inputs"],
               lambda batch: _reference_logits(exp.model, variables, config, batch))


def test_multimodal_export_runs_the_log_mel_front_end_inside(digits_data_dir, tmp_path):
  """Caption + DTMF audio classifier: token ids + mask and raw int16 audio go in; the
  device op log_mel runs inside the exported function, lowered with a symbolic batch and
  run at batch 5. (The CNN test checks the SavedModel and a second batch size; here
  their compiles would triple this test's time.)"""
  from tests.conftest import tiny_vit_config
  config = tiny_vit_config(digits_data_dir)
  use_multimodal_digits(config, max_len=16)
  config.data.preprocess_eval = ("tokenize('caption', 'text', max_len=16)|"
                                 "keep('text', 'text_mask', 'audio', 'label')")
  config.data.device_preprocess_eval = "log_mel|drop('audio')"
  # One concat encoder, not two towers: half the ops, half the compile time.
  config.model = dict(name="multimodal", modalities=("text", "audio"), fusion="concat",
                      width=16, depth=1, num_heads=2, mlp_dim=32, vocab_size=260,
                      max_len=16, mel_bins=64, frames=28, spec_patch=(16, 4),
                      num_classes=10)
  described = export_inputs.describe(config.data)
  assert described.inputs["audio"] == {"shape": [2000], "dtype": "int16"}
  assert set(described.raw) == {"caption", "audio"}
  model = models.build_model(config.model)
  # Batch 5, as the reference below: the device transform compiles once.
  example = device_ops.eval_transform(config.data)(_raw_batch(described.inputs, 5))
  # Random values of the right shapes: no compile of the whole initialiser.
  rng = np.random.default_rng(0)
  variables = jax.tree.map(lambda s: (0.1 * rng.standard_normal(s.shape)).astype(s.dtype),
                           models.abstract_variables(model, example))
  export.write_artifacts(str(tmp_path), model=model, config=config, variables=variables,
                         described=described, saved_model=False)
  _check_match(str(tmp_path), described.inputs,
               lambda batch: _reference_logits(model, variables, config, batch),
               saved_model=False, batches=(5,))
