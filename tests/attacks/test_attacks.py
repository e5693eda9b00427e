"""Attacks on analytic cases: closed-form worst cases, projections, restarts, pytrees."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.attacks import (cross_entropy, dlr_loss, margin, perturb, targeted_dlr_loss,
                           top_other_classes)
from mmjax.attacks import norms
from mmjax.attacks.apgd import checkpoints
from mmjax.errors import ConfigError

KEY = jax.random.PRNGKey(0)
EPS = 0.1


def _binary_linear():
  """logits = x W + b with K = 2; margin loss is linear with gradient w_other - w_y."""
  W = jax.random.normal(jax.random.PRNGKey(1), (6, 2))
  b = jnp.array([0.1, -0.2])
  x = jax.random.normal(jax.random.PRNGKey(2), (16, 6))
  y = jnp.arange(16) % 2
  loss = lambda a: margin(a @ W + b, y)
  direction = (W[:, 1 - y] - W[:, y]).T          # [B,D]: d loss / d x
  return x, y, loss, direction


def _attack(loss, x, **kw):
  return jax.jit(lambda x, k: perturb(loss, x, k, **kw))(x, KEY)


@pytest.fixture
def eager():
  """Runs a test op by op: primitives compile once per session, whereas each distinct
  jitted attack compiles for ~1 s. Jitted paths are covered by the exact tests."""
  with jax.disable_jit():
    yield


@pytest.mark.parametrize("attack,kw", [("fgsm", {}), ("pgd", {}), ("apgd", {}),
                                       ("pgd", dict(random_start=False)),
                                       ("apgd", dict(random_start=False))])
def test_linf_linear_worst_case_is_exact(attack, kw):
  x, _, loss, d = _binary_linear()
  adv = _attack(loss, x, attack=attack, eps=EPS, norm="linf", **kw)
  want = loss(x) + EPS * jnp.sum(jnp.abs(d), axis=1)
  np.testing.assert_allclose(loss(adv), want, atol=1e-5)
  np.testing.assert_allclose(adv - x, EPS * jnp.sign(d), atol=1e-6)


@pytest.mark.parametrize("attack,kw", [("fgsm", {}), ("pgd", dict(random_start=False)),
                                       ("apgd", dict(random_start=False))])
def test_l2_linear_worst_case_is_exact(attack, kw):
  x, _, loss, d = _binary_linear()
  adv = _attack(loss, x, attack=attack, eps=EPS, norm="l2", **kw)
  dn = jnp.linalg.norm(d, axis=1, keepdims=True)
  np.testing.assert_allclose(loss(adv), loss(x) + EPS * dn[:, 0], atol=1e-5)
  np.testing.assert_allclose(adv - x, EPS * d / dn, atol=1e-6)


def test_l2_random_start_pgd_approaches_worst_case():
  x, _, loss, d = _binary_linear()
  best = loss(x) + EPS * jnp.linalg.norm(d, axis=1)
  adv = _attack(loss, x, attack="pgd", eps=EPS, norm="l2", steps=30)
  assert np.all(np.asarray(loss(adv)) <= np.asarray(best) + 1e-5)
  # The random start's component orthogonal to w only decays geometrically: >= 95% of the
  # optimal gain, never more than all of it.
  gain, best_gain = loss(adv) - loss(x), best - loss(x)
  assert np.all(np.asarray(gain) >= 0.95 * np.asarray(best_gain))


def _mlp():
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(3), 3)
  W1 = jax.random.normal(k1, (10, 32)) / np.sqrt(10)
  W2 = jax.random.normal(k2, (32, 5)) / np.sqrt(32)
  x = jax.random.uniform(k3, (64, 10))
  logits = lambda a: jnp.tanh(a @ W1) @ W2 * 4.0
  y = jnp.argmax(logits(x), axis=-1)
  return x, y, logits


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.4)])
def test_apgd_at_least_as_strong_as_pgd(norm, eps, eager):
  x, y, logits = _mlp()
  loss = lambda a: cross_entropy(logits(a), y)
  kw = dict(eps=eps, norm=norm, steps=10, bounds=(0., 1.))
  l_pgd = loss(_attack(loss, x, attack="pgd", **kw))
  l_apgd = loss(_attack(loss, x, attack="apgd", **kw))
  assert float(jnp.mean(l_apgd)) >= float(jnp.mean(l_pgd)) - 1e-6
  assert float(jnp.mean(l_apgd >= l_pgd - 1e-6)) >= 0.8
  # On the linear model both reach the closed form (test_*_linear_worst_case_is_exact).


def _pytree_case():
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(4), 3)
  inputs = {"image": jax.random.uniform(k1, (8, 4, 4, 3)),
            "text": jax.random.normal(k2, (8, 5, 6)),
            "text_mask": jnp.ones((8, 5), jnp.int32)}
  w = jax.random.normal(k3, (4 * 4 * 3,))

  def loss(a):   # non-convex, depends on every leaf, so every leaf wants to move
    img = a["image"].reshape(8, -1)
    txt = a["text"] * a["text_mask"][..., None]
    return jnp.sin(3 * img @ w) + jnp.sum(jnp.cos(2 * txt) * txt, axis=(1, 2))
  return inputs, loss


@pytest.mark.parametrize("attack", ["fgsm", "fgsm_rs", "pgd", "apgd"])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_iterates_stay_in_ball_and_bounds(attack, norm, eager):
  inputs, loss = _pytree_case()
  eps = {"image": 0.3, "text": 0.5, "text_mask": 1.0}
  adv = _attack(loss, inputs, attack=attack, eps=eps, norm=norm, steps=3, restarts=2,
                bounds={"image": (0., 1.), "text": None, "text_mask": None})
  assert jax.tree_util.tree_structure(adv) == jax.tree_util.tree_structure(inputs)
  np.testing.assert_array_equal(adv["text_mask"], inputs["text_mask"])
  assert adv["text_mask"].dtype == jnp.int32
  for k in ("image", "text"):
    d = adv[k] - inputs[k]
    size = jnp.max(jnp.abs(d.reshape(8, -1)), 1) if norm == "linf" else norms.l2_norm(d)
    assert np.all(np.asarray(size) <= eps[k] * (1 + 1e-5) + 1e-6), (k, size)
    assert float(jnp.max(size)) > 0.5 * eps[k]   # it did move
  assert float(jnp.min(adv["image"])) >= 0.0 and float(jnp.max(adv["image"])) <= 1.0


def test_l2_projection_then_clip_stays_in_ball():
  # Clean points on the box faces with a large l2 ball: clipping must keep ||delta|| <= eps.
  x = jnp.round(jax.random.uniform(jax.random.PRNGKey(5), (32, 20)))
  for eps in (0.5, 3.0):
    delta = 2 * eps * jax.random.normal(jax.random.PRNGKey(6), x.shape)
    out = norms.clip_to_bounds(x + norms.project_delta(delta, eps, "l2"), (0., 1.))
    assert np.all(np.asarray(norms.l2_norm(out - x)) <= eps * (1 + 1e-6))
    assert float(out.min()) >= 0 and float(out.max()) <= 1


def test_zero_eps_leaf_does_not_move_and_none_bounds_do_not_clip(eager):
  inputs, loss = _pytree_case()
  adv = _attack(loss, inputs, attack="pgd", eps={"image": 0.0, "text": 0.5}, norm="l2",
                bounds=None)
  np.testing.assert_array_equal(adv["image"], inputs["image"])
  assert float(jnp.max(jnp.abs(adv["text"] - inputs["text"]))) > 0
  # bounds None: x = 1 pushed upward leaves [0, 1]; with bounds it stays at 1.
  ones = jnp.ones((4, 3))
  up = lambda a: jnp.sum(a, axis=1)
  np.testing.assert_allclose(_attack(up, ones, attack="fgsm", eps=0.2), 1.2, atol=1e-6)
  np.testing.assert_array_equal(
      _attack(up, ones, attack="fgsm", eps=0.2, bounds=(0., 1.)), ones)


@pytest.mark.parametrize("attack,norm", [("fgsm_rs", "linf"), ("pgd", "l2"),
                                         ("apgd", "l2")])
def test_eps_zero_returns_clean(attack, norm, eager):
  # l2 with eps = 0 divides 0 by 0 unless guarded; the result must be exactly the input.
  x, _, loss, _ = _binary_linear()
  adv = _attack(loss, x, attack=attack, eps=0.0, norm=norm, steps=3)
  np.testing.assert_array_equal(adv, x)


def test_restarts_never_lower_the_loss(eager):
  x, y, logits = _mlp()
  loss = lambda a: cross_entropy(logits(a), y)
  kw = dict(attack="pgd", eps=0.2, steps=3, step_size=0.02, bounds=(0., 1.))
  l1 = loss(_attack(loss, x, restarts=1, **kw))
  l4 = loss(_attack(loss, x, restarts=4, **kw))
  # Restart 0 of restarts=4 is the restarts=1 run, so the per-example max can only rise.
  assert np.all(np.asarray(l4) >= np.asarray(l1) - 1e-6)
  assert np.any(np.asarray(l4) > np.asarray(l1) + 1e-4)   # restarts do explore


def test_last_iterate_is_the_plain_pgd_loop_and_best_iterate_at_least_as_strong(eager):
  """best_iterate=False (training) returns exactly the k-th iterate of projected sign
  ascent; the best iterate (evaluation) reaches at least its loss, per example."""
  x, y, logits = _mlp()
  loss = lambda a: cross_entropy(logits(a), y)
  kw = dict(attack="pgd", eps=0.2, steps=4, step_size=0.08, bounds=(0., 1.),
            random_start=False)
  last = _attack(loss, x, best_iterate=False, **kw)
  want = x
  for _ in range(4):
    g = jax.grad(lambda a: jnp.sum(loss(a)))(want)
    want = jnp.clip(jnp.clip(want + 0.08 * jnp.sign(g), x - 0.2, x + 0.2), 0., 1.)
  np.testing.assert_allclose(last, want, atol=1e-6)
  best = _attack(loss, x, **kw)
  assert np.all(np.asarray(loss(best)) >= np.asarray(loss(last)) - 1e-6)
  # With restarts the last iterates compete by their loss: never below one restart's.
  l4 = loss(_attack(loss, x, best_iterate=False, restarts=4, **{**kw, "random_start": True}))
  l1 = loss(_attack(loss, x, best_iterate=False, restarts=1, **{**kw, "random_start": True}))
  assert np.all(np.asarray(l4) >= np.asarray(l1) - 1e-6)


def test_per_example_keys_make_results_batch_independent():
  x, y, logits = _mlp()
  loss_of = lambda yy: (lambda a: cross_entropy(logits(a), yy))
  keys = jax.vmap(lambda i: jax.random.fold_in(KEY, i))(jnp.arange(64))
  run = jax.jit(lambda x, y, k: perturb(loss_of(y), x, k, attack="apgd", eps=0.1, steps=5))
  full = run(x, y, keys)
  part = run(x[10:20], y[10:20], keys[10:20])
  np.testing.assert_allclose(full[10:20], part, atol=1e-6)


def test_loss_helpers_by_hand():
  z = jnp.array([[3.0, 1.0, 0.0, -1.0], [0.0, 2.0, 5.0, 1.0]])
  y = jnp.array([0, 1])
  np.testing.assert_allclose(margin(z, y), [1.0 - 3.0, 5.0 - 2.0])
  np.testing.assert_allclose(cross_entropy(z, y),
                             optax.softmax_cross_entropy_with_integer_labels(z, y), rtol=1e-6)
  # DLR: -(z_y - max_other) / (z_pi1 - z_pi3)
  np.testing.assert_allclose(dlr_loss(z, y), [-(3 - 1) / (3 - 0), -(2 - 5) / (5 - 1)],
                             rtol=1e-6)
  # targeted: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2)
  t = jnp.array([2, 3])
  np.testing.assert_allclose(targeted_dlr_loss(z, y, t),
                             [-(3 - 0) / (3 - (0 - 1) / 2), -(2 - 1) / (5 - (1 + 0) / 2)],
                             rtol=1e-6)
  np.testing.assert_array_equal(top_other_classes(z, y, 2), [[1, 2], [2, 3]])
  with pytest.raises(ConfigError):
    dlr_loss(z[:, :2], y)


def test_apgd_checkpoints_follow_the_paper():
  assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_bad_arguments_raise_config_error():
  x, _, loss, _ = _binary_linear()
  for kw in (dict(attack="cw", eps=0.1), dict(attack="pgd", eps=0.1, norm="l1"),
             dict(attack="pgd", eps=-1.0), dict(attack="pgd", eps=0.1, steps=0),
             dict(attack="pgd", eps=0.1, restarts=0),
             dict(attack="pgd", eps=0.1, bounds=(1., 0.))):
    with pytest.raises(ConfigError):
      perturb(loss, x, KEY, **kw)
  with pytest.raises(ConfigError):
    perturb(lambda a: jnp.sum(a["image"].reshape(8, -1), 1), _pytree_case()[0], KEY,
            attack="pgd", eps={"image": 0.1})
