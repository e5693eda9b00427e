"""On-device SimCLR augmentation: shapes, range, determinism, per-example randomness."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.objectives import augment

# One compiled function shared by the tests (same shapes hit the compile cache).
_views = jax.jit(augment.simclr_views)


def _images(b=4, h=16, w=16, c=3, seed=0):
  return jax.random.uniform(jax.random.key(seed), (b, h, w, c))


@pytest.mark.parametrize("shape", [(4, 16, 16, 3), (3, 12, 8, 1)])
def test_views_keep_shape_and_range(shape):
  images = _images(*shape)
  v1, v2 = _views(images, jax.random.key(1))
  for v in (v1, v2):
    assert v.shape == images.shape and v.dtype == jnp.float32
    assert float(v.min()) >= 0.0 and float(v.max()) <= 1.0
  assert not np.allclose(v1, v2)


def test_views_are_deterministic_per_key():
  images = _images()
  a = _views(images, jax.random.key(7))
  b = _views(images, jax.random.key(7))
  c = _views(images, jax.random.key(8))
  np.testing.assert_array_equal(a[0], b[0])
  np.testing.assert_array_equal(a[1], b[1])
  assert not np.allclose(a[0], c[0])


def test_views_are_random_per_example():
  # Identical images in a batch still get different crops/flips/jitter.
  images = jnp.broadcast_to(_images(1), (4, 16, 16, 3))
  v1, _ = _views(images, jax.random.key(3))
  assert not np.allclose(v1[0], v1[1])


def test_full_crop_and_zero_jitter_are_identities():
  image = _images(1)[0]
  crop = augment.random_resized_crop(image, jax.random.key(0), scale=(1.0, 1.0),
                                     ratio=(1.0, 1.0))
  np.testing.assert_allclose(crop, image, atol=1e-6)
  np.testing.assert_array_equal(augment.color_jitter(image, jax.random.key(0), 0.0), image)


def test_small_crop_zooms_in():
  # A crop covering ~1/4 of a left-to-right ramp spans a narrower range of values.
  ramp = jnp.broadcast_to(jnp.linspace(0.0, 1.0, 32)[None, :, None], (32, 32, 1))
  crop = augment.random_resized_crop(ramp, jax.random.key(0), scale=(0.25, 0.25),
                                     ratio=(1.0, 1.0))
  assert float(crop.max() - crop.min()) < 0.6
  # It is still a ramp (monotone along width), resampled to full size.
  assert bool(jnp.all(jnp.diff(crop[16, :, 0]) >= -1e-6))


def test_flip_is_a_mirror_or_nothing():
  image = _images(1)[0]
  seen = set()
  for seed in range(8):
    out = augment.random_flip(image, jax.random.key(seed))
    if np.array_equal(out, image):
      seen.add("same")
    else:
      np.testing.assert_array_equal(out, image[:, ::-1])
      seen.add("mirrored")
  assert seen == {"same", "mirrored"}


def test_color_jitter_stays_in_range_and_changes_pixels():
  image = _images(1)[0]
  out = augment.color_jitter(image, jax.random.key(0), 0.9)
  assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
  assert not np.allclose(out, image)
