"""TextTransformer: shapes, GPT-2 size, causal and padding masks, pooling, heads."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import models
from mmjax.errors import ConfigError

TINY = dict(name="text_transformer", vocab_size=50, max_len=12, width=16, depth=2,
            num_heads=2, mlp_dim=32)
TEXT = jax.random.randint(jax.random.key(1), (2, 10), 4, 50)
MASK = jnp.array([[1] * 7 + [0] * 3, [1] * 10])  # example 0 has 3 padded positions


@functools.partial(jax.jit, static_argnames=("model", "method", "train"))
def _apply(model, variables, inputs, rngs=None, *, method="__call__", train=False):
  return model.apply(variables, inputs, rngs=rngs, method=method, train=train)


def _build(**kw):
  model = models.build_model({**TINY, **kw})
  return model, models.init_variables(model, {"text": TEXT}, jax.random.key(0))


@pytest.fixture(scope="module")
def encoder():
  """BERT-style: bidirectional, mean pooling, classifier and projection, dropout."""
  return _build(causal=False, pool="mean", num_classes=3, projection_dim=4, dropout=0.1)


@pytest.fixture(scope="module")
def decoder():
  """GPT-style: causal, last-token pooling, untied read-out, scanned layers."""
  return _build(causal=True, pool="last", num_classes=2, tie_embeddings=False,
                scan_layers=True)


def test_gpt2_small_param_count():
  model = models.build_model(dict(name="text_transformer", vocab_size=50257, max_len=1024,
                                  width=768, depth=12, num_heads=12, mlp_dim=3072,
                                  causal=True, tie_embeddings=True, scan_layers=True))
  batch = {"text": jax.ShapeDtypeStruct((1, 1024), jnp.int32)}
  count = models.param_count(models.abstract_variables(model, batch)["params"])
  assert abs(count - 124_439_808) <= 0.001 * 124_439_808
  assert count == 124_439_808  # exact: same tensors as GPT-2 with tied wte
  specs = models.logical_partition_specs(model, batch)["params"]
  assert tuple(specs["token_embed"]["embedding"]) == ("vocab", "embed")


def test_encoder_outputs(encoder):
  model, variables = encoder
  batch = {"text": TEXT, "text_mask": MASK}
  out = _apply(model, variables, batch)
  assert set(out) == {"hidden", "pooled", "lm_logits", "logits", "projection"}
  assert out["hidden"].shape == (2, 10, 16) and out["pooled"].shape == (2, 16)
  assert out["lm_logits"].shape == (2, 10, 50) and out["logits"].shape == (2, 3)
  assert out["projection"].shape == (2, 4)
  inputs = _apply(model, variables, {"text": TEXT}, method="embed")
  assert inputs["text"].shape == (2, 10, 16) and inputs["text"].dtype == jnp.float32
  np.testing.assert_array_equal(inputs["text_mask"], np.ones((2, 10)))  # default mask
  # Tied read-out: lm_logits = hidden @ token_embedding^T.
  table = variables["params"]["token_embed"]["embedding"]
  np.testing.assert_allclose(out["lm_logits"], out["hidden"] @ table.T, atol=1e-4)
  # Masked mean pooling.
  np.testing.assert_allclose(out["pooled"][0], out["hidden"][0, :7].mean(0), atol=1e-5)
  # Dropout only in training.
  np.testing.assert_array_equal(_apply(model, variables, batch)["logits"], out["logits"])
  train = _apply(model, variables, batch, {"dropout": jax.random.key(2)}, train=True)
  assert not np.allclose(train["logits"], out["logits"])


def test_padding_does_not_leak_into_real_positions(encoder, decoder):
  changed = TEXT.at[0, 7:].set(jnp.array([5, 6, 7]))
  for model, variables in (encoder, decoder):
    a = _apply(model, variables, {"text": TEXT, "text_mask": MASK})
    b = _apply(model, variables, {"text": changed, "text_mask": MASK})
    np.testing.assert_allclose(b["hidden"][0, :7], a["hidden"][0, :7], atol=1e-5)
    np.testing.assert_allclose(b["pooled"], a["pooled"], atol=1e-5)
    np.testing.assert_allclose(b["logits"], a["logits"], atol=1e-5)
  # ... whereas without the mask the bidirectional encoder sees the change.
  model, variables = encoder
  a = _apply(model, variables, {"text": TEXT})
  b = _apply(model, variables, {"text": changed})
  assert not np.allclose(b["hidden"][0, :7], a["hidden"][0, :7], atol=1e-4)


def test_causal_mask(encoder, decoder):
  changed = TEXT.at[:, 6].set((TEXT[:, 6] + 1) % 50)
  for (model, variables), causal in ((decoder, True), (encoder, False)):
    a = _apply(model, variables, {"text": TEXT})["hidden"]
    b = _apply(model, variables, {"text": changed})["hidden"]
    assert np.allclose(a[:, :6], b[:, :6], atol=1e-5) == causal
    assert not np.allclose(a[:, 6:], b[:, 6:], atol=1e-4)


def test_decoder_heads_and_last_pooling(decoder):
  model, variables = decoder
  out = _apply(model, variables, {"text": TEXT, "text_mask": MASK})
  assert set(out) == {"hidden", "pooled", "lm_logits", "logits"}
  assert out["lm_logits"].shape == (2, 10, 50)
  np.testing.assert_allclose(out["pooled"][0], out["hidden"][0, 6], atol=1e-6)
  np.testing.assert_allclose(out["pooled"][1], out["hidden"][1, 9], atol=1e-6)


def test_remat_and_loop_match_scan(decoder):
  model, variables = decoder
  ref = _apply(model, variables, {"text": TEXT})["lm_logits"]
  remat = models.build_model({**TINY, "causal": True, "pool": "last", "num_classes": 2,
                              "tie_embeddings": False, "scan_layers": True, "remat": "full"})
  np.testing.assert_allclose(_apply(remat, variables, {"text": TEXT})["lm_logits"], ref,
                             atol=1e-5)
  loop = models.build_model({**TINY, "causal": True, "num_classes": 2, "pool": "last",
                             "tie_embeddings": False, "scan_layers": False})
  batch = {"text": TEXT}
  assert (models.param_count(models.abstract_variables(loop, batch))
          == models.param_count(variables))


def test_too_long_text_is_a_config_error(encoder):
  model, variables = encoder
  with pytest.raises(ConfigError, match="max_len"):
    model.apply(variables, {"text": jnp.ones((1, 13), jnp.int32)})
