"""Autoregressive decoding for a text decoder: greedy and beam search, plus detokenizing.

The model side is a function `logits_fn(state, tokens) -> logits [N, T, V]` for tokens
[N, T] int32, where logits[:, t] is the distribution of the token at position t + 1 and
`state` is a pytree whose leaves have leading dimension N (e.g. encoder memory [N, S, D]
and its mask [N, S]). There is no KV cache: each step recomputes the whole [N, max_len]
buffer, positions after the current one hold PAD, and a causal decoder ignores them.
Shapes are static, so both decoders run under `jax.jit` (with `logits_fn` and the sizes
bound, e.g. by functools.partial) as well as eagerly.

Output layout (both decoders): [BOS, tokens..., EOS, PAD, ...]; a sequence that reaches
max_len without EOS fills the row and has no EOS. Like the tokenizers, no TensorFlow.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.data.tokenizers import BOS, EOS, PAD, Tokenizer
from mmjax.errors import ConfigError

LogitsFn = Callable[[Any, jax.Array], jax.Array]

_NEG_INF = -np.inf


def _check_int(name: str, value, minimum: int, why: str) -> None:
  if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
    raise ConfigError(f"{name} must be an int >= {minimum} ({why}), got {value!r}.")


def _check_args(state, batch_size: int, max_len: int) -> None:
  _check_int("batch_size", batch_size, 1, "the number of sequences to decode")
  _check_int("max_len", max_len, 2, "room for BOS and at least one generated token")
  for leaf in jax.tree_util.tree_leaves(state):
    if np.shape(leaf)[:1] != (batch_size,):
      raise ConfigError(f"Every leaf of the decoding state needs leading dimension "
                        f"batch_size={batch_size}, got a leaf of shape {np.shape(leaf)}; "
                        f"pass one state row per sequence.")


def _initial_tokens(n: int, max_len: int, bos_id: int, pad_id: int) -> jax.Array:
  """[n, max_len] int32: BOS then PAD."""
  return jnp.full((n, max_len), pad_id, jnp.int32).at[:, 0].set(bos_id)


def _next_logits(logits_fn: LogitsFn, state, tokens: jax.Array, t) -> jax.Array:
  """Logits [N, V] float32 of the token at position t, given tokens [N, max_len]."""
  logits = logits_fn(state, tokens)
  if logits.ndim != 3 or logits.shape[:2] != tokens.shape:
    raise ConfigError(f"logits_fn(state, tokens [N, T]) must return logits [N, T, V]; for "
                      f"tokens of shape {tokens.shape} it returned {logits.shape}.")
  return jax.lax.dynamic_index_in_dim(logits, t - 1, axis=1, keepdims=False).astype(
      jnp.float32)


def greedy_decode(logits_fn: LogitsFn, state, *, batch_size: int, max_len: int,
                  bos_id: int = BOS, eos_id: int = EOS, pad_id: int = PAD,
                  prompt=None, prompt_len=None, max_new_tokens: int | None = None
                  ) -> jax.Array:
  """Argmax decoding, from BOS or from a per-row prompt.

  Args:
    logits_fn: (state, tokens [N, max_len] int32) -> logits [N, max_len, V].
    state: pytree with leaves [batch_size, ...].
    batch_size: N; max_len: length of the output rows (>= 2), BOS included.
    prompt, prompt_len: optional tokens [N, max_len] int32 and lengths [N] int32 (>= 1):
      row i continues after its first prompt_len[i] tokens (a dialogue's history and
      question); None starts every row from BOS alone.
    max_new_tokens: stop after this many generated tokens per row (None: at max_len).
  Returns:
    tokens [batch_size, max_len] int32: position 0 is BOS (or the prompt), each later
    position the argmax of the logits one before it; after a row's EOS the rest is PAD.
    Stops early once all rows ended.
  """
  _check_args(state, batch_size, max_len)
  if prompt is None:
    tokens = _initial_tokens(batch_size, max_len, bos_id, pad_id)
    start = jnp.ones((batch_size,), jnp.int32)
  else:
    if np.shape(prompt) != (batch_size, max_len) or np.shape(prompt_len) != (batch_size,):
      raise ConfigError(f"prompt must be [batch_size, max_len] = {(batch_size, max_len)} "
                        f"and prompt_len [batch_size], got {np.shape(prompt)} and "
                        f"{np.shape(prompt_len)}.")
    start = jnp.asarray(prompt_len, jnp.int32)
    keep = jnp.arange(max_len)[None] < start[:, None]
    tokens = jnp.where(keep, jnp.asarray(prompt, jnp.int32), pad_id)
  rows = jnp.arange(batch_size)

  limit = max_len if max_new_tokens is None else max_new_tokens

  def cond(carry):
    s, _, done = carry
    return (s < limit) & jnp.any(~done & (start + s < max_len))

  def body(carry):
    s, tokens, done = carry
    pos = start + s
    live = ~done & (pos < max_len)
    logits = logits_fn(state, tokens)
    if logits.ndim != 3 or logits.shape[:2] != tokens.shape:
      raise ConfigError(f"logits_fn(state, tokens [N, T]) must return logits [N, T, V]; "
                        f"for tokens of shape {tokens.shape} it returned {logits.shape}.")
    at = jnp.clip(pos - 1, 0, max_len - 1)
    nxt = jnp.argmax(logits[rows, at].astype(jnp.float32), axis=-1).astype(jnp.int32)
    nxt = jnp.where(live, nxt, pad_id)
    tokens = tokens.at[rows, jnp.minimum(pos, max_len - 1)].set(
        jnp.where(live, nxt, tokens[rows, jnp.minimum(pos, max_len - 1)]))
    return s + 1, tokens, done | ~live | (nxt == eos_id)

  init = (jnp.asarray(0, jnp.int32), tokens, jnp.zeros((batch_size,), bool))
  return jax.lax.while_loop(cond, body, init)[1]


def length_normalizer(length, length_penalty: float):
  """GNMT's ((5 + length) / 6) ** length_penalty; a score is sum log-prob / this."""
  return ((5.0 + length) / 6.0) ** length_penalty


def beam_search(logits_fn: LogitsFn, state, *, batch_size: int, max_len: int,
                beam_size: int, bos_id: int = BOS, eos_id: int = EOS, pad_id: int = PAD,
                length_penalty: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """Beam search over log-softmax scores with a GNMT length penalty.

  Each example keeps `beam_size` live beams (its rows of the tiled state are adjacent:
  example i is rows i*K .. i*K+K-1) and a separate top-K set of finished hypotheses.
  Each step ranks the 2K best expansions; an expansion ending in EOS finishes only if it
  ranks among the top K (as in fairseq and Hugging Face; this makes beam_size=1 exactly
  greedy), and the K best non-EOS expansions stay live. At the last position the top K
  expansions finish whatever their token. A finished hypothesis scores
  sum log-prob / length_normalizer(len, length_penalty), len = generated tokens with EOS.
  The search stops early once no live beam can beat an example's best finished score.

  Args:
    logits_fn: (state, tokens [N, max_len] int32) -> logits [N, max_len, V].
    state: pytree with leaves [batch_size, ...].
    batch_size: examples; max_len: output length (>= 2), BOS included; beam_size: K.
    length_penalty: GNMT alpha; 0 scores by the plain sum of log-probs, > 0 favours longer.
  Returns:
    (tokens [batch_size, max_len] int32, laid out as `greedy_decode`'s;
     scores [batch_size] float32, the best finished hypothesis's score).
  """
  _check_args(state, batch_size, max_len)
  _check_int("beam_size", beam_size, 1, "the number of live hypotheses per example; "
             "1 is greedy")
  b, k, alpha = batch_size, beam_size, float(length_penalty)
  tiled = jax.tree_util.tree_map(lambda x: jnp.repeat(jnp.asarray(x), k, axis=0), state)
  norm = lambda length: length_normalizer(length, alpha)

  def cond(carry):
    t, _, live_logp, _, fin_scores = carry
    # Log-probs only fall as a beam grows, so a live beam's best future score is its
    # log-prob over the largest normalizer a later finish (length t .. max_len-1) gets.
    best_future = live_logp.max(axis=1) / jnp.maximum(norm(t), norm(max_len - 1))
    return (t < max_len) & ~jnp.all(fin_scores.max(axis=1) > best_future)

  def body(carry):
    t, live_seqs, live_logp, fin_seqs, fin_scores = carry
    logits = _next_logits(logits_fn, tiled, live_seqs.reshape(b * k, max_len), t)
    v = logits.shape[-1]
    cand = live_logp[:, :, None] + jax.nn.log_softmax(logits).reshape(b, k, v)
    # 2K expansions always hold K non-EOS ones (each beam has one EOS expansion).
    top_logp, top_idx = jax.lax.top_k(cand.reshape(b, k * v), min(2 * k, k * v))
    beam, token = top_idx // v, (top_idx % v).astype(jnp.int32)
    top_seqs = jnp.take_along_axis(live_seqs, beam[:, :, None], axis=1)
    top_seqs = top_seqs.at[:, :, t].set(token)                          # [B, 2K, L]
    is_eos = token == eos_id
    rank = jnp.arange(top_logp.shape[1])[None, :]
    finishes = (rank < k) & (is_eos | (t == max_len - 1)) & jnp.isfinite(top_logp)
    new_scores = jnp.where(finishes, top_logp / norm(t), _NEG_INF)
    # Finished set first, so that on ties the earlier (shorter) hypothesis stays.
    fin_scores, idx = jax.lax.top_k(jnp.concatenate([fin_scores, new_scores], 1), k)
    fin_seqs = jnp.take_along_axis(jnp.concatenate([fin_seqs, top_seqs], 1),
                                   idx[:, :, None], axis=1)
    live_logp, idx = jax.lax.top_k(jnp.where(is_eos, _NEG_INF, top_logp), k)
    live_seqs = jnp.take_along_axis(top_seqs, idx[:, :, None], axis=1)
    return t + 1, live_seqs, live_logp, fin_seqs, fin_scores

  seqs = _initial_tokens(b * k, max_len, bos_id, pad_id).reshape(b, k, max_len)
  # Only beam 0 starts live, so that the K beams do not expand the same prefix.
  live_logp = jnp.full((b, k), _NEG_INF, jnp.float32).at[:, 0].set(0.0)
  init = (jnp.asarray(1, jnp.int32), seqs, live_logp, seqs,
          jnp.full((b, k), _NEG_INF, jnp.float32))
  _, _, _, fin_seqs, fin_scores = jax.lax.while_loop(cond, body, init)
  return fin_seqs[:, 0], fin_scores[:, 0]   # top_k sorted: index 0 is the best


def strip_special(tokens, *, bos_id: int = BOS, eos_id: int = EOS,
                  pad_id: int | None = PAD) -> list[list[int]]:
  """tokens [N, T] (or one row [T]) -> N lists of ids: each row cut before its first EOS,
  BOS and PAD dropped (pad_id=None keeps PAD ids, e.g. SentencePiece's 0 = <unk>)."""
  out = []
  for row in np.atleast_2d(np.asarray(tokens)).tolist():
    if eos_id in row:
      row = row[:row.index(eos_id)]
    out.append([i for i in row if i != bos_id and (pad_id is None or i != pad_id)])
  return out


def decode_texts(tokens, tokenizer: Tokenizer) -> list[str]:
  """tokens [N, T] from a decoder -> N strings via `tokenizer.decode`.

  Rows are cut at the tokenizer's EOS and lose its BOS first; PAD ids before EOS are left
  to `decode` (the byte tokenizer skips them; for SentencePiece id 0 is also <unk>, which a
  model may generate, and its `decode` drops only trailing zeros).
  """
  rows = strip_special(tokens, bos_id=tokenizer.bos_id, eos_id=tokenizer.eos_id,
                       pad_id=None)
  return [tokenizer.decode(row) for row in rows]
