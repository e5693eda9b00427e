"""Loss math against numbers computed by hand (math.exp / math.log, written out)."""
import math

import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.objectives import losses


def test_weighted_mean():
  assert float(losses.weighted_mean(jnp.array([1.0, 2.0, 3.0]))) == pytest.approx(2.0)
  # (1*1 + 5*0 + 3*1) / 2
  assert float(losses.weighted_mean(jnp.array([1.0, 5.0, 3.0]),
                                    jnp.array([1.0, 0.0, 1.0]))) == pytest.approx(2.0)
  # Per-row weights broadcast over [B, T] values: rows weighted 1 and 0 -> (1 + 2) / 2.
  v = jnp.array([[1.0, 2.0], [10.0, 20.0]])
  assert float(losses.weighted_mean(v, jnp.array([[1.0], [0.0]]))) == pytest.approx(1.5)
  # Zero-weight (padding) entries are ignored even when they are not finite.
  assert float(losses.weighted_mean(jnp.array([1.0, jnp.nan, jnp.inf]),
                                    jnp.array([1.0, 0.0, 0.0]))) == 1.0
  # An all-padding batch gives 0, not NaN.
  assert float(losses.weighted_mean(jnp.array([4.0]), jnp.array([0.0]))) == 0.0


def test_softmax_cross_entropy_two_examples_three_classes():
  logits = jnp.array([[1.0, 2.0, 3.0], [1.0, 0.0, -1.0]])
  labels = jnp.array([2, 1])
  expected = [
      math.log(math.exp(1) + math.exp(2) + math.exp(3)) - 3.0,
      math.log(math.exp(1) + math.exp(0) + math.exp(-1)) - 0.0,
  ]
  got = losses.softmax_cross_entropy(logits, labels)
  np.testing.assert_allclose(got, expected, rtol=1e-6)
  assert float(losses.weighted_mean(got)) == pytest.approx(sum(expected) / 2, rel=1e-6)
  np.testing.assert_array_equal(losses.top1_correct(logits, labels), [1.0, 0.0])


def test_top1_correct_matches_argmax_and_refuses_constant_rows():
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(200, 37)).astype(np.float32)
  labels = rng.integers(0, 37, 200)
  labels[:100] = logits[:100].argmax(-1)          # half right, half mostly wrong
  np.testing.assert_array_equal(losses.top1_correct(logits, labels),
                                (logits.argmax(-1) == labels).astype(np.float32))
  # A collapsed model (constant logits) is not right, and labels out of range never are.
  np.testing.assert_array_equal(losses.top1_correct(np.zeros((2, 5)), np.array([0, 3])),
                                [0.0, 0.0])
  np.testing.assert_array_equal(losses.top1_correct(logits[:3], np.array([-1, 37, 99])),
                                [0.0, 0.0, 0.0])


def test_softmax_cross_entropy_label_smoothing():
  logits = jnp.array([[1.0, 2.0, 3.0]])
  # alpha = 0.3, K = 3: target = 0.7 * onehot(0) + 0.1 = [0.8, 0.1, 0.1].
  log_z = math.log(math.exp(1) + math.exp(2) + math.exp(3))
  expected = -(0.8 * (1 - log_z) + 0.1 * (2 - log_z) + 0.1 * (3 - log_z))
  got = losses.softmax_cross_entropy(logits, jnp.array([0]), label_smoothing=0.3)
  np.testing.assert_allclose(got, [expected], rtol=1e-6)


def test_next_token_targets_shift_and_mask():
  tokens = jnp.array([[1, 7, 8, 0]])
  text_mask = jnp.array([[1, 1, 1, 0]])
  lm_logits = jnp.arange(4 * 3, dtype=jnp.float32).reshape(1, 4, 3)
  logits, targets, weights = losses.next_token_targets(lm_logits, tokens, text_mask)
  np.testing.assert_array_equal(logits, lm_logits[:, :3])
  np.testing.assert_array_equal(targets, [[7, 8, 0]])
  np.testing.assert_array_equal(weights, [[1.0, 1.0, 0.0]])


def _nll(pos, others):
  """-log exp(pos/τ) / Σ exp(·/τ) over the positive and the other candidates, τ = 0.5."""
  t = 0.5
  return -math.log(math.exp(pos / t) / (math.exp(pos / t) + sum(math.exp(o / t) for o in others)))


# Views: a=(1,0), b=(0,1) and their partners c=(0.6,0.8), d=(-0.8,0.6).
# Dot products: ab=0, ac=0.6, ad=-0.8, bc=0.8, bd=0.6, cd=0.
Z1 = jnp.array([[1.0, 0.0], [0.0, 1.0]])
Z2 = jnp.array([[0.6, 0.8], [-0.8, 0.6]])
NT_XENT_EXPECTED = [
    0.5 * (_nll(0.6, [0.0, -0.8])      # a -> c, negatives b, d
           + _nll(0.6, [0.8, 0.0])),   # c -> a, negatives b, d
    0.5 * (_nll(0.6, [0.0, 0.8])       # b -> d, negatives a, c
           + _nll(0.6, [-0.8, 0.0])),  # d -> b, negatives a, c
]


def test_nt_xent_two_pairs_by_hand():
  got = losses.nt_xent(Z1, Z2, 0.5)
  np.testing.assert_allclose(got, NT_XENT_EXPECTED, rtol=1e-5)
  # Cosine similarity: the scale of the representations does not matter.
  np.testing.assert_allclose(losses.nt_xent(3.0 * Z1, 0.5 * Z2, 0.5), NT_XENT_EXPECTED,
                             rtol=1e-5)


def test_contrastive_accuracy_by_hand():
  logits, positives = losses.contrastive_logits(Z1, Z2, 0.5)
  assert logits.shape == (4, 4)
  np.testing.assert_array_equal(positives, [2, 3, 0, 1])
  # Best match: a -> c (right), b -> c (wrong), c -> b (wrong), d -> b (right).
  np.testing.assert_array_equal(losses.top1_correct(logits, positives), [1, 0, 0, 1])


def test_nt_xent_padding_is_not_a_negative():
  # A third, padded pair must not change the loss of the two real ones.
  z1 = jnp.concatenate([Z1, jnp.array([[0.7, 0.7]])])
  z2 = jnp.concatenate([Z2, jnp.array([[0.7, -0.7]])])
  got = losses.nt_xent(z1, z2, 0.5, mask=jnp.array([1.0, 1.0, 0.0]))
  np.testing.assert_allclose(got[:2], NT_XENT_EXPECTED, rtol=1e-5)
  # Without the mask it is a negative, and the loss changes.
  assert not np.allclose(losses.nt_xent(z1, z2, 0.5)[:2], NT_XENT_EXPECTED, rtol=1e-3)


def test_mae_patch_loss_norm_pix_by_hand():
  # One example, two patches of 4 pixels; only patch 0 is hidden.
  target = jnp.array([[[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 1.0, 1.0]]])
  pred = jnp.array([[[0.0, 1.0, 0.0, -1.0], [5.0, 5.0, 5.0, 5.0]]])
  mask = jnp.array([[1.0, 0.0]])
  # Patch 0: mean 2.5, unbiased variance (2.25 + 0.25 + 0.25 + 2.25) / 3 = 5/3.
  std = math.sqrt(5 / 3 + 1e-6)
  normed = [(1 - 2.5) / std, (2 - 2.5) / std, (3 - 2.5) / std, (4 - 2.5) / std]
  expected = sum((p - t) ** 2 for p, t in zip([0.0, 1.0, 0.0, -1.0], normed)) / 4
  got = losses.mae_patch_loss(pred, target, mask, norm_pix=True)
  np.testing.assert_allclose(got, [expected], rtol=1e-5)
  # Without normalisation: plain MSE of patch 0 = (1 + 1 + 9 + 25) / 4.
  got_raw = losses.mae_patch_loss(pred, target, mask, norm_pix=False)
  np.testing.assert_allclose(got_raw, [36 / 4], rtol=1e-6)
  # Both patches hidden: the mean of the two per-patch losses. Patch 1: mean 0.5,
  # unbiased var 1/3; normed (-0.5, -0.5, 0.5, 0.5) / sqrt(1/3 + eps), pred 5 everywhere.
  std1 = math.sqrt(1 / 3 + 1e-6)
  normed1 = [-0.5 / std1, -0.5 / std1, 0.5 / std1, 0.5 / std1]
  patch1 = sum((5.0 - t) ** 2 for t in normed1) / 4
  got_both = losses.mae_patch_loss(pred, target, jnp.array([[1.0, 1.0]]), norm_pix=True)
  np.testing.assert_allclose(got_both, [(expected + patch1) / 2], rtol=1e-5)


def test_l2_normalize():
  np.testing.assert_allclose(losses.l2_normalize(jnp.array([[3.0, 4.0]])), [[0.6, 0.8]],
                             rtol=1e-6)
  np.testing.assert_array_equal(losses.l2_normalize(jnp.zeros((1, 2))), [[0.0, 0.0]])
