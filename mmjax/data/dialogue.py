"""A visual dialogue as one token row, for teacher forcing all its turns in one pass.

Layout (byte-level ids of `tokenizers`): each turn is its question's bytes, then
ANSWER_START (= BOS, as a caption starts), the answer's bytes, then EOS (which ends the
turn, as it ends a caption):

    q1 ... BOS a1 ... EOS q2 ... BOS a2 ... EOS ... PAD ...

Per position: `mask` 1 on real tokens; `turn` the turn index (-1 on padding); `target`
1 on the answer bytes and their EOS, the tokens the decoder is trained to produce (the
logit at position i - 1 predicts token i). A causal decoder over this row already lets
an answer token see the image (cross-attention), its own question, the earlier turns and
the earlier tokens of its answer, and never a later turn; `objectives.dialogue.turn_attention_mask`
spells that out and, with history=False, also hides the earlier turns (the history-ablated
model). No TensorFlow here: the data op and the evaluators share it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mmjax.data import tokenizers
from mmjax.errors import ConfigError

ANSWER_START = tokenizers.BOS
TURN_END = tokenizers.EOS


def _bytes(text: str) -> list[int]:
  return [b + tokenizers.NUM_SPECIAL for b in text.encode("utf-8")]


def turn_length(question: str, answer: str) -> int:
  """Tokens of one turn: question, ANSWER_START, answer, TURN_END."""
  return len(question.encode("utf-8")) + len(answer.encode("utf-8")) + 2


def encode_dialogue(questions: Sequence[str], answers: Sequence[str], max_len: int
                    ) -> dict[str, np.ndarray]:
  """K questions and answers -> {'tokens', 'mask', 'turn', 'target'}, int32 [max_len]
  each (see the module docstring). ConfigError if the turns need more than max_len."""
  tokens, turn, target = [], [], []
  for k, (q, a) in enumerate(zip(questions, answers)):
    q_ids, a_ids = _bytes(q), _bytes(a)
    tokens += q_ids + [ANSWER_START] + a_ids + [TURN_END]
    turn += [k] * (len(q_ids) + len(a_ids) + 2)
    target += [0] * (len(q_ids) + 1) + [1] * (len(a_ids) + 1)
  if len(tokens) > max_len:
    raise ConfigError(f"A dialogue of {len(questions)} turns takes {len(tokens)} tokens, "
                      f"{len(tokens) - max_len} more than max_len={max_len}; raise max_len "
                      "or ask fewer turns.")
  out = {"tokens": np.full((max_len,), tokenizers.PAD, np.int32),
         "mask": np.zeros((max_len,), np.int32),
         "turn": np.full((max_len,), -1, np.int32),
         "target": np.zeros((max_len,), np.int32)}
  n = len(tokens)
  out["tokens"][:n], out["mask"][:n], out["turn"][:n], out["target"][:n] = (
      tokens, 1, turn, target)
  return out


def answer_start(turn: np.ndarray, target: np.ndarray, k: int) -> np.ndarray:
  """turn, target [N,T] -> [N] the position of turn k's first answer token (its
  ANSWER_START sits just before it); the prompt of turn k is the row before it."""
  hit = (turn == k) & (target == 1)
  if not hit.any(axis=-1).all():
    raise ConfigError(f"Some dialogues have no turn {k}.")
  return hit.argmax(axis=-1).astype(np.int32)


def with_answers(tokens: np.ndarray, start: np.ndarray, answers: Sequence[str],
                 max_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Rows [N,T] cut at `start` [N] (turn k's first answer position), each followed by
  its answer [N] strings and TURN_END, padded to `max_len`.

  Returns (tokens [N, max_len] int32, answer_mask [N, max_len] int32: 1 on the answer's
  bytes and TURN_END, the tokens whose log-likelihood scores the answer).
  """
  n = len(answers)
  out = np.full((n, max_len), tokenizers.PAD, np.int32)
  mask = np.zeros((n, max_len), np.int32)
  for i, (s, a) in enumerate(zip(start.tolist(), answers)):
    ids = _bytes(a) + [TURN_END]
    if s + len(ids) > max_len:
      raise ConfigError(f"Answer {a!r} after a {s}-token prompt needs {s + len(ids)} "
                        f"tokens, {s + len(ids) - max_len} more than max_len={max_len}.")
    out[i, :s] = tokens[i, :s]
    out[i, s:s + len(ids)] = ids
    mask[i, s:s + len(ids)] = 1
  return out, mask
