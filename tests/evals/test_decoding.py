"""Greedy and beam search on hand-made logits functions with known best sequences.

The "model" is a lookup table carried in the state: the next token's logits depend only
on the last token and on the example's state row, so the best sequences can be worked
out by hand or by enumerating every sequence. The decoders are jitted once per shape
(the logits function is shared), which keeps the file fast.
"""
import functools
import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mmjax.data.tokenizers import ByteTokenizer, encode_bytes
from mmjax.errors import ConfigError
from mmjax.evals.decoding import (beam_search, decode_texts, greedy_decode,
                                  length_normalizer, strip_special)

PAD, BOS, EOS, A, B, C = 0, 1, 2, 3, 4, 5


def table_logits(state, tokens):
  """logits[n, t] = state['table'][n, tokens[n, t]] (table [N, V, V]) plus a term from
  state['memory'] [N, 2, 3], a stand-in for encoder memory."""
  logits = jax.vmap(lambda table, row: table[row])(state["table"], tokens)
  weights = jnp.linspace(0.0, 1.0, logits.shape[-1])
  return logits + state["memory"].sum(axis=(1, 2))[:, None, None] * weights


greedy = jax.jit(functools.partial(greedy_decode, table_logits),
                 static_argnames=("batch_size", "max_len"))
beam = jax.jit(functools.partial(beam_search, table_logits),
               static_argnames=("batch_size", "max_len", "beam_size", "length_penalty"))


def next_logp(state):
  """[N, V, V] float64: log-prob of the next token given the last one, per example."""
  x = np.asarray(state["table"], np.float64) + (
      np.asarray(state["memory"], np.float64).sum(axis=(1, 2))[:, None, None]
      * np.linspace(0.0, 1.0, state["table"].shape[-1]))
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def sequence_logprob(logp, tokens):
  """Sum of log-probs of a [BOS, ..., EOS, PAD...] row, logp [V, V] of one example."""
  total = 0.0
  for prev, tok in zip(tokens[:-1], tokens[1:]):
    if prev == EOS:
      break
    total += logp[prev, tok]
  return total


def random_state(n=4, vocab=6, seed=0):
  rng = np.random.default_rng(seed)
  return {"table": rng.normal(size=(n, vocab, vocab)).astype(np.float32),
          "memory": 0.3 * rng.normal(size=(n, 2, 3)).astype(np.float32)}


def prob_state(*per_example, vocab=6):
  """A state from {last token: {next token: probability}} per example (others ~ 0)."""
  table = np.full((len(per_example), vocab, vocab), -1e9, np.float32)
  for n, probs in enumerate(per_example):
    for prev, nxt in probs.items():
      for tok, p in nxt.items():
        table[n, prev, tok] = math.log(p)
  return {"table": table, "memory": np.zeros((len(per_example), 2, 3), np.float32)}


def row(state, i):
  return jax.tree_util.tree_map(lambda x: x[i:i + 1], state)


def test_greedy_follows_the_argmax_and_pads_after_eos():
  state = random_state()
  got = np.asarray(greedy(state, batch_size=4, max_len=8))
  logp = next_logp(state)
  for i in range(4):   # reference: a plain loop
    tokens = [BOS]
    while len(tokens) < 8 and tokens[-1] != EOS:
      tokens.append(int(np.argmax(logp[i, tokens[-1]])))
    np.testing.assert_array_equal(got[i], tokens + [PAD] * (8 - len(tokens)))
  assert got.dtype == np.int32
  assert (got == EOS).any(axis=1).tolist() == [True, False, False, True]   # both endings


def test_beam_size_one_is_greedy_and_scores_its_log_prob():
  for seed in range(4):
    state = random_state(seed=seed)
    tokens, scores = beam(state, batch_size=4, max_len=8, beam_size=1)
    np.testing.assert_array_equal(tokens, greedy(state, batch_size=4, max_len=8))
    logp = next_logp(state)
    want = [sequence_logprob(logp[i], np.asarray(tokens[i])) for i in range(4)]
    np.testing.assert_allclose(scores, want, rtol=1e-5)


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_a_wide_beam_finds_the_exhaustive_best(alpha):
  state, vocab, max_len = random_state(vocab=4, seed=7), 4, 5
  tokens, scores = beam(state, batch_size=4, max_len=max_len, beam_size=32,
                        length_penalty=alpha)
  logp = next_logp(state)
  for i in range(4):
    best = (None, -np.inf)   # every EOS-ended sequence, and every full one
    for length in range(1, max_len):
      for body in itertools.product(range(vocab), repeat=length):
        if EOS in body[:-1] or (length < max_len - 1 and body[-1] != EOS):
          continue
        seq = [BOS, *body] + [PAD] * (max_len - 1 - length)
        score = sequence_logprob(logp[i], seq) / length_normalizer(length, alpha)
        best = max(best, (seq, score), key=lambda b: b[1])
    np.testing.assert_array_equal(tokens[i], best[0])
    np.testing.assert_allclose(scores[i], best[1], rtol=1e-5)


def test_beam_search_beats_greedy_where_the_likelier_first_token_leads_nowhere():
  # BOS -> A (0.55) -> EOS (0.4): 0.22; BOS -> B (0.45) -> EOS (0.9): 0.405.
  state = prob_state({BOS: {A: 0.55, B: 0.45}, A: {EOS: 0.4, A: 0.3, B: 0.3},
                      B: {EOS: 0.9, A: 0.05, B: 0.05}})
  np.testing.assert_array_equal(greedy(state, batch_size=1, max_len=4),
                                [[BOS, A, EOS, PAD]])
  tokens, scores = beam(state, batch_size=1, max_len=4, beam_size=2)
  np.testing.assert_array_equal(tokens, [[BOS, B, EOS, PAD]])
  np.testing.assert_allclose(scores, [math.log(0.45) + math.log(0.9)], rtol=1e-6)


def test_eos_pads_the_rest_and_a_row_can_run_to_max_len():
  forever = {t: {A: 0.9, EOS: 0.1} for t in (BOS, A)}   # A is always likelier than EOS
  state = prob_state(forever, {BOS: {A: 1.0}, A: {EOS: 1.0}})
  want = [[BOS, A, A, A, A], [BOS, A, EOS, PAD, PAD]]
  np.testing.assert_array_equal(greedy(state, batch_size=2, max_len=5), want)
  tokens, scores = beam(state, batch_size=2, max_len=5, beam_size=2)
  np.testing.assert_array_equal(tokens, want)
  np.testing.assert_allclose(scores, [4 * math.log(0.9), 0.0], atol=1e-6)


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_length_penalty_picks_between_short_and_long_as_the_formula_says(alpha):
  # Short: BOS EOS (p 0.55, 1 token). Long: BOS A B C EOS (p 0.45, 4 tokens).
  state = prob_state({BOS: {EOS: 0.55, A: 0.45}, A: {B: 1.0}, B: {C: 1.0}, C: {EOS: 1.0}})
  short = math.log(0.55) / ((5 + 1) / 6) ** alpha
  long = math.log(0.45) / ((5 + 4) / 6) ** alpha
  assert (short > long) == (alpha < 0.7)   # the crossover is at alpha ~ 0.715
  tokens, scores = beam(state, batch_size=1, max_len=6, beam_size=2, length_penalty=alpha)
  want = [BOS, EOS, PAD, PAD, PAD, PAD] if short > long else [BOS, A, B, C, EOS, PAD]
  np.testing.assert_array_equal(tokens[0], want)
  np.testing.assert_allclose(scores[0], max(short, long), rtol=1e-5)
  # Without a penalty the plain sum prefers the short one.
  np.testing.assert_array_equal(beam(state, batch_size=1, max_len=6, beam_size=2)[0][0],
                                [BOS, EOS, PAD, PAD, PAD, PAD])


def test_each_example_decodes_with_its_own_state():
  state = random_state(seed=4)
  tokens, scores = beam(state, batch_size=4, max_len=8, beam_size=3, length_penalty=0.6)
  decoded = greedy(state, batch_size=4, max_len=8)
  assert len({tuple(r) for r in np.asarray(tokens).tolist()}) == 4
  for i in range(4):
    t1, s1 = beam(row(state, i), batch_size=1, max_len=8, beam_size=3, length_penalty=0.6)
    np.testing.assert_array_equal(tokens[i], t1[0])
    np.testing.assert_allclose(scores[i], s1[0], rtol=1e-6)
    np.testing.assert_array_equal(decoded[i], greedy(row(state, i), batch_size=1,
                                                     max_len=8)[0])


def test_decoders_run_eagerly_too():
  state = random_state(seed=1)
  np.testing.assert_array_equal(greedy_decode(table_logits, state, batch_size=4, max_len=8),
                                greedy(state, batch_size=4, max_len=8))
  tokens, scores = beam_search(table_logits, state, batch_size=4, max_len=8, beam_size=1)
  jit_tokens, jit_scores = beam(state, batch_size=4, max_len=8, beam_size=1)
  np.testing.assert_array_equal(tokens, jit_tokens)
  np.testing.assert_allclose(scores, jit_scores, rtol=1e-6)


@pytest.mark.parametrize("beam_size", [0, -1, 1.5, True])
def test_bad_beam_size_is_a_config_error(beam_size):
  with pytest.raises(ConfigError, match="beam_size must be an int >= 1"):
    beam_search(table_logits, random_state(), batch_size=4, max_len=8, beam_size=beam_size)


def test_bad_max_len_and_state_are_config_errors():
  state = random_state()
  with pytest.raises(ConfigError, match="max_len must be an int >= 2"):
    greedy_decode(table_logits, state, batch_size=4, max_len=1)
  with pytest.raises(ConfigError, match="max_len must be an int >= 2"):
    beam_search(table_logits, state, batch_size=4, max_len=1, beam_size=2)
  with pytest.raises(ConfigError, match="leading dimension batch_size=5"):
    greedy_decode(table_logits, state, batch_size=5, max_len=8)
  with pytest.raises(ConfigError, match=r"must return logits \[N, T, V\]"):
    greedy_decode(lambda s, t: t.astype(jnp.float32), state, batch_size=4, max_len=8)


def test_strip_special_cuts_at_eos_and_drops_bos_and_pad():
  tokens = np.array([[BOS, 7, 8, EOS, PAD], [BOS, 7, PAD, 9, 10], [BOS, EOS, 7, 8, 9]])
  assert strip_special(tokens) == [[7, 8], [7, 9, 10], []]
  assert strip_special(tokens[1], pad_id=None) == [[7, PAD, 9, 10]]


def test_texts_round_trip_through_greedy_decoding_with_the_byte_tokenizer():
  texts = ["a handwritten seven", "héllo wörld", ""]
  ids = np.stack([encode_bytes(t, 24)[0] for t in texts])           # [3, 24]
  assert [bytes(i - 4 for i in r).decode() for r in strip_special(ids)] == texts

  def teacher(target, tokens):   # logits[:, t] points at the target's token t + 1
    del tokens
    return 10.0 * jax.nn.one_hot(jnp.concatenate([target[:, 1:], target[:, -1:]], 1), 260)
  decoded = greedy_decode(teacher, ids, batch_size=3, max_len=24)
  np.testing.assert_array_equal(decoded, ids)
  assert decode_texts(decoded, ByteTokenizer()) == texts
