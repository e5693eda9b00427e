"""Audio preprocessing ops. Waveforms are [S] (or [S, C], averaged to mono for log_mel).

Integer waveforms are 16-bit PCM (TFDS convention) and are scaled by 1/32768 to [-1, 1].
"""
from __future__ import annotations

import tensorflow as tf

from mmjax.data.ops import OPS
from mmjax.errors import ConfigError


def waveform_to_float(wav: tf.Tensor) -> tf.Tensor:
  """int16-range PCM -> float32 in [-1, 1]; float input is only cast."""
  if wav.dtype.is_integer:
    return tf.cast(wav, tf.float32) / 32768.0
  return tf.cast(wav, tf.float32)


@OPS.register("audio_to_float")
def audio_to_float(key: str = "audio"):
  """example[key] int PCM [S] -> float32 [S] in [-1, 1]."""
  def op(example, seed):
    del seed
    return {**example, key: waveform_to_float(example[key])}
  return op


def log_mel_spectrogram(wav: tf.Tensor, *, sample_rate: int, frame_length: int,
                        frame_step: int, fft_length: int, num_mel_bins: int,
                        lower_hz: float, upper_hz: float) -> tf.Tensor:
  """float waveform [S] -> log-mel [num_mel_bins, frames], frames = 1 + (S - frame_length) // frame_step."""
  stft = tf.signal.stft(wav, frame_length=frame_length, frame_step=frame_step,
                        fft_length=fft_length, pad_end=False)
  magnitude = tf.abs(stft)  # [frames, fft_length // 2 + 1]
  weights = tf.signal.linear_to_mel_weight_matrix(
      num_mel_bins=num_mel_bins, num_spectrogram_bins=fft_length // 2 + 1,
      sample_rate=sample_rate, lower_edge_hertz=lower_hz, upper_edge_hertz=upper_hz)
  mel = tf.tensordot(magnitude, weights, 1)  # [frames, num_mel_bins]
  # The floor keeps silence finite (log 0 = -inf would poison normalisation and grads).
  return tf.transpose(tf.math.log(mel + 1e-6))


@OPS.register("log_mel")
def log_mel(key: str = "audio", out: str = "spectrogram", sample_rate: int = 8000,
            frame_length: int = 256, frame_step: int = 64, fft_length: int = 256,
            num_mel_bins: int = 64, lower_hz: float = 20.0, upper_hz: float | None = None):
  """example[key] waveform [S] -> example[out] float32 [num_mel_bins, frames] log-mel.

  For the embedded digits (S = 2000) and the defaults, frames = 28.
  """
  upper_hz = sample_rate / 2 if upper_hz is None else upper_hz
  if not 0 <= lower_hz < upper_hz <= sample_rate / 2:
    raise ConfigError(f"Preprocessing op 'log_mel': need 0 <= lower_hz < upper_hz <= "
                      f"sample_rate/2, got lower_hz={lower_hz}, upper_hz={upper_hz}, "
                      f"sample_rate={sample_rate}.")
  if fft_length < frame_length:
    raise ConfigError("Preprocessing op 'log_mel': fft_length must be >= frame_length.")

  def op(example, seed):
    del seed
    wav = waveform_to_float(example[key])
    if wav.shape.rank == 2:
      wav = tf.reduce_mean(wav, axis=-1)
    spec = log_mel_spectrogram(
        wav, sample_rate=sample_rate, frame_length=frame_length, frame_step=frame_step,
        fft_length=fft_length, num_mel_bins=num_mel_bins, lower_hz=float(lower_hz),
        upper_hz=float(upper_hz))
    return {**example, out: spec}
  return op
