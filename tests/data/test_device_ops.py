"""Device preprocessing ops: equal to the host ops' maths, their randomness per example
and per batch index (exact resume), spec errors, and their place in the iterators."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow as tf

import mmjax.data as data
from mmjax import config as config_lib
from mmjax.train import checks
from mmjax.data import op_common, device_ops, ops
from mmjax.errors import ConfigError

KEY = jax.random.key(7)


def run(spec, batch, key=KEY):
  fn = device_ops.build_device_fn(spec, config_key="data.device_preprocess_train")
  return {k: np.asarray(v) for k, v in jax.jit(fn)(batch, key).items()}


def pcm(batch=3, samples=2000, seed=0):
  return (np.random.default_rng(seed).standard_normal((batch, samples)) * 3000
          ).astype(np.int16)


# --------------------------------------------------------------- the host op's maths
@pytest.mark.parametrize("bins, fft, rate, lower, upper", [
    (64, 256, 8000, 20.0, 4000.0), (128, 512, 16000, 0.0, 8000.0), (40, 400, 16000, 125.0,
                                                                     3800.0)])
def test_mel_filterbank_is_tensorflows(bins, fft, rate, lower, upper):
  ours = op_common.mel_weight_matrix(num_mel_bins=bins, fft_length=fft, sample_rate=rate,
                                        lower_hz=lower, upper_hz=upper)
  tfs = tf.signal.linear_to_mel_weight_matrix(bins, fft // 2 + 1, rate, lower, upper)
  np.testing.assert_allclose(ours, tfs.numpy(), atol=3e-5)


@pytest.mark.parametrize("spec", ["log_mel", "log_mel(frame_step=32, num_mel_bins=32)",
                                  "log_mel(sample_rate=16000, frame_length=400, "
                                  "frame_step=160, fft_length=512, num_mel_bins=128)"])
def test_log_mel_equals_the_host_op(spec):
  wav = pcm()
  host_fn = ops.build_preprocess_fn(spec)
  host = np.stack([host_fn({"audio": tf.constant(w)}, tf.constant([0, 0], tf.int64))
                   ["spectrogram"].numpy() for w in wav])
  out = run(spec, {"audio": jnp.asarray(wav)})
  assert set(out) == {"audio", "spectrogram"} and out["spectrogram"].dtype == np.float32
  assert out["spectrogram"].shape == host.shape
  np.testing.assert_allclose(out["spectrogram"], host, atol=5e-4)
  # Stereo [B, S, C] is averaged to mono first, as on the host.
  stereo = np.stack([wav, wav], -1).astype(np.float32) / 32768
  np.testing.assert_allclose(run(spec, {"audio": stereo})["spectrogram"], host, atol=5e-4)


# ---------------------------------------------------------------------------- images
def test_image_ops_crop_flip_and_scale_each_example_on_its_own():
  rng = np.random.default_rng(2)
  img = rng.integers(0, 256, size=(16, 8, 8, 3), dtype=np.uint8)
  as_float = run("to_float", {"image": img})["image"]
  assert as_float.dtype == np.float32
  np.testing.assert_allclose(as_float, img / 255.0, atol=1e-7)
  # A 2-pixel random shift: each output is an 8x8 window of its zero-padded input.
  out = run("random_crop(8, pad=2)", {"image": img})["image"]
  padded = np.pad(img, [(0, 0), (2, 2), (2, 2), (0, 0)])
  offsets = []
  for x, p in zip(out, padded):
    hits = [(t, l) for t in range(5) for l in range(5)
            if np.array_equal(p[t:t + 8, l:l + 8], x)]
    assert hits, "not a window of the padded image"
    offsets.append(hits[0])
  assert len(set(offsets)) > 4 and out.dtype == np.uint8
  flipped = run("flip_lr(p=0.5)", {"image": img})["image"]
  same = [np.array_equal(f, x) for f, x in zip(flipped, img)]
  mirrored = [np.array_equal(f, x[:, ::-1]) for f, x in zip(flipped, img)]
  assert all(a or b for a, b in zip(same, mirrored)) and 0 < sum(mirrored) < 16
  assert np.array_equal(run("flip_lr(p=1.0)", {"image": img})["image"], img[:, :, ::-1])
  with pytest.raises(ConfigError, match="12x12 crop does not fit"):
    run("random_crop(12)", {"image": img})


# ------------------------------------------------------------------------ randomness
def test_gain_and_noise_are_per_example_and_within_their_ranges():
  wav = np.full((16, 2000), 0.25, np.float32)
  gained = run("audio_gain(min_db=-6.0, max_db=6.0)", {"audio": wav})["audio"] / 0.25
  per_example = gained[:, 0]
  np.testing.assert_allclose(gained, per_example[:, None] * np.ones((1, 2000)), rtol=1e-6)
  assert np.all((per_example >= 10 ** (-6 / 20) - 1e-6) & (per_example <= 10 ** (6 / 20)))
  assert len(np.unique(np.round(per_example, 6))) == 16
  noisy = run("audio_noise(max_std=0.05)", {"audio": np.zeros((16, 2000), np.float32)})
  stds = noisy["audio"].std(axis=1)
  assert np.all(stds < 0.05 * 1.1) and stds.std() > 0.005   # each example its own std
  # int16 PCM is scaled to [-1, 1] first, as on the host.
  assert np.abs(run("audio_gain(min_db=0.0, max_db=0.0)", {"audio": pcm()})["audio"]
                ).max() <= 1.0


def test_spec_augment_masks_bands_per_example_with_its_mean():
  spec = np.random.default_rng(1).standard_normal((32, 64, 28)).astype(np.float32)
  out = run("spec_augment(freq_masks=1, freq_width=8, time_masks=1, time_width=4)",
            {"spectrogram": spec})["spectrogram"]
  changed = out != spec
  means = spec.mean(axis=(1, 2))
  np.testing.assert_allclose(out[changed], np.broadcast_to(means[:, None, None],
                                                           spec.shape)[changed], atol=1e-6)
  rows = changed.all(axis=2).sum(axis=1)   # fully masked mel bins per example
  cols = changed.all(axis=1).sum(axis=1)   # fully masked frames
  assert rows.max() <= 8 and cols.max() <= 4 and rows.max() > 0 and cols.max() > 0
  # Masked cells lie in the masked rows or columns only.
  assert np.all(changed == (changed.all(axis=2)[:, :, None] | changed.all(axis=1)[:, None]))
  assert len({tuple(r) for r in changed.all(axis=2)}) > 8   # examples differ


def test_train_transform_resumes_exactly_and_differs_per_batch():
  config = dict(device_preprocess_train="audio_gain|audio_noise(max_std=0.02)|log_mel|"
                                        "spec_augment|drop('audio')")
  batch = {"audio": jnp.asarray(pcm(4)), "label": jnp.arange(4)}
  fresh = device_ops.train_transform(config, seed=3)
  resumed = device_ops.train_transform(config, seed=3, start_batch=5)
  a, b = fresh(batch, 5), resumed(batch, 0)
  assert set(a) == {"spectrogram", "label"}
  np.testing.assert_array_equal(a["spectrogram"], b["spectrogram"])
  assert not np.array_equal(fresh(batch, 4)["spectrogram"], a["spectrogram"])
  other_seed = device_ops.train_transform(config, seed=4)(batch, 5)
  assert not np.array_equal(other_seed["spectrogram"], a["spectrogram"])
  assert device_ops.train_transform(dict(device_preprocess_train=None), seed=0) is None


# -------------------------------------------------------------------------- errors
@pytest.mark.parametrize("spec, split, pattern", [
    ("log_mell", "train", r"Unknown device preprocessing op 'log_mell'.*Did you mean "
                          r"'log_mel'"),
    ("spec_augment(freq_masks=-1)", "train", "freq_masks must be an int >= 0"),
    ("log_mel(upper_hz=9000)", "train", "upper_hz"),
    ("audio_gain(min_db=3.0, max_db=1.0)", "train", "min_db <= max_db"),
    ("log_mel(hop=3)", "train", "Bad arguments.*'log_mel'.*hop"),
    ("keep", "train", "needs at least one key"),
    ("random_crop(28, pad=-1)", "train", "pad must be an int >= 0"),
    ("flip_lr(p=2)", "train", r"p must be in \[0, 1\]"),
    ("to_float|flip_lr", "eval", "'flip_lr' is random"),
    ("log_mel|spec_augment", "eval", r"device_preprocess_eval: 'spec_augment' is random"),
])
def test_bad_specs_fail_when_built(spec, split, pattern):
  with pytest.raises(ConfigError, match=pattern):
    device_ops.device_fn({f"device_preprocess_{split}": spec}, split)


def test_bad_keys_and_shapes_fail_with_the_fix():
  with pytest.raises(ConfigError, match=r"'log_mel' needs key 'audio'.*\['image'\].*keep"):
    run("log_mel", {"image": np.zeros((2, 4, 4, 1), np.float32)})
  with pytest.raises(ConfigError, match="shorter than one frame.*audio_fit"):
    run("log_mel", {"audio": np.zeros((2, 100), np.float32)})
  with pytest.raises(ConfigError, match=r"mask widths \(80, 4\) exceed"):
    run("spec_augment(freq_width=80)", {"spectrogram": np.zeros((2, 64, 28), np.float32)})


def test_random_ops_are_the_ones_registered_random():
  assert device_ops.DEVICE_OPS.names(random=True) == [
      "audio_gain", "audio_noise", "flip_lr", "random_crop", "spec_augment"]


def test_config_validate_checks_the_device_specs():
  c = config_lib.default_config()
  c.data.device_preprocess_eval = "audio_noise"
  with pytest.raises(ConfigError, match="is random"):
    checks.check_config(c)


# ------------------------------------------------------------ in the data iterators
def test_multimodal_digits_run_the_audio_front_end_on_the_devices(digits_dir):
  c = config_lib.default_config()
  from configs.common import use_multimodal_digits
  use_multimodal_digits(c, max_len=16)
  c.data.data_dir = digits_dir
  info = data.dataset_info(c.data)
  for element in (info["train_element"], info["eval_element"]):
    assert element["spectrogram"] == {"shape": (64, 28), "dtype": "float32"}
    assert element["image"] == {"shape": (28, 28, 1), "dtype": "float32"}
    assert "audio" not in element
  batch = next(iter(data.make_eval_iterator(c.data, batch_size=8)))
  assert isinstance(batch["spectrogram"], np.ndarray) and "audio" not in batch
  assert batch["spectrogram"].shape == (8, 64, 28) and batch["mask"].tolist() == [1.0] * 8
  # The same eval examples through the host op give the same spectrograms.
  host_cfg = c.data.to_dict() | dict(preprocess_eval="log_mel|keep('spectrogram')",
                                     device_preprocess_eval=None)
  host = next(iter(data.make_eval_iterator(host_cfg, batch_size=8)))
  np.testing.assert_allclose(batch["spectrogram"], host["spectrogram"], atol=5e-4)
