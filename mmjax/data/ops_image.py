"""Image preprocessing ops. Images are [H, W, C] per example (uint8 or float32).

Geometric ops keep the input dtype (uint8 stays uint8, rounded), so they can run before
or after `to_float`. Random ops draw only from their stateless `seed`.
"""
from __future__ import annotations

import math

from mmjax.data import op_common
from mmjax.data.host_registry import OPS
from mmjax.data.lazy_tf import tf
from mmjax.errors import ConfigError


def _like(x: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
  """Float result -> `dtype` (integer dtypes are rounded and saturated)."""
  if dtype.is_integer:
    return tf.saturate_cast(tf.round(x), dtype)
  return tf.cast(x, dtype)


def _map_key(key: str, fn):
  def op(example, seed):
    return {**example, key: fn(example[key], seed)}
  return op


@OPS.register("to_float")
def to_float(key: str = "image"):
  """uint8 [0, 255] -> float32 [0, 1]; float input is only cast to float32."""
  def fn(img, seed):
    del seed
    if img.dtype == tf.uint8:
      return tf.cast(img, tf.float32) / 255.0
    return tf.cast(img, tf.float32)
  return _map_key(key, fn)


@OPS.register("resize")
def resize(size, key: str = "image", method: str = "bilinear", antialias: bool = True):
  """[H, W, C] -> [h, w, C] (tf.image.resize; dtype kept)."""
  h, w = op_common.image_size(size, "resize")

  def fn(img, seed):
    del seed
    return _like(tf.image.resize(img, (h, w), method=method, antialias=antialias), img.dtype)
  return _map_key(key, fn)


@OPS.register("random_crop", random=True)
def random_crop(size, pad: int = 0, key: str = "image"):
  """Zero-pads `pad` pixels on every side, then crops a random [h, w] window.

  With size == input size and pad > 0 this is the classic CIFAR/MNIST random shift.
  """
  h, w = op_common.image_size(size, "random_crop")
  op_common.check_pad(pad)

  def fn(img, seed):
    if pad:
      img = tf.pad(img, [[pad, pad], [pad, pad], [0, 0]])
    channels = img.shape[-1]
    out = tf.image.stateless_random_crop(img, [h, w, tf.shape(img)[-1]], seed=seed)
    return tf.ensure_shape(out, [h, w, channels])
  return _map_key(key, fn)


@OPS.register("center_crop")
def center_crop(size, key: str = "image"):
  """[H, W, C] -> the central [h, w, C] (h <= H, w <= W)."""
  h, w = op_common.image_size(size, "center_crop")

  def fn(img, seed):
    del seed
    top = (tf.shape(img)[0] - h) // 2
    left = (tf.shape(img)[1] - w) // 2
    return tf.ensure_shape(img[top:top + h, left:left + w], [h, w, img.shape[-1]])
  return _map_key(key, fn)


@OPS.register("resize_small")
def resize_small(size: int, key: str = "image", method: str = "bilinear"):
  """Resizes so that the shorter side is `size`, keeping the aspect ratio (ImageNet
  eval: resize_small(256)|center_crop(224))."""
  if not isinstance(size, int) or size <= 0:
    raise ConfigError(f"Preprocessing op 'resize_small': size must be a positive int, "
                      f"got {size!r}.")

  def fn(img, seed):
    del seed
    hw = tf.cast(tf.shape(img)[:2], tf.float32)
    scale = size / tf.reduce_min(hw)
    new = tf.cast(tf.round(hw * scale), tf.int32)
    return _like(tf.image.resize(img, new, method=method, antialias=True), img.dtype)
  return _map_key(key, fn)


@OPS.register("inception_crop", random=True)
def inception_crop(size, area_min: float = 0.05, area_max: float = 1.0,
                   key: str = "image"):
  """Random-resized crop (Szegedy et al. 2015; the ImageNet training crop of ResNet and
  ViT): a window covering [area_min, area_max] of the image with aspect ratio in
  [3/4, 4/3], resized to [h, w]."""
  h, w = op_common.image_size(size, "inception_crop")
  if not 0 < area_min <= area_max <= 1:
    raise ConfigError(f"Preprocessing op 'inception_crop': need 0 < area_min <= area_max "
                      f"<= 1, got {area_min}, {area_max}.")

  def fn(img, seed):
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(img), tf.zeros([0, 0, 4], tf.float32), seed=seed,
        area_range=(area_min, area_max), aspect_ratio_range=(3 / 4, 4 / 3),
        min_object_covered=0.0, use_image_if_no_bounding_boxes=True)
    crop = tf.slice(img, begin, crop_size)
    out = _like(tf.image.resize(crop, (h, w), antialias=True), img.dtype)
    return tf.ensure_shape(out, [h, w, img.shape[-1]])
  return _map_key(key, fn)


@OPS.register("flip_lr", random=True)
def flip_lr(p: float = 0.5, key: str = "image"):
  """Mirrors left-right with probability p."""
  op_common.check_probability(p, "flip_lr")

  def fn(img, seed):
    flip = tf.random.stateless_uniform([], seed=seed) < p
    return tf.where(flip, tf.reverse(img, axis=[1]), img)
  return _map_key(key, fn)


def rotation_transform(angle: tf.Tensor, height: int, width: int) -> tf.Tensor:
  """[8] projective transform (output -> input coordinates) rotating about the center.

  Same parameterisation as tfa.image.rotate / keras RandomRotation.
  """
  cos, sin = tf.cos(angle), tf.sin(angle)
  h, w = tf.cast(height, tf.float32) - 1, tf.cast(width, tf.float32) - 1
  x_offset = (w - (cos * w - sin * h)) / 2.0
  y_offset = (h - (sin * w + cos * h)) / 2.0
  zero = tf.zeros_like(cos)
  return tf.stack([cos, -sin, x_offset, sin, cos, y_offset, zero, zero])


def rotate_image(img: tf.Tensor, angle: tf.Tensor, fill: float = 0.0,
                 interpolation: str = "bilinear") -> tf.Tensor:
  """Rotates [H, W, C] by `angle` radians about its center (positive = counter-clockwise
  as displayed, i.e. angle=pi/2 equals np.rot90(img)); dtype and shape are kept."""
  height, width = tf.shape(img)[0], tf.shape(img)[1]
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=tf.cast(img, tf.float32)[None],
      transforms=rotation_transform(tf.cast(angle, tf.float32), height, width)[None],
      output_shape=tf.stack([height, width]),
      fill_value=tf.constant(fill, tf.float32),
      interpolation=interpolation.upper(), fill_mode="CONSTANT")[0]
  return tf.ensure_shape(_like(out, img.dtype), img.shape)


@OPS.register("rotate", random=True)
def rotate(max_degrees: float, fill: float = 0.0, key: str = "image",
           interpolation: str = "bilinear"):
  """Rotates by a uniform random angle in [-max_degrees, max_degrees]; corners get `fill`."""
  if float(max_degrees) < 0:
    raise ConfigError(f"Preprocessing op 'rotate': max_degrees must be >= 0, got {max_degrees!r}.")
  if interpolation not in ("bilinear", "nearest"):
    raise ConfigError("Preprocessing op 'rotate': interpolation must be 'bilinear' or 'nearest'.")
  max_rad = float(max_degrees) * math.pi / 180.0

  def fn(img, seed):
    angle = tf.random.stateless_uniform([], seed=seed, minval=-max_rad, maxval=max_rad)
    return rotate_image(img, angle, fill, interpolation)
  return _map_key(key, fn)


@OPS.register("normalize")
def normalize(mean, std, key: str = "image"):
  """(x - mean) / std -> float32; mean/std are scalars or per-channel lists."""
  mean_t = tf.constant(mean, tf.float32)
  std_t = tf.constant(std, tf.float32)
  if bool(tf.reduce_any(std_t == 0)):
    raise ConfigError(f"Preprocessing op 'normalize': std must be non-zero, got {std!r}.")

  def fn(img, seed):
    del seed
    return (tf.cast(img, tf.float32) - mean_t) / std_t
  return _map_key(key, fn)


@OPS.register("grayscale_to_rgb")
def grayscale_to_rgb(key: str = "image"):
  """[H, W, 1] -> [H, W, 3] (repeats the channel); [H, W, 3] passes through."""
  def fn(img, seed):
    del seed
    if img.shape[-1] == 3:
      return img
    if img.shape[-1] != 1:
      raise ConfigError(f"grayscale_to_rgb expects 1 or 3 channels, got shape {img.shape}.")
    return tf.tile(img, [1, 1, 3])
  return _map_key(key, fn)
