"""Tokenizers: a byte-level tokenizer (the default) and a SentencePiece wrapper.

This module never imports TensorFlow, so models and evals (BLEU, perplexity) can decode
token ids on accelerator images without it. The TF-side tokenize op in `ops_text.py`
uses the same constants and must produce the same ids as `encode_bytes`.

Byte-level ids: PAD=0, BOS=1, EOS=2, MASK=3, byte b -> b + NUM_SPECIAL (vocab 260).
An encoded sequence is `[BOS, bytes..., EOS, PAD, ...]`; text longer than `max_len - 2`
bytes is truncated and still ends with EOS (a model must always see where text ends).
"""
from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np

from mmjax.errors import ConfigError

PAD = 0
BOS = 1
EOS = 2
MASK = 3
NUM_SPECIAL = 4
VOCAB_SIZE = 256 + NUM_SPECIAL


class Tokenizer(Protocol):
  """What the pipeline and the evals need from a tokenizer."""
  vocab_size: int
  pad_id: int
  bos_id: int
  eos_id: int

  def encode(self, text: str, max_len: int) -> tuple[np.ndarray, np.ndarray]: ...
  def decode(self, ids: Sequence[int]) -> str: ...


def _check_max_len(max_len: int) -> None:
  if not isinstance(max_len, (int, np.integer)) or max_len < 2:
    raise ConfigError(f"max_len must be an int >= 2 (room for BOS and EOS), got {max_len!r}.")


def _frame(body: Sequence[int], max_len: int, bos: int, eos: int):
  """[BOS, body[:max_len-2], EOS] padded with PAD -> (ids [max_len] int32, mask int32)."""
  _check_max_len(max_len)
  body = list(body)[: max_len - 2]
  seq = [bos, *body, eos]
  ids = np.full((max_len,), PAD, np.int32)
  ids[: len(seq)] = seq
  mask = np.zeros((max_len,), np.int32)
  mask[: len(seq)] = 1
  return ids, mask


def encode_bytes(text: str | bytes, max_len: int) -> tuple[np.ndarray, np.ndarray]:
  """UTF-8 bytes of `text` -> (ids [max_len] int32, mask [max_len] int32; 1 = real token)."""
  data = text.encode("utf-8") if isinstance(text, str) else bytes(text)
  return _frame([b + NUM_SPECIAL for b in data], max_len, BOS, EOS)


def decode_bytes(ids: Sequence[int] | np.ndarray) -> str:
  """Token ids (any int sequence, e.g. one row of a batch) -> text.

  Stops at the first EOS; skips PAD, BOS and MASK; invalid UTF-8 is replaced, not raised
  (sampled model output is often not valid UTF-8).
  """
  out = bytearray()
  for i in np.asarray(ids).reshape(-1).tolist():
    if i == EOS:
      break
    if NUM_SPECIAL <= i < VOCAB_SIZE:
      out.append(i - NUM_SPECIAL)
  return out.decode("utf-8", errors="replace")


class ByteTokenizer:
  """Object form of `encode_bytes` / `decode_bytes` (vocab 260)."""
  vocab_size = VOCAB_SIZE
  pad_id, bos_id, eos_id, mask_id = PAD, BOS, EOS, MASK

  def encode(self, text: str | bytes, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    return encode_bytes(text, max_len)

  def decode(self, ids: Sequence[int]) -> str:
    return decode_bytes(ids)


class SentencePieceTokenizer:
  """A SentencePiece model, framed like the byte tokenizer.

  Ids are the model's own. Padding is always id 0 (the batch contract: 0 = PAD) and
  `text_mask` is authoritative for which positions are real, because SentencePiece models
  often use id 0 for <unk>. BOS/EOS are the model's ids; a model trained without them
  (id -1) gets no BOS/EOS, only its pieces.
  """

  def __init__(self, model_path: str):
    try:
      import sentencepiece as spm  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ConfigError("tokenizer='sentencepiece' needs `pip install sentencepiece`.") from e
    self.model_path = str(model_path)
    try:
      self._sp = spm.SentencePieceProcessor(model_file=self.model_path)
    except (OSError, RuntimeError) as e:
      raise ConfigError(f"Cannot load SentencePiece model {self.model_path!r}: {e}") from e
    self.vocab_size = int(self._sp.get_piece_size())
    self.pad_id = PAD
    self.bos_id = int(self._sp.bos_id())
    self.eos_id = int(self._sp.eos_id())

  def encode(self, text: str | bytes, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """text -> (ids [max_len] int32, mask [max_len] int32)."""
    if isinstance(text, bytes):
      text = text.decode("utf-8", errors="replace")
    _check_max_len(max_len)
    pieces = self._sp.encode(text, out_type=int)
    specials = [i for i in (self.bos_id, self.eos_id) if i >= 0]
    body = pieces[: max_len - len(specials)]
    seq = ([self.bos_id] if self.bos_id >= 0 else []) + body + (
        [self.eos_id] if self.eos_id >= 0 else [])
    ids = np.full((max_len,), PAD, np.int32)
    ids[: len(seq)] = seq
    mask = np.zeros((max_len,), np.int32)
    mask[: len(seq)] = 1
    return ids, mask

  def decode(self, ids: Sequence[int], mask: Sequence[int] | None = None) -> str:
    """ids [T] (+ optional mask [T]) -> text; stops at EOS, drops BOS and padding."""
    ids = np.asarray(ids).reshape(-1).tolist()
    if mask is not None:
      ids = [i for i, m in zip(ids, np.asarray(mask).reshape(-1).tolist()) if m]
    else:  # without a mask, trailing zeros are padding (even if 0 is also <unk>)
      while ids and ids[-1] == PAD:
        ids.pop()
    if self.eos_id >= 0 and self.eos_id in ids:
      ids = ids[: ids.index(self.eos_id)]
    ids = [i for i in ids if i != self.bos_id and 0 <= i < self.vocab_size]
    return self._sp.decode(ids)


def make_tokenizer(tokenizer: str = "bytes", sp_model: str | None = None) -> Tokenizer:
  """'bytes' -> ByteTokenizer; 'sentencepiece' (needs `sp_model`, a .model path)."""
  if tokenizer == "bytes":
    return ByteTokenizer()
  if tokenizer in ("sentencepiece", "sp"):
    if not sp_model:
      raise ConfigError("tokenizer='sentencepiece' needs sp_model='/path/to/model.model'.")
    return SentencePieceTokenizer(sp_model)
  raise ConfigError(f"Unknown tokenizer {tokenizer!r}. Choose one of: bytes, sentencepiece.")
