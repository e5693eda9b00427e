"""FAB: exact minimal perturbations on linear models, the box-constrained hyperplane
projections against LP / QP solvers, and untargeted vs targeted runs on a small MLP."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog, minimize

from mmjax.attacks import fab_projections
from mmjax.attacks.core import make_problem
from mmjax.attacks.fab import fab_run
from mmjax.attacks.fab_projections import BIG, hyperplane_step
from mmjax.errors import ConfigError

KEY = jax.random.PRNGKey(0)
K = 10
_step = jax.jit(hyperplane_step, static_argnums=4)   # one compilation per norm and shape


def _normal(seed, shape):
  """Test data from numpy: an eager jax.random draw compiles a kernel per shape (~1 s)."""
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _uniform(seed, shape):
  return jnp.asarray(np.random.default_rng(seed).uniform(size=shape), jnp.float32)


def _problem(loss, inputs, eps, norm, bounds):
  return make_problem(loss, inputs, attack="pgd", eps=eps, step_size=None, steps=1,
                      norm=norm, bounds=bounds)


def _linf(d):
  return jnp.max(jnp.abs(d.reshape(d.shape[0], -1)), axis=1)


def _l2(d):
  return jnp.linalg.norm(d.reshape(d.shape[0], -1), axis=1)


def _pick(z, idx):
  return jnp.take_along_axis(z, idx[:, None], axis=1)[:, 0]


def _other_classes(y, k):
  """[B,k-1] every class but y, in order."""
  return jnp.argsort(jax.nn.one_hot(y, k), axis=1, stable=True)[:, :k - 1]


# ---------------------------------------------------------------- targeted, linear model

@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_targeted_linear_model_reaches_the_analytic_minimal_perturbation(norm):
  d, b = 8, 16
  W, bias, x = _normal(1, (d, 5)), _normal(3, (5,)), _normal(2, (b, d))
  z = x @ W + bias
  y = jnp.argmax(z, 1)
  t = (y + 1) % 5
  loss = lambda a: _pick(a @ W + bias, t) - _pick(a @ W + bias, y)    # z_t - z_y
  w = (W[:, y] - W[:, t]).T
  dual = jnp.linalg.norm(w, axis=1) if norm == "l2" else jnp.sum(jnp.abs(w), axis=1)
  want = -loss(x) / dual                     # distance to the hyperplane z_y = z_t

  # eps and eta traced: one compilation serves every case below.
  run = jax.jit(lambda x, eps, eta: fab_run(_problem(loss, x, eps, norm, (-10., 10.)), KEY,
                                            eta=eta))
  size = _linf if norm == "linf" else _l2
  # AutoAttack's settings stop ~0.5% past the boundary (the eta = 1.05 overshoot, halved
  # by the bias toward the clean point and the backward steps); eta -> 1 gives the exact one.
  for eta, slack in [(1.05, 6e-3), (1.001, 1e-3)]:
    xs, found = run(x, 10.0, eta)
    assert bool(jnp.all(found))
    assert bool(jnp.all(loss(xs[0]) > 0))
    ratio = size(xs[0] - x) / want
    assert bool(jnp.all(ratio >= 1.0 - 1e-5)) and bool(jnp.all(ratio <= 1.0 + slack)), ratio
  # eps below the distance: nothing found, the clean point comes back.
  xs, found = run(x, 0.98 * float(jnp.min(want)), 1.05)
  assert not bool(jnp.any(found))
  np.testing.assert_array_equal(xs[0], x)
  xs, found = run(x, 0.0, 1.05)
  assert not bool(jnp.any(found))
  np.testing.assert_array_equal(xs[0], x)


def test_targeted_with_any_misclassification_as_success():
  """As the reference FAB-T, success may be argmax != y rather than the target's boundary.
  Along x_0 the target's difference is concave, -1 + 2.1 x - 1.1 x^2 (boundary at x_0 = 1),
  so the first linearised step lands at 1.05 / 2.1 = 0.5, inside a bump where class 2 wins
  (|x_0 - 0.5| < 0.1): that point is kept, though the target's boundary is twice as far."""
  b = 8
  x = (0.1 * _normal(8, (b, 3))).at[:, 0].set(0.0)

  def logits(a):
    s = a[:, 0]
    return jnp.stack([jnp.zeros_like(s), -1 + 2.1 * s - 1.1 * s ** 2,
                      5 * (0.01 - (s - 0.5) ** 2)], 1)

  loss = lambda a: logits(a)[:, 1] - logits(a)[:, 0]
  misclassified = lambda a: jnp.argmax(logits(a), 1) != 0
  run = jax.jit(lambda x: fab_run(_problem(loss, x, 100.0, "l2", None), KEY,
                                  adversarial_fn=misclassified))
  (adv,), found = run(x)
  assert bool(jnp.all(found)) and bool(jnp.all(misclassified(adv)))
  assert bool(jnp.all(loss(adv) < 0))               # short of the target's boundary
  np.testing.assert_allclose(_l2(adv - x), 0.5, atol=0.1)


# ---------------------------------------------------------------- projections

def _random_instances(rng, n, d):
  w = rng.normal(size=(n, d))
  w[::4, 0] = 0.0                               # coordinates that cannot help
  f = 2.0 * rng.normal(size=n)
  lo = -rng.uniform(0.0, 1.0, size=(n, d))
  hi = rng.uniform(0.0, 1.0, size=(n, d))
  lo[::5, 1], hi[::5, 1] = 0.0, 0.0             # a coordinate pinned at the box
  return w, f, lo, hi


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_hyperplane_step_matches_lp_and_qp_solvers(norm):
  rng = np.random.default_rng(0)
  w, f, lo, hi = _random_instances(rng, 60, 6)
  step = np.asarray(_step(w, f, lo, hi, norm), np.float64)
  helpful = -np.sign(f)[:, None] * np.sign(w)
  corner = np.where(helpful > 0, hi, np.where(helpful < 0, lo, 0.0))
  n_feasible = 0
  for wi, fi, li, hi_, ci, di in zip(w, f, lo, hi, corner, step):
    assert np.all(di >= li - 1e-6) and np.all(di <= hi_ + 1e-6)
    if abs(wi @ ci) < abs(fi):                 # the box cannot reach: its closest corner
      np.testing.assert_allclose(di, ci, atol=1e-6)
      continue
    n_feasible += 1
    assert abs(wi @ di + fi) < 1e-5 * (1 + abs(fi))
    dim = len(wi)
    if norm == "linf":                         # min s  s.t. |d_i| <= s, w.d = -f, box
      a_ub = np.block([[np.eye(dim), -np.ones((dim, 1))], [-np.eye(dim), -np.ones((dim, 1))]])
      res = linprog(np.r_[np.zeros(dim), 1.0], A_ub=a_ub, b_ub=np.zeros(2 * dim),
                    A_eq=np.r_[wi, 0.0][None], b_eq=[-fi],
                    bounds=list(zip(li, hi_)) + [(0, None)])
      assert res.status == 0
      np.testing.assert_allclose(np.max(np.abs(di)), res.fun, rtol=1e-5, atol=1e-6)
    else:                                      # min |d|^2  s.t. w.d = -f, box
      res = minimize(lambda v: v @ v, np.zeros(dim), jac=lambda v: 2 * v, method="SLSQP",
                     bounds=list(zip(li, hi_)),
                     constraints=[dict(type="eq", fun=lambda v: wi @ v + fi,
                                       jac=lambda v: wi)],
                     options=dict(ftol=1e-14, maxiter=500))
      assert res.success
      np.testing.assert_allclose(np.linalg.norm(di), np.sqrt(res.fun), rtol=1e-4, atol=1e-6)
  assert n_feasible > 20


@pytest.mark.parametrize("newton_steps", [0, 1])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_hyperplane_step_bisection_fallback_agrees(norm, newton_steps, monkeypatch):
  """Rows still unsettled after the Newton steps are finished by bisection: with none (every
  row) or one step (a mix), the same steps as the default path (checked against the solvers
  above), on 784-D rows with FAB-like unbounded rows too."""
  rng = np.random.default_rng(2)
  w, f, lo, hi = _random_instances(rng, 64, 784)
  lo[::7], hi[::7] = -BIG, BIG
  want = np.asarray(_step(w, f, lo, hi, norm))
  monkeypatch.setattr(fab_projections, "_NEWTON_STEPS", newton_steps)
  got = np.asarray(jax.jit(lambda *a: hyperplane_step(*a, norm))(w, f, lo, hi))
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def test_hyperplane_step_without_box_is_the_closed_form():
  rng = np.random.default_rng(1)
  w, f = rng.normal(size=(60, 6)), rng.normal(size=60)
  big = np.full_like(w, BIG)
  l2 = _step(w, f, -big, big, "l2")
  np.testing.assert_allclose(l2, -f[:, None] * w / np.sum(w * w, 1, keepdims=True), rtol=1e-5)
  linf = _step(w, f, -big, big, "linf")
  want = -np.sign(f)[:, None] * np.sign(w) * (np.abs(f) / np.sum(np.abs(w), 1))[:, None]
  np.testing.assert_allclose(linf, want, rtol=1e-5)


# ---------------------------------------------------------------- untargeted, MLP

@pytest.fixture(scope="module")
def mlp_untargeted():
  """A random tanh MLP on NHWC images in [0,1], 10 classes, and its untargeted linf FAB run
  over the whole box (the unconstrained minimum). Example 0 is already misclassified."""
  w1, w2 = _normal(10, (48, 32)) / np.sqrt(48), _normal(11, (32, K)) / np.sqrt(32)
  logits = lambda img: jnp.tanh(4 * img.reshape(img.shape[0], -1) @ w1) @ w2
  b = 16
  x = _uniform(12, (b, 4, 4, 3))
  y = jnp.argmax(logits(x), 1).at[0].add(1) % K
  others = _other_classes(y, K)
  loss = lambda a: jnp.take_along_axis(logits(a), others, 1) - _pick(logits(a), y)[:, None]
  run = _linf_attack(loss)
  (adv,), found = run(x, jnp.ones((b,)))
  return dict(logits=logits, x=x, y=y, loss=loss, run=run, adv=adv, found=found)


def _linf_attack(loss):
  """eps traced, per example [B]: one compilation for every eps."""
  return jax.jit(lambda x, eps: fab_run(_problem(loss, x, eps, "linf", (0., 1.)), KEY))


def test_untargeted_mlp_stays_in_ball_and_box(mlp_untargeted):
  m = mlp_untargeted
  x, run, loss = m["x"], m["run"], m["loss"]
  assert bool(jnp.all(m["found"])) and bool(jnp.all(jnp.max(loss(m["adv"]), 1) > 0))
  size = _linf(m["adv"] - x)
  assert float(size[0]) == 0.0                    # already misclassified: the clean point
  # Per-example eps just below / above each minimum (example 0: eps 0, so nothing found).
  reach = jnp.arange(x.shape[0]) % 2 == 1
  eps = size * jnp.where(reach, 1.03, 0.97)
  (adv,), found = run(x, eps)
  np.testing.assert_array_equal(found, reach)
  assert bool(jnp.all(_linf(adv - x) <= eps)) and bool(jnp.all((adv >= 0) & (adv <= 1)))
  assert bool(jnp.all(jnp.max(loss(adv), 1)[found] > 0))
  np.testing.assert_array_equal(adv[~found], x[~found])


def test_untargeted_mlp_beats_a_fixed_target(mlp_untargeted):
  m = mlp_untargeted
  x, y, logits = m["x"], m["y"], m["logits"]
  t = (y + 1) % K
  targeted = lambda a: _pick(logits(a), t) - _pick(logits(a), y)
  (adv_t,), found_t = _linf_attack(targeted)(x, jnp.ones((x.shape[0],)))
  assert bool(jnp.all(targeted(adv_t)[found_t] > 0))
  size_u, size_t = _linf(m["adv"] - x)[found_t], _linf(adv_t - x)[found_t]
  # FAB is greedy on a nonlinear model, so allow a little per example; overall it must win.
  assert bool(jnp.all(size_u <= 1.25 * size_t))
  assert float(jnp.sum(size_u)) < 0.7 * float(jnp.sum(size_t))


def test_two_leaf_dict_uses_eps_units_and_random_start():
  """A linear model on {'image' NHWC in [0,1], 'audio' unbounded} plus an int mask: the
  minimal l2 size in eps units is min_j |f_j| / ||(eps_l w_jl)_l||, over the 3 other classes.
  (Checks in numpy: eager jnp ops compile one by one.)"""
  b, k = 8, 4
  w_img, w_aud = np.asarray(_normal(20, (2 * 2 * 3, k))), np.asarray(_normal(21, (5, k)))
  inputs = {"image": 0.3 + 0.4 * _uniform(22, (b, 2, 2, 3)), "audio": _normal(23, (b, 5)),
            "mask": jnp.ones((b, 5), jnp.int32)}
  logits = lambda a: a["image"].reshape(b, -1) @ w_img + (a["audio"] * a["mask"]) @ w_aud
  np_in = {m: np.asarray(v) for m, v in inputs.items()}
  y = np.argmax(logits(np_in), 1)
  others = np.asarray(_other_classes(y, k))
  loss = lambda a: jnp.take_along_axis(logits(a), others, 1) - _pick(logits(a), y)[:, None]
  np_loss = lambda a: (np.take_along_axis(logits(a), others, 1)
                       - np.take_along_axis(logits(a), y[:, None], 1))
  eps = {"image": 0.5, "audio": 2.0}
  bounds = {"image": (0.0, 1.0), "audio": None}

  scaled = np.concatenate([eps["image"] * w_img, eps["audio"] * w_aud], 0)        # [D,k]
  normals = (scaled[:, others] - scaled[:, y][:, :, None]).transpose(1, 2, 0)     # [B,3,D]
  dist = -np_loss(np_in) / np.linalg.norm(normals, axis=-1)                       # [B,3]
  want = np.min(dist, axis=1)
  # The unconstrained minimiser moves pixels (in 0.3..0.7) by less than 0.3: no box binds.
  nearest = normals[np.arange(b), np.argmin(dist, 1)]
  u_star = want[:, None] * nearest / np.linalg.norm(nearest, axis=-1, keepdims=True)
  assert np.max(np.abs(eps["image"] * u_star[:, :12])) < 0.25

  def u_size(adv):
    return np.sqrt(np.sum(((adv["image"] - np_in["image"]) / eps["image"]) ** 2, (1, 2, 3))
                   + np.sum(((adv["audio"] - np_in["audio"]) / eps["audio"]) ** 2, 1))

  @jax.jit
  def run(inputs, scale):                         # scale [B]: per-example eps
    prob = _problem(loss, inputs, {m: scale * e for m, e in eps.items()}, "l2", bounds)
    xs, found = fab_run(prob, jax.random.split(KEY, b), random_start=True)   # per example
    return prob.merge(xs), found

  def attack(scale):
    adv, found = run(inputs, jnp.asarray(scale, jnp.float32))
    return {m: np.asarray(v) for m, v in adv.items()}, np.asarray(found)

  # Balls 1/0.75 of each minimum: the random start (radius 1/2) stays short of every
  # boundary. (Started beyond them, FAB may settle on a farther one, as the reference.)
  adv, found = attack(want / 0.75)
  assert found.all() and np.all(np.max(np_loss(adv), 1) > 0)
  assert adv["mask"].dtype == np.int32
  # From a random start FAB settles on its steady state ~0.85% past the boundary (eta's
  # overshoot against beta's backward step); from the clean point it stops at ~0.5%.
  # Example 7 has two boundaries 0.35% apart and may settle on the farther one.
  ratio = u_size(adv) / want
  assert np.all(ratio >= 1.0 - 1e-5) and np.all(ratio <= 1.015), ratio
  # Balls just short of / past each minimum.
  reach = np.arange(b) % 2 == 1
  scale = want * np.where(reach, 1.02, 0.98)
  adv, found = attack(scale)
  np.testing.assert_array_equal(found, reach)
  assert np.all(u_size(adv) <= scale * (1 + 1e-5))
  assert np.all((adv["image"] >= 0) & (adv["image"] <= 1))
  np.testing.assert_array_equal(adv["audio"][~found], np_in["audio"][~found])


def test_leaves_with_different_norms_are_refused():
  inputs = {"a": jnp.zeros((2, 3)), "b": jnp.zeros((2, 3))}
  prob = make_problem(lambda a: a["a"][:, 0], inputs, attack="pgd", eps=0.1, step_size=None,
                      steps=1, norm={"a": "linf", "b": "l2"}, bounds=None)
  with pytest.raises(ConfigError, match="same norm"):
    fab_run(prob, KEY)
