"""Audio preprocessing ops. Waveforms are [S] (or [S, C], averaged to mono for log_mel).

Integer waveforms are 16-bit PCM (TFDS convention) and are scaled by 1/32768 to [-1, 1].
"""
from __future__ import annotations

from mmjax.data import op_common
from mmjax.data.host_registry import OPS
from mmjax.data.lazy_tf import tf
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


@OPS.register("audio_fit")
def audio_fit(length: int, key: str = "audio"):
  """example[key] waveform [S] (or [S, C]) -> [length] (or [length, C]), same dtype: the
  first `length` samples, zero-padded (silence) at the end when S < length.

  Variable-length clips (Speech Commands: up to 1 s) need one length to batch; padding
  the waveform also fixes the log-mel frame count, e.g. 20,720 samples at 16 kHz with
  25 ms windows every 10 ms give 1 + (20720 - 400) // 160 = 128 frames (AST's 128).
  """
  if not isinstance(length, int) or isinstance(length, bool) or length < 1:
    raise ConfigError(f"Preprocessing op 'audio_fit': length must be a positive int, got "
                      f"{length!r}.")

  def op(example, seed):
    del seed
    wav = tf.convert_to_tensor(example[key])
    wav = wav[:length]
    pad = [[0, length - tf.shape(wav)[0]]] + [[0, 0]] * (wav.shape.rank - 1)
    wav = tf.pad(wav, pad)
    return {**example, key: tf.ensure_shape(wav, [length] + wav.shape[1:].as_list())}
  return op


def log_mel_spectrogram(wav: tf.Tensor, *, sample_rate: int, frame_length: int,
                        frame_step: int, fft_length: int, num_mel_bins: int,
                        lower_hz: float, upper_hz: float) -> tf.Tensor:
  """float waveform [S] -> log-mel [num_mel_bins, frames],
  frames = 1 + (S - frame_length) // frame_step."""
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
  upper_hz = op_common.upper_edge(sample_rate, upper_hz)
  op_common.check_log_mel(sample_rate=sample_rate, frame_length=frame_length,
                          fft_length=fft_length, lower_hz=lower_hz, upper_hz=upper_hz)

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


# ---- augmentation (AST / SpecAugment recipes); random ops draw only from their `seed` ----
def _seeds(seed: tf.Tensor, n: int) -> tf.Tensor:
  """n independent stateless seeds [n, 2] from one."""
  return tf.random.experimental.stateless_split(seed, num=n)


@OPS.register("audio_gain", random=True)
def audio_gain(min_db: float = -6.0, max_db: float = 6.0, key: str = "audio"):
  """Waveform [S] -> float32 [S] scaled by 10^(g/20), g ~ U[min_db, max_db] (int PCM is
  converted to [-1, 1] first)."""
  op_common.check_gain(min_db, max_db)

  def op(example, seed):
    gain_db = tf.random.stateless_uniform([], seed=seed, minval=float(min_db),
                                          maxval=float(max_db))
    wav = waveform_to_float(example[key])
    return {**example, key: wav * tf.pow(10.0, gain_db / 20.0)}
  return op


@OPS.register("audio_noise", random=True)
def audio_noise(max_std: float = 0.01, key: str = "audio"):
  """Waveform [S] -> float32 [S] plus white Gaussian noise of std ~ U[0, max_std]."""
  op_common.check_noise(max_std)

  def op(example, seed):
    s_std, s_noise = tf.unstack(_seeds(seed, 2))
    std = tf.random.stateless_uniform([], seed=s_std, maxval=float(max_std))
    wav = waveform_to_float(example[key])
    return {**example, key: wav + std * tf.random.stateless_normal(tf.shape(wav),
                                                                   seed=s_noise)}
  return op


def _band_mask(length: int, count: int, max_width: int, seeds: tf.Tensor) -> tf.Tensor:
  """[length] bool: the union of `count` bands of width ~ U{0..max_width} at uniform
  starts (Park et al. 2019)."""
  positions = tf.range(length)
  masked = tf.zeros([length], tf.bool)
  for i in range(count):
    s_width, s_start = tf.unstack(_seeds(seeds[i], 2))
    width = tf.random.stateless_uniform([], seed=s_width, maxval=max_width + 1,
                                        dtype=tf.int32)
    start = tf.random.stateless_uniform([], seed=s_start, maxval=length - width + 1,
                                        dtype=tf.int32)
    masked |= (positions >= start) & (positions < start + width)
  return masked


@OPS.register("spec_augment", random=True)
def spec_augment(freq_masks: int = 2, freq_width: int = 8, time_masks: int = 2,
                 time_width: int = 4, key: str = "spectrogram"):
  """SpecAugment masking of a spectrogram [F, T]: `freq_masks` bands of up to
  `freq_width` mel bins and `time_masks` bands of up to `time_width` frames are set to
  the spectrogram's mean (its zero after AST-style normalisation)."""
  op_common.check_spec_augment(freq_masks=freq_masks, freq_width=freq_width,
                               time_masks=time_masks, time_width=time_width)

  def op(example, seed):
    spec = tf.convert_to_tensor(example[key])
    f, t = spec.shape[0], spec.shape[1]
    op_common.check_spec_augment_fits(freq_width, time_width, (f, t), key)
    s_f, s_t = tf.unstack(_seeds(seed, 2))
    masked = (_band_mask(f, freq_masks, freq_width, _seeds(s_f, max(freq_masks, 1)))[:, None]
              | _band_mask(t, time_masks, time_width, _seeds(s_t, max(time_masks, 1)))[None])
    return {**example, key: tf.where(masked, tf.reduce_mean(spec), spec)}
  return op
