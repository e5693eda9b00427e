"""Adversarial objectives: exact identities at eps=0, stronger losses under attack,
BatchNorm untouched by the attack, and adversarial training that really buys robustness."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import models
from mmjax.errors import ConfigError
from mmjax.objectives import make_objective
from mmjax.objectives.adversarial import make_adversarial
from tests.conftest import tiny_cnn

RNG = jax.random.PRNGKey(3)


@pytest.fixture(scope="module")
def cnn():
  model, batch, variables = tiny_cnn(8)
  return model, batch, variables["params"]


def loss_of(fn, params, batch, train=True, state=None):
  return fn(params, batch, RNG, model_state=state or {}, train=train)


def test_eps_zero_reduces_to_the_objective(cnn):
  model, batch, params = cnn
  base = make_objective(dict(name="supervised"), model)
  clean, _ = loss_of(base, params, batch)
  madry = make_adversarial(dict(kind="madry", eps=0.0, steps=3), base)
  combined = make_adversarial(dict(kind="combined", eps=0.0, lam=0.5, clean_weight=2.0),
                              base)
  trades = make_adversarial(dict(kind="trades", eps=0.0, beta=6.0), base)
  np.testing.assert_allclose(loss_of(madry, params, batch)[0], clean, rtol=1e-6)
  np.testing.assert_allclose(loss_of(combined, params, batch)[0], 2.5 * clean, rtol=1e-6)
  total, (metrics, _) = loss_of(trades, params, batch)
  np.testing.assert_allclose(total, clean, rtol=1e-5)
  assert float(metrics["trades/kl"]) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("attack_loss", ["objective", "ce"])
def test_attack_raises_the_loss_and_gradients_flow(cnn, attack_loss):
  model, batch, params = cnn
  base = make_objective(dict(name="supervised"), model)
  madry = make_adversarial(dict(kind="madry", eps=0.3, steps=5, attack_loss=attack_loss),
                           base)
  clean, _ = loss_of(base, params, batch)
  (adv, (metrics, _)), grads = jax.value_and_grad(
      lambda p: loss_of(madry, p, batch), has_aux=True)(params)
  assert float(adv) > float(clean) + 0.05
  assert float(metrics["adv/accuracy"]) <= 1.0 and "adv/loss" in metrics
  norms = [float(jnp.abs(g).sum()) for g in jax.tree.leaves(grads)]
  assert all(np.isfinite(norms)) and sum(norms) > 0


def test_trades_kl_is_positive_under_attack(cnn):
  model, batch, params = cnn
  trades = make_adversarial(dict(kind="trades", eps=0.3, steps=5, beta=6.0),
                            make_objective(dict(name="supervised"), model))
  _, (metrics, _) = loss_of(trades, params, batch)
  assert float(metrics["trades/kl"]) > 1e-4


def test_attack_runs_batchnorm_in_eval_mode():
  model = models.build_model(dict(name="preact_resnet18", num_classes=10))
  batch = {"image": jnp.full((4, 32, 32, 3), 0.5), "label": jnp.arange(4) % 10}
  variables = models.init_variables(model, batch, jax.random.PRNGKey(0))
  params, state = variables["params"], {"batch_stats": variables["batch_stats"]}
  madry = make_adversarial(dict(kind="madry", eps=8 / 255, steps=2),
                           make_objective(dict(name="supervised"), model))
  base = make_objective(dict(name="supervised"), model)
  # One train step's statistics update, with and without the attack, from the same
  # adversarial input: the attack itself must not move the running statistics.
  _, (_, after_adv) = loss_of(madry, params, batch, state=state)
  _, (_, after_eval) = loss_of(madry, params, batch, train=False, state=state)
  assert jax.tree.all(jax.tree.map(lambda a, b: bool(jnp.all(a == b)), after_eval, state))
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), after_adv, state)
  assert any(jax.tree.leaves(changed))
  del base


def test_config_errors(cnn):
  model, batch, params = cnn
  base = make_objective(dict(name="supervised"), model)
  with pytest.raises(ConfigError, match="Unknown adversarial.kind 'mardy'"):
    make_adversarial(dict(kind="mardy", eps=0.1), base)
  with pytest.raises(ConfigError, match=r"Unknown key\(s\) \['epsilon'\]"):
    make_adversarial(dict(kind="madry", epsilon=0.1), base)
  bad = make_adversarial(dict(kind="madry", eps=0.1, modalities=("audio",)), base)
  with pytest.raises(ConfigError, match=r"\['audio'\] are not model inputs.*\['image'\]"):
    loss_of(bad, params, batch)
  assert make_adversarial(dict(kind="none"), base) is base


def test_modalities_reach_into_a_sum_objectives_terms():
  model = models.build_model(dict(name="vit", image_size=8, patch_size=4, channels=1,
                                  width=16, depth=1, num_heads=2, mlp_dim=32,
                                  num_classes=10, pool="gap", decoder_width=16,
                                  decoder_depth=1, decoder_heads=2))
  rng = np.random.default_rng(1)
  batch = {"image": jnp.asarray(rng.uniform(size=(4, 8, 8, 1)), jnp.float32),
           "label": jnp.arange(4) % 10}
  params = models.init_variables(model, batch, jax.random.PRNGKey(0))["params"]
  base = make_objective(dict(name="sum", terms=dict(mae=dict(weight=1.0, mask_ratio=0.5),
                                                    supervised=dict(weight=1.0))), model)
  combined = make_adversarial(dict(kind="combined", eps=0.2, steps=3, lam=1.0,
                                   clean_weight=1.0), base)
  clean, _ = loss_of(base, params, batch)
  total, (metrics, _) = loss_of(combined, params, batch)
  # clean term + attacked term, and the attack raised the loss of both sum terms.
  np.testing.assert_allclose(metrics["clean/loss"], clean, rtol=1e-5)
  assert float(metrics["adv/loss"]) > float(clean)
  np.testing.assert_allclose(total, metrics["clean/loss"] + metrics["adv/loss"], rtol=1e-5)
  assert float(metrics["adv/supervised/loss"]) > float(metrics["clean/supervised/loss"])
