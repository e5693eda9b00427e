"""The train step: gradient accumulation equals the full batch; EMA arithmetic."""
import jax
import numpy as np
import pytest

from mmjax.objectives import make_objective
from mmjax.train import optim, state as state_lib, step as step_lib
from tests.conftest import tiny_cnn


@pytest.fixture(scope="module")
def cnn():
  return tiny_cnn(16)


def run_steps(cnn, *, accum, ema_decay=0.0, steps=2):
  model, batch, variables = cnn
  tx, _ = optim.make_optimizer(dict(name="sgd", learning_rate=0.1, momentum=0.9,
                                    schedule="constant"), total_steps=10)
  loss_fn = make_objective(dict(name="supervised"), model)
  state = state_lib.create_train_state(variables, tx, jax.random.PRNGKey(1),
                                       ema=ema_decay > 0)
  step = jax.jit(step_lib.make_train_step(loss_fn, tx, grad_accum_steps=accum,
                                          ema_decay=ema_decay))
  acc = step_lib.init_metric_accumulator({"loss": 0, "accuracy": 0, "grad_norm": 0})
  history = [state]
  for _ in range(steps):
    state, acc = step(state, batch, acc)
    history.append(state)
  return history, acc


def test_gradient_accumulation_matches_the_full_batch(cnn):
  full, acc_full = run_steps(cnn, accum=1)
  micro, acc_micro = run_steps(cnn, accum=4)
  for a, b in zip(jax.tree.leaves(full[-1].params), jax.tree.leaves(micro[-1].params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)
  np.testing.assert_allclose(acc_full["sums"]["loss"], acc_micro["sums"]["loss"], rtol=1e-5)
  assert int(acc_micro["count"]) == 2 and int(micro[-1].step) == 2


def test_ema_is_the_exponential_average_of_params(cnn):
  history, _ = run_steps(cnn, accum=1, ema_decay=0.9, steps=2)
  p0, p1, p2 = (h.params for h in history)
  expected = jax.tree.map(lambda a, b, c: 0.9 * (0.9 * a + 0.1 * b) + 0.1 * c, p0, p1, p2)
  for got, want in zip(jax.tree.leaves(history[-1].ema_params), jax.tree.leaves(expected)):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-6)


def test_first_nonfinite_step_is_recorded(cnn):
  model, batch, variables = cnn
  tx, _ = optim.make_optimizer(dict(name="sgd", learning_rate=float("inf"), momentum=0.0,
                                    schedule="constant"), total_steps=10)
  loss_fn = make_objective(dict(name="supervised"), model)
  state = state_lib.create_train_state(variables, tx, jax.random.PRNGKey(1), ema=False)
  step = jax.jit(step_lib.make_train_step(loss_fn, tx))
  acc = step_lib.init_metric_accumulator({"loss": 0, "accuracy": 0, "grad_norm": 0})
  for _ in range(3):
    state, acc = step(state, batch, acc)
  # Step 0's loss is finite, but its infinite update makes the parameters non-finite:
  # caught at step 0 (its loss turns NaN only at step 1), and named.
  assert int(acc["first_nonfinite_step"]) == 0
  assert step_lib.NONFINITE[int(acc["first_nonfinite_what"])] == "the updated parameters"
