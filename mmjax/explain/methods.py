"""Attribution methods over any `logits_fn(x) -> [B, C]` of an input array x [B, ...].

  gradient               d logit_t / dx (Simonyan et al. 2014)
  gradient_x_input       x · d logit_t / dx
  smoothgrad             the mean gradient over `samples` noisy copies of x, noise std
                         `sigma` times the input's range (Smilkov et al. 2017)
  integrated_gradients   (x - x') · the mean gradient on the straight path from the baseline
                         x' to x, by the trapezoidal rule over `steps` intervals
                         (Sundararajan et al. 2017); sum of attributions ≈ f(x) - f(x')
  occlusion              f(x) - f(x with a window replaced by the baseline), slid over
                         the input; each element gets the mean drop of the windows that
                         cover it (Zeiler & Fergus 2014; Captum's Occlusion)

t is each example's target class. Every method returns attributions shaped like x; all are
jitted (one compile per shape) and batched over examples, the path or the noise samples.
"""
from __future__ import annotations

import functools
import itertools
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.errors import ConfigError

METHODS = ("gradient", "gradient_x_input", "smoothgrad", "integrated_gradients",
           "occlusion")
BASELINES = ("zeros", "blur", "uniform")


def _target_grad(logits_fn: Callable, x: jax.Array, target: jax.Array) -> jax.Array:
  """d/dx of sum_b logits_fn(x)[b, target_b]: each example's own target gradient."""
  def selected(xx):
    logits = logits_fn(xx)
    return jnp.take_along_axis(logits, target[:, None], axis=1).sum()
  return jax.grad(selected)(x)


def gradient(logits_fn, x, target):
  """Vanilla gradient saliency [B, ...]."""
  return _target_grad(logits_fn, x, jnp.asarray(target, jnp.int32))


def gradient_x_input(logits_fn, x, target):
  """Gradient times input [B, ...]."""
  return x * gradient(logits_fn, x, target)


def smoothgrad(logits_fn, x, target, key, *, samples: int = 16, sigma: float = 0.15):
  """SmoothGrad [B, ...]: the mean of `samples` gradients at x + N(0, (sigma·range)²)."""
  check_positive("smoothgrad samples", samples)
  target = jnp.asarray(target, jnp.int32)
  spread = sigma * (jnp.max(x) - jnp.min(x))

  def one(total, k):
    noisy = x + spread * jax.random.normal(k, x.shape, x.dtype)
    return total + _target_grad(logits_fn, noisy, target), None

  total, _ = jax.lax.scan(one, jnp.zeros_like(x), jax.random.split(key, samples))
  return total / samples


def make_baseline(kind: str, x: jax.Array, key=None) -> jax.Array:
  """The reference input x' of integrated gradients, shaped like x: 'zeros', 'blur' (a
  5x5 box blur of each image [B, H, W, C]) or 'uniform' (noise over x's range)."""
  if kind == "zeros":
    return jnp.zeros_like(x)
  if kind == "uniform":
    key = jax.random.PRNGKey(0) if key is None else key
    return jax.random.uniform(key, x.shape, x.dtype, jnp.min(x), jnp.max(x))
  if kind == "blur":
    if x.ndim != 4:
      raise ConfigError(f"baseline 'blur' needs images [B, H, W, C], got shape {x.shape}; "
                        "use 'zeros' or 'uniform'.")
    kernel = jnp.ones((5, 5, 1, 1), x.dtype) / 25.0
    channels = [jax.lax.conv_general_dilated(x[..., c:c + 1], kernel, (1, 1), "SAME",
                                             dimension_numbers=("NHWC", "HWIO", "NHWC"))
                for c in range(x.shape[-1])]
    return jnp.concatenate(channels, axis=-1)
  raise ConfigError(f"Unknown baseline {kind!r}; choose one of {', '.join(BASELINES)}.")


def integrated_gradients(logits_fn, x, target, *, baseline=None, steps: int = 64):
  """Integrated gradients [B, ...] from `baseline` (an array like x; default zeros) over
  `steps` trapezoidal intervals of the straight path."""
  check_positive("integrated_gradients steps", steps)
  baseline = jnp.zeros_like(x) if baseline is None else baseline
  if baseline.shape != x.shape:
    raise ConfigError(f"The integrated-gradients baseline has shape {baseline.shape}, the "
                      f"input {x.shape}; pass a baseline shaped like the input.")
  target = jnp.asarray(target, jnp.int32)
  alphas = jnp.linspace(0.0, 1.0, steps + 1)
  weights = jnp.full((steps + 1,), 1.0).at[0].set(0.5).at[-1].set(0.5) / steps

  def one(total, aw):
    alpha, w = aw
    g = _target_grad(logits_fn, baseline + alpha * (x - baseline), target)
    return total + w * g, None

  total, _ = jax.lax.scan(one, jnp.zeros_like(x), (alphas, weights))
  return (x - baseline) * total


def completeness_gap(logits_fn, x, target, attributions, baseline) -> jax.Array:
  """Per example |sum(attributions) - (f_t(x) - f_t(x'))| / |f_t(x) - f_t(x')| [B]: how far
  integrated gradients is from its completeness axiom (0 = exact)."""
  target = jnp.asarray(target, jnp.int32)[:, None]
  fx = jnp.take_along_axis(logits_fn(x), target, axis=1)[:, 0]
  fb = jnp.take_along_axis(logits_fn(baseline), target, axis=1)[:, 0]
  total = attributions.reshape(attributions.shape[0], -1).sum(-1)
  return jnp.abs(total - (fx - fb)) / jnp.maximum(jnp.abs(fx - fb), 1e-12)


def occlusion_windows(shape: tuple[int, ...], window: tuple[int, ...],
                      stride: tuple[int, ...]) -> np.ndarray:
  """Every position of a `window` slid by `stride` over an example of `shape` (no batch
  dim) -> masks [W, *shape] of 0/1 (1 = occluded). A window or stride entry of 0 means
  the whole axis (e.g. window (1, 0) occludes one text token's whole embedding). The
  last window on an axis is aligned to its end, so every element is covered."""
  if len(window) != len(shape) or len(stride) != len(shape):
    raise ConfigError(f"Occlusion window {window} and stride {stride} need one entry per "
                      f"input axis {shape} (0 = the whole axis).")
  starts = []
  for size, w, s in zip(shape, window, stride):
    w, s = (w or size), (s or w or size)
    if not 1 <= w <= size or s < 1:
      raise ConfigError(f"Occlusion window {window} / stride {stride} do not fit an "
                        f"input of shape {shape}: each must be in 1..size (or 0).")
    axis = list(range(0, size - w + 1, s))
    if axis[-1] != size - w:
      axis.append(size - w)
    starts.append([(a, w) for a in axis])
  masks = []
  for corner in itertools.product(*starts):
    m = np.zeros(shape, np.float32)
    m[tuple(slice(a, a + w) for a, w in corner)] = 1.0
    masks.append(m)
  return np.stack(masks)


def occlusion(logits_fn, x, target, *, window: tuple[int, ...], stride=None,
              baseline=None):
  """Occlusion attributions [B, ...]: for each window position (`occlusion_windows`),
  the drop of the target logit when the window is replaced by `baseline` (an array like
  x; default zeros); each element gets the mean drop over the windows covering it."""
  window = tuple(window)
  stride = window if stride is None else tuple(stride)
  masks = jnp.asarray(occlusion_windows(tuple(x.shape[1:]), window, stride))
  baseline = jnp.zeros_like(x) if baseline is None else baseline
  if baseline.shape != x.shape:
    raise ConfigError(f"The occlusion baseline has shape {baseline.shape}, the input "
                      f"{x.shape}; pass a baseline shaped like the input.")
  target = jnp.asarray(target, jnp.int32)[:, None]
  score = lambda z: jnp.take_along_axis(logits_fn(z), target, axis=1)[:, 0]
  full = score(x)

  def one(total, mask):
    occluded = x * (1.0 - mask) + baseline * mask
    drop = full - score(occluded)                                   # [B]
    return total + drop.reshape((-1,) + (1,) * (x.ndim - 1)) * mask, None

  total, _ = jax.lax.scan(one, jnp.zeros_like(x), masks)
  return total / jnp.maximum(masks.sum(0), 1.0)


def modality_contributions(logits_fn, inputs: dict, target, keys, *, steps: int = 64):
  """How much of the target logit each input in `keys` carries: integrated gradients
  over all of them at once, from an all-zeros baseline (no pixels, no token embeddings,
  a silent spectrogram), summed per input.

  logits_fn(inputs dict) -> [B, C]; inputs {key: [B, ...] float} -> ({key: [B]}, the
  completeness gap [B]). By completeness the contributions sum to f(x) - f(0)."""
  check_positive("integrated_gradients steps", steps)
  keys = tuple(keys)
  b = inputs[keys[0]].shape[0]
  flat = [jnp.reshape(inputs[k], (b, -1)) for k in keys]
  sizes = [f.shape[1] for f in flat]
  ends = list(itertools.accumulate(sizes))

  def unflatten(z):
    parts = jnp.split(z, ends[:-1], axis=1)
    return {**inputs, **{k: p.reshape(inputs[k].shape) for k, p in zip(keys, parts)}}

  flat_fn = lambda z: logits_fn(unflatten(z))
  x = jnp.concatenate(flat, axis=1)
  ig = integrated_gradients(flat_fn, x, target, steps=steps)
  gap = completeness_gap(flat_fn, x, target, ig, jnp.zeros_like(x))
  parts = jnp.split(ig, ends[:-1], axis=1)
  return {k: p.sum(-1) for k, p in zip(keys, parts)}, gap


def check_positive(what: str, value) -> None:
  if isinstance(value, bool) or not isinstance(value, int) or value < 1:
    raise ConfigError(f"{what}={value!r} must be a positive integer.")


def attribute(method: str, logits_fn, x, target, *, key=None, baseline=None, steps=64,
              samples=16, sigma=0.15, window=None, stride=None):
  """One of METHODS by name -> attributions [B, ...] (see each function)."""
  if method == "gradient":
    return gradient(logits_fn, x, target)
  if method == "gradient_x_input":
    return gradient_x_input(logits_fn, x, target)
  if method == "smoothgrad":
    return smoothgrad(logits_fn, x, target,
                      jax.random.PRNGKey(0) if key is None else key,
                      samples=samples, sigma=sigma)
  if method == "integrated_gradients":
    return integrated_gradients(logits_fn, x, target, baseline=baseline, steps=steps)
  if method == "occlusion":
    if window is None:
      raise ConfigError("occlusion needs a window: one size per input axis, e.g. (4, 4, 0) "
                        "for images [H, W, C] (0 = the whole axis).")
    return occlusion(logits_fn, x, target, window=window, stride=stride,
                     baseline=baseline)
  raise ConfigError(f"Unknown attribution method {method!r}; choose one of "
                    f"{', '.join(METHODS)}.")


jitted_attribute = functools.partial(jax.jit, static_argnames=(
    "method", "logits_fn", "steps", "samples", "sigma", "window", "stride"))(attribute)
