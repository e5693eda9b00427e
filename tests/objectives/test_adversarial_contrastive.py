"""RoCL/ACL-style adversarial contrastive learning: adversarial.kind='combined' around the
`simclr` objective. The attack perturbs both augmented views ([2B, H, W, C], made once by
`prepare`) to maximise NT-Xent, inside the l-inf ball and the pixel range."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import models
from mmjax.objectives import make_objective
from mmjax.objectives.adversarial import make_adversarial

RNG = jax.random.PRNGKey(5)
EPS = 8 / 255


@pytest.fixture(scope="module")
def setup():
  """A WRN-10-1 with a projection head (the RoCL shape, CPU-sized) on 8 random images."""
  model = models.build_model(dict(name="wide_resnet", depth=10, widen_factor=1,
                                  num_classes=0, projection_dim=16))
  images = jax.random.uniform(jax.random.PRNGKey(0), (8, 16, 16, 3))
  variables = models.init_variables(model, {"image": images}, jax.random.PRNGKey(1))
  state = {"batch_stats": variables["batch_stats"]}
  simclr = make_objective(dict(name="simclr", temperature=0.5), model)
  return simclr, {"image": images}, variables["params"], state


def _rocl(simclr, eps=EPS, **kw):
  return make_adversarial(dict(kind="combined", attack="pgd", eps=eps, steps=7,
                               step_size=2 / 255, **kw), simclr)


def _contrastive(simclr, params, inputs, prepared, state):
  loss, _ = simclr.loss_from_inputs(params, inputs, prepared, RNG, model_state=state,
                                    train=False)
  return float(loss)


def test_attack_raises_the_contrastive_loss_inside_the_ball(setup):
  simclr, batch, params, state = setup
  rocl = _rocl(simclr)
  prepared = simclr.prepare(batch, RNG)
  views = simclr.embed(params, prepared, RNG, model_state=state, train=False)
  adv = rocl.attack_inputs(views, RNG,
                           rocl._objective_attack_loss(params, prepared, RNG, state))
  delta = np.asarray(adv["image"] - views["image"])
  assert adv["image"].shape == views["image"].shape == (16, 16, 16, 3)   # both views
  assert np.abs(delta).max() <= EPS + 1e-6
  assert np.abs(delta).max() > 0.5 * EPS           # it moved, not a no-op
  assert 0.0 <= float(adv["image"].min()) and float(adv["image"].max()) <= 1.0
  clean = _contrastive(simclr, params, views, prepared, state)
  attacked = _contrastive(simclr, params, adv, prepared, state)
  # At initialisation NT-Xent sits near chance (ln 15 = 2.71), so the rise is small in
  # absolute terms (2.706 -> 2.729), but random sign noise of the same size moves it ~100x
  # less: the attack ascends the contrastive loss.
  noise = {"image": jnp.clip(views["image"] + EPS * jnp.sign(
      jax.random.normal(RNG, views["image"].shape)), 0.0, 1.0)}
  noisy = _contrastive(simclr, params, noise, prepared, state)
  assert attacked > clean + 0.01, (clean, attacked)
  assert attacked - clean > 10 * abs(noisy - clean), (clean, noisy, attacked)


def test_combined_loss_is_clean_plus_lam_adversarial(setup):
  simclr, batch, params, state = setup
  lam = 0.5
  zero = _rocl(simclr, eps=0.0, lam=lam)
  # Jitted: eager PGD-7 through a WRN dispatches op by op (19 s -> a few).
  clean, _ = jax.jit(lambda p: simclr(p, batch, RNG, model_state=state, train=False))(params)
  total, (metrics, _) = jax.jit(
      lambda p: zero(p, batch, RNG, model_state=state, train=False))(params)
  np.testing.assert_allclose(float(total), (1 + lam) * float(clean), rtol=1e-5)
  rocl = _rocl(simclr, lam=lam)
  (total, (metrics, _)), grads = jax.jit(jax.value_and_grad(
      lambda p: rocl(p, batch, RNG, model_state=state, train=True), has_aux=True))(params)
  assert float(metrics["adv/loss"]) > float(metrics["clean/loss"])
  np.testing.assert_allclose(float(total), float(metrics["clean/loss"])
                             + lam * float(metrics["adv/loss"]), rtol=1e-5)
  assert {"clean/contrastive_accuracy", "adv/contrastive_accuracy"} <= set(metrics)
  norms = [float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads)]
  assert all(np.isfinite(norms)) and sum(norms) > 0
