"""The DP-SGD gradient: each example's gradient clipped on its own (equal to a loop over
single examples and to jax-privacy's clipped_grad), padding contributes nothing, frozen leaves get neither gradient nor
noise, and the noise has the stated std."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.privacy import gradients


def _loss_fn(params, batch, rng, *, model_state, train):
  """Mean squared error of a linear model, in mmjax's loss contract."""
  del rng, train
  pred = batch["x"] @ params["w"]["kernel"] + params["b"]
  loss = jnp.mean(jnp.square(pred - batch["y"]))
  return loss, ({"mse": loss}, model_state)


def _problem(n=12, seed=0):
  rng = np.random.default_rng(seed)
  params = {"w": {"kernel": jnp.asarray(rng.normal(size=(5, 1)), jnp.float32)},
            "b": jnp.zeros((1,), jnp.float32)}
  batch = {"x": jnp.asarray(rng.normal(size=(n, 5)) * 3, jnp.float32),
           "y": jnp.asarray(rng.normal(size=(n, 1)), jnp.float32)}
  return params, batch


def _loop_reference(params, batch, clip, mask=None, per_layer=False):
  """Σ over examples of the clipped gradient of that example alone."""
  total = jax.tree.map(jnp.zeros_like, params)
  n = batch["x"].shape[0]
  for i in range(n):
    if mask is not None and mask[i] == 0:
      continue
    one = jax.tree.map(lambda v: v[i:i + 1], batch)
    g = jax.grad(lambda p: _loss_fn(p, one, None, model_state={}, train=True)[0])(params)
    leaves = jax.tree.leaves(g)
    if per_layer:
      bound = clip / np.sqrt(len(leaves))
      g = jax.tree.map(lambda x: x * min(1.0, bound / float(jnp.linalg.norm(x))), g)
    else:
      norm = float(jnp.sqrt(sum(jnp.sum(x ** 2) for x in leaves)))
      g = jax.tree.map(lambda x: x * min(1.0, clip / norm), g)
    total = jax.tree.map(jnp.add, total, g)
  return total


@pytest.mark.parametrize("per_layer, microbatch", [(False, None), (True, None),
                                                   (False, 4)])
def test_clipped_sum_equals_a_loop_over_single_examples(per_layer, microbatch):
  params, batch = _problem()
  settings = gradients.DPSettings(clip_norm=0.5, noise_multiplier=0.0,
                                  expected_batch_size=12, per_layer=per_layer,
                                  microbatch_size=microbatch)
  split = gradients.TrainableSplit(params, None)
  sums = jax.jit(lambda p, b: gradients.clipped_sums_fn(_loss_fn, settings)(
      gradients.TrainableSplit(p, None), {}, b, jax.random.key(0)))(params, batch)
  want = jax.tree.leaves(_loop_reference(params, batch, 0.5, per_layer=per_layer))
  for got, ref in zip(sums.grads, want):
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
  assert float(sums.count) == 12
  assert 0 < float(sums.clipped) <= 12   # inputs scaled by 3: most norms exceed 0.5
  assert len(split.trainable) == 2


@pytest.mark.parametrize("per_layer", [False, True])
def test_clipped_sum_equals_jax_privacys_clipped_grad(per_layer):
  from jax_privacy import clipping
  params, batch = _problem(n=16, seed=1)
  mask = np.array([1] * 13 + [0] * 3, np.float32)
  settings = gradients.DPSettings(0.3, 0.0, 13, per_layer=per_layer, microbatch_size=8)
  ours = gradients.clipped_sums_fn(_loss_fn, settings)(
      gradients.TrainableSplit(params, None), {}, dict(batch, mask=jnp.asarray(mask)),
      jax.random.key(0))
  leaves = len(jax.tree.leaves(params))
  per_tensor = lambda g: jax.tree.map(
      lambda x: x * jnp.minimum(1.0, 0.3 / leaves ** 0.5 / jnp.linalg.norm(x)), g)
  reference = clipping.clipped_grad(
      lambda p, b: _loss_fn(p, b, None, model_state={}, train=True)[0],
      l2_clip_norm=0.3, batch_argnums=1,
      **({"pre_clipping_transform": per_tensor} if per_layer else {}))(
          params, batch, is_padding_example=jnp.asarray(mask == 0))
  for got, want in zip(ours.grads, jax.tree.leaves(reference)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_padding_examples_contribute_nothing():
  params, batch = _problem()
  mask = np.array([1, 0] * 6, np.float32)
  settings = gradients.DPSettings(1.0, 0.0, 6)
  sums = gradients.clipped_sums_fn(_loss_fn, settings)(
      gradients.TrainableSplit(params, None), {}, dict(batch, mask=jnp.asarray(mask)),
      jax.random.key(0))
  want = jax.tree.leaves(_loop_reference(params, batch, 1.0, mask=mask))
  for got, ref in zip(sums.grads, want):
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
  assert float(sums.count) == 6
  per_example = [float(_loss_fn(params, jax.tree.map(lambda v: v[i:i + 1], batch), None,
                                model_state={}, train=True)[0]) for i in range(0, 12, 2)]
  assert float(sums.loss) == pytest.approx(sum(per_example), rel=1e-5)


def test_frozen_leaves_get_no_gradient_and_no_noise():
  params, batch = _problem()
  mask = {"w": {"kernel": True}, "b": False}
  split = gradients.TrainableSplit(params, mask)
  settings = gradients.DPSettings(1.0, 2.0, 12)
  sums = gradients.clipped_sums_fn(_loss_fn, settings)(split, {}, batch,
                                                       jax.random.key(0))
  assert len(sums.grads) == 1 and sums.grads[0].shape == (5, 1)
  noised = gradients.privatize(sums.grads, jax.random.key(1), settings)
  full = split.grads_with(noised)
  assert float(jnp.abs(full["b"]).sum()) == 0.0
  assert float(jnp.abs(full["w"]["kernel"]).sum()) > 0.0


def test_noise_has_std_noise_multiplier_times_clip_norm_over_the_batch():
  settings = gradients.DPSettings(clip_norm=0.7, noise_multiplier=1.3,
                                  expected_batch_size=4.0)
  zeros = [jnp.zeros((200_000,), jnp.float32), jnp.zeros((300, 100), jnp.float32)]
  noised = gradients.privatize(zeros, jax.random.key(3), settings)
  want = 1.3 * 0.7 / 4.0
  for leaf in noised:
    assert float(jnp.std(leaf)) == pytest.approx(want, rel=0.01)
    assert abs(float(jnp.mean(leaf))) < 0.01 * want
  # Independent noise per tensor, and another key draws other noise.
  assert not np.allclose(noised[0][:100], noised[1].reshape(-1)[:100])
  again = gradients.privatize(zeros, jax.random.key(4), settings)
  assert not np.allclose(noised[0], again[0])
