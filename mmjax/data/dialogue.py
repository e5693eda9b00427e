"""A visual dialogue as one token row, for teacher forcing all its turns in one pass.

Tokens are words, as in VisDial (Das et al. 2017): `vocabulary()` is the closed word
list of `mmjax_visdial_digits` (its questions, answers and candidate paraphrases); word
i has id NUM_SPECIAL + i, below the byte vocabulary's size, so any caption decoder of
mmjax holds it. "top-left" is one word, so a question's content is one token the
decoder can bind to a cell of the image, not 8 bytes it must first assemble (with bytes,
rows were 3.5x longer and the model answered position questions from a
question-independent summary of the image: docs/multimodal.md).

Layout: each turn is its question's words, then ANSWER_START (= BOS, as a caption
starts), the answer's words, then EOS (which ends the turn, as it ends a caption):

    q1 ... BOS a1 ... EOS q2 ... BOS a2 ... EOS ... PAD ...

Per position: `mask` 1 on real tokens; `turn` the turn index (-1 on padding); `target`
1 on the answer words and their EOS, the tokens the decoder is trained to produce (the
logit at position i - 1 predicts token i). A causal decoder over this row already lets
an answer token see the image (cross-attention), its own question, the earlier turns and
the earlier tokens of its answer, and never a later turn; `objectives.dialogue.turn_attention_mask`
spells that out and, with history=False, also hides the earlier turns (the history-ablated
model). No TensorFlow here: the data op and the evaluators share it.
"""
from __future__ import annotations

import functools
import re
from typing import Sequence

import numpy as np

from mmjax.data import tokenizers
from mmjax.errors import ConfigError

ANSWER_START = tokenizers.BOS
TURN_END = tokenizers.EOS


_WORD = re.compile(r"[\w'-]+|[^\w\s]")


def split_words(text: str) -> list[str]:
  """'what is the top-left digit?' -> ['what', 'is', 'the', 'top-left', 'digit', '?']."""
  return _WORD.findall(text.lower())


@functools.cache
def vocabulary() -> tuple[str, ...]:
  """The sorted words of every question and answer `mmjax_visdial_digits` can hold,
  and of its candidate paraphrases."""
  from mmjax.data.embedded import visdial_digits as vd  # pylint: disable=g-import-not-at-top
  texts = [t for pairs in vd.possible_turns().values() for pair in pairs for t in pair]
  return tuple(sorted({w for t in texts + list(vd.answer_pool()) for w in split_words(t)}))


@functools.cache
def _word_ids() -> dict[str, int]:
  return {w: tokenizers.NUM_SPECIAL + i for i, w in enumerate(vocabulary())}


def encode_text(text: str) -> list[int]:
  """A question or answer -> its word ids. ConfigError naming a word outside
  `vocabulary()` (the dialogues are not those of mmjax_visdial_digits)."""
  ids, table = [], _word_ids()
  for w in split_words(text):
    if w not in table:
      raise ConfigError(f"The word {w!r} of {text!r} is not in the dialogue vocabulary "
                        f"({len(table)} words of mmjax_visdial_digits); dialogues of "
                        "other data need their vocabulary in mmjax/data/dialogue.py.")
    ids.append(table[w])
  return ids


def decode(ids: Sequence[int] | np.ndarray) -> str:
  """Word ids (e.g. a generated answer) -> text, up to the first EOS; special and
  out-of-vocabulary ids are skipped ('?' joins the word before it)."""
  words, vocab = [], vocabulary()
  for i in np.asarray(ids).reshape(-1).tolist():
    if i == TURN_END:
      break
    if 0 <= i - tokenizers.NUM_SPECIAL < len(vocab):
      words.append(vocab[i - tokenizers.NUM_SPECIAL])
  return re.sub(r" (?=[^\w\s])", "", " ".join(words))


def turn_length(question: str, answer: str) -> int:
  """Tokens of one turn: question, ANSWER_START, answer, TURN_END."""
  return len(split_words(question)) + len(split_words(answer)) + 2


def encode_dialogue(questions: Sequence[str], answers: Sequence[str], max_len: int
                    ) -> dict[str, np.ndarray]:
  """K questions and answers -> {'tokens', 'mask', 'turn', 'target'}, int32 [max_len]
  each (see the module docstring). ConfigError if the turns need more than max_len."""
  tokens, turn, target = [], [], []
  for k, (q, a) in enumerate(zip(questions, answers)):
    q_ids, a_ids = encode_text(q), encode_text(a)
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
  words and TURN_END, the tokens whose log-likelihood scores the answer).
  """
  n = len(answers)
  out = np.full((n, max_len), tokenizers.PAD, np.int32)
  mask = np.zeros((n, max_len), np.int32)
  for i, (s, a) in enumerate(zip(start.tolist(), answers)):
    ids = encode_text(a) + [TURN_END]
    if s + len(ids) > max_len:
      raise ConfigError(f"Answer {a!r} after a {s}-token prompt needs {s + len(ids)} "
                        f"tokens, {s + len(ids) - max_len} more than max_len={max_len}.")
    out[i, :s] = tokens[i, :s]
    out[i, s:s + len(ids)] = ids
    mask[i, s:s + len(ids)] = 1
  return out, mask
