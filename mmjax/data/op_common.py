"""What the host (TensorFlow) and device (JAX) preprocessing ops share: argument checks
and the log-mel front-end's fixed arrays, in numpy (neither TensorFlow nor JAX is
imported).

One definition of each check keeps an op's errors the same on both sides, and the
filterbank here reproduces `tf.signal.linear_to_mel_weight_matrix` (HTK mel scale, DC
bin zeroed), so a spectrogram computed on the devices matches the host op's.
"""
from __future__ import annotations

import numpy as np

from mmjax.errors import ConfigError


# ----------------------------------------------------- generic ops, the same on both sides
def require(example: dict, *keys: str) -> None:
  """KeyError (which the spec runners turn into a ConfigError) for a missing key."""
  for key in keys:
    if key not in example:
      raise KeyError(key)


def keep(*keys: str):
  """Keeps only `keys` (all must exist): a per-example host op and a batched device op."""
  if not keys:
    raise ConfigError("Preprocessing op 'keep' needs at least one key, e.g. keep('image').")

  def op(example, seed):
    del seed
    require(example, *keys)
    return {k: example[k] for k in keys}
  return op


def drop(*keys: str):
  """Removes `keys` (missing keys are ignored): a host op and a device op."""
  def op(example, seed):
    del seed
    return {k: v for k, v in example.items() if k not in keys}
  return op


# ------------------------------------------------------------------------------- images
def image_size(size, op: str) -> tuple[int, int]:
  """size int or (h, w) -> (h, w) positive ints (ConfigError naming `op` otherwise)."""
  hw = (size, size) if isinstance(size, int) else tuple(size)
  if len(hw) != 2 or not all(isinstance(s, int) and s > 0 for s in hw):
    raise ConfigError(f"Preprocessing op {op!r}: size must be a positive int or (h, w), "
                      f"got {size!r}.")
  return hw


def check_pad(pad) -> None:
  if not isinstance(pad, int) or pad < 0:
    raise ConfigError(f"Preprocessing op 'random_crop': pad must be an int >= 0, got {pad!r}.")


def check_probability(p, op: str) -> None:
  if not 0.0 <= float(p) <= 1.0:
    raise ConfigError(f"Preprocessing op {op!r}: p must be in [0, 1], got {p!r}.")


# -------------------------------------------------------------------------------- audio
def upper_edge(sample_rate: int, upper_hz: float | None) -> float:
  """The upper band edge: `upper_hz`, or the Nyquist frequency when None."""
  return sample_rate / 2 if upper_hz is None else upper_hz


def check_log_mel(*, sample_rate: int, frame_length: int, fft_length: int,
                  lower_hz: float, upper_hz: float) -> None:
  """ConfigError unless 0 <= lower_hz < upper_hz <= sample_rate/2 and
  fft_length >= frame_length."""
  if not 0 <= lower_hz < upper_hz <= sample_rate / 2:
    raise ConfigError(f"Preprocessing op 'log_mel': need 0 <= lower_hz < upper_hz <= "
                      f"sample_rate/2, got lower_hz={lower_hz}, upper_hz={upper_hz}, "
                      f"sample_rate={sample_rate}.")
  if fft_length < frame_length:
    raise ConfigError("Preprocessing op 'log_mel': fft_length must be >= frame_length.")


def check_gain(min_db: float, max_db: float) -> None:
  if not min_db <= max_db:
    raise ConfigError(f"Preprocessing op 'audio_gain': need min_db <= max_db, got "
                      f"{min_db} > {max_db}.")


def check_noise(max_std: float) -> None:
  if not max_std >= 0:
    raise ConfigError(f"Preprocessing op 'audio_noise': max_std must be >= 0, got {max_std}.")


def check_spec_augment(**counts_and_widths: int) -> None:
  """ConfigError unless every mask count and width is an int >= 0."""
  for name, v in counts_and_widths.items():
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
      raise ConfigError(f"Preprocessing op 'spec_augment': {name} must be an int >= 0, "
                        f"got {v!r}.")


def check_spec_augment_fits(freq_width: int, time_width: int, shape, key: str) -> None:
  """ConfigError when a mask is wider than the spectrogram [F, T] it masks."""
  f, t = shape
  if freq_width > f or time_width > t:
    raise ConfigError(f"Preprocessing op 'spec_augment': mask widths ({freq_width}, "
                      f"{time_width}) exceed the spectrogram [{f}, {t}] of {key!r}.")


def num_frames(num_samples: int, frame_length: int, frame_step: int) -> int:
  """STFT frames without end padding: 1 + (S - frame_length) // frame_step."""
  return 1 + (num_samples - frame_length) // frame_step


def _hz_to_mel(hz):
  return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


def mel_weight_matrix(*, num_mel_bins: int, fft_length: int, sample_rate: int,
                      lower_hz: float, upper_hz: float) -> np.ndarray:
  """float32 [fft_length // 2 + 1, num_mel_bins]: triangular HTK mel filters over the
  rfft bins, the DC bin zeroed (as `tf.signal.linear_to_mel_weight_matrix`)."""
  bins = fft_length // 2 + 1
  spectrogram_mel = _hz_to_mel(np.linspace(0.0, sample_rate / 2, bins)[1:])[:, None]
  edges = np.linspace(_hz_to_mel(lower_hz), _hz_to_mel(upper_hz), num_mel_bins + 2)
  lower, center, upper = edges[:-2][None], edges[1:-1][None], edges[2:][None]
  rising = (spectrogram_mel - lower) / (center - lower)
  falling = (upper - spectrogram_mel) / (upper - center)
  weights = np.maximum(0.0, np.minimum(rising, falling))
  return np.pad(weights, [[1, 0], [0, 0]]).astype(np.float32)


def hann_window(length: int) -> np.ndarray:
  """float32 [length], the periodic Hann window (`tf.signal.hann_window`'s default)."""
  return (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(length) / length)).astype(np.float32)
