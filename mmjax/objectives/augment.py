"""On-device image augmentation in JAX for contrastive views (SimCLR, Chen et al. 2020).

Per-image functions take one image [H, W, C] in [0, 1] and a key; `simclr_views` vmaps
them over a batch so every example gets its own crop, flip and colour jitter. Everything
is jit-able (crop sizes are traced floats, resampled by `jax.image.scale_and_translate`)
and outputs stay in [0, 1] with the input's shape.
"""
from __future__ import annotations

import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp

# Luma weights (ITU-R 601) for the grayscale used by contrast and saturation jitter.
_LUMA = (0.299, 0.587, 0.114)


def random_resized_crop(image: jax.Array, key: jax.Array, *,
                        scale: Sequence[float] = (0.5, 1.0),
                        ratio: Sequence[float] = (3 / 4, 4 / 3)) -> jax.Array:
  """Crops a random box and resizes it back to the image size (bilinear).

  The box covers a fraction ~U(scale) of the image area with aspect ratio w/h
  log-uniform in `ratio` (as torchvision's RandomResizedCrop), clipped to the image,
  at a uniformly random position inside the image.

  Args:
    image: [H, W, C] float.
    key: PRNG key.
  Returns:
    [H, W, C] float32.
  """
  h, w = image.shape[0], image.shape[1]
  k_area, k_ratio, k_y, k_x = jax.random.split(key, 4)
  area = jax.random.uniform(k_area, (), minval=scale[0], maxval=scale[1]) * h * w
  log_r = jax.random.uniform(k_ratio, (), minval=math.log(ratio[0]),
                             maxval=math.log(ratio[1]))
  crop_w = jnp.clip(jnp.sqrt(area * jnp.exp(log_r)), 1.0, w)
  crop_h = jnp.clip(jnp.sqrt(area / jnp.exp(log_r)), 1.0, h)
  y0 = jax.random.uniform(k_y, ()) * (h - crop_h)
  x0 = jax.random.uniform(k_x, ()) * (w - crop_w)
  # scale_and_translate maps input coordinate u to output u·s + t; we want the box
  # [y0, y0 + crop_h] to land on [0, h] (and likewise for x).
  s = jnp.stack([h / crop_h, w / crop_w])
  t = -jnp.stack([y0, x0]) * s
  out = jax.image.scale_and_translate(
      jnp.asarray(image, jnp.float32), image.shape, spatial_dims=(0, 1), scale=s,
      translation=t, method="bilinear", antialias=True)
  # The resampling weights are convex, so this only removes float rounding.
  return jnp.clip(out, 0.0, 1.0)


def random_flip(image: jax.Array, key: jax.Array) -> jax.Array:
  """Mirrors [H, W, C] left-right with probability 1/2."""
  return jnp.where(jax.random.bernoulli(key), image[:, ::-1, :], image)


def _grayscale(image: jax.Array) -> jax.Array:
  """[H, W, C] -> [H, W, 1] luma (the mean over channels unless C == 3)."""
  if image.shape[-1] == 3:
    return jnp.tensordot(image, jnp.asarray(_LUMA, image.dtype), axes=1)[..., None]
  return jnp.mean(image, axis=-1, keepdims=True)


def color_jitter(image: jax.Array, key: jax.Array, strength: float) -> jax.Array:
  """Random brightness, contrast and (for RGB) saturation, each factor ~U[1-s, 1+s].

  brightness: x·f; contrast: mean + (x - mean)·f about the mean gray level; saturation:
  gray + (x - gray)·f. Clipped to [0, 1] after each step, like torchvision. strength 0 is
  the identity.

  Args:
    image: [H, W, C] float in [0, 1].
  Returns:
    [H, W, C] float32 in [0, 1].
  """
  image = jnp.asarray(image, jnp.float32)
  if strength <= 0:
    return image
  factors = jax.random.uniform(key, (3,), minval=1.0 - strength, maxval=1.0 + strength)
  factors = jnp.maximum(factors, 0.0)
  image = jnp.clip(image * factors[0], 0.0, 1.0)
  mean = jnp.mean(_grayscale(image))
  image = jnp.clip(mean + (image - mean) * factors[1], 0.0, 1.0)
  if image.shape[-1] == 3:
    gray = _grayscale(image)
    image = jnp.clip(gray + (image - gray) * factors[2], 0.0, 1.0)
  return image


def random_grayscale(image: jax.Array, key: jax.Array, prob: float) -> jax.Array:
  """With probability `prob`, [H, W, C] -> its luma repeated over the C channels (as
  torchvision's RandomGrayscale); otherwise the image unchanged (float32)."""
  image = jnp.asarray(image, jnp.float32)
  gray = jnp.broadcast_to(_grayscale(image), image.shape)
  return jnp.where(jax.random.bernoulli(key, prob), gray, image)


def simclr_augment(image: jax.Array, key: jax.Array, *,
                   crop_scale: Sequence[float] = (0.5, 1.0), flip: bool = True,
                   jitter: float = 0.4, jitter_prob: float = 1.0,
                   grayscale_prob: float = 0.0) -> jax.Array:
  """One random view of one image: resized crop, optional flip, colour jitter (applied
  with probability `jitter_prob`), then random grayscale with probability
  `grayscale_prob` (SimCLR's colour distortion: 0.8 and 0.2).

  Args:
    image: [H, W, C] float in [0, 1].
  Returns:
    [H, W, C] float32 in [0, 1].
  """
  k_crop, k_flip, k_jitter = jax.random.split(key, 3)
  view = random_resized_crop(image, k_crop, scale=crop_scale)
  if flip:
    view = random_flip(view, k_flip)
  jittered = color_jitter(view, k_jitter, jitter)
  # The probabilities are static: at their defaults no extra key is drawn, so the views
  # are exactly those of the plain crop-flip-jitter pipeline.
  if jitter_prob < 1.0:
    apply = jax.random.bernoulli(jax.random.fold_in(key, 1), jitter_prob)
    jittered = jnp.where(apply, jittered, jnp.asarray(view, jnp.float32))
  if grayscale_prob > 0.0:
    jittered = random_grayscale(jittered, jax.random.fold_in(key, 2), grayscale_prob)
  return jittered


def simclr_views(images: jax.Array, key: jax.Array, *,
                 crop_scale: Sequence[float] = (0.5, 1.0), flip: bool = True,
                 jitter: float = 0.4, jitter_prob: float = 1.0,
                 grayscale_prob: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """Two independent random views of every image in a batch (see `simclr_augment`).

  Args:
    images: [B, H, W, C] float in [0, 1].
    key: PRNG key; every example and view gets its own subkey.
  Returns:
    (view1, view2), each [B, H, W, C] float32 in [0, 1].
  """
  return _simclr_views(images, key, crop_scale=tuple(float(s) for s in crop_scale),
                       flip=bool(flip), jitter=float(jitter),
                       jitter_prob=float(jitter_prob), grayscale_prob=float(grayscale_prob))


# Jitted so that eager callers (tests, notebooks) do not pay op-by-op dispatch of the
# vmapped resampling; inside a jitted train step it is simply inlined.
@functools.partial(jax.jit, static_argnames=("crop_scale", "flip", "jitter", "jitter_prob",
                                             "grayscale_prob"))
def _simclr_views(images, key, *, crop_scale, flip, jitter, jitter_prob, grayscale_prob):
  b = images.shape[0]
  k1, k2 = jax.random.split(key)
  augment = jax.vmap(lambda img, k: simclr_augment(
      img, k, crop_scale=crop_scale, flip=flip, jitter=jitter, jitter_prob=jitter_prob,
      grayscale_prob=grayscale_prob))
  return (augment(images, jax.random.split(k1, b)),
          augment(images, jax.random.split(k2, b)))
