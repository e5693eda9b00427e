"""Overlapping (AST) spectrogram patches of the multimodal model: `spec_stride`."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import models
from mmjax.errors import ConfigError
from mmjax.models.multimodal import spec_token_grid


def _audio_model(**kw):
  cfg = dict(name="multimodal", modalities=("audio",), width=16, depth=1, num_heads=2,
             mlp_dim=32, num_classes=3)
  return models.build_model({**cfg, **kw})


def _init(model, f, t):
  batch = {"spectrogram": jax.random.normal(jax.random.key(0), (2, f, t))}
  return batch, models.init_variables(model, batch, jax.random.key(1))


def test_token_grid_counts():
  assert spec_token_grid((128, 128), 16, 10) == (12, 12, 144)      # AST, 1.28 s
  assert spec_token_grid((128, 1024), 16, 10) == (12, 101, 1212)   # AST, AudioSet 10 s
  assert spec_token_grid((64, 28), (8, 4), (8, 4)) == (8, 7, 56)   # = non-overlapping
  assert spec_token_grid((16, 8), (16, 4), (1, 2)) == (1, 3, 3)


@pytest.mark.parametrize("stride, bad", [((11, 4), "spec_stride"), ((0, 4), "spec_stride")])
def test_bad_stride_is_a_config_error(stride, bad):
  with pytest.raises(ConfigError, match=bad):
    spec_token_grid((64, 28), (10, 4), stride)


def test_overlapping_patches_shapes_and_parameters():
  model = _audio_model(mel_bins=36, frames=26, spec_patch=16, spec_stride=10)
  batch, variables = _init(model, 36, 26)
  tokens = variables["params"]["audio_tokens"]
  assert tokens["patch"]["proj"]["kernel"].shape == (16, 16, 1, 16)
  assert tokens["pos"]["embedding"].shape == (3 * 2, 16)   # (36-16)//10+1, (26-16)//10+1
  out = model.apply(variables, batch)
  assert out["logits"].shape == (2, 3) and out["audio_pooled"].shape == (2, 16)


def test_patch_values_are_the_strided_windows():
  # With identity-like weights, token (r, c) must equal the sum of window
  # x[r*sf : r*sf+ph, c*st : c*st+pw] (normalised), i.e. patches really overlap.
  model = _audio_model(mel_bins=6, frames=5, spec_patch=(4, 3), spec_stride=(2, 1),
                       spec_mean=1.0, spec_std=2.0)
  batch, variables = _init(model, 6, 5)
  params = jax.tree.map(lambda x: x, variables["params"])
  tok = params["audio_tokens"]
  tok["patch"]["proj"]["kernel"] = jnp.ones_like(tok["patch"]["proj"]["kernel"])
  tok["patch"]["proj"]["bias"] = jnp.zeros_like(tok["patch"]["proj"]["bias"])
  tok["pos"]["embedding"] = jnp.zeros_like(tok["pos"]["embedding"])
  x = np.asarray(batch["spectrogram"][0])
  got = model.apply({"params": params}, batch["spectrogram"],
                    method=lambda m, s: m.audio_tokens(s))[0, :, 0]
  z = (x - 1.0) / 2.0
  want = [z[r * 2:r * 2 + 4, c:c + 3].sum() for r in range(2) for c in range(3)]
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)


def test_stride_equal_to_patch_is_the_non_overlapping_model():
  plain = _audio_model(mel_bins=16, frames=8, spec_patch=(8, 4))
  same = _audio_model(mel_bins=16, frames=8, spec_patch=(8, 4), spec_stride=(8, 4))
  batch, v1 = _init(plain, 16, 8)
  _, v2 = _init(same, 16, 8)
  assert jax.tree.map(jnp.shape, v1) == jax.tree.map(jnp.shape, v2)
  np.testing.assert_allclose(plain.apply(v1, batch)["logits"],
                             same.apply(v1, batch)["logits"], rtol=1e-6)


def test_audio_mae_needs_non_overlapping_patches():
  model = _audio_model(modalities=("image", "audio"), mel_bins=36, frames=26, spec_patch=16,
                       spec_stride=10, mae_decoder_width=8)
  batch = {"image": jnp.zeros((2, 28, 28, 1)), "spectrogram": jnp.zeros((2, 36, 26))}
  variables = models.init_variables(model, batch, jax.random.key(0))
  assert "mae_decoders_image" in variables["params"]
  assert "mae_decoders_audio" not in variables["params"]
  inputs = model.apply(variables, batch, method="embed")
  with pytest.raises(ConfigError, match="non-overlapping"):
    model.apply(variables, inputs, method="mae", modality="audio",
                rngs={"mask": jax.random.key(2)})
  out = model.apply(variables, inputs, method="mae", modality="image",
                    rngs={"mask": jax.random.key(2)})
  assert out["pred"].shape == (2, 49, 16)
