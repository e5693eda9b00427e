"""SimCLR colour distortion's probabilities: jitter applied with `jitter_prob`, random
grayscale with `grayscale_prob`; the defaults leave the plain pipeline's views unchanged."""
import jax
import numpy as np
import pytest

from mmjax import models
from mmjax.errors import ConfigError
from mmjax.objectives import augment, make_objective

LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _images(b=64, h=4, w=4, c=3):
  return jax.random.uniform(jax.random.key(0), (b, h, w, c))


def _is_gray(v):
  """[B,H,W,3] -> [B] bool: all three channels equal."""
  v = np.asarray(v)
  return np.all(np.abs(v - v[..., :1]) < 1e-6, axis=(1, 2, 3))


def test_random_grayscale_gives_the_luma_in_every_channel():
  image = _images(1)[0]
  gray = augment.random_grayscale(image, jax.random.key(0), 1.0)
  np.testing.assert_allclose(np.asarray(gray[..., 0]), np.asarray(image) @ LUMA, rtol=1e-5)
  assert _is_gray(gray[None])[0]
  np.testing.assert_array_equal(augment.random_grayscale(image, jax.random.key(0), 0.0),
                                image)


def test_defaults_reproduce_the_plain_pipeline_exactly():
  images, key = _images(4), jax.random.key(3)
  plain = augment.simclr_views(images, key, jitter=0.4)
  explicit = augment.simclr_views(images, key, jitter=0.4, jitter_prob=1.0,
                                  grayscale_prob=0.0)
  for a, b in zip(plain, explicit):
    np.testing.assert_array_equal(a, b)


def test_grayscale_fraction_follows_its_probability():
  v1, v2 = augment.simclr_views(_images(), jax.random.key(1), jitter=0.4,
                                grayscale_prob=0.5)
  fraction = float(np.mean(np.concatenate([_is_gray(v1), _is_gray(v2)])))
  assert 0.3 < fraction < 0.7, fraction       # 128 draws of p = 0.5
  none = augment.simclr_views(_images(), jax.random.key(1), jitter=0.4)[0]
  assert not _is_gray(none).any()


def test_jitter_prob_zero_leaves_only_crop_and_flip():
  images, key = _images(4), jax.random.key(2)
  no_jitter = augment.simclr_views(images, key, jitter=0.8, jitter_prob=0.0)
  zero_strength = augment.simclr_views(images, key, jitter=0.0)
  for a, b in zip(no_jitter, zero_strength):
    np.testing.assert_allclose(a, b, atol=1e-6)
  half = augment.simclr_views(_images(), key, jitter=0.8, jitter_prob=0.5)[0]
  crops = augment.simclr_views(_images(), key, jitter=0.0)[0]
  unjittered = np.all(np.abs(np.asarray(half) - np.asarray(crops)) < 1e-6, axis=(1, 2, 3))
  assert 0.3 < float(np.mean(unjittered)) < 0.7


@pytest.mark.parametrize("key", ["jitter_prob", "grayscale_prob"])
def test_simclr_rejects_probabilities_outside_0_1(key):
  model = models.build_model(dict(name="wide_resnet", depth=10, widen_factor=1,
                                  num_classes=0, projection_dim=8))
  with pytest.raises(ConfigError, match=key):
    make_objective({"name": "simclr", key: 1.5}, model)
