"""Square Attack: breaks gradient masking, stays in the ball, monotone, reference schedule."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.attacks import margin, perturb
from mmjax.attacks import square
from mmjax.attacks.core import make_problem

KEY = jax.random.PRNGKey(0)
CLASSES = 10


def _linear_logits(inputs, weights):
  """Sum over float leaves of flatten(leaf) @ W_leaf -> [B, CLASSES]."""
  return sum(inputs[k].reshape(inputs[k].shape[0], -1) @ w for k, w in weights.items())


# Test data from numpy: every eager jax.random call would compile a kernel of its own.
def _uniform(seed, shape, lo=0.0):
  return jnp.asarray(np.random.default_rng(seed).uniform(lo, 1.0, shape), jnp.float32)


def _normal(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).normal(size=shape), jnp.float32)


def _weights(inputs, scale=1.0):
  return {k: scale * _normal(i + 1, (math.prod(v.shape[1:]), CLASSES))
          for i, (k, v) in enumerate(sorted(inputs.items()))
          if jnp.issubdtype(v.dtype, jnp.floating)}


def _square(loss_fn, inputs, key, *, eps, norm, bounds, queries):
  prob = make_problem(loss_fn, inputs, attack="pgd", eps=eps, step_size=None, steps=1,
                      norm=norm, bounds=bounds)
  xs, loss = square.square_run(prob, key, queries=queries)
  return prob.merge(xs), loss


def test_breaks_quantised_model_where_pgd_fails():
  """logits = W q(x), q rounds to 1/8: zero gradient almost everywhere, so PGD only keeps its
  random start, while Square's random search flips nearly every example."""
  x = _uniform(2, (256, 8, 8, 1))
  w = _normal(1, (64, CLASSES))
  logits = lambda a: (jnp.round(a * 8) / 8).reshape(a.shape[0], -1) @ w
  y = jnp.argmax(logits(x), -1)
  # Margins > 1.5: random noise in the eps-ball does not flip them, the worst case does.
  keep = np.nonzero(-np.asarray(margin(logits(x), y)) > 1.5)[0][:32]
  x, y = x[keep], y[keep]
  loss = lambda a: margin(logits(a), y)
  kw = dict(eps=0.15, norm="linf", bounds=(0.0, 1.0))
  adv = jax.jit(lambda x: perturb(loss, x, KEY, attack="pgd", steps=10, **kw))(x)
  pgd_acc = float(jnp.mean(loss(adv) <= 0))
  adv, best = jax.jit(lambda x: _square(loss, x, KEY, queries=300, **kw))(x)
  square_acc = float(jnp.mean(loss(adv) <= 0))
  assert pgd_acc >= 0.9, pgd_acc
  assert square_acc <= 0.1, square_acc
  np.testing.assert_allclose(best, loss(adv), atol=1e-5)


def _all_layouts():
  """(inputs, eps, norm, bounds): leaves of ranks 4 (image), 2 (1-D signal), 3 and 5, each
  with its own eps/norm/bounds, and an int leaf that rides along."""
  u = lambda i, shape, lo=0.0: _uniform(10 + i, shape, lo)
  b = 8
  inputs = {"image": u(0, (b, 6, 6, 3)), "signal": u(1, (b, 24), lo=-1.0),
            "audio": 3 * u(2, (b, 10, 7), lo=-1.0), "video": u(3, (b, 4, 4, 2, 3)),
            "ids": jnp.arange(3 * b).reshape(b, 3)}
  eps = {"image": 0.5, "signal": 0.1, "audio": 0.3, "video": 0.05}
  norm = {"image": "l2", "signal": "linf", "audio": "l2", "video": "linf"}
  bounds = {"image": (0.0, 1.0), "signal": (-1.0, 1.0), "audio": None, "video": (0.0, 1.0)}
  return inputs, eps, norm, bounds


@pytest.fixture(scope="module")
def results():
  """Inputs, the loss, and jitted Square results at eps and at eps = 0 (eps is a traced
  argument: both share one compilation)."""
  inputs, eps, norm, bounds = _all_layouts()
  weights = _weights(inputs, scale=0.3)
  y = jnp.argmax(_linear_logits(inputs, weights), -1)
  y = y.at[:2].set((y[:2] + 1) % CLASSES)   # two examples misclassified from the start
  loss = lambda a: margin(_linear_logits(a, weights), y)
  attack = jax.jit(lambda x, e: _square(loss, x, KEY, eps=e, norm=norm, bounds=bounds,
                                        queries=150))
  zero = {k: jnp.float32(0.0) for k in eps}
  return dict(inputs=inputs, eps=eps, norm=norm, bounds=bounds, loss=loss,
              adv=attack(inputs, {k: jnp.float32(e) for k, e in eps.items()}),
              adv0=attack(inputs, zero))


def test_stays_in_ball_and_bounds_and_eps0_is_clean(results):
  r = results
  adv, _ = r["adv"]
  for k, x0 in r["inputs"].items():
    a = adv[k]
    assert a.shape == x0.shape and a.dtype == x0.dtype
    if not jnp.issubdtype(x0.dtype, jnp.floating):
      np.testing.assert_array_equal(a, x0)
      continue
    eps, norm, bounds = r["eps"][k], r["norm"][k], r["bounds"][k]
    d = np.asarray(a - x0).reshape(x0.shape[0], -1)
    size = np.abs(d).max(1) if norm == "linf" else np.linalg.norm(d, axis=1)
    assert np.all(size <= eps * (1 + 1e-5)), (k, size.max())
    assert np.any(size > 0.5 * eps), k    # every leaf is searched
    if bounds is not None:
      assert float(a.min()) >= bounds[0] and float(a.max()) <= bounds[1]
    np.testing.assert_array_equal(r["adv0"][0][k], x0)   # eps = 0: the clean point


def test_loss_is_the_returned_points_and_never_below_clean(results):
  r = results
  adv, best = r["adv"]
  clean = r["loss"](r["inputs"])
  np.testing.assert_allclose(best, r["loss"](adv), atol=1e-5)
  assert np.all(np.asarray(best) >= np.asarray(clean) - 1e-6)
  assert np.all(np.asarray(best)[:2] > 0)    # fooled at the clean point: still fooled
  assert float(jnp.mean(best > clean + 1e-3)) >= 0.5   # the search does improve the others
  np.testing.assert_allclose(r["adv0"][1], clean, atol=1e-6)


def test_p_schedule_matches_reference():
  # AutoAttack: resc_schedule=False, p halves after iterations 10, 50, 200, ..., 8000.
  want = {0: 0.8, 10: 0.8, 11: 0.4, 50: 0.4, 51: 0.2, 200: 0.2, 201: 0.1, 501: 0.05,
          1001: 0.025, 2001: 0.0125, 4000: 0.0125, 4001: 0.00625, 6001: 0.003125,
          8000: 0.003125, 8001: 0.0015625, 9999: 0.0015625}
  for it, p in want.items():
    assert square.p_schedule(it) == pytest.approx(p), it
  # resc_schedule=True: it -> int(it / n_queries * 10000).
  for n, it, p in [(5000, 5, 0.8), (5000, 6, 0.4), (5000, 25, 0.4), (5000, 26, 0.2),
                   (5000, 101, 0.1), (5000, 2500, 0.00625), (5000, 4999, 0.0015625),
                   (10000, 10, 0.8), (10000, 11, 0.4), (10000, 8001, 0.0015625)]:
    assert square.p_schedule(it, 0.8, n_queries=n) == pytest.approx(p), (n, it)
  # Window sides: the reference's round(sqrt(p H W)) (l2: >= 3 and odd), capped at H - 1.
  its = [0, 11, 51, 201, 501, 1001, 2001, 4001, 6001, 8001]
  side = lambda it, h, w, c, norm: square.window_sides(square.p_schedule(it), h, w, c, norm)
  assert [side(it, 28, 28, 1, "linf")[0] for it in its] == [25, 18, 13, 9, 6, 4, 3, 2, 2, 1]
  assert [side(it, 32, 32, 3, "l2")[0] for it in its] == [29, 21, 15, 11, 7, 5, 5, 3, 3, 3]
  assert side(0, 4, 4, 3, "linf") == (3, 3)        # sqrt(0.8 * 16) rounds to 4 > H - 1
  assert side(0, 1, 64, 1, "linf") == (1, 51)      # 1-D: a fraction p of the length


def test_eta_matches_reference_values():
  # eta(3) by hand from the reference: top row eta_rectangles(1, 3) = [.25, 1.25, .25]/n1,
  # bottom rows -eta_rectangles(2, 3) = -[[.25, .25, .25], [.25, 1.25, .25]]/n2; / sqrt 2.
  top = np.array([[0.25, 1.25, 0.25]]) / math.sqrt(1.6875)
  bottom = -np.array([[0.25, 0.25, 0.25], [0.25, 1.25, 0.25]]) / math.sqrt(1.875)
  want = np.concatenate([top, bottom]) / math.sqrt(2)
  np.testing.assert_allclose(square.eta(3, 3, 0), want, atol=1e-12)
  np.testing.assert_allclose(square.eta(3, 3, 1), want.T, atol=1e-12)


def test_more_queries_never_fool_fewer_and_randomness_is_per_example():
  b = 16
  x = _uniform(3, (b, 8, 8, 1))
  w = _weights({"x": x}, scale=0.3)["x"]
  keys = jax.random.split(KEY, b)      # [B,2] raw per-example keys

  def attack_with(queries):
    def attack(x, y, keys):
      loss = lambda a: margin(_linear_logits({"x": a}, {"x": w}), y)
      return _square(loss, x, keys, eps=0.05, norm="linf", bounds=(0.0, 1.0),
                     queries=queries)
    return jax.jit(attack)

  y = jnp.argmax(_linear_logits({"x": x}, {"x": w}), -1)
  short, long = attack_with(100), attack_with(1000)
  adv_s, loss_s = short(x, y, keys)
  adv_l, loss_l = long(x, y, keys)
  fooled_s, fooled_l = np.asarray(loss_s > 0), np.asarray(loss_l > 0)
  assert 0 < fooled_s.sum() < fooled_l.sum()
  assert np.all(fooled_l[fooled_s])              # fooled examples stay fooled...
  np.testing.assert_array_equal(adv_l[fooled_s], adv_s[fooled_s])   # ...and stop changing
  # Replacing half of the batch does not change the other half's result.
  other = _uniform(4, x.shape)
  x2 = x.at[b // 2:].set(other[b // 2:])
  y2 = jnp.argmax(_linear_logits({"x": x2}, {"x": w}), -1)
  keys2 = keys.at[b // 2:].set(jax.random.split(jax.random.PRNGKey(5), b)[b // 2:])
  adv_2, loss_2 = short(x2, y2, keys2)
  np.testing.assert_array_equal(adv_2[:b // 2], adv_s[:b // 2])
  np.testing.assert_array_equal(loss_2[:b // 2], loss_s[:b // 2])
