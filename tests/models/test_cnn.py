"""CNNs: shapes, published parameter counts, BatchNorm state, dropout, normalisation."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import models
from mmjax.errors import ConfigError


@functools.partial(jax.jit, static_argnames=("model", "train", "mutable"))
def _apply(model, variables, batch, rngs=None, *, train=False, mutable=False):
  return model.apply(variables, batch, rngs=rngs, train=train, mutable=mutable)


def _host_variables(model, batch, seed=0):
  """Generic variables drawn on the host with numpy, shaped like `init_variables`' output.

  Behavioural tests of the large CNNs use these: compiling their real initialisers (one
  threefry program per conv kernel) costs seconds on CPU and is covered by
  `abstract_variables` (same code path, traced) and by the MNIST test (executed).
  """
  rng = np.random.default_rng(seed)

  def draw(path, leaf):
    name = jax.tree_util.keystr(path)
    if leaf.ndim > 1:  # kernels: variance 2 / fan_in
      scale = np.sqrt(2.0 / np.prod(leaf.shape[:-1]))
      return jnp.asarray(rng.normal(size=leaf.shape) * scale, leaf.dtype)
    noise = rng.normal(size=leaf.shape) * 0.1
    if "'var'" in name or "'scale'" in name:
      noise = 1.0 + np.abs(noise)
    return jnp.asarray(noise, leaf.dtype)
  return jax.tree_util.tree_map_with_path(draw, models.abstract_variables(model, batch))


def _count(cfg, hw, channels=3):
  batch = {"image": jax.ShapeDtypeStruct((1, hw, hw, channels), jnp.float32)}
  return models.param_count(
      models.abstract_variables(models.build_model(cfg), batch)["params"])


def test_published_param_counts():
  assert _count({"name": "mnist_cnn"}, 28, 1) == 166_406
  # TF Privacy's DP-SGD tutorial CNN (Papernot et al. 2021's MNIST net).
  assert _count({"name": "dp_mnist_cnn"}, 28, 1) == 26_010
  # 11,171,146 (ResNet-18 figure) + the final pre-activation BatchNorm (2 * 512).
  assert _count({"name": "preact_resnet18"}, 32) == 11_172_170
  assert _count({"name": "wide_resnet", "depth": 34, "widen_factor": 10}, 32) == 46_160_474
  assert _count({"name": "wide_resnet", "depth": 28, "widen_factor": 10}, 32) == 36_479_194


def test_mnist_cnn_shapes_and_normalisation():
  images = jax.random.uniform(jax.random.key(0), (3, 28, 28, 1))
  model = models.build_model({"name": "mnist_cnn"})
  variables = models.init_variables(model, {"image": images}, jax.random.key(0))
  out = _apply(model, variables, {"image": images})
  assert set(out) == {"pooled", "logits"}
  assert out["pooled"].shape == (3, 100) and out["logits"].shape == (3, 10)
  # Normalisation happens inside the model: mean/std 0.5 on x == defaults on (x-.5)/.5.
  normed = models.build_model({"name": "mnist_cnn", "pixel_mean": 0.5, "pixel_std": 0.5})
  np.testing.assert_allclose(_apply(normed, variables, {"image": images})["logits"],
                             _apply(model, variables, {"image": (images - 0.5) / 0.5})["logits"],
                             atol=1e-5)


def test_preact_resnet18_batch_norm_state():
  images = jax.random.uniform(jax.random.key(0), (4, 8, 8, 3))
  model = models.build_model({"name": "preact_resnet18", "pixel_mean": (0.5, 0.4, 0.3),
                              "pixel_std": 0.25})
  variables = _host_variables(model, {"image": images})
  assert set(variables) == {"params", "batch_stats"}
  out, state = _apply(model, variables, {"image": images}, train=True,
                      mutable=("batch_stats",))
  assert out["pooled"].shape == (4, 512) and out["logits"].shape == (4, 10)
  changed = jax.tree_util.tree_map(lambda a, b: not np.allclose(a, b),
                                   state["batch_stats"], variables["batch_stats"])
  assert all(jax.tree_util.tree_leaves(changed))
  # Eval mode reads the running averages, leaves them alone and is deterministic.
  eval_out, eval_state = _apply(model, variables, {"image": images}, mutable=("batch_stats",))
  for a, b in zip(jax.tree_util.tree_leaves(eval_state), jax.tree_util.tree_leaves(
      {"batch_stats": variables["batch_stats"]})):
    np.testing.assert_array_equal(a, b)
  again, _ = _apply(model, variables, {"image": images}, mutable=("batch_stats",))
  np.testing.assert_array_equal(again["logits"], eval_out["logits"])
  assert not np.allclose(eval_out["logits"], out["logits"])


def test_wide_resnet_dropout_and_shapes():
  images = jax.random.uniform(jax.random.key(0), (2, 8, 8, 3))
  model = models.build_model({"name": "wide_resnet", "depth": 10, "widen_factor": 2,
                              "dropout": 0.3, "projection_dim": 5})
  variables = _host_variables(model, {"image": images})
  out = _apply(model, variables, {"image": images})
  assert out["pooled"].shape == (2, 128) and out["logits"].shape == (2, 10)
  assert out["projection"].shape == (2, 5)
  np.testing.assert_array_equal(_apply(model, variables, {"image": images})["logits"],
                                out["logits"])
  rngs = {"dropout": jax.random.key(1)}
  a, _ = _apply(model, variables, {"image": images}, rngs, train=True, mutable=("batch_stats",))
  b, _ = _apply(model, variables, {"image": images}, {"dropout": jax.random.key(2)},
                train=True, mutable=("batch_stats",))
  assert not np.allclose(a["logits"], b["logits"])


def test_wide_resnet_depth_must_be_6n_plus_4():
  model = models.build_model({"name": "wide_resnet", "depth": 30})
  with pytest.raises(ConfigError, match="6n\\+4"):
    models.abstract_variables(model, {"image": jnp.zeros((1, 8, 8, 3))})
