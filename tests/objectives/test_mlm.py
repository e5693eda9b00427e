"""BERT masking statistics (mlm_mask) and the mlm objective's use of them."""
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.objectives import mlm_mask

PAD, BOS, EOS, MASK, NUM_SPECIAL, VOCAB = 0, 1, 2, 3, 4, 260


def _batch(key, b=64, t=512):
  """Byte-level sequences: BOS, bytes (with some literal MASK/EOS ids), EOS, PAD."""
  k_tok, k_len, k_special = jax.random.split(key, 3)
  tokens = np.array(jax.random.randint(k_tok, (b, t), NUM_SPECIAL, VOCAB))
  lengths = np.array(jax.random.randint(k_len, (b,), t // 4, t + 1))
  # Sprinkle special ids inside the text: they must never be selected either.
  special = np.array(jax.random.bernoulli(k_special, 0.05, (b, t)))
  tokens[special] = np.array([BOS, EOS, MASK])[np.arange(special.sum()) % 3]
  tokens[:, 0] = BOS
  text_mask = (np.arange(t)[None] < lengths[:, None]).astype(np.int32)
  tokens[np.arange(b), lengths - 1] = EOS
  tokens = np.where(text_mask > 0, tokens, PAD)
  return jnp.asarray(tokens, jnp.int32), jnp.asarray(text_mask)


def _within(count, n, p, sigmas=5.0):
  """|count - n p| <= sigmas * sqrt(n p (1-p))."""
  return abs(count - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


def test_mlm_mask_statistics_on_a_large_batch():
  tokens, text_mask = _batch(jax.random.key(0))
  masked, targets, weights = mlm_mask(
      tokens, text_mask, jax.random.key(1), mask_prob=0.15, mask_token_id=MASK,
      num_special_tokens=NUM_SPECIAL, vocab_size=VOCAB)
  tokens, text_mask = np.asarray(tokens), np.asarray(text_mask)
  masked, targets, weights = map(np.asarray, (masked, targets, weights))
  assert masked.shape == targets.shape == weights.shape == tokens.shape
  assert masked.dtype == np.int32 and weights.dtype == np.float32

  selected = weights > 0
  eligible = (text_mask > 0) & (tokens >= NUM_SPECIAL)
  # Specials (PAD/BOS/EOS/MASK ids) and padding are never selected.
  assert not selected[~eligible].any()
  assert not selected[text_mask == 0].any()
  n_eligible = int(eligible.sum())
  assert n_eligible > 10_000
  assert _within(selected.sum(), n_eligible, 0.15)

  # Targets are the original tokens; unselected positions are untouched.
  np.testing.assert_array_equal(targets, tokens)
  np.testing.assert_array_equal(masked[~selected], tokens[~selected])

  # Of the selected: 80% MASK, 10% a random token, 10% unchanged. A random token equals
  # the original with probability 1/256, so it then shows up as "unchanged".
  n_sel = int(selected.sum())
  to_mask = (masked == MASK) & selected
  to_random = selected & (masked != MASK) & (masked != tokens)
  unchanged = selected & (masked == tokens)
  assert to_mask.sum() + to_random.sum() + unchanged.sum() == n_sel
  p_collide = 0.1 / (VOCAB - NUM_SPECIAL)
  assert _within(to_mask.sum(), n_sel, 0.8)
  assert _within(to_random.sum(), n_sel, 0.1 - p_collide)
  assert _within(unchanged.sum(), n_sel, 0.1 + p_collide)
  # Random replacements are never special tokens and cover the non-special range.
  replacements = masked[to_random]
  assert replacements.min() >= NUM_SPECIAL and replacements.max() < VOCAB
  # ~290 draws from 256 ids: both ends of the range are hit (failure odds ~e^-18).
  assert replacements.min() < NUM_SPECIAL + 16 and replacements.max() >= VOCAB - 16


def test_mlm_mask_is_deterministic_per_key():
  tokens, text_mask = _batch(jax.random.key(2), b=4, t=64)
  kw = dict(mask_prob=0.15, mask_token_id=MASK, num_special_tokens=NUM_SPECIAL,
            vocab_size=VOCAB)
  a = mlm_mask(tokens, text_mask, jax.random.key(3), **kw)
  b = mlm_mask(tokens, text_mask, jax.random.key(3), **kw)
  c = mlm_mask(tokens, text_mask, jax.random.key(4), **kw)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)
  assert not np.array_equal(a[2], c[2])


def test_mlm_mask_prob_one_selects_every_real_non_special_token():
  tokens = jnp.array([[BOS, 10, 11, MASK, 12, EOS, PAD, PAD]])
  text_mask = jnp.array([[1, 1, 1, 1, 1, 1, 0, 0]])
  _, _, weights = mlm_mask(tokens, text_mask, jax.random.key(0), mask_prob=1.0,
                           mask_token_id=MASK, num_special_tokens=NUM_SPECIAL,
                           vocab_size=VOCAB)
  np.testing.assert_array_equal(weights, [[0, 1, 1, 0, 1, 0, 0, 0]])


def test_mlm_mask_jits():
  tokens, text_mask = _batch(jax.random.key(5), b=2, t=16)
  fn = jax.jit(lambda t, m, k: mlm_mask(t, m, k, mask_prob=0.5, mask_token_id=MASK,
                                        num_special_tokens=NUM_SPECIAL, vocab_size=VOCAB))
  eager = mlm_mask(tokens, text_mask, jax.random.key(6), mask_prob=0.5, mask_token_id=MASK,
                   num_special_tokens=NUM_SPECIAL, vocab_size=VOCAB)
  for x, y in zip(fn(tokens, text_mask, jax.random.key(6)), eager):
    np.testing.assert_array_equal(x, y)
