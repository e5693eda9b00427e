"""Caption grounding: the maps are the decoder's cross-attention recomputed by hand from
its query / key weights (heads and layers averaged, shifted to the token each step
generated); the evaluator draws and reports them in a short training run; a model
without a caption decoder and bad options are refused before training."""
import json
import os

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

from mmjax import models
from mmjax.config import default_config
from mmjax.data import tokenizers
from mmjax.errors import ConfigError
from mmjax.explain import grounding
from mmjax.models import attention
from mmjax.train import loop
from tests import tensorboard_events

TINY = dict(name="multimodal", modalities=("image",), width=16, depth=1, num_heads=2,
            mlp_dim=32, image_size=8, patch_size=4, max_len=6)


def _hand_maps(model, variables, inputs, tokens):
  """The cross-attention of every decoder layer from its LayerNorm'd queries and the
  memory, by `attention.probabilities` -> heads and layers averaged [B,T,S]."""
  memory, mask = model.apply(variables, inputs, method="caption_memory")
  _, state = model.apply(variables, memory, mask, tokens, method="caption_logits",
                         capture_intermediates=lambda mdl, _: mdl.name == "ln_cross")
  found = state["intermediates"]["caption_decoder"]
  layers = []
  for i in range(model.caption_depth):
    h = found[f"block_{i}"]["ln_cross"]["__call__"][0]                  # [B,T,D]
    p = variables["params"]["caption_decoder"][f"block_{i}"]["cross_attn"]
    q = jnp.einsum("btd,dnh->btnh", h, p["query"]["kernel"]) + p["query"]["bias"]
    k = jnp.einsum("bsd,dnh->bsnh", memory, p["key"]["kernel"]) + p["key"]["bias"]
    probs = attention.probabilities(q, k, mask[:, None, None, :].astype(bool),
                                    causal=False)
    layers.append(np.asarray(probs).mean(1))
  return np.mean(layers, axis=0)


@pytest.mark.parametrize("depth", [1, 2])
def test_maps_are_the_cross_attention_of_the_step_that_generated_each_token(depth):
  model = models.build_model(dict(TINY, caption_depth=depth))
  batch = {"image": jax.random.uniform(jax.random.PRNGKey(1), (2, 8, 8, 1))}
  variables = models.init_variables(model, batch, jax.random.PRNGKey(0))
  inputs = model.apply(variables, batch, method="embed")
  # One caption ends (EOS at 3, then PAD); the other fills its row without EOS.
  tokens = jnp.array([[1, 70, 71, 2, 0, 0], [1, 72, 73, 74, 75, 76]], jnp.int32)
  maps = np.asarray(grounding.caption_grounding(model, variables, inputs, tokens))
  assert maps.shape == (2, 6, 4)                      # 2x2 patches of 4x4 pixels
  hand = _hand_maps(model, variables, inputs, tokens)
  generated = np.array([[0, 1, 1, 1, 0, 0], [0, 1, 1, 1, 1, 1]], np.float32)
  np.testing.assert_allclose(maps[:, 1:], hand[:, :-1] * generated[:, 1:, None],
                             rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(maps.sum(-1), generated, rtol=1e-5, atol=1e-7)
  pixels = grounding.to_pixels(model, maps)
  assert pixels.shape == (2, 6, 8, 8)
  np.testing.assert_allclose(pixels.sum((2, 3)), maps.sum(-1), rtol=1e-5, atol=1e-7)
  # Patch 1 is the top-right 4x4 block (row-major, as layers.patchify).
  np.testing.assert_allclose(pixels[:, :, :4, 4:],
                             np.broadcast_to(maps[:, :, 1, None, None] / 16, (2, 6, 4, 4)),
                             rtol=1e-5)


def test_words_foreground_patches_and_a_model_without_decoder():
  tok = tokenizers.make_tokenizer("bytes")
  ids, _ = tok.encode("a thin é7", 16)
  assert grounding.words(ids, tok) == [("a", [1]), ("thin", [3, 4, 5, 6]),
                                        ("é7", [8, 9, 10])]   # é is two bytes
  images = np.zeros((1, 8, 8, 1), np.float32)
  images[0, 5, 1] = 0.9          # bottom-left patch
  images[0, 0, 7] = 0.4          # top-right, below the threshold
  assert grounding.foreground_patches(images, (4, 4), 0.5).tolist() == [
      [False, False, True, False]]
  model = models.build_model(dict(TINY, caption_depth=0))
  with pytest.raises(ConfigError, match=r"caption_depth=0\).*caption_depth > 0"):
    grounding.caption_grounding(model, {}, {}, jnp.ones((1, 3), jnp.int32))


def _caption_config(data_dir, **grounding_options):
  """Quickstart's image -> caption part at test size: a 1-layer decoder on 1-layer image
  tower, captioning only, 60 steps."""
  from configs.common import use_multimodal_digits
  c = default_config()
  use_multimodal_digits(c, max_len=40, audio=False)
  c.data.data_dir = data_dir
  c.model = dict(name="multimodal", modalities=("image", "text"), width=32, depth=1,
                 num_heads=2, mlp_dim=64, image_size=28, patch_size=7, max_len=40,
                 caption_depth=1, caption_source="image")
  c.objective = dict(name="captioning")
  c.optim.update(dict(learning_rate=1e-2, warmup_steps=5))
  c.train.update(dict(total_steps=60, batch_size=16, log_every=10, eval_every=0,
                      checkpoint_every=0))
  c.train.eval_batch_size = 16
  del c.evals["loss"]   # one compile less: only the grounding is under test
  c.evals.ground = dict(type="caption_grounding", **grounding_options)
  return c


def test_the_evaluator_reports_draws_and_shows_the_maps(digits_data_dir, tmp_path):
  config = _caption_config(digits_data_dir, num_examples=8, pictures=2, max_len=24)
  workdir = str(tmp_path / "run")
  result = loop.train_and_evaluate(config, workdir)
  assert 0 <= result["ground/stroke_share"] <= 1
  assert 0 < result["ground/stroke_share_uniform"] < 1
  assert result["ground/words_per_caption"] >= 1
  out = os.path.join(workdir, "grounding_ground")
  with open(os.path.join(out, "step_60.json")) as f:
    written = json.load(f)
  assert len(written["examples"]) == 8 and written["patch_grid"] == [4, 4]
  word = written["examples"][0]["words"][0]
  assert word["word"] in written["examples"][0]["caption"]
  assert 0 <= word["stroke_share"] <= 1
  picture = matplotlib.image.imread(os.path.join(out, "step_60.png"))
  assert picture.ndim == 3 and picture.shape[0] > 100 and picture.shape[1] > 100
  images = tensorboard_events.images(os.path.join(workdir, "tensorboard"))
  assert [(tag, step) for tag, step, _ in images] == [("ground/grounding", 60)]


@pytest.mark.parametrize("model, entry, match", [
    (dict(name="mnist_cnn", num_classes=10), {}, r"config\.model\.caption_depth > 0"),
    (None, dict(pictures=9, num_examples=8), r"pictures=9 must be in \[0, num_examples"),
    (None, dict(foreground_threshold=1.5), r"foreground_threshold=1.5 must be in \[0, 1\)"),
    (None, dict(max_len=1), r"max_len=1 must be >= 2"),
    (None, dict(max_len=41), r"max_len=41 exceeds config\.model\.max_len=40"),
])
def test_bad_settings_are_refused_before_training(digits_data_dir, tmp_path, model,
                                                  entry, match):
  config = _caption_config(digits_data_dir, **entry)
  if model is not None:
    config.model = model
    config.objective = dict(name="supervised")
  with pytest.raises(ConfigError, match=match):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")
