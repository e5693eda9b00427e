"""--mode=export refuses, before lowering or writing anything, a model whose inputs are
not all known: text left as strings, an input or a modality the eval examples lack, and
a workdir without a checkpoint."""
import os

import numpy as np
import pytest

from configs.common import use_multimodal_digits
from mmjax import models
from mmjax.errors import CheckpointError, ConfigError
from mmjax.interop import export, export_inputs
from tests.conftest import tiny_vit_config


def _export(config, directory):
  """write_artifacts with abstract variables: a refusal comes before any value is used."""
  described = export_inputs.describe(config.data)
  model = models.build_model(config.model)
  abstract = models.abstract_variables(model, {"image": np.zeros((1, 28, 28, 1), np.float32)}
                                       ) if config.model.name == "mnist_cnn" else None
  if abstract is None:
    from mmjax.data import device_ops
    example = {k: np.zeros((1, *v["shape"]), v["dtype"]) for k, v in described.inputs.items()}
    example = device_ops.eval_transform(config.data)(example)
    example["spectrogram"] = np.zeros((1, 64, 28), np.float32)   # so that init succeeds
    abstract = models.abstract_variables(model, example)
  export.write_artifacts(directory, model=model, config=config, variables=abstract,
                         described=described)


def test_text_left_as_strings_is_refused(digits_data_dir):
  config = tiny_vit_config(digits_data_dir)
  config.data.preprocess_eval = "keep('caption', 'label')"
  with pytest.raises(ConfigError, match="input 'caption' is still text.*Tokenize it"):
    export_inputs.describe(config.data)


def test_an_input_the_examples_lack_is_named(digits_data_dir, tmp_path):
  config = tiny_vit_config(digits_data_dir)
  config.data.preprocess_eval = "keep('audio', 'label')"
  with pytest.raises(ConfigError, match="reads input 'image'.*hold \\['audio'\\]"):
    _export(config, str(tmp_path / "export"))
  assert not os.path.exists(tmp_path / "export")


def test_a_modality_the_examples_lack_is_named_not_silently_dropped(digits_data_dir,
                                                                   tmp_path):
  config = tiny_vit_config(digits_data_dir)
  use_multimodal_digits(config, max_len=16, audio=False)
  config.model = dict(name="multimodal", modalities=("image", "text", "audio"), width=16,
                      depth=1, num_heads=2, mlp_dim=32, image_size=28, patch_size=7,
                      vocab_size=260, max_len=16, mel_bins=64, frames=28,
                      spec_patch=(16, 4), num_classes=10)
  with pytest.raises(ConfigError, match="the audio input 'spectrogram'.*log_mel"):
    _export(config, str(tmp_path / "export"))
  assert not os.path.exists(tmp_path / "export")


def test_a_workdir_without_checkpoints_is_refused(digits_data_dir, tmp_path):
  with pytest.raises(CheckpointError, match="checkpoint"):
    export.export_checkpoint(tiny_vit_config(digits_data_dir), str(tmp_path))


def test_a_dimension_that_is_not_fixed_is_refused():
  """Images of any size (a dataset of photos whose eval spec does not resize them)."""
  import tensorflow as tf
  specs = {"image": tf.TensorSpec([None, None, 3], tf.uint8), "label": tf.TensorSpec([], tf.int64)}
  with pytest.raises(ConfigError, match=r"'image' has shape \[None, None, 3\].*resize\(H\)"):
    export_inputs.model_inputs(specs, "keep('image', 'label')")
  assert export_inputs.model_inputs({"image": tf.TensorSpec([8, 8, 3], tf.uint8),
                                     "ids": tf.TensorSpec([4], tf.int64)}, "") == {
      "image": {"shape": [8, 8, 3], "dtype": "uint8"}, "ids": {"shape": [4], "dtype": "int32"}}


def test_an_unknown_platform_is_refused(digits_data_dir, tmp_path):
  config = tiny_vit_config(digits_data_dir)
  config.export.platforms = ("cpu", "gpu")
  with pytest.raises(ConfigError, match="export.platforms.*'gpu'.*cuda"):
    export.export_checkpoint(config, str(tmp_path))
