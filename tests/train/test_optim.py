"""The optimizer factory: each optimizer, schedules, decay masks, clipping."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mmjax.errors import ConfigError
from mmjax.train import optim

PARAMS = {"dense": {"kernel": jnp.ones((3, 2)), "bias": jnp.ones((2,))},
          "layer_norm": {"scale": jnp.ones((2,))},
          "embedding": jnp.ones((4, 2))}


def _cfg(**kw):
  base = dict(name="adamw", learning_rate=0.1, schedule="constant", warmup_steps=0,
              weight_decay=0.0)
  base.update(kw)
  return base


# LARS steps lr·trust_coefficient·‖w‖ per tensor: its rates are ~100x the others'.
QUADRATIC_LR = {"lars": 5.0}


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_each_optimizer_minimises_a_quadratic(name):
  tx, _ = optim.make_optimizer(_cfg(name=name, learning_rate=QUADRATIC_LR.get(name, 0.05)),
                               total_steps=200)
  x = {"w": jnp.full((4, 4), 3.0)}
  state = tx.init(x)
  loss = lambda p: jnp.sum(p["w"] ** 2)
  start = loss(x)
  for _ in range(200):
    updates, state = tx.update(jax.grad(loss)(x), state, x)
    x = optax.apply_updates(x, updates)
  assert loss(x) < 0.05 * start, name


def test_warmup_then_cosine_schedule_values():
  sched = optim.make_schedule(
      dict(learning_rate=1.0, schedule="cosine", warmup_steps=10, end_lr_factor=0.1), 110)
  assert float(sched(0)) == pytest.approx(0.1)       # peak / warmup at the first step
  assert float(sched(10)) == pytest.approx(1.0)      # peak after warmup
  assert float(sched(60)) == pytest.approx(0.55)     # cosine midpoint between 1 and 0.1
  assert float(sched(110)) == pytest.approx(0.1)     # end_lr_factor * peak


def test_linear_one_cycle_schedule():
  sched = optim.make_schedule(dict(learning_rate=0.2, schedule="linear",
                                   warmup_steps=40), 100)
  assert float(sched(40)) == pytest.approx(0.2)
  assert float(sched(70)) == pytest.approx(0.1)
  assert float(sched(100)) == pytest.approx(0.0)
  flat = optim.make_schedule(dict(learning_rate=0.3, schedule="constant"), 100)
  assert float(flat(0)) == float(flat(99)) == pytest.approx(0.3)


def test_piecewise_schedule_drops_at_fractions_of_training():
  sched = optim.make_schedule(dict(learning_rate=0.1, schedule="piecewise",
                                   lr_boundaries=(0.5, 0.75), lr_decay=0.1), 80)
  assert [round(float(sched(s)), 6) for s in (0, 39, 40, 59, 60, 79)] == [
      0.1, 0.1, 0.01, 0.01, 0.001, 0.001]


def test_decay_mask_excludes_norms_biases_embeddings():
  mask = optim.decay_mask(PARAMS, ("bias", "norm", "embedding"))
  assert mask == {"dense": {"kernel": True, "bias": False},
                  "layer_norm": {"scale": False}, "embedding": False}


def test_weight_decay_respects_mask():
  # With zero gradients only weight decay moves parameters.
  tx, _ = optim.make_optimizer(_cfg(weight_decay=0.5, no_decay=("bias", "norm")),
                               total_steps=10)
  zeros = jax.tree.map(jnp.zeros_like, PARAMS)
  updates, _ = tx.update(zeros, tx.init(PARAMS), PARAMS)
  assert float(jnp.abs(updates["dense"]["kernel"]).max()) == pytest.approx(0.05)
  assert float(jnp.abs(updates["dense"]["bias"]).max()) == 0.0
  assert float(jnp.abs(updates["layer_norm"]["scale"]).max()) == 0.0
  assert float(jnp.abs(updates["embedding"]).max()) == pytest.approx(0.05)


def test_clip_norm_bounds_sgd_update():
  tx, _ = optim.make_optimizer(_cfg(name="sgd", momentum=0.0, learning_rate=1.0,
                                    clip_norm=1.0), total_steps=10)
  params = {"w": jnp.zeros((2,))}
  updates, _ = tx.update({"w": jnp.array([30.0, 40.0])}, tx.init(params), params)
  np.testing.assert_allclose(np.asarray(updates["w"]), [-0.6, -0.8], rtol=1e-6)


@pytest.mark.parametrize("bad, key", [(dict(name="adam_typo"), "optim.name"),
                                      (dict(schedule="cosin"), "optim.schedule"),
                                      (dict(warmup_steps=500), "warmup_steps"),
                                      (dict(schedule="piecewise", lr_boundaries=(40,)),
                                       "lr_boundaries")])
def test_bad_values_raise_config_error(bad, key):
  with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
    optim.make_optimizer(_cfg(**bad), total_steps=100)
