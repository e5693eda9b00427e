"""`audio_fit`: variable-length waveforms cut or zero-padded to one length."""
import numpy as np
import pytest
import tensorflow as tf

from mmjax.data import ops
from mmjax.errors import ConfigError


def run(spec, example):
  fn = ops.build_preprocess_fn(spec)
  example = {k: tf.constant(v) for k, v in example.items()}
  return {k: v.numpy() for k, v in fn(example, tf.constant([1, 2], tf.int64)).items()}


def test_short_clip_is_zero_padded_at_the_end_keeping_dtype():
  wav = np.arange(1, 6, dtype=np.int16)
  out = run("audio_fit(8)", {"audio": wav})["audio"]
  assert out.dtype == np.int16
  np.testing.assert_array_equal(out, [1, 2, 3, 4, 5, 0, 0, 0])


def test_long_clip_keeps_its_first_samples():
  wav = np.linspace(-1, 1, 10).astype(np.float32)
  np.testing.assert_array_equal(run("audio_fit(4)", {"audio": wav})["audio"], wav[:4])
  np.testing.assert_array_equal(run("audio_fit(10)", {"audio": wav})["audio"], wav)


def test_multichannel_pads_the_time_axis_only():
  wav = np.ones((3, 2), np.float32)
  out = run("audio_fit(5)", {"audio": wav})["audio"]
  assert out.shape == (5, 2)
  np.testing.assert_array_equal(out[3:], 0.0)


def test_static_shape_so_batches_stack():
  fn = ops.build_preprocess_fn("audio_fit(6)")
  ds = tf.data.Dataset.from_generator(
      lambda: iter([np.ones(3, np.int16), np.ones(9, np.int16)]),
      output_signature=tf.TensorSpec([None], tf.int16))
  ds = ds.map(lambda w: fn({"audio": w}, tf.constant([0, 0], tf.int64))["audio"])
  assert ds.element_spec.shape.as_list() == [6]
  assert [len(x) for x in ds.as_numpy_iterator()] == [6, 6]


def test_ast_frame_count_from_16khz_clip():
  # 1 s at 16 kHz padded to 20,720 samples: 25 ms windows every 10 ms give 128 frames.
  wav = np.zeros(16000, np.int16)
  spec = run("audio_fit(20720)|log_mel(sample_rate=16000, frame_length=400, "
             "frame_step=160, fft_length=512, num_mel_bins=128)", {"audio": wav})
  assert spec["spectrogram"].shape == (128, 128)


@pytest.mark.parametrize("spec", ["audio_fit(0)", "audio_fit(2.5)", "audio_fit(True)"])
def test_bad_length_is_a_config_error(spec):
  with pytest.raises(ConfigError, match="'audio_fit': length must be a positive int"):
    ops.build_preprocess_fn(spec)
