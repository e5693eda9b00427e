"""robust_accuracy on hand-computable models, batching, ensemble order, sanity checks, curve."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.errors import ConfigError
from mmjax.evals import attack_stages, robustness as R

KEY = jax.random.PRNGKey(0)
W = np.array([1.0, -2.0, 0.5, 1.5], np.float32)   # ||w||_1 = 5, ||w||_2 = sqrt(7.5)
B = 0.1
MARGINS = np.array([-0.3, -0.05, 0.1, 0.2, 0.35, 0.45, 0.55, 0.65, 0.8, 1.0,
                    1.5, 0.3, 0.62, 0.4, 0.15, 2.0, -1.0, 0.58, 0.9, 0.7], np.float32)


@pytest.fixture
def eager():
  """Op-by-op execution: many attack configurations, one primitive compile each, instead of
  ~1 s of compilation per configuration. The jitted path is covered by the batching test."""
  with jax.disable_jit():
    yield


def linear_logits(x):
  s = x @ W + B
  return jnp.stack([-s / 2, s / 2], axis=-1)   # margin of the true class = +-s


def linear_data():
  """N = 20 points whose true-class margin is exactly MARGINS (negative = misclassified)."""
  y = (np.arange(len(MARGINS)) % 2).astype(np.int32)
  sign = np.where(y == 1, 1.0, -1.0)
  c = np.random.RandomState(0).uniform(0, 1, (len(y), 4)).astype(np.float32)
  s_c = c @ W + B
  x = c + ((sign * MARGINS - s_c) / (W @ W))[:, None] * W[None]
  return x.astype(np.float32), y


def test_linear_data_has_the_intended_margins():
  x, y = linear_data()
  s = x @ W + B
  np.testing.assert_allclose(np.where(y == 1, s, -s), MARGINS, atol=1e-5)


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "apgd-ce", "apgd-t", "ensemble"])
def test_linear_linf_robust_accuracy_is_exact(attack, eager):
  x, y = linear_data()
  eps = 0.1   # robust iff margin > eps * ||w||_1 = 0.5
  got = R.robust_accuracy(linear_logits, x, y, KEY, attack=attack, eps=eps, bounds=None)
  assert got == np.sum(MARGINS > eps * 5.0) / len(y) == 10 / 20


@pytest.mark.parametrize("attack", ["fgsm", "pgd", "apgd-ce"])
def test_linear_l2_robust_accuracy_is_exact(attack, eager):
  x, y = linear_data()
  eps = 0.1   # robust iff margin > eps * ||w||_2 = 0.274
  got = R.robust_accuracy(linear_logits, x, y, KEY, attack=attack, eps=eps, norm="l2",
                          bounds=None)
  assert got == np.sum(MARGINS > eps * np.sqrt(W @ W)) / len(y) == 14 / 20


def test_eps_zero_equals_clean_accuracy(eager):
  x, y = linear_data()
  clean = R.clean_accuracy(linear_logits, x, y, batch_size=7)
  assert clean == np.mean(MARGINS > 0) == 17 / 20
  for attack in ("fgsm", "pgd", "apgd-ce"):
    assert R.robust_accuracy(linear_logits, x, y, KEY, attack=attack, eps=0.0,
                             bounds=None) == clean


def test_per_modality_eps_on_dict_inputs(eager):
  x, y = linear_data()
  inputs = {"a": x[:, :2], "b": x[:, 2:], "ids": np.arange(len(y), dtype=np.int32)}
  logits_fn = lambda d: linear_logits(jnp.concatenate([d["a"], d["b"]], axis=1))
  # Only 'a' moves: robust iff margin > 0.2 * (|1| + |-2|) = 0.6.
  got = R.robust_accuracy(logits_fn, inputs, y, KEY, attack="fgsm",
                          eps={"a": 0.2, "b": 0.0}, bounds=None)
  assert got == np.sum(MARGINS > 0.6) / len(y)


def _mlp(num_classes=5, dim=6, seed=0):
  k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
  W1 = jax.random.normal(k1, (dim, 16)) * 2.0 / np.sqrt(dim)
  W2 = jax.random.normal(k2, (16, num_classes)) * 2.0
  return lambda x: jnp.tanh(x @ W1) @ W2


def _mlp_data(logits_fn, n=40, dim=6):
  x = np.asarray(jax.random.uniform(jax.random.PRNGKey(7), (n, dim)))
  y = np.asarray(jnp.argmax(logits_fn(x), axis=-1)).astype(np.int32)
  y[::5] = (y[::5] + 1) % 5   # some clean mistakes
  return x, y


def test_batching_matches_one_batch_jitted():
  logits_fn = _mlp()
  x, y = _mlp_data(logits_fn)   # N = 40, batch 7 leaves a padded batch of 5
  kw = dict(attack="pgd", eps=0.05, steps=5)
  one = R.robust_accuracy(logits_fn, x, y, KEY, batch_size=256, **kw)
  many = R.robust_accuracy(logits_fn, x, y, KEY, batch_size=7, **kw)
  assert one == many
  assert 0 < one < R.clean_accuracy(logits_fn, x, y)   # the test is not vacuous


def test_ensemble_is_at_most_each_component(eager):
  logits_fn = _mlp()
  x, y = _mlp_data(logits_fn)
  kw = dict(eps=0.05, steps=3)
  ce = R.robust_accuracy(logits_fn, x, y, KEY, attack="apgd-ce", **kw)
  t = R.robust_accuracy(logits_fn, x, y, KEY, attack="apgd-t", **kw)
  ens = R.robust_accuracy(logits_fn, x, y, KEY, attack="ensemble", **kw)
  assert ens <= min(ce, t)
  assert ens < R.clean_accuracy(logits_fn, x, y)


def test_undefended_mlp_goes_to_zero_at_large_eps():
  rng = np.random.RandomState(0)
  means = rng.choice([-1.0, 1.0], size=(4, 8)).astype(np.float32)
  y = np.repeat(np.arange(4), 50).astype(np.int32)
  x = (means[y] + 0.3 * rng.randn(200, 8)).astype(np.float32)
  init = _mlp(num_classes=4, dim=8, seed=1)
  params = {"W1": jax.random.normal(jax.random.PRNGKey(2), (8, 32)) * 0.3,
            "W2": jax.random.normal(jax.random.PRNGKey(3), (32, 4)) * 0.3}
  del init
  apply = lambda p, a: jnp.tanh(a @ p["W1"]) @ p["W2"]
  opt = optax.adam(1e-2)

  @jax.jit
  def train(params):
    def step(carry, _):
      p, s = carry
      g = jax.grad(lambda p: optax.softmax_cross_entropy_with_integer_labels(
          apply(p, x), y).mean())(p)
      u, s = opt.update(g, s)
      return (optax.apply_updates(p, u), s), None
    return jax.lax.scan(step, (params, opt.init(params)), None, length=300)[0][0]

  params = train(params)
  logits_fn = lambda a: apply(params, a)
  assert R.clean_accuracy(logits_fn, x, y) >= 0.95
  for attack in ("pgd", "apgd-ce"):
    acc = R.robust_accuracy(logits_fn, x, y, KEY, attack=attack, eps=1.5, steps=10,
                            bounds=None, batch_size=100)
    assert acc <= 0.02, (attack, acc)


def test_sanity_checks_pass_on_linear_model(eager):
  x, y = linear_data()
  out = R.sanity_checks(linear_logits, x, y, KEY, eps=0.1, bounds=None, steps=5)
  assert out["all_passed"], out
  assert out["failed"] == []
  for name in ("eps0_equals_clean", "robust_le_clean", "monotone_in_eps", "pgd_beats_fgsm",
               "more_steps_restarts", "nonzero_gradients"):
    assert out[name]["passed"] and isinstance(out[name]["detail"], str)


def test_sanity_checks_use_given_accuracies(eager):
  """Already-measured accuracies are judged, not recomputed: a robust accuracy above the
  clean one (a wrong measurement) fails robust_le_clean and names it."""
  x, y = linear_data()
  measured = R.sanity_checks(linear_logits, x, y, KEY, eps=0.1, bounds=None, steps=5)
  clean = R.clean_accuracy(linear_logits, x, y)
  robust = R.robust_accuracy(linear_logits, x, y, KEY, attack="pgd", eps=0.1, steps=5,
                             bounds=None)
  reused = R.sanity_checks(linear_logits, x, y, KEY, eps=0.1, bounds=None, steps=5,
                           clean=clean, robust=robust)
  assert reused == measured
  wrong = R.sanity_checks(linear_logits, x, y, KEY, eps=0.1, bounds=None, steps=5,
                          clean=clean, robust=clean + 0.1)
  assert wrong["failed"] == ["robust_le_clean"]


@pytest.mark.parametrize("mask", [lambda x: jnp.round(x * 4) / 4, jax.lax.stop_gradient])
def test_sanity_checks_flag_gradient_masking(mask, eager):
  x, y = linear_data()
  out = R.sanity_checks(lambda a: linear_logits(mask(a)), x, y, KEY, eps=0.1, bounds=None,
                        steps=3)
  assert not out["nonzero_gradients"]["passed"]
  assert "nonzero_gradients" in out["failed"] and not out["all_passed"]


def test_accuracy_vs_eps_writes_json_and_png(tmp_path, eager):
  x, y = linear_data()
  eps_list = [0.0, 0.05, 0.1, 0.19]   # no margin sits exactly on 5 * eps
  out = R.accuracy_vs_eps(linear_logits, x, y, KEY, eps_list=eps_list, attack="fgsm",
                          bounds=None, out_dir=str(tmp_path))
  want = [np.mean(MARGINS > e * 5.0) for e in eps_list]
  assert out["eps"] == eps_list
  np.testing.assert_allclose(out["accuracy"], want)
  with open(tmp_path / "robustness_curve.json") as f:
    saved = json.load(f)
  assert saved["eps"] == eps_list and np.allclose(saved["accuracy"], want)
  assert (tmp_path / "robustness_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_arguments_raise_config_error():
  x, y = linear_data()
  for kw in (dict(attack="nope", eps=0.1), dict(attack="pgd", eps=-0.1),
             dict(attack="pgd", eps=0.1, batch_size=0)):
    with pytest.raises(ConfigError):
      R.robust_accuracy(linear_logits, x, y, KEY, **kw)


def test_params_as_an_argument_compile_once_and_match_the_closure():
  def apply(w, x):
    s = x @ w + B
    return jnp.stack([-s / 2, s / 2], axis=-1)

  x, y = linear_data()
  shapes = set()
  for scale in (1.0, 0.5, 2.0):
    w = jnp.asarray(W * scale)
    got = R.robust_accuracy(apply, x, y, KEY, attack="pgd", eps=0.1, steps=3, bounds=None,
                            params=w)
    want = R.robust_accuracy(lambda x: apply(w, x), x, y, KEY, attack="pgd", eps=0.1,
                             steps=3, bounds=None)
    assert got == want
    alive = int(R.clean_correct(apply, x, y, params=w).sum())
    shapes.add(attack_stages.padded_size(alive, min(256, len(y))))
  # New parameter values reused the compiled attack of their batch shape. run_stages
  # passes every argument, random_logits and eot included, and lru_cache keys on the
  # arguments as passed.
  runner = attack_stages._runner(apply, "pgd", "ce", "linf", 3, None, False, True, 5000,
                                 False, 1)
  assert runner._cache_size() == len(shapes)
