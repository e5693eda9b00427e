"""Device preprocessing: batched JAX ops run on the accelerators, after the host pipeline.

`data.device_preprocess_train` and `data.device_preprocess_eval` are op specs with the
host specs' syntax (mmjax/data/spec.py), applied to whole batches {key: [B, ...]} in one
jitted call, on the devices and with the sharding of the train step's batch:

    preprocess_train        = "tokenize('caption', 'text')|keep('image', 'text',
                               'text_mask', 'audio', 'label')"       # host, per example
    device_preprocess_train = "to_float|random_crop(28, pad=2)|audio_gain|audio_noise|
                               log_mel|spec_augment|drop('audio')"   # devices, batched

Ops: keep, drop; to_float, random_crop, flip_lr (images [B, H, W, C]); audio_gain,
audio_noise, log_mel, spec_augment (waveforms [B, S], spectrograms [B, F, T]).

Why: per-example TensorFlow ops pay dispatch overhead per op and per example, and on a
machine whose cores also run the step they take that time from it. The quickstart's
pixel and audio ops cost 19 ms of host CPU per batch of 64 there; batched on the devices
they are one small XLA program of about 3 ms (docs/benchmarks.md). On an accelerator the
host also sends uint8 pixels and int16 samples instead of float32 arrays.

Ops shared with the host have the same names, arguments, checks (mmjax/data/op_common.py)
and maths (log_mel: the same Hann window, rfft and HTK filterbank, equal to 5e-4); their
random draws differ (JAX keys instead of TF stateless seeds), so a run's augmentations
change when an op moves between host and device, not their distribution.

Randomness: training batch i (counted from step 0, so resuming at batch k gives exactly
the batches of an unbroken run) gets the key fold_in(fold_in(key(seed), DATA_STREAM), i),
op j of the spec fold_in(that, j); every example gets its own draws. Eval specs must be
deterministic: random ops are refused there.
"""
from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.data import op_common
from mmjax.data.spec import build_op, parse_spec
from mmjax.errors import ConfigError
from mmjax.registry import Registry

Batch = dict[str, jax.Array]
DeviceOp = Callable[[Batch, jax.Array], Batch]

# random=True: the op draws from its key; eval specs refuse such ops.
DEVICE_OPS = Registry("device preprocessing op", attributes={"random": False})
# Folded into the run's seed so the data stream's keys differ from the model's.
DATA_STREAM = 0x6D6A64


def _per_example(values: jax.Array, like: jax.Array) -> jax.Array:
  """[B] -> [B, 1, ...] broadcastable against `like` [B, ...]."""
  return values.reshape(values.shape + (1,) * (like.ndim - 1))


# ---------------------------------------------------------------------------- generic ops
DEVICE_OPS.register("keep")(op_common.keep)
DEVICE_OPS.register("drop")(op_common.drop)


# ------------------------------------------------------------------------------ image ops
@DEVICE_OPS.register("to_float")
def to_float(key: str = "image") -> DeviceOp:
  """uint8 [0, 255] -> float32 [0, 1]; float input is only cast to float32."""
  def op(batch, rng):
    del rng
    img = batch[key]
    scale = 1 / 255.0 if img.dtype == jnp.uint8 else 1.0
    return {**batch, key: img.astype(jnp.float32) * scale}
  return op


@DEVICE_OPS.register("random_crop", random=True)
def random_crop(size, pad: int = 0, key: str = "image") -> DeviceOp:
  """Images [B, H, W, C]: each zero-padded by `pad` pixels on every side, then cropped to
  its own random [h, w] window (with size == input size and pad > 0: the CIFAR/MNIST
  random shift)."""
  h, w = op_common.image_size(size, "random_crop")
  op_common.check_pad(pad)

  def op(batch, rng):
    img = batch[key]
    img = jnp.pad(img, [(0, 0), (pad, pad), (pad, pad), (0, 0)])
    b, height, width, channels = img.shape
    if h > height or w > width:
      raise ConfigError(f"Device preprocessing op 'random_crop': a {h}x{w} crop does not "
                        f"fit {key!r} of {height}x{width} (after padding {pad}).")
    r_top, r_left = jax.random.split(rng)
    tops = jax.random.randint(r_top, (b,), 0, height - h + 1)
    lefts = jax.random.randint(r_left, (b,), 0, width - w + 1)
    crop = lambda x, top, left: jax.lax.dynamic_slice(x, (top, left, 0), (h, w, channels))
    return {**batch, key: jax.vmap(crop)(img, tops, lefts)}
  return op


@DEVICE_OPS.register("flip_lr", random=True)
def flip_lr(p: float = 0.5, key: str = "image") -> DeviceOp:
  """Images [B, H, W, C], each mirrored left-right with probability p."""
  op_common.check_probability(p, "flip_lr")

  def op(batch, rng):
    img = batch[key]
    flip = jax.random.uniform(rng, img.shape[:1]) < p
    return {**batch, key: jnp.where(_per_example(flip, img), img[:, :, ::-1], img)}
  return op


# ------------------------------------------------------------------------------ audio ops
def waveform_to_float(wav: jax.Array) -> jax.Array:
  """int16-range PCM -> float32 in [-1, 1]; float input is only cast."""
  if jnp.issubdtype(wav.dtype, jnp.integer):
    return wav.astype(jnp.float32) / 32768.0
  return wav.astype(jnp.float32)


@DEVICE_OPS.register("audio_gain", random=True)
def audio_gain(min_db: float = -6.0, max_db: float = 6.0, key: str = "audio") -> DeviceOp:
  """Waveforms [B, S] -> float32 [B, S], each scaled by 10^(g/20), g ~ U[min_db, max_db]."""
  op_common.check_gain(min_db, max_db)

  def op(batch, rng):
    wav = waveform_to_float(batch[key])
    gain_db = jax.random.uniform(rng, wav.shape[:1], minval=float(min_db),
                                 maxval=float(max_db))
    return {**batch, key: wav * _per_example(10.0 ** (gain_db / 20.0), wav)}
  return op


@DEVICE_OPS.register("audio_noise", random=True)
def audio_noise(max_std: float = 0.01, key: str = "audio") -> DeviceOp:
  """Waveforms [B, S] -> float32 [B, S] plus white Gaussian noise, std ~ U[0, max_std]
  per example."""
  op_common.check_noise(max_std)

  def op(batch, rng):
    wav = waveform_to_float(batch[key])
    r_std, r_noise = jax.random.split(rng)
    std = jax.random.uniform(r_std, wav.shape[:1], maxval=float(max_std))
    noise = jax.random.normal(r_noise, wav.shape, jnp.float32)
    return {**batch, key: wav + _per_example(std, wav) * noise}
  return op


def log_mel_spectrogram(wav: jax.Array, *, sample_rate: int, frame_length: int,
                        frame_step: int, fft_length: int, num_mel_bins: int,
                        lower_hz: float, upper_hz: float) -> jax.Array:
  """float waveforms [B, S] -> log-mel [B, num_mel_bins, frames],
  frames = 1 + (S - frame_length) // frame_step (the host op's maths, batched)."""
  frames = op_common.num_frames(wav.shape[-1], frame_length, frame_step)
  if frames < 1:
    raise ConfigError(f"Device preprocessing op 'log_mel': waveforms of {wav.shape[-1]} "
                      f"samples are shorter than one frame ({frame_length}); pad them "
                      "(audio_fit on the host) or shorten frame_length.")
  starts = np.arange(frames)[:, None] * frame_step + np.arange(frame_length)[None]
  windowed = wav[:, starts] * op_common.hann_window(frame_length)  # [B, T, frame]
  magnitude = jnp.abs(jnp.fft.rfft(windowed, n=fft_length))      # [B, T, fft/2 + 1]
  weights = op_common.mel_weight_matrix(
      num_mel_bins=num_mel_bins, fft_length=fft_length, sample_rate=sample_rate,
      lower_hz=lower_hz, upper_hz=upper_hz)
  mel = jnp.einsum("btf,fm->bmt", magnitude, weights,
                   precision=jax.lax.Precision.HIGHEST)
  # The floor keeps silence finite, as on the host.
  return jnp.log(mel + 1e-6)


@DEVICE_OPS.register("log_mel")
def log_mel(key: str = "audio", out: str = "spectrogram", sample_rate: int = 8000,
            frame_length: int = 256, frame_step: int = 64, fft_length: int = 256,
            num_mel_bins: int = 64, lower_hz: float = 20.0, upper_hz: float | None = None
            ) -> DeviceOp:
  """batch[key] waveforms [B, S] (or [B, S, C], averaged to mono) -> batch[out] float32
  [B, num_mel_bins, frames] log-mel; the host op `log_mel`'s defaults and maths."""
  upper_hz = op_common.upper_edge(sample_rate, upper_hz)
  op_common.check_log_mel(sample_rate=sample_rate, frame_length=frame_length,
                          fft_length=fft_length, lower_hz=lower_hz, upper_hz=upper_hz)

  def op(batch, rng):
    del rng
    wav = waveform_to_float(batch[key])
    if wav.ndim == 3:
      wav = wav.mean(axis=-1)
    spec = log_mel_spectrogram(
        wav, sample_rate=sample_rate, frame_length=frame_length, frame_step=frame_step,
        fft_length=fft_length, num_mel_bins=num_mel_bins, lower_hz=float(lower_hz),
        upper_hz=float(upper_hz))
    return {**batch, out: spec}
  return op


def _band_masks(rng: jax.Array, batch: int, length: int, count: int, max_width: int
                ) -> jax.Array:
  """[batch, length] bool: per row, the union of `count` bands of width ~ U{0..max_width}
  at uniform starts (Park et al. 2019)."""
  r_width, r_start = jax.random.split(rng)
  width = jax.random.randint(r_width, (batch, count, 1), 0, max_width + 1)
  # start ~ U{0 .. length - width}: a uniform fraction of each band's own range.
  start = jnp.floor(jax.random.uniform(r_start, (batch, count, 1))
                    * (length - width + 1)).astype(jnp.int32)
  positions = jnp.arange(length)
  return ((positions >= start) & (positions < start + width)).any(axis=1)


@DEVICE_OPS.register("spec_augment", random=True)
def spec_augment(freq_masks: int = 2, freq_width: int = 8, time_masks: int = 2,
                 time_width: int = 4, key: str = "spectrogram") -> DeviceOp:
  """SpecAugment on spectrograms [B, F, T]: per example, `freq_masks` bands of up to
  `freq_width` mel bins and `time_masks` bands of up to `time_width` frames are set to
  that spectrogram's mean (the host op, batched)."""
  op_common.check_spec_augment(freq_masks=freq_masks, freq_width=freq_width,
                               time_masks=time_masks, time_width=time_width)

  def op(batch, rng):
    spec = batch[key]
    b, f, t = spec.shape
    op_common.check_spec_augment_fits(freq_width, time_width, (f, t), key)
    r_f, r_t = jax.random.split(rng)
    masked = (_band_masks(r_f, b, f, freq_masks, freq_width)[:, :, None]
              | _band_masks(r_t, b, t, time_masks, time_width)[:, None, :])
    mean = spec.mean(axis=(1, 2), keepdims=True)
    return {**batch, key: jnp.where(masked, mean, spec)}
  return op


# -------------------------------------------------------------------------- building
def build_device_fn(spec: str | Sequence[str] | None, *, config_key: str,
                    deterministic: bool = False
                    ) -> Callable[[Batch, jax.Array], Batch] | None:
  """Spec -> `fn(batch, key) -> batch` applying every op in order (op j gets
  fold_in(key, j)), or None for an empty spec. Ops and their arguments are checked
  here, before any data is read; `deterministic` refuses random ops (eval specs)."""
  ops = []
  for name, args, kwargs in parse_spec(spec):
    ops.append((name, build_op(DEVICE_OPS, name, args, kwargs, config_key=config_key)))
    if deterministic and name in DEVICE_OPS.names(random=True):
      raise ConfigError(f"{config_key}: {name!r} is random; eval preprocessing must be "
                        "deterministic. Leave it out of the eval spec (augment in "
                        "data.device_preprocess_train only).")
  if not ops:
    return None

  def preprocess(batch: Batch, key: jax.Array) -> Batch:
    batch = dict(batch)
    for j, (name, op) in enumerate(ops):
      try:
        batch = op(batch, jax.random.fold_in(key, j))
      except KeyError as e:
        raise ConfigError(f"{config_key}: device op {name!r} needs key {e.args[0]!r}, but "
                          f"the batch only has {sorted(batch)}; keep it in the host "
                          "spec's keep(...).") from None
    return batch

  return preprocess


def _spec(data_config: Any, split: str) -> str | tuple[str, ...] | None:
  """data.device_preprocess_{split} of `data_config` (hashable: lists become tuples)."""
  spec = data_config.get(f"device_preprocess_{split}") if hasattr(data_config, "get") else None
  return spec if spec is None or isinstance(spec, str) else tuple(spec)


@functools.lru_cache(maxsize=16)
def _built(spec: str | tuple[str, ...] | None, split: str):
  return build_device_fn(spec, config_key=f"data.device_preprocess_{split}",
                         deterministic=split == "eval")


def device_fn(data_config: Any, split: str):
  """`split`'s ('train' or 'eval') built data.device_preprocess_* of `data_config`, or
  None; raises ConfigError for a bad spec."""
  return _built(_spec(data_config, split), split)


def stream_key(seed: int) -> jax.Array:
  """The key of a run's training data stream: batch i's is fold_in(stream_key, i)."""
  return jax.random.fold_in(jax.random.key(int(seed) % 2**32), DATA_STREAM)


def train_transform(data_config: Any, *, seed: int, start_batch: int = 0, sharding=None
                    ) -> Callable[[Batch, int], Batch] | None:
  """`transform(batch, i)`: data.device_preprocess_train of the i-th batch of a stream
  that starts at training batch `start_batch`, jitted (output placed with `sharding`
  when given); None when the spec is empty."""
  fn = device_fn(data_config, "train")
  if fn is None:
    return None
  base = stream_key(seed)
  apply = jax.jit(lambda batch, index: fn(batch, jax.random.fold_in(base, index)),
                  out_shardings=sharding)
  return lambda batch, i: apply(batch, jnp.int32(start_batch + i))


def eval_transform(data_config: Any) -> Callable[[dict], dict] | None:
  """`transform(numpy batch) -> numpy batch`: data.device_preprocess_eval, jitted and
  applied on the default device ('mask' passes through untouched); None when empty.
  One jitted function per spec, so every eval pass reuses its compilation."""
  apply = _jitted_eval(_spec(data_config, "eval"))
  if apply is None:
    return None

  def transform(batch: dict) -> dict:
    rest, mask = _split_mask(batch)
    return {**jax.device_get(apply(rest)), **mask}
  return transform


@functools.lru_cache(maxsize=16)
def _jitted_eval(spec: str | tuple[str, ...] | None):
  fn = _built(spec, "eval")
  return None if fn is None else jax.jit(lambda batch: fn(batch, jax.random.key(0)))


def _split_mask(batch: dict) -> tuple[dict, dict]:
  """(batch without 'mask', {'mask': ...} or {}): eval padding flags bypass the ops."""
  return ({k: v for k, v in batch.items() if k != "mask"},
          {k: v for k, v in batch.items() if k == "mask"})


def element_after(data_config: Any, split: str, element: dict[str, dict]
                  ) -> dict[str, dict]:
  """{key: {'shape', 'dtype'}} of one example after `split`'s device spec (shapes without
  the batch dimension), from `element`, the host pipeline's; computed abstractly."""
  fn = device_fn(data_config, split)
  if fn is None:
    return element
  rest, mask = _split_mask(element)
  abstract = {k: jax.ShapeDtypeStruct((1, *s["shape"]), s["dtype"]) for k, s in rest.items()}
  out = jax.eval_shape(fn, abstract, jax.random.key(0))
  return {k: {"shape": tuple(v.shape[1:]), "dtype": np.dtype(v.dtype).name}
          for k, v in out.items()} | mask


__all__ = ["DEVICE_OPS", "build_device_fn", "device_fn", "train_transform", "eval_transform",
           "element_after", "stream_key", "log_mel_spectrogram"]
