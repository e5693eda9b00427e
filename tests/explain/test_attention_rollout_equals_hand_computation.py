"""Attention rollout against the hand computation of Abnar & Zuidema on a hand-built
2-layer attention; the probabilities the model sows are the ones its attention applies;
every Transformer layer is found (scanned or not); a CNN is refused."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import models
from mmjax.errors import ConfigError
from mmjax.explain import rollout
from mmjax.models import attention


def _softmax_rows(rng, shape):
  z = np.exp(rng.normal(size=shape))
  return z / z.sum(-1, keepdims=True)


def test_two_layer_rollout_equals_the_hand_computation():
  rng = np.random.default_rng(0)
  a1, a2 = _softmax_rows(rng, (2, 3, 4, 4)), _softmax_rows(rng, (2, 3, 4, 4))
  expected = []
  for b in range(2):
    mixed = []
    for a in (a1, a2):
      m = 0.5 * a[b].mean(0) + 0.5 * np.eye(4)
      mixed.append(m / m.sum(-1, keepdims=True))
    expected.append(mixed[1] @ mixed[0])
  got = np.asarray(rollout.rollout([jnp.asarray(a1), jnp.asarray(a2)]))
  np.testing.assert_allclose(got, np.stack(expected), rtol=1e-5)
  np.testing.assert_allclose(got.sum(-1), 1.0, rtol=1e-5)
  # The [CLS] row and the mean of the rows, each normalised over the tokens.
  np.testing.assert_allclose(rollout.token_relevance(got, "cls"), got[:, 0], rtol=1e-5)
  mask = np.array([[1, 1, 1, 0], [1, 1, 1, 1]], np.float32)
  mean = np.asarray(rollout.token_relevance(got, "mean", mask))
  expected_mean = got[0, :3].mean(0) * mask[0]
  np.testing.assert_allclose(mean[0], expected_mean / expected_mean.sum(), rtol=1e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_sown_probabilities_are_the_ones_attention_applies(causal):
  k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
  q, k, v = (jax.random.normal(kk, (2, 5, 3, 4)) for kk in (k1, k2, k3))
  mask = jnp.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], bool)[:, None, None, :]
  probs = attention.probabilities(q, k, mask, causal=causal)
  out = attention.attend(q, k, v, mask, causal=causal, choice="xla")
  np.testing.assert_allclose(jnp.einsum("bnts,bsnh->btnh", probs, v), out, rtol=1e-5,
                             atol=1e-6)
  assert float(probs[0, :, :, 4].max()) == 0.0   # the padded key gets nothing


@pytest.mark.parametrize("scan_layers", [False, True])
def test_every_layer_of_a_vit_is_found_and_its_rollout_maps_to_pixels(scan_layers):
  model = models.build_model(dict(name="vit", image_size=8, patch_size=4, channels=1,
                                  width=16, depth=3, num_heads=2, mlp_dim=32,
                                  num_classes=3, scan_layers=scan_layers))
  x = {"image": jax.random.uniform(jax.random.PRNGKey(1), (2, 8, 8, 1))}
  variables = model.init(jax.random.PRNGKey(0), x, method="encode")
  out, found = rollout.model_attentions(model, variables, x)
  assert out["logits"].shape == (2, 3)
  assert [a.shape for a in found] == [(2, 2, 5, 5)] * 3    # 4 patches + [CLS]
  rel = rollout.token_relevance(rollout.rollout(found), "cls")[:, 1:]
  pixels = rollout.patches_to_pixels(np.asarray(rel), (2, 2), (4, 4), 1)
  assert pixels.shape == (2, 8, 8, 1)
  np.testing.assert_allclose(pixels.sum((1, 2, 3)), np.asarray(rel).sum(-1), rtol=1e-5)
  np.testing.assert_allclose(pixels[:, :4, 4:, 0],
                             np.broadcast_to(np.asarray(rel)[:, 1, None, None] / 16,
                                             (2, 4, 4)), rtol=1e-5)


def test_a_model_without_attention_is_refused():
  model = models.build_model(dict(name="mnist_cnn", num_classes=10))
  x = {"image": jnp.zeros((1, 28, 28, 1))}
  variables = model.init(jax.random.PRNGKey(0), x, method="encode")
  with pytest.raises(ConfigError, match="no attention layers to roll out"):
    rollout.model_attentions(model, variables, x)
