"""Expectation over Transformation: gradients of a random model averaged over its draws."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.attacks.core import make_problem
from mmjax.errors import ConfigError
from mmjax.evals import autoattack

NOISE_KEY = jax.random.PRNGKey(11)


def noisy_weights(key, shape=(6,)):
  return jax.random.normal(key, shape)


def test_the_eot_gradient_is_the_mean_over_fresh_draws_per_step():
  """loss(x, key) = <x, w(key)>: its gradient is w(key), so EOT over 20 draws of step d
  must give the mean of w over keys fold_in(noise_key, 20 d + e), e < 20."""
  x = jnp.ones((3, 6))
  loss = lambda a, key: a @ noisy_weights(key)
  prob = make_problem(loss, x, attack="apgd", eps=0.1, step_size=None, steps=1, norm="linf",
                      bounds=None, noise_key=NOISE_KEY, eot=20)
  for draw in (0, 3):
    _, (g,) = prob.value_and_grad([x], draw)
    want = np.mean([noisy_weights(jax.random.fold_in(NOISE_KEY, 20 * draw + e))
                    for e in range(20)], axis=0)
    np.testing.assert_allclose(np.asarray(g), np.broadcast_to(want, (3, 6)), rtol=1e-5)
  one = make_problem(loss, x, attack="apgd", eps=0.1, step_size=None, steps=1, norm="linf",
                     bounds=None, noise_key=NOISE_KEY, eot=1)
  _, (g1,) = one.value_and_grad([x], 0)
  assert not np.allclose(np.asarray(g1), np.asarray(prob.value_and_grad([x], 0)[1][0]))


def test_autoattack_rand_on_a_random_model():
  """A model that drops half its input features at random in eval mode."""
  w = jax.random.normal(jax.random.PRNGKey(1), (16, 5))

  def logits(x, key):
    keep = jax.random.bernoulli(key, 0.5, x.shape)
    return (x * keep * 2) @ w

  x = jax.random.uniform(jax.random.PRNGKey(2), (40, 16))
  y = np.asarray(jnp.argmax(x @ w, axis=1))
  result = autoattack.autoattack(logits, x, y, jax.random.PRNGKey(0), eps=0.1,
                                 version="rand", bounds=(0., 1.), random_logits=True)
  assert [r["attack"] for r in result["stages"]] == ["apgd-ce", "apgd-dlr"]
  accs = [r["robust_accuracy"] for r in result["stages"]]
  assert result["clean_accuracy"] >= accs[0] >= accs[1]
  with pytest.raises(ConfigError, match="FAB needs a deterministic model"):
    autoattack.autoattack(logits, x, y, jax.random.PRNGKey(0), eps=0.1, random_logits=True)
