"""WAV sources: a folder of class subfolders of .wav files (`--source=wav_folder`), and the
WAV reading that the paired source shares.

  INPUT/CLASS/*.wav  or  INPUT/train|test/CLASS/*.wav
  --sample_rate=8000   every file is resampled to this rate (polyphase,
                       scipy.signal.resample_poly), the rate of mmjax's `log_mel` op

Features: audio int16 [S] at `sample_rate` (mono: channels are averaged; float WAVs are
scaled from [-1, 1]); S is fixed when every file has the same length, else None (pad or
cut with the `audio_fit` op); label ClassLabel(class names).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from mmjax.data.prepare import common
from mmjax.errors import DataError


def resampled_length(num_samples: int, rate: int, target: int) -> int:
  """The length resample_poly gives `num_samples` at `rate` resampled to `target`."""
  g = math.gcd(rate, target)
  return int(math.ceil(num_samples * (target // g) / (rate // g)))


def scan_wavs(paths: Sequence[str], errors: common.ReadErrors, sample_rate: int
              ) -> dict[str, int]:
  """{path: length after resampling} of the readable WAVs (headers only: memory-mapped)."""
  from scipy.io import wavfile   # pylint: disable=g-import-not-at-top
  if sample_rate <= 0:
    raise DataError(f"--sample_rate must be positive, got {sample_rate}.")
  lengths = {}
  for path in paths:
    try:
      rate, data = wavfile.read(path, mmap=True)
      if data.shape[0] == 0:
        raise ValueError("no samples")
      lengths[path] = resampled_length(data.shape[0], rate, sample_rate)
    except Exception as e:  # pylint: disable=broad-except  # any unreadable file
      errors.add(path, f"{type(e).__name__}: {e}")
  errors.check(len(paths))
  if not lengths:
    raise DataError(f"None of the {len(paths)} WAV files can be read.")
  return lengths


def load_wav(path: str, sample_rate: int) -> np.ndarray:
  """The WAV at `path` as mono int16 [S] at `sample_rate`."""
  from scipy import signal   # pylint: disable=g-import-not-at-top
  from scipy.io import wavfile   # pylint: disable=g-import-not-at-top
  rate, data = wavfile.read(path)
  x = np.asarray(data)
  if np.issubdtype(x.dtype, np.integer):
    scale = {1: 128.0, 2: 32768.0, 4: 2147483648.0}[x.dtype.itemsize]
    x = (x.astype(np.float64) - (128.0 if x.dtype == np.uint8 else 0.0)) / scale
  x = x.astype(np.float64)
  if x.ndim == 2:
    x = x.mean(axis=1)
  if rate != sample_rate:
    g = math.gcd(rate, sample_rate)
    x = signal.resample_poly(x, sample_rate // g, rate // g)
  return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def audio_feature(lengths: dict[str, int], sample_rate: int):
  import tensorflow_datasets as tfds   # pylint: disable=g-import-not-at-top
  fixed = set(lengths.values())
  return tfds.features.Audio(shape=(fixed.pop() if len(fixed) == 1 else None,),
                             dtype=np.int16, sample_rate=sample_rate)


def wav_folder(input_path: str, *, errors: common.ReadErrors, sample_rate: int = 8000,
               **_) -> common.Source:
  """The WAV folder at `input_path` (layout in the module docstring) as a Source."""
  import tensorflow_datasets as tfds   # pylint: disable=g-import-not-at-top
  items, names = common.class_folder_items(input_path, (".wav",), "--source=wav_folder")
  lengths = scan_wavs([it.ref for it in items], errors, sample_rate)
  items = [it for it in items if it.ref in lengths]
  features: dict[str, Any] = {"audio": audio_feature(lengths, sample_rate),
                              "label": tfds.features.ClassLabel(names=names)}

  def load(item: common.Item) -> dict[str, Any]:
    return {"audio": load_wav(item.ref, sample_rate), "label": item.label}

  return common.Source(features, items, load,
                       f"WAV files from {input_path} at {sample_rate} Hz: {len(items)} in "
                       f"{len(names)} classes.", [it.ref for it in items])
