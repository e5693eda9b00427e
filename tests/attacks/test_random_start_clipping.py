"""The random start of FGSM-RS and PGD, clipped into the bounds or not (`clip_start`)."""
import jax
import jax.numpy as jnp
import numpy as np

from mmjax.attacks import norms as N
from mmjax.attacks import perturb

KEY = jax.random.PRNGKey(3)
EPS, ALPHA = 0.3, 0.375


def pull_to(target):
  """A loss whose gradient sign depends on where the attack starts: -(x - target)^2."""
  return lambda x: -jnp.sum((x - target) ** 2, axis=1)


def start_delta(x):
  """The uniform start perturb draws for restart 0 and leaf 0 (core.Problem.random_start)."""
  return np.asarray(N.random_delta(N.fold_in(N.fold_in(KEY, 0), 0), x, EPS, "linf"))


def test_unclipped_fgsm_rs_start_matches_wong_et_al_mnist_code():
  """Wong et al.'s MNIST step, by hand: delta ~ U(-eps, eps) (no clip), one signed step of
  alpha from x + delta, delta clipped to the eps-ball, x + delta clipped to [0, 1]."""
  x = jnp.zeros((64, 1))   # saturated pixels, as most of MNIST's
  target = 0.05
  delta = start_delta(x)
  grad_sign = np.sign(target - (0.0 + delta))   # d/dx of -(x - t)^2 at the start
  expected = np.clip(0.0 + np.clip(delta + ALPHA * grad_sign, -EPS, EPS), 0.0, 1.0)
  adv = perturb(pull_to(target), x, KEY, attack="fgsm_rs", eps=EPS, step_size=ALPHA,
                bounds=(0., 1.), clip_start=False)
  np.testing.assert_allclose(np.asarray(adv), expected, atol=1e-6)
  # Clipped (Wong et al.'s CIFAR code), the negative half of the start is lost: every
  # such pixel starts at 0 and ends at eps, whatever its draw.
  clipped = perturb(pull_to(target), x, KEY, attack="fgsm_rs", eps=EPS, step_size=ALPHA,
                    bounds=(0., 1.), clip_start=True)
  start = np.clip(delta, 0.0, 1.0)
  expected_clipped = np.clip(np.clip(start + ALPHA * np.sign(target - start), -EPS, EPS),
                             0.0, 1.0)
  np.testing.assert_allclose(np.asarray(clipped), expected_clipped, atol=1e-6)
  assert not np.allclose(np.asarray(adv), np.asarray(clipped))


def test_an_unclipped_start_is_never_returned_as_pgds_best_iterate():
  """The start itself may lie outside [0, 1]; PGD's best iterate must be a valid point,
  even when the loss is highest at the start."""
  x = jnp.zeros((32, 4))
  loss = lambda a: -jnp.sum(a, axis=1)   # highest at the most negative point: the start
  adv = np.asarray(perturb(loss, x, KEY, attack="pgd", eps=EPS, steps=3, bounds=(0., 1.),
                           clip_start=False, best_iterate=True))
  assert adv.min() >= 0.0 and adv.max() <= EPS + 1e-7
