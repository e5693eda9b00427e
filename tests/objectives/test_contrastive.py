"""Cross-modal contrastive losses against hand-computed values; masking; the objective."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax import models, objectives
from mmjax.errors import ConfigError
from mmjax.objectives.contrastive import clip_loss, sigmoid_loss


def _unit(rows):
  rows = np.asarray(rows, np.float64)
  return rows / np.linalg.norm(rows, axis=1, keepdims=True)


ZA = _unit([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
ZB = _unit([[0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])


def _clip_by_hand(za, zb, scale, valid):
  """Symmetric InfoNCE written out with loops over the valid examples."""
  idx = [i for i in range(len(za)) if valid[i]]
  total = 0.0
  for i in idx:
    for q, g in ((za, zb), (zb, za)):
      sims = {j: scale * float(q[i] @ g[j]) for j in idx}
      total += 0.5 * -(sims[i] - math.log(sum(math.exp(s) for s in sims.values())))
  return total / len(idx)


@pytest.mark.parametrize("valid", [[1, 1, 1], [1, 0, 1]])
def test_clip_loss_equals_hand_computed(valid):
  loss, acc = clip_loss(jnp.asarray(ZA, jnp.float32), jnp.asarray(ZB, jnp.float32),
                        jnp.float32(5.0), jnp.asarray(valid, jnp.float32))
  np.testing.assert_allclose(loss, _clip_by_hand(ZA, ZB, 5.0, valid), rtol=1e-5)
  assert 0.0 <= float(acc) <= 1.0


def test_sigmoid_loss_equals_hand_computed():
  scale, bias, valid = 10.0, -3.0, [1, 1, 0]
  idx = [0, 1]
  want = 0.0
  for i in idx:
    for j in idx:
      z = 1.0 if i == j else -1.0
      want += -math.log(1 / (1 + math.exp(-z * (scale * float(ZA[i] @ ZB[j]) + bias))))
  want /= len(idx)
  got = sigmoid_loss(jnp.asarray(ZA, jnp.float32), jnp.asarray(ZB, jnp.float32),
                     jnp.float32(scale), jnp.float32(bias), jnp.asarray(valid, jnp.float32))
  np.testing.assert_allclose(got, want, rtol=1e-5)


def _setup(**objective):
  model = models.build_model(dict(name="multimodal", modalities=("image", "text", "audio"),
                                  width=32, depth=1, num_heads=2, mlp_dim=64,
                                  projection_dim=16))
  batch = {"image": jax.random.uniform(jax.random.key(0), (4, 28, 28, 1)),
           "text": jax.random.randint(jax.random.key(1), (4, 8), 4, 260),
           "spectrogram": jax.random.normal(jax.random.key(2), (4, 64, 28))}
  variables = models.init_variables(model, batch, jax.random.key(3))
  loss_fn = objectives.make_objective(dict(name="contrastive", **objective), model)
  return loss_fn, variables["params"], batch


def test_objective_masks_missing_pairs_and_learns_the_temperature():
  loss_fn, params, batch = _setup(pairs=(("image", "text"), ("image", "audio")))
  # Jitted: op-by-op dispatch of the model took most of this test's 38 s.
  run = jax.jit(lambda p, b: loss_fn(p, b, jax.random.key(4), model_state={}, train=True))
  loss, (metrics, _) = run(params, batch)
  assert float(metrics["image_text/pairs"]) == 4 and float(metrics["image_audio/pairs"]) == 4
  np.testing.assert_allclose(metrics["temperature"], 0.07, rtol=1e-5)   # CLIP init
  # Audio missing for examples 1 and 3: those pairs leave the loss; the loss equals the
  # one computed on the two complete examples alone.
  flagged, (m2, _) = run(params, {**batch, "audio_present": jnp.array([1, 0, 1, 0])})
  assert float(m2["image_audio/pairs"]) == 2
  sub = {k: v[::2] for k, v in batch.items()}
  _, (m_sub, _) = run(params, sub)
  np.testing.assert_allclose(m2["image_audio/loss"], m_sub["image_audio/loss"], rtol=1e-5)
  grads = jax.jit(jax.grad(lambda p: run(p, batch)[0]))(params)
  assert float(jnp.abs(grads["logit_scale"])) > 0     # the temperature is learned


def test_objective_trains_alignment_down():
  import optax
  loss_fn, params, batch = _setup(pairs=(("image", "audio"),), loss="sigmoid")
  tx = optax.adam(3e-3)
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    (loss, _), g = jax.value_and_grad(
        lambda p: loss_fn(p, batch, jax.random.key(5), model_state={}, train=True),
        has_aux=True)(params)
    updates, state = tx.update(g, state, params)
    return optax.apply_updates(params, updates), state, loss

  first = None
  for _ in range(30):
    params, state, loss = step(params, state)
    first = loss if first is None else first
  assert float(loss) < 0.5 * float(first)


def test_bad_options_are_named():
  with pytest.raises(ConfigError, match="objective.loss"):
    _setup(loss="triplet")
  with pytest.raises(ConfigError, match="pairs of two different"):
    _setup(pairs=(("image", "image"),))
  with pytest.raises(ConfigError, match="does not have"):
    _setup(pairs=(("image", "video"),))
