"""The multimodal model's MAE (image and spectrogram) and captioning heads, and the
objectives that train them."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import models
from mmjax.errors import ConfigError
from mmjax.models import layers
from mmjax.objectives import make_objective

B, T = 3, 10


def _batch():
  return {"image": jax.random.uniform(jax.random.key(0), (B, 28, 28, 1)),
          "text": jax.random.randint(jax.random.key(1), (B, T), 4, 260),
          "text_mask": jnp.ones((B, T), jnp.int32).at[:, 7:].set(0),
          "spectrogram": jax.random.normal(jax.random.key(2), (B, 64, 28))}


CONFIG = dict(name="multimodal", width=32, depth=2, num_heads=2, mlp_dim=64, max_len=T,
              mae_decoder_width=16, mae_decoder_depth=1, mae_decoder_heads=2,
              caption_depth=1, text_lm_head=True, projection_dim=16)


@pytest.fixture(scope="module")
def model_and_variables():
  model = models.build_model(CONFIG)
  variables = models.init_variables(model, {"image": _batch()["image"][:1]},
                                    jax.random.key(3))
  return model, variables


def _rngs(seed=0):
  return {"mask": jax.random.key(seed), "dropout": jax.random.key(seed + 1)}


@pytest.mark.parametrize("modality,patches,patch_dim", [("image", 49, 16),
                                                        ("audio", 56, 32)])
def test_mae_shapes_masks_and_targets(model_and_variables, modality, patches, patch_dim):
  model, variables = model_and_variables
  inputs = model.apply(variables, _batch(), method="embed")
  out = model.apply(variables, inputs, method="mae", modality=modality, mask_ratio=0.75,
                    rngs=_rngs())
  assert out["pred"].shape == out["target"].shape == (B, patches, patch_dim)
  # int(N * 0.25) visible, the rest hidden, per example.
  np.testing.assert_array_equal(out["mask"].sum(axis=1),
                                [patches - int(patches * 0.25)] * B)
  source = inputs["image"] if modality == "image" else inputs["spectrogram"][..., None]
  patch = 4 if modality == "image" else (8, 4)
  np.testing.assert_array_equal(out["target"], layers.patchify(source, patch))
  np.testing.assert_array_equal(out["present"], np.ones(B))


def test_mae_objective_ignores_examples_without_the_modality(model_and_variables):
  model, variables = model_and_variables
  objective = make_objective({"name": "mae", "modality": "audio"}, model)
  batch = {**_batch(), "audio_present": jnp.array([1, 0, 1])}
  changed = {**batch, "spectrogram": batch["spectrogram"].at[1].set(5.0)}
  loss = lambda b: objective(variables["params"], b, jax.random.key(0), model_state={},
                             train=True)[0]
  assert np.isfinite(loss(batch))
  np.testing.assert_allclose(loss(batch), loss(changed), rtol=1e-6)
  unflagged = {k: v for k, v in changed.items() if k != "audio_present"}
  assert abs(float(loss(unflagged)) - float(loss(batch))) > 1e-4


def test_caption_logits_are_causal_and_read_only_the_source(model_and_variables):
  model, variables = model_and_variables
  batch = _batch()
  inputs = model.apply(variables, batch, method="embed")
  tokens = batch["text"]
  logits = model.apply(variables, inputs, tokens, method="caption")
  assert logits.shape == (B, T, 260)
  # Changing token 5 leaves the predictions made from positions 0..4 unchanged.
  later = model.apply(variables, inputs, tokens.at[:, 5].set(7), method="caption")
  np.testing.assert_allclose(logits[:, :5], later[:, :5], atol=1e-5)
  assert not np.allclose(logits[:, 5:], later[:, 5:], atol=1e-3)
  # The decoder reads the image ...
  other = {**inputs, "image": inputs["image"][::-1]}
  assert not np.allclose(model.apply(variables, other, tokens, method="caption"), logits,
                         atol=1e-3)
  # ... and only the image, although the batch holds the caption as text too.
  image_only = {k: v for k, v in inputs.items() if k.startswith("image")}
  np.testing.assert_allclose(model.apply(variables, image_only, tokens, method="caption"),
                             logits, atol=1e-5)


def test_captioning_objective_learns_and_hides_the_caption(model_and_variables):
  import optax
  model, variables = model_and_variables
  objective = make_objective({"name": "captioning"}, model)
  batch = _batch()
  prepared = objective.prepare(batch, jax.random.key(0))
  assert "text" not in prepared and "_caption" in prepared
  params = variables["params"]
  tx = optax.adam(3e-3)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state):
    (loss, (metrics, _)), grads = jax.value_and_grad(
        lambda p: objective(p, batch, jax.random.key(0), model_state={}, train=True),
        has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss, metrics

  first = None
  for _ in range(15):
    params, opt_state, loss, metrics = step(params, opt_state)
    first = float(loss) if first is None else first
  assert float(loss) < 0.7 * first
  np.testing.assert_allclose(metrics["perplexity"], np.exp(metrics["loss"]), rtol=1e-5)


def test_every_masked_modelling_term_composes_in_one_sum(model_and_variables):
  """MLM (text), MAE (image and spectrogram), captioning and contrastive: one objective."""
  model, variables = model_and_variables
  objective = make_objective({"name": "sum", "terms": {
      "mlm": {"mask_prob": 0.3},
      "image_mae": {"name": "mae", "modality": "image"},
      "audio_mae": {"name": "mae", "modality": "audio"},
      "captioning": {"weight": 0.5},
      "contrastive": {"pairs": (("image", "text"), ("image", "audio"))}}}, model)
  loss, (metrics, _) = jax.jit(lambda p: objective(p, _batch(), jax.random.key(0),
                                                   model_state={}, train=True))(
      variables["params"])
  for key in ("mlm/accuracy", "image_mae/loss", "audio_mae/loss", "captioning/loss",
              "contrastive/image_audio/loss"):
    assert np.isfinite(metrics[key]), key
  terms = (metrics["mlm/loss"] + metrics["image_mae/loss"] + metrics["audio_mae/loss"] +
           0.5 * metrics["captioning/loss"] + metrics["contrastive/loss"])
  np.testing.assert_allclose(loss, terms, rtol=1e-5)


def test_bad_head_configs_are_config_errors(model_and_variables):
  model, variables = model_and_variables
  with pytest.raises(ConfigError, match="objective.modality"):
    make_objective({"name": "mae"}, model)
  with pytest.raises(ConfigError, match="patch modalities"):
    make_objective({"name": "mae", "modality": "text"}, model)
  plain = models.build_model(dict(CONFIG, mae_decoder_width=0, caption_depth=0))
  with pytest.raises(ConfigError, match="caption_depth > 0"):
    make_objective({"name": "captioning"}, plain)
  with pytest.raises(ConfigError, match="mae_decoder_width > 0"):
    jax.eval_shape(lambda: plain.init(_rngs() | {"params": jax.random.key(0)}, _batch(),
                                      method="mae"))
  bad_source = models.build_model(dict(CONFIG, caption_source="text"))
  with pytest.raises(ConfigError, match="caption_source='text'"):
    jax.eval_shape(lambda: bad_source.init(_rngs() | {"params": jax.random.key(0)},
                                           _batch(), method="initialize"))
  inputs = model.apply(variables, {"text": _batch()["text"]}, method="embed")
  with pytest.raises(ConfigError, match="Captioning needs the image input"):
    model.apply(variables, inputs, _batch()["text"], method="caption")
