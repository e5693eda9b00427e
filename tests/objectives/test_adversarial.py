"""Adversarial objectives: exact identities at eps=0, stronger losses under attack,
BatchNorm untouched by the attack, and adversarial training that really buys robustness."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import models
from mmjax.config import default_config
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
  with pytest.raises(ConfigError, match="Unknown adversarial method 'mardy'.*Did you mean "
                     "'madry'"):
    make_adversarial(dict(kind="mardy", eps=0.1), base)
  with pytest.raises(ConfigError, match=r"Unknown key\(s\) \['epsilon'\].*Did you mean 'eps'"):
    make_adversarial(dict(kind="madry", epsilon=0.1), base)
  bad = make_adversarial(dict(kind="madry", eps=0.1, modalities=("audio",)), base)
  with pytest.raises(ConfigError, match=r"\['audio'\] are not model inputs.*\['image'\]"):
    loss_of(bad, params, batch)
  assert make_adversarial(dict(kind="none"), base) is base
  # Like eps, a method's own option is inert without a method.
  assert make_adversarial(dict(kind="none", beta=3.0, lam=2.0), base) is base


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


def test_alum_is_the_objective_plus_lam_sym_kl(cnn):
  model, batch, params = cnn
  base = make_objective(dict(name="supervised"), model)
  clean, _ = loss_of(base, params, batch)
  alum0 = make_adversarial(dict(kind="alum", eps=0.0, steps=1, lam=10.0), base)
  total, (metrics, _) = loss_of(alum0, params, batch)
  np.testing.assert_allclose(total, clean, rtol=1e-6)
  assert float(metrics["alum/sym_kl"]) == pytest.approx(0.0, abs=1e-7)
  alum = make_adversarial(dict(kind="alum", eps=0.1, steps=2, lam=10.0), base)
  total, (metrics, _) = loss_of(alum, params, batch)
  assert float(metrics["alum/sym_kl"]) > 1e-5
  np.testing.assert_allclose(total, clean + 10.0 * metrics["alum/sym_kl"], rtol=1e-5)


def test_alum_on_text_embeddings_reaches_the_embedding_table():
  model = models.build_model(dict(name="text_transformer", vocab_size=32, max_len=8,
                                  width=16, depth=1, num_heads=2, mlp_dim=32,
                                  causal=False, lm_head=True))
  batch = {"text": (jnp.arange(32).reshape(4, 8) % 29) + 3,
           "text_mask": jnp.ones((4, 8), jnp.int32)}
  params = models.init_variables(model, batch, jax.random.PRNGKey(0))["params"]
  alum = make_adversarial(dict(kind="alum", modalities="text", eps=1e-2, steps=1,
                               step_size=1e-2, lam=10.0, consistency_on="lm_logits"),
                          make_objective(dict(name="mlm"), model))
  (_, (metrics, _)), grads = jax.value_and_grad(
      lambda p: loss_of(alum, p, batch), has_aux=True)(params)
  assert float(metrics["alum/sym_kl"]) > 0
  table = [g for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]
           if "token_embed" in jax.tree_util.keystr(path)]
  assert table and float(jnp.abs(table[0]).sum()) > 0
  missing = make_adversarial(dict(kind="alum", modalities="text", eps=1e-2),
                             make_objective(dict(name="mlm"), model))
  with pytest.raises(ConfigError, match="consistency_on"):
    loss_of(missing, params, batch)


def test_freelb_gradient_is_the_mean_over_its_ascent_steps(cnn):
  model, batch, params = cnn
  base = make_objective(dict(name="supervised"), model)
  grad = lambda fn: jax.value_and_grad(lambda p: loss_of(fn, p, batch)[0])(params)
  # eps = 0: every ascent step is at the clean point, so value and gradient are the clean ones.
  (clean, g_clean), (value, g_free) = grad(base), grad(
      make_adversarial(dict(kind="freelb", eps=0.0, steps=3, norm="l2"), base))
  np.testing.assert_allclose(value, clean, rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
               g_free, g_clean)
  # eps > 0, K = 2: the mean of the gradients at the random start and one ascent step.
  freelb = make_adversarial(dict(kind="freelb", eps=2.0, step_size=1.0, steps=2, norm="l2"),
                            base)
  value, g_free = grad(freelb)
  assert float(value) > float(clean)
  assert all(np.isfinite(float(jnp.abs(g).sum())) for g in jax.tree.leaves(g_free))


def test_free_replays_at_eps_zero_are_plain_sgd_steps(cnn):
  import optax
  model, batch, params = cnn
  base = make_objective(dict(name="supervised"), model)
  free = make_adversarial(dict(kind="free", eps=0.0, replays=3), base)
  assert free.makes_own_updates and free.updates_per_step == 3
  tx = optax.sgd(0.1)
  got, _, _, loss, metrics, _ = free.replay_updates(tx, params, tx.init(params), {}, batch,
                                                    RNG)
  expected, losses = params, []
  for r in range(3):
    value, g = jax.value_and_grad(lambda p: loss_of(base, p, batch)[0])(expected)
    expected, losses = optax.apply_updates(expected, jax.tree.map(lambda x: -0.1 * x, g)), \
        losses + [value]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
               got, expected)
  np.testing.assert_allclose(loss, np.mean(losses), rtol=1e-5)
  assert "adv/accuracy" in metrics


@pytest.mark.parametrize("options, match", [
    (dict(kind="fast"), "Choose one of: alum, ard, combined, free, freelb, madry, trades.*'none'"),
    (dict(kind="free", eps=0.1, replays=0), r"adversarial.replays=0 must be a positive int"),
    (dict(kind="madry"), r"kind='madry' needs a positive adversarial.eps"),
    (dict(kind="madry", eps=-0.1), r"adversarial.eps=-0.1 must be a number >= 0"),
    (dict(kind="madry", eps=0.1, steps=0), r"adversarial.steps=0 must be a positive int"),
    (dict(kind="trades", eps=0.1, beta=-1.0), r"adversarial.beta=-1.0 must be a number >= 0"),
    (dict(kind="trades", eps=0.1, bta=3.0),
     r"Unknown key\(s\) \['bta'\] in config.adversarial for kind='trades'. Did you mean "
     r"'beta'\? Valid keys: its own beta; the common kind, attack"),
    (dict(kind="combined", eps=0.1, clean_weight="1"), r"clean_weight='1' must be a number"),
    (dict(kind="alum", eps=0.1, lam=None), r"adversarial.lam=None must be a number"),
    (dict(kind="alum", eps=0.1, consistency_on=""), r"consistency_on='' must name"),
    # Another method's option names the method that owns it.
    (dict(kind="madry", eps=0.1, beta=3.0),
     r"adversarial.beta is an option of adversarial.kind='trades', not of 'madry'"),
    (dict(kind="trades", eps=0.1, replays=2),
     r"adversarial.replays is an option of adversarial.kind='free', not of 'trades' \(whose "
     r"own options are: beta\)"),
    (dict(kind="none", bta=3.0), r"no adversarial method takes them. Did you mean 'beta'"),
])
def test_bad_adversarial_options_are_named(cnn, options, match):
  model, _, _ = cnn
  with pytest.raises(ConfigError, match=match):
    make_adversarial(options, make_objective(dict(name="supervised"), model))


def test_attack_on_one_sum_term_perturbs_every_term_alike():
  model = models.build_model(dict(name="vit", image_size=8, patch_size=4, channels=1,
                                  width=16, depth=1, num_heads=2, mlp_dim=32,
                                  num_classes=3, pool="gap", decoder_width=16,
                                  decoder_depth=1, decoder_heads=2))
  batch = {"image": jax.random.uniform(RNG, (4, 8, 8, 1)), "label": jnp.arange(4) % 3}
  params = models.init_variables(model, batch, jax.random.PRNGKey(0))["params"]
  base = make_objective(dict(name="sum", terms=dict(mae=dict(mask_ratio=0.5),
                                                    supervised=dict())), model)
  clean, (clean_metrics, _) = loss_of(base, params, batch)
  adv = make_adversarial(dict(kind="madry", eps=0.1, steps=3, attack_loss="mae"), base)
  loss, (metrics, _) = loss_of(adv, params, batch)
  assert float(metrics["adv/mae/loss"]) > float(clean_metrics["mae/loss"])
  with pytest.raises(ConfigError, match="a term name only for a 'sum'"):
    make_adversarial(dict(kind="madry", eps=0.1, attack_loss="mea"), base)


def test_ssl_plus_adversarial_on_audio_spectrograms_and_text_embeddings():
  """L_ssl + lam * L_ssl(x + delta) with the attack maximising a cross-modal contrastive
  loss, perturbing spectrograms (unbounded log-mel, l2 ball) and text embeddings (linf
  ball) at once, each with its own eps and norm; the image stays put, and the attack
  raises the SSL loss."""
  model = models.build_model(dict(name="multimodal", width=32, depth=1, num_heads=2,
                                  mlp_dim=64, projection_dim=16))
  batch = {"image": jax.random.uniform(jax.random.key(0), (6, 28, 28, 1)),
           "text": jax.random.randint(jax.random.key(1), (6, 8), 4, 260),
           "spectrogram": jax.random.normal(jax.random.key(2), (6, 64, 28))}
  params = models.init_variables(model, batch, jax.random.key(3))["params"]
  ssl = make_objective(dict(name="contrastive", pairs=(("image", "audio"),
                                                      ("image", "text"))), model)
  # Jitted: op-by-op dispatch of the multimodal model took most of this test's time.
  clean, _ = jax.jit(lambda p: loss_of(ssl, p, batch))(params)
  config = default_config().adversarial   # per-modality values from a config, as users set
  config.update(dict(kind="combined", modalities=("spectrogram", "text"), steps=3, lam=1.0,
                     clean_weight=0.0))
  config.eps = {"spectrogram": 0.5, "text": 0.05}
  config.norm = {"spectrogram": "l2", "text": "linf"}
  adv = make_adversarial(config, ssl)
  inputs = jax.jit(lambda p: ssl.embed(p, batch, RNG, model_state={}, train=True))(params)
  attacked = jax.jit(lambda inputs: adv.attack_inputs(inputs, RNG, lambda x: jnp.full(
      (6,), ssl.loss_from_inputs(params, x, batch, RNG, model_state={}, train=False)[0]))
  )(inputs)
  delta = {k: attacked[k] - inputs[k] for k in ("image", "text", "spectrogram")}
  assert float(jnp.max(jnp.abs(delta["image"]))) == 0.0
  assert 0 < float(jnp.max(jnp.abs(delta["text"]))) <= 0.05 + 1e-5
  l2 = jnp.sqrt(jnp.sum(delta["spectrogram"] ** 2, axis=(1, 2)))
  assert float(jnp.max(l2)) <= 0.5 + 1e-4 and float(jnp.min(l2)) > 0.1
  # Forward only: compiling the gradient through the attack doubled this test's time;
  # gradients of adversarial objectives are tested on the CNN above.
  total, _ = jax.jit(lambda p: loss_of(adv, p, batch))(params)
  assert float(total) > float(clean) + 1e-3
  config.eps = {"spectrogram": 0.5}
  with pytest.raises(ConfigError, match=r"adversarial.eps has no value for \['text'\]"):
    make_adversarial(config, ssl)._attack_specs(inputs)
