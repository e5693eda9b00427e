"""AutoAttack end to end: stages on survivors, per-stage accuracies, Square against masking."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.evals import autoattack, robustness

KEY = jax.random.PRNGKey(0)


def mlp(seed=1, masked=False):
  """A small 10-class image MLP on [B,8,8,1]; `masked` quantises its input (round(8x)/8),
  which zeroes the input gradient almost everywhere: gradient attacks see nothing."""
  w1 = jax.random.normal(jax.random.PRNGKey(seed), (64, 32)) / 8
  w2 = jax.random.normal(jax.random.PRNGKey(seed + 1), (32, 10))

  def logits(x):
    if masked:   # jnp.round's derivative is 0
      x = jnp.round(8 * x) / 8
    return jnp.tanh(x.reshape(x.shape[0], -1) @ w1) @ w2
  return logits


def data(logits, n=60):
  x = jax.random.uniform(jax.random.PRNGKey(7), (n, 8, 8, 1))
  return x, np.asarray(jnp.argmax(logits(x), axis=1))


def test_autoattack_is_exactly_the_intersection_of_its_members():
  """Each stage runs on the survivors with per-example keys, so AutoAttack's robust set is
  the points every member leaves correct when run alone, and the per-stage table falls."""
  logits = mlp()
  x, y = data(logits)
  result = autoattack.autoattack(logits, x, y, KEY, eps=0.03, version="custom",
                                 attacks=("apgd-ce", "apgd-t", "fab-t", "square"))
  alone = [robustness.run_stages(logits, x, y, KEY, stages=[(s, 1)], eps=0.03, steps=100)
           for s in ("apgd-ce", "apgd-t", "fab-t", "square")]
  np.testing.assert_array_equal(result["robust"], np.logical_and.reduce(alone))
  accs = [result["clean_accuracy"]] + [r["robust_accuracy"] for r in result["stages"]]
  assert accs == sorted(accs, reverse=True) and accs[0] == 1.0
  assert result["robust_accuracy"] == accs[-1] < 1.0
  assert [r["attack"] for r in result["stages"]] == ["apgd-ce", "apgd-t", "fab-t", "square"]


def test_square_breaks_a_gradient_masked_model_and_autoattack_says_so():
  logits = mlp(masked=True)
  x, y = data(logits)
  pgd = robustness.robust_accuracy(logits, x, y, KEY, attack="apgd-ce", eps=0.15, steps=50)
  square = robustness.robust_accuracy(logits, x, y, KEY, attack="square", eps=0.15,
                                      queries=1000)
  # APGD fools only the points its random start happens to round across a boundary.
  assert pgd > 0.6 and square < 0.3
  result = autoattack.autoattack(logits, x, y, KEY, eps=0.15, version="custom",
                                 attacks=("apgd-ce", "square"))
  assert result["robust_accuracy"] == pytest.approx(square, abs=0.05)
  assert result["warnings"] and "masked" in result["warnings"][0]


def test_autoattack_on_two_modalities_jointly_and_alone():
  """An image + spectrogram model: the joint attack is at least as strong as either
  modality alone (eps 0 on the other), per stage."""
  w_img = jax.random.normal(jax.random.PRNGKey(3), (64, 10))
  w_spec = jax.random.normal(jax.random.PRNGKey(4), (6 * 5, 10))
  logits = lambda a: (a["image"].reshape(-1, 64) @ w_img
                      + a["spectrogram"].reshape(-1, 30) @ w_spec)
  x = {"image": jax.random.uniform(jax.random.PRNGKey(5), (40, 8, 8, 1)),
       "spectrogram": jax.random.normal(jax.random.PRNGKey(6), (40, 6, 5))}
  y = np.asarray(jnp.argmax(logits(x), axis=1))
  bounds = {"image": (0., 1.), "spectrogram": None}
  run = lambda eps: autoattack.autoattack(logits, x, y, KEY, eps=eps, bounds=bounds,
                                          version="custom", attacks=("apgd-ce", "square"))
  joint = run({"image": 0.02, "spectrogram": 0.05})
  image = run({"image": 0.02, "spectrogram": 0.0})
  spec = run({"image": 0.0, "spectrogram": 0.05})
  assert joint["robust_accuracy"] <= min(image["robust_accuracy"], spec["robust_accuracy"])
  assert joint["robust_accuracy"] < 1.0
