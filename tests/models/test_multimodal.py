"""The multimodal transformer: every subset of modalities, every fusion, masking, errors."""
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import models
from mmjax.errors import ConfigError

B, T = 3, 12
KEYS = ("image", "text", "spectrogram")
MODALITY = {"image": "image", "text": "text", "spectrogram": "audio"}


def _batch():
  return {"image": jax.random.uniform(jax.random.key(0), (B, 28, 28, 1)),
          "text": jax.random.randint(jax.random.key(1), (B, T), 4, 260),
          "text_mask": jnp.ones((B, T), jnp.int32).at[:, 9:].set(0),
          "spectrogram": jax.random.normal(jax.random.key(2), (B, 64, 28))}


def _model(fusion, **kw):
  model = models.build_model(dict(name="multimodal", fusion=fusion, width=32, depth=2,
                                  num_heads=2, mlp_dim=64, projection_dim=16,
                                  num_classes=10, text_lm_head=True, **kw))
  # Initialised from an image-only batch: `initialize` must still create every tower.
  variables = models.init_variables(model, {"image": _batch()["image"][:1]},
                                    jax.random.key(3))
  return _Jitted(model), variables


class _Jitted:
  """model.apply under jit: one compile per batch structure beats op-by-op dispatch."""

  def __init__(self, model):
    self.model = model
    self._apply = jax.jit(model.apply, static_argnames="method")

  def apply(self, variables, batch, method="__call__"):
    return self._apply(variables, batch, method=method)


def _subset(batch, keys):
  out = {k: batch[k] for k in keys}
  if "text" in keys:
    out["text_mask"] = batch["text_mask"]
  return out


@pytest.fixture(scope="module", params=["towers", "concat", "bottleneck"])
def fused(request):
  return (request.param, *_model(request.param))


@pytest.mark.parametrize("keys", [c for r in (1, 2, 3) for c in itertools.combinations(KEYS, r)])
def test_output_shapes_for_every_subset_of_modalities(fused, keys):
  _, model, variables = fused
  out = jax.eval_shape(model.model.apply, variables, _subset(_batch(), keys))
  want = {"pooled": (B, 32), "logits": (B, 10), "logit_scale": (), "logit_bias": ()}
  for k in keys:
    m = MODALITY[k]
    want.update({f"{m}_pooled": (B, 32), f"{m}_present": (B,), f"{m}_projection": (B, 16)})
  if "text" in keys:
    want["lm_logits"] = (B, T, 260)
  assert {k: tuple(v.shape) for k, v in out.items()} == want


@pytest.mark.parametrize("absent", ["text", "spectrogram"])
def test_an_absent_modality_is_masked_not_zero_filled(fused, absent):
  """An example flagged absent for a modality gets the fused output it would get without
  that modality at all; the other examples still see it."""
  _, model, variables = fused
  batch = _batch()
  flag = jnp.array([1, 0, 1])
  partly = model.apply(variables, {**batch, f"{MODALITY[absent]}_present": flag})
  without = model.apply(variables, _subset(batch, [k for k in KEYS if k != absent]))
  full = model.apply(variables, batch)
  assert all(bool(jnp.all(jnp.isfinite(v))) for v in [*partly.values(), *full.values()])
  np.testing.assert_allclose(partly["pooled"][1], without["pooled"][1], atol=1e-5)
  np.testing.assert_allclose(partly["logits"][1], without["logits"][1], atol=1e-5)
  np.testing.assert_allclose(partly["pooled"][::2], full["pooled"][::2], atol=1e-5)
  np.testing.assert_array_equal(partly[f"{MODALITY[absent]}_present"], flag)
  assert not np.allclose(full["pooled"][1], without["pooled"][1], atol=1e-3)


def test_towers_are_independent_per_modality():
  """CLIP-style towers: an image's embedding does not depend on the text beside it."""
  model, variables = _model("towers")
  batch = _batch()
  a = model.apply(variables, batch)
  b = model.apply(variables, {**batch, "text": jnp.roll(batch["text"], 1, axis=0)})
  np.testing.assert_allclose(a["image_projection"], b["image_projection"], atol=1e-6)
  assert not np.allclose(a["text_projection"], b["text_projection"], atol=1e-3)


def test_fusion_mixes_modalities():
  """Concat and bottleneck fusion: an image's pooled features do depend on the text."""
  for fusion in ("concat", "bottleneck"):
    model, variables = _model(fusion)
    batch = _batch()
    a = model.apply(variables, batch)
    b = model.apply(variables, {**batch, "text": jnp.roll(batch["text"], 1, axis=0)})
    assert not np.allclose(a["image_pooled"], b["image_pooled"], atol=1e-4), fusion


def test_embed_gives_the_attack_seam():
  model, variables = _model("concat")
  inputs = model.apply(variables, _batch(), method="embed")
  assert inputs["image"].dtype == jnp.float32 and inputs["image"].shape == (B, 28, 28, 1)
  assert inputs["text"].shape == (B, T, 32) and inputs["text"].dtype == jnp.float32
  assert inputs["spectrogram"].shape == (B, 64, 28)
  # Masks and presence flags are ints, so attacks (float leaves only) never move them.
  for k in ("text_mask", "image_present", "text_present", "audio_present"):
    assert jnp.issubdtype(inputs[k].dtype, jnp.integer), k
  np.testing.assert_allclose(model.apply(variables, inputs, method="encode")["pooled"],
                             model.apply(variables, _batch())["pooled"], atol=1e-6)


@pytest.mark.parametrize("batch_change,cfg,match", [
    (dict(spectrogram=jnp.zeros((B, 60, 28))), {}, r"spectrograms of shape \(60, 28, 1\)"),
    (dict(image=jnp.zeros((B, 32, 32, 1))), {}, r"images of shape \(32, 32, 1\)"),
    (dict(text=jnp.ones((B, 40), jnp.int32), text_mask=jnp.ones((B, 40), jnp.int32)), {},
     "max_len"),
])
def test_bad_shapes_name_the_modality(batch_change, cfg, match):
  model, variables = _model("towers", **cfg)
  with pytest.raises(ConfigError, match=match):
    model.apply(variables, {**_batch(), **batch_change})


def test_bad_config_and_empty_batch():
  with pytest.raises(ConfigError, match="fusion"):
    _model("early")
  with pytest.raises(ConfigError, match="modalities"):
    _model("towers", modalities=("image", "video"))
  with pytest.raises(ConfigError, match="fusion_layer"):
    _model("bottleneck", fusion_layer=1)   # depth 2: would never mix
  model, variables = _model("towers")
  with pytest.raises(ConfigError, match="none of the model's modalities"):
    model.apply(variables, {"label": jnp.zeros((B,), jnp.int32)})


def test_patch_positions_start_at_the_configured_scale():
  """model.patch_pos_std sets the init std of the image and spectrogram patch positions
  (the visual-dialogue config needs them far above ViT's 0.02 to tell cells apart)."""
  def positions(**kw):
    model = models.build_model(dict(name="multimodal", modalities=("image", "audio"),
                                    width=32, depth=0, num_heads=2, mlp_dim=32, **kw))
    params = models.init_variables(model, {"image": _batch()["image"][:1]}, jax.random.key(0))
    return {t: np.std(params["params"][t]["pos"]["embedding"])
            for t in ("image_tokens", "audio_tokens")}
  assert positions() == pytest.approx({"image_tokens": 0.02, "audio_tokens": 0.02}, rel=0.2)
  assert positions(patch_pos_std=1.0) == pytest.approx({"image_tokens": 1.0,
                                                        "audio_tokens": 1.0}, rel=0.2)
  with pytest.raises(ConfigError, match=r"patch_pos_std=0.0 must be > 0"):
    positions(patch_pos_std=0.0)
