"""Preprocessing ops: spec parsing, each op's effect, and seeded determinism."""
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from mmjax.data import ops, ops_image, tokenizers
from mmjax.errors import ConfigError

SEED = tf.constant([3, 4], tf.int64)


def run(spec, example, seed=SEED):
  fn = ops.build_preprocess_fn(spec)
  example = {k: tf.constant(v) for k, v in example.items()}
  return {k: v.numpy() for k, v in fn(example, tf.constant(seed, tf.int64)).items()}


def digit_image(seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, size=(28, 28, 1), dtype=np.uint8)


def test_random_ops_are_the_ones_registered_random():
  assert ops.OPS.names(random=True) == [
      "audio_gain", "audio_noise", "digit_vqa", "flip_lr", "inception_crop", "random_crop",
      "rotate", "spec_augment"]
  with pytest.raises(ValueError, match=r"attribute\(s\) \['randomly'\]"):
    ops.OPS.names(randomly=True)


def test_the_host_registry_needs_no_tensorflow():
  """The op modules register without TensorFlow, so config checks can ask the registry
  (data.in_memory refuses random host ops); building an op is what imports it."""
  code = textwrap.dedent("""
      import sys
      sys.modules["tensorflow"] = None   # any TensorFlow import would now fail
      from mmjax.data import in_memory, ops
      from mmjax.errors import ConfigError
      ops.build_preprocess_fn("keep('image')|random_crop(28, pad=2)")
      try:
        in_memory.check_config({"in_memory": True, "preprocess_train": "flip_lr"})
      except ConfigError as e:
        assert "host op(s) ['flip_lr']" in str(e), e
      else:
        raise AssertionError("flip_lr was not refused")
      """)
  subprocess.run([sys.executable, "-c", code], check=True)


# ------------------------------------------------------------------------------- parsing
def test_parse_spec():
  assert ops.parse_spec("to_float|random_crop(28, pad=2)|flip_lr|keep('image', 'label')") == [
      ("to_float", (), {}), ("random_crop", (28,), {"pad": 2}), ("flip_lr", (), {}),
      ("keep", ("image", "label"), {})]
  assert ops.parse_spec("keep('a|b')|drop") == [("keep", ("a|b",), {}), ("drop", (), {})]
  assert ops.parse_spec(None) == [] and ops.parse_spec("") == []
  assert ops.parse_spec(["to_float", "resize((8, 9))"])[1] == ("resize", ((8, 9),), {})


def test_unknown_op_lists_ops():
  with pytest.raises(ConfigError, match=r"Unknown preprocessing op 'to_flaot'.*random_crop.*"
                                        r"Did you mean 'to_float'"):
    ops.build_preprocess_fn("to_flaot|flip_lr")


@pytest.mark.parametrize("spec, pattern", [
    ("random_crop(28, padd=2)", "'random_crop'.*padd"),
    ("random_crop", "'random_crop'.*size"),
    ("random_crop(28, pad=-1)", "'random_crop'.*pad"),
    ("flip_lr(p=2)", "'flip_lr'"),
    ("resize(size)", "'resize'.*literals"),
    ("normalize(0.5, 0.0)", "'normalize'.*std"),
    ("tokenize(max_len=1)", "'tokenize'.*max_len"),
    ("log_mel(upper_hz=9000)", "'log_mel'"),
    ("flip_lr(", "Cannot parse"),
])
def test_bad_args_name_the_op(spec, pattern):
  with pytest.raises(ConfigError, match=pattern):
    ops.build_preprocess_fn(spec)


def test_missing_key_is_config_error():
  with pytest.raises(ConfigError, match="'flip_lr' needs key 'image'"):
    run("flip_lr", {"label": np.int64(1)})


# ---------------------------------------------------------------------------- image ops
def test_to_float():
  out = run("to_float", {"image": np.array([[[0], [255]]], np.uint8)})["image"]
  assert out.dtype == np.float32
  np.testing.assert_allclose(out.ravel(), [0.0, 1.0])


def test_random_crop_with_pad_shifts_content():
  img = np.zeros((28, 28, 1), np.uint8)
  img[10, 12] = 255
  shifts = set()
  for s in range(20):
    out = run("random_crop(28, pad=2)", {"image": img}, seed=[s, 0])["image"]
    assert out.shape == (28, 28, 1) and out.dtype == np.uint8
    (y,), (x,) = np.nonzero(out[..., 0])
    dy, dx = y - 10, x - 12
    assert abs(dy) <= 2 and abs(dx) <= 2
    # The crop is the zero-padded image shifted by (dy, dx): compare everything.
    padded = np.pad(img, ((2, 2), (2, 2), (0, 0)))
    np.testing.assert_array_equal(out, padded[2 - dy:30 - dy, 2 - dx:30 - dx])
    shifts.add((dy, dx))
  assert len(shifts) > 3


def test_center_crop_and_resize():
  img = np.arange(36, dtype=np.float32).reshape(6, 6, 1)
  np.testing.assert_array_equal(run("center_crop(2)", {"image": img})["image"], img[2:4, 2:4])
  out = run("resize((12, 8))", {"image": digit_image()})["image"]
  assert out.shape == (12, 8, 1) and out.dtype == np.uint8


def test_resize_small_keeps_aspect_and_inception_crop_is_seeded():
  img = np.random.default_rng(0).integers(0, 256, size=(40, 60, 3), dtype=np.uint8)
  assert run("resize_small(20)", {"image": img})["image"].shape == (20, 30, 3)
  crops = [run("inception_crop(16)", {"image": img}, seed=[s, 0])["image"] for s in (1, 1, 2)]
  assert all(c.shape == (16, 16, 3) and c.dtype == np.uint8 for c in crops)
  np.testing.assert_array_equal(crops[0], crops[1])
  assert not np.array_equal(crops[0], crops[2])
  # The whole image (area 1, aspect 3/2 allowed only when area_min=1 forces it) resized.
  full = run("inception_crop((20, 30), area_min=1.0)", {"image": img.astype(np.float32)})
  np.testing.assert_allclose(full["image"], run("resize((20, 30))", {
      "image": img.astype(np.float32)})["image"], atol=1e-3)
  with pytest.raises(ConfigError, match="area_min"):
    run("inception_crop(16, area_min=0.0)", {"image": img})


def test_flip_is_a_mirror():
  img = digit_image()
  np.testing.assert_array_equal(run("flip_lr(p=1.0)", {"image": img})["image"], img[:, ::-1])
  np.testing.assert_array_equal(run("flip_lr(p=0.0)", {"image": img})["image"], img)
  flipped = [bool((run("flip_lr", {"image": img}, seed=[s, 1])["image"] != img).any())
             for s in range(16)]
  assert any(flipped) and not all(flipped)


def test_rotate():
  img = digit_image()
  np.testing.assert_array_equal(run("rotate(0)", {"image": img})["image"], img)
  f = img.astype(np.float32) / 255
  np.testing.assert_allclose(run("rotate(0)", {"image": f})["image"], f, atol=1e-6)
  out = run("rotate(30)", {"image": img})["image"]
  assert out.shape == img.shape and out.dtype == img.dtype and (out != img).any()
  # The transform itself: +90 degrees is np.rot90 (counter-clockwise).
  sq = np.random.default_rng(1).random((7, 7, 2)).astype(np.float32)
  rot = ops_image.rotate_image(tf.constant(sq), math.pi / 2).numpy()
  np.testing.assert_allclose(rot, np.rot90(sq), atol=1e-5)


def test_normalize_and_grayscale_to_rgb():
  img = np.full((2, 2, 3), 0.5, np.float32)
  out = run("normalize((0.5, 0.25, 0.0), (0.5, 0.25, 2.0))", {"image": img})["image"]
  np.testing.assert_allclose(out[0, 0], [0.0, 1.0, 0.25])
  rgb = run("grayscale_to_rgb", {"image": digit_image()})["image"]
  assert rgb.shape == (28, 28, 3) and (rgb[..., 0] == rgb[..., 2]).all()


AUGMENT = "to_float|random_crop(28, pad=3)|flip_lr|rotate(20)"


def test_determinism_per_seed():
  img = digit_image()
  a = run(AUGMENT, {"image": img}, seed=[7, 8])["image"]
  b = run(AUGMENT, {"image": img}, seed=[7, 8])["image"]
  c = run(AUGMENT, {"image": img}, seed=[7, 9])["image"]
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


# ----------------------------------------------------------------------------- text ops
@pytest.mark.parametrize("text", ["a handwritten seven", "", "naïve ✓", "y" * 100])
def test_tokenize_matches_numpy_tokenizer(text):
  out = run("tokenize(max_len=16)", {"caption": text})
  ids, mask = tokenizers.encode_bytes(text, 16)
  assert out["text"].dtype == np.int32 and out["text_mask"].dtype == np.int32
  np.testing.assert_array_equal(out["text"], ids)
  np.testing.assert_array_equal(out["text_mask"], mask)


def test_tokenize_sentencepiece(sp_model):
  model = sp_model
  out = run(f"tokenize(key='c', out='t', max_len=12, tokenizer='sentencepiece', "
            f"sp_model={model!r})", {"c": "the digit 7 written by hand"})
  ids, mask = tokenizers.make_tokenizer("sentencepiece", model).encode(
      "the digit 7 written by hand", 12)
  np.testing.assert_array_equal(out["t"], ids)
  np.testing.assert_array_equal(out["t_mask"], mask)


# ---------------------------------------------------------------------------- audio ops
def tone(hz, n=2000, sr=8000, amp=0.5):
  return (amp * np.sin(2 * np.pi * hz * np.arange(n) / sr)).astype(np.float32)


def test_log_mel_shape_and_int16_scaling():
  wav = tone(1000)
  out = run("log_mel", {"audio": wav})["spectrogram"]
  assert out.shape == (64, 1 + (2000 - 256) // 64) == (64, 28) and out.dtype == np.float32
  pcm = np.round(wav * 32768).astype(np.int16)
  scaled = run("log_mel", {"audio": pcm.astype(np.float32) / 32768})["spectrogram"]
  np.testing.assert_allclose(run("log_mel", {"audio": pcm})["spectrogram"], scaled, atol=1e-5)
  loud = out > out.max() - 5  # Away from the floor, quantisation does not matter.
  np.testing.assert_allclose(scaled[loud], out[loud], atol=1e-2)
  as_float = run("audio_to_float", {"audio": pcm})["audio"]
  assert as_float.dtype == np.float32 and np.abs(as_float).max() <= 1.0


def test_log_mel_peak_bin_moves_with_frequency():
  peaks = [int(np.argmax(run("log_mel(num_mel_bins=32)", {"audio": tone(hz)})
                         ["spectrogram"].mean(axis=1))) for hz in (300, 800, 1500, 3000)]
  assert peaks == sorted(peaks) and len(set(peaks)) == 4


# -------------------------------------------------------------------------- generic ops
def test_keep_drop_rename_to_int32():
  ex = {"image": np.zeros((2, 2, 1), np.uint8), "label": np.int64(3), "caption": "x"}
  assert set(run("keep('image', 'label')", ex)) == {"image", "label"}
  assert set(run("drop('caption')", ex)) == {"image", "label"}
  out = run("rename(text='caption')|to_int32", ex)
  assert set(out) == {"image", "label", "text"} and out["text"] == b"x"
  assert out["label"].dtype == np.int32
  with pytest.raises(ConfigError, match="'keep' needs key 'audio'"):
    run("keep('audio')", ex)


# ---------------------------------------------------------------------- audio augmentation
def test_audio_gain_scales_within_range():
  wav = tone(440)
  out = run("audio_gain(min_db=-6, max_db=6)", {"audio": wav})["audio"]
  ratio = out[wav != 0] / wav[wav != 0]
  np.testing.assert_allclose(ratio, ratio[0], rtol=1e-5)      # one gain per example
  assert 10 ** (-6 / 20) - 1e-6 <= ratio[0] <= 10 ** (6 / 20) + 1e-6
  pcm = np.round(wav * 32767).astype(np.int16)
  assert run("audio_gain(min_db=0, max_db=0)", {"audio": pcm})["audio"].dtype == np.float32


def test_audio_noise_adds_bounded_noise():
  wav = tone(440)
  out = run("audio_noise(max_std=0.05)", {"audio": wav})["audio"]
  std = np.std(out - wav)
  assert 0 < std <= 0.05 * 1.1
  np.testing.assert_array_equal(run("audio_noise(max_std=0)", {"audio": wav})["audio"], wav)


def test_spec_augment_masks_bands_to_the_mean():
  spec = np.random.default_rng(0).normal(size=(64, 28)).astype(np.float32) + 3.0
  out = run("spec_augment(freq_masks=2, freq_width=8, time_masks=2, time_width=4)",
            {"spectrogram": spec})["spectrogram"]
  changed = out != spec
  rows = np.where(changed.all(axis=1))[0]      # fully masked mel bins
  cols = np.where(changed.all(axis=0))[0]      # fully masked frames
  assert 0 < len(rows) <= 16 and len(cols) <= 8
  # Every changed value lies in a masked row or column and equals the spectrogram mean.
  in_band = np.zeros_like(changed)
  in_band[rows] = True
  in_band[:, cols] = True
  assert not (changed & ~in_band).any()
  np.testing.assert_allclose(out[changed], spec.mean(), rtol=1e-5)
  same = run("spec_augment(freq_masks=0, time_masks=0)", {"spectrogram": spec})
  np.testing.assert_array_equal(same["spectrogram"], spec)


def test_audio_augmentation_is_seeded():
  spec_ops = "audio_gain|audio_noise|log_mel|spec_augment"
  a = run(spec_ops, {"audio": tone(700)}, seed=[1, 2])["spectrogram"]
  b = run(spec_ops, {"audio": tone(700)}, seed=[1, 2])["spectrogram"]
  c = run(spec_ops, {"audio": tone(700)}, seed=[1, 3])["spectrogram"]
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


@pytest.mark.parametrize("spec,pattern", [
    ("audio_gain(min_db=3, max_db=-3)", "min_db <= max_db"),
    ("audio_noise(max_std=-1)", "max_std"),
    ("spec_augment(freq_masks=-1)", "freq_masks"),
])
def test_bad_audio_augment_args(spec, pattern):
  with pytest.raises(ConfigError, match=pattern):
    ops.build_preprocess_fn(spec)
