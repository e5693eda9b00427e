"""Norm geometry for attacks: projections, normalised ascent directions, random starts.

All functions act on one leaf with a leading batch dim B; the l2 norm of a leaf is per
example over every non-batch dim. Keys may be one PRNG key or a batch of per-example keys
([B,2] raw uint32, or [B] typed), which makes an example's randomness independent of the
batch it lands in.
"""
import math

import jax
import jax.numpy as jnp

NORMS = ("linf", "l2")
_TINY = 1e-12


def per_example(v, x):
  """Reshapes a per-example vector [B] so that it broadcasts against x [B,...]."""
  return jnp.reshape(v, v.shape + (1,) * (x.ndim - 1))


def l2_norm(x):
  """Per-example l2 norm over all non-batch dims. [B,...] -> [B] (float32)."""
  x = x.astype(jnp.float32)
  return jnp.sqrt(jnp.sum(jnp.square(x), axis=tuple(range(1, x.ndim))))


def project_delta(delta, eps, norm):
  """Projects a perturbation [B,...] onto the eps-ball of `norm`. eps: scalar or [B]."""
  eps = jnp.asarray(eps, jnp.float32)
  if norm == "linf":
    e = per_example(eps, delta) if eps.ndim else eps
    return jnp.clip(delta, -e, e).astype(delta.dtype)
  n = l2_norm(delta)
  # Guarded so that eps = 0 or delta = 0 gives 0, never NaN.
  factor = jnp.where(n > eps, eps / jnp.maximum(n, _TINY), 1.0)
  return (delta * per_example(factor, delta)).astype(delta.dtype)


def ascent_direction(grad, norm):
  """Steepest-ascent unit step for `norm`: sign(g) (linf) or g/||g||_2 (l2). [B,...]."""
  if norm == "linf":
    return jnp.sign(grad)
  n = l2_norm(grad)
  return grad / per_example(jnp.maximum(n, _TINY), grad).astype(grad.dtype)


def clip_to_bounds(x, bounds):
  """Clips into the box (lo, hi); bounds None means no clipping (e.g. embeddings)."""
  if bounds is None:
    return x
  return jnp.clip(x, bounds[0], bounds[1]).astype(x.dtype)


def is_batched_key(key):
  key = jnp.asarray(key) if not hasattr(key, "dtype") else key
  if jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
    return key.ndim == 1
  return key.ndim == 2


def fold_in(key, data):
  """fold_in for one key or a batch of per-example keys."""
  if is_batched_key(key):
    return jax.vmap(lambda k: jax.random.fold_in(k, data))(key)
  return jax.random.fold_in(key, data)


def _sample(fn, key, shape):
  """Draws fn(key, shape) for one key, or per example with batched keys."""
  if is_batched_key(key):
    return jax.vmap(lambda k: fn(k, shape[1:]))(key)
  return fn(key, shape)


def random_delta(key, like, eps, norm):
  """A random perturbation shaped like `like` [B,...]: uniform in the eps-ball.

  linf: each coordinate U(-eps, eps) (Fast-AT's start). l2: uniform in the ball, i.e. a
  Gaussian direction with radius eps * U^(1/d).
  """
  shape, dtype = like.shape, like.dtype
  eps = jnp.asarray(eps, jnp.float32)
  if norm == "linf":
    u = _sample(lambda k, s: jax.random.uniform(k, s, jnp.float32, -1.0, 1.0), key, shape)
    return (u * eps).astype(dtype)
  k_dir, k_rad = jax.random.split(key) if not is_batched_key(key) else (
      fold_in(key, 0), fold_in(key, 1))
  z = _sample(lambda k, s: jax.random.normal(k, s, jnp.float32), k_dir, shape)
  d = max(1, math.prod(shape[1:]))
  u = _sample(lambda k, s: jax.random.uniform(k, s, jnp.float32), k_rad, shape[:1])
  radius = eps * u ** (1.0 / d)
  return (z * per_example(radius / jnp.maximum(l2_norm(z), _TINY), z)).astype(dtype)
