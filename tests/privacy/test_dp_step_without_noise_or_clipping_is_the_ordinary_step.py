"""With noise 0 and an infinite clip norm the DP-SGD step is the ordinary step (also
under gradient accumulation and with a frozen subset); with noise, the same key gives
the same update and the noise reaches only the trainable parameters."""
import jax
import numpy as np
import pytest

from mmjax.objectives import make_objective
from mmjax.privacy import gradients
from mmjax.train import optim, state as state_lib, step as step_lib
from tests.conftest import tiny_cnn


@pytest.fixture(scope="module")
def cnn():
  return tiny_cnn(16)


def one_step(cnn, *, privacy=None, accum=1, trainable=None):
  model, batch, variables = cnn
  tx, _ = optim.make_optimizer(dict(name="sgd", learning_rate=0.1, momentum=0.0,
                                    schedule="constant"), total_steps=10)
  loss_fn = make_objective(dict(name="supervised"), model)
  state = state_lib.create_train_state(variables, tx, jax.random.PRNGKey(1), ema=False)
  step = jax.jit(step_lib.make_train_step(loss_fn, tx, grad_accum_steps=accum,
                                          trainable=trainable, privacy=privacy))
  metrics = {"loss": 0, "accuracy": 0, "grad_norm": 0}
  if privacy is not None:
    metrics.update({"dp/clipped_fraction": 0, "dp/batch_size": 0})
  acc = step_lib.init_metric_accumulator(metrics)
  return step(state, batch, acc), state


@pytest.mark.parametrize("accum", [1, 4])
def test_no_noise_and_no_clipping_equals_the_ordinary_step(cnn, accum):
  (plain, plain_acc), _ = one_step(cnn)
  free = gradients.DPSettings(clip_norm=float("inf"), noise_multiplier=0.0,
                              expected_batch_size=16.0)
  (private, private_acc), _ = one_step(cnn, privacy=free, accum=accum)
  for a, b in zip(jax.tree.leaves(plain.params), jax.tree.leaves(private.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6, rtol=1e-5)
  np.testing.assert_allclose(plain_acc["sums"]["loss"], private_acc["sums"]["loss"],
                             rtol=1e-5)
  np.testing.assert_allclose(plain_acc["sums"]["accuracy"],
                             private_acc["sums"]["accuracy"], rtol=1e-6)
  assert float(private_acc["sums"]["dp/clipped_fraction"]) == 0.0
  assert float(private_acc["sums"]["dp/batch_size"]) == 16.0


def test_noise_is_reproducible_and_spares_frozen_parameters(cnn):
  noisy = gradients.DPSettings(clip_norm=1.0, noise_multiplier=1.0,
                               expected_batch_size=16.0)
  only_fc2 = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, _: "fc2" in jax.tree_util.keystr(path), params)
  (first, acc), before = one_step(cnn, privacy=noisy, trainable=only_fc2)
  (again, _), _ = one_step(cnn, privacy=noisy, trainable=only_fc2)
  for a, b in zip(jax.tree.leaves(first.params), jax.tree.leaves(again.params)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  moved = jax.tree_util.tree_map_with_path(
      lambda path, a, b: (jax.tree_util.keystr(path), float(np.abs(a - b).max())),
      first.params, before.params)
  for name, change in jax.tree.leaves(moved, is_leaf=lambda x: isinstance(x, tuple)):
    assert (change > 0) == ("fc2" in name), name
  assert float(acc["sums"]["dp/clipped_fraction"]) > 0   # clip 1.0 bites at init
