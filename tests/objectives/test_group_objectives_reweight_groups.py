"""Group DRO's weights move toward the worst group exactly as Sagawa et al.'s update says,
group-balanced reweighting weighs groups equally, and both refuse a missing group key."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import models
from mmjax.errors import ConfigError
from mmjax.objectives import make_objective


@pytest.fixture(scope="module")
def cnn():
  model = models.build_model(dict(name="mnist_cnn", num_classes=2))
  rng = np.random.default_rng(0)
  batch = {"image": rng.random((16, 28, 28, 1)).astype(np.float32),
           "label": np.array([0, 1] * 8), "group": np.array([0] * 12 + [1] * 4)}
  variables = models.init_variables(model, {"image": batch["image"][:1]},
                                    jax.random.PRNGKey(0))
  return model, batch, variables


def _state(objective, variables):
  return {k: v for k, v in {**variables, **objective.initial_state()}.items()
          if k != "params"}


def test_group_dro_weights_follow_the_exponentiated_group_losses(cnn):
  model, batch, variables = cnn
  dro = make_objective(dict(name="group_dro", group_key="group", num_groups=2, eta=0.5),
                       model)
  state = _state(dro, variables)
  q0 = np.asarray(state["group_dro"]["q"])
  assert np.allclose(q0, [0.5, 0.5])
  # The same parameters each call: the group losses are the same, so after 3 updates
  # q is proportional to exp(eta * 3 * loss_g).
  for _ in range(3):
    loss, (_, state) = dro(variables["params"], batch, jax.random.PRNGKey(1),
                           model_state=state, train=True)
  q = np.asarray(state["group_dro"]["q"])
  labels = batch["label"]
  out = dro.encode(variables["params"], {"image": jnp.asarray(batch["image"])},
                   jax.random.PRNGKey(1), model_state=_state(dro, variables), train=False)[0]
  logp = jax.nn.log_softmax(out["logits"])
  per_example = -np.asarray(logp)[np.arange(16), labels]
  group_loss = np.array([per_example[:12].mean(), per_example[12:].mean()])
  expected = np.exp(0.5 * 3 * group_loss)
  np.testing.assert_allclose(q, expected / expected.sum(), rtol=1e-4)
  assert q.argmax() == group_loss.argmax()   # toward the worst group
  np.testing.assert_allclose(float(loss), float((q * group_loss).sum()), rtol=1e-4)
  # In eval mode the weights stay.
  _, (_, same) = dro(variables["params"], batch, jax.random.PRNGKey(1), model_state=state,
                     train=False)
  np.testing.assert_array_equal(np.asarray(same["group_dro"]["q"]), q)


def test_group_balanced_weighs_each_group_the_same(cnn):
  model, batch, variables = cnn
  balanced = make_objective(dict(name="group_balanced", group_key="group", num_groups=2),
                            model)
  loss, (metrics, _) = balanced(variables["params"], batch, jax.random.PRNGKey(1),
                                model_state=_state(balanced, variables), train=True)
  out = balanced.encode(variables["params"], {"image": jnp.asarray(batch["image"])},
                        jax.random.PRNGKey(1), model_state={}, train=False)[0]
  per_example = -np.asarray(jax.nn.log_softmax(out["logits"]))[np.arange(16),
                                                              batch["label"]]
  expected = 0.5 * per_example[:12].mean() + 0.5 * per_example[12:].mean()
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
  np.testing.assert_allclose(float(metrics["mean_loss"]), per_example.mean(), rtol=1e-5)


@pytest.mark.parametrize("options, match", [
    (dict(name="group_dro", num_groups=2), "needs objective.group_key"),
    (dict(name="group_balanced", group_key="g", num_groups=1), "num_groups=1 must be >= 2"),
    (dict(name="group_dro", group_key="g", num_groups=2, eta=0.0), "eta=0.0 must be > 0"),
    (dict(name="group_dro", group_key="g", num_groups=2, adjustment=1.0),
     "adjustment needs objective.group_counts"),
    (dict(name="group_dro", group_key="g", num_groups=2, cross_with_label=True),
     "cross_with_label needs objective.num_classes"),
])
def test_bad_group_objective_options_are_refused(cnn, options, match):
  with pytest.raises(ConfigError, match=match):
    make_objective(options, cnn[0])


def test_a_group_key_missing_from_the_batch_is_named(cnn):
  model, batch, variables = cnn
  dro = make_objective(dict(name="group_dro", group_key="colour", num_groups=2), model)
  with pytest.raises(ConfigError, match=r"group_key='colour' is not in the training batch"):
    dro(variables["params"], batch, jax.random.PRNGKey(1),
        model_state=_state(dro, variables), train=True)


def test_an_adversarial_method_wraps_group_dro_and_keeps_its_weights(cnn):
  """Robust and fair training: madry(group_dro) carries Group DRO's state and updates it
  from the group losses at the attacked inputs."""
  from mmjax.config import default_config
  from mmjax.objectives import adversarial
  model, batch, variables = cnn
  dro = make_objective(dict(name="group_dro", group_key="group", num_groups=2, eta=0.5),
                       model)
  adv = default_config().adversarial
  adv.update(dict(kind="madry", eps=0.1, steps=2, step_size=0.05))
  method = adversarial.make_adversarial(adv, dro)
  assert set(method.initial_state()) == {"group_dro"}
  state = _state(method, variables)
  loss, (metrics, state) = method(variables["params"], batch, jax.random.PRNGKey(1),
                                  model_state=state, train=True)
  q = np.asarray(state["group_dro"]["q"])
  assert not np.allclose(q, [0.5, 0.5]) and np.isclose(q.sum(), 1.0)
  assert {"adv/loss", "adv/worst_group_loss", "adv/max_group_weight"} <= set(metrics)
