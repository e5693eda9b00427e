"""Tokenizers: byte-level (the default), SentencePiece, and Hugging Face (`tokenizers`).

This module never imports TensorFlow, so models and evals (BLEU, perplexity) can decode
token ids on accelerator images without it. The TF-side tokenize op in `ops_text.py`
uses the same constants and must produce the same ids as `encode_bytes`.

Byte-level ids: PAD=0, BOS=1, EOS=2, MASK=3, byte b -> b + NUM_SPECIAL (vocab 260).
An encoded sequence is `[BOS, bytes..., EOS, PAD, ...]`; text longer than `max_len - 2`
bytes is truncated and still ends with EOS (a model must always see where text ends).

Every tokenizer also has `encode_words(words, word_labels, max_len) -> (ids, mask,
token_labels)` for token classification (NER): the label of each word goes on its first
token, and IGNORE_LABEL (-1) on its other tokens, on BOS/EOS and on padding.

`make_tokenizer(name, tokenizer_path)`: 'bytes', 'sentencepiece' (a .model file) or
'wordpiece' (a Hugging Face folder with tokenizer.json or vocab.txt, e.g. a BERT
checkpoint); the last needs the `tokenizers` package, imported only then.
"""
from __future__ import annotations

import json
import os
from typing import Any, Protocol, Sequence

import numpy as np

from mmjax.errors import ConfigError

PAD = 0
BOS = 1
EOS = 2
MASK = 3
NUM_SPECIAL = 4
VOCAB_SIZE = 256 + NUM_SPECIAL
# Token label of positions a token-classification loss must skip (the usual -100 of
# PyTorch code is -1 here: any negative label is "ignore" in mmjax's losses and metrics).
IGNORE_LABEL = -1


class Tokenizer(Protocol):
  """What the pipeline and the evals need from a tokenizer."""
  vocab_size: int
  pad_id: int
  bos_id: int
  eos_id: int

  def encode(self, text: str, max_len: int) -> tuple[np.ndarray, np.ndarray]: ...
  def encode_words(self, words: Sequence[str], word_labels: Sequence[int], max_len: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...
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


def _frame_labeled(body: Sequence[int], labels: Sequence[int], max_len: int,
                   prefix: Sequence[int], suffix: Sequence[int], pad: int):
  """prefix + body + suffix, body truncated to fit, padded with `pad` to `max_len`.

  Returns (ids [max_len] int32, mask [max_len] int32, token_labels [max_len] int32) where
  token_labels = `labels` (one per body token) on the kept body and IGNORE_LABEL on the
  prefix, suffix and padding.
  """
  _check_max_len(max_len)
  room = max_len - len(prefix) - len(suffix)
  if room < 1:
    raise ConfigError(f"max_len={max_len} leaves no room for text after the tokenizer's "
                      f"{len(prefix) + len(suffix)} special tokens; raise max_len.")
  body, labels = list(body)[:room], list(labels)[:room]
  seq = [*prefix, *body, *suffix]
  ids = np.full((max_len,), pad, np.int32)
  ids[: len(seq)] = seq
  mask = np.zeros((max_len,), np.int32)
  mask[: len(seq)] = 1
  token_labels = np.full((max_len,), IGNORE_LABEL, np.int32)
  token_labels[len(prefix): len(prefix) + len(body)] = labels
  return ids, mask, token_labels


def _first_token_labels(num_tokens: Sequence[int], word_labels: Sequence[int]) -> list[int]:
  """Per-token labels: word i's label on its first of num_tokens[i] tokens, -1 on the rest."""
  if len(num_tokens) != len(word_labels):
    raise ValueError(f"encode_words needs one label per word, got {len(num_tokens)} words "
                     f"and {len(word_labels)} labels.")
  out = []
  for n, label in zip(num_tokens, word_labels):
    out += ([int(label)] + [IGNORE_LABEL] * (n - 1)) if n else []
  return out


def _as_str(text: str | bytes) -> str:
  return text.decode("utf-8", errors="replace") if isinstance(text, bytes) else str(text)


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

  def encode_words(self, words: Sequence[str | bytes], word_labels: Sequence[int],
                   max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Words [n] + labels [n] -> (ids, mask, token_labels), each [max_len] int32.

    The ids are exactly `encode_bytes(' '.join(words), max_len)`: words are separated by
    one space byte (label -1), so a model sees where words start; each word's label sits
    on its first byte. An empty word gets no token and so no label.
    """
    if len(words) != len(word_labels):
      raise ValueError(f"encode_words needs one label per word, got {len(words)} words "
                       f"and {len(word_labels)} labels.")
    body, labels = [], []
    for i, (word, label) in enumerate(zip(words, word_labels)):
      data = word.encode("utf-8") if isinstance(word, str) else bytes(word)
      if i:
        body.append(ord(" ") + NUM_SPECIAL)
        labels.append(IGNORE_LABEL)
      body += [b + NUM_SPECIAL for b in data]
      labels += _first_token_labels([len(data)], [label])
    return _frame_labeled(body, labels, max_len, [BOS], [EOS], PAD)

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

  def encode_words(self, words: Sequence[str | bytes], word_labels: Sequence[int],
                   max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Words [n] + labels [n] -> (ids, mask, token_labels), each [max_len] int32.

    Each word is encoded on its own (so it starts with the model's word-boundary piece,
    as it would in space-separated text); its label sits on its first piece.
    """
    pieces = [self._sp.encode(_as_str(w), out_type=int) for w in words]
    labels = _first_token_labels([len(p) for p in pieces], word_labels)
    prefix = [self.bos_id] if self.bos_id >= 0 else []
    suffix = [self.eos_id] if self.eos_id >= 0 else []
    return _frame_labeled([i for p in pieces for i in p], labels, max_len, prefix, suffix, PAD)

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


def _read_json(path: str) -> dict[str, Any]:
  """The JSON object in `path`, or {} if the file is absent or not a JSON object."""
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except (OSError, ValueError):
    return {}
  return data if isinstance(data, dict) else {}


def _token_name(value: Any, default: str) -> str:
  """A special token from tokenizer_config.json: a string or {"content": ...}."""
  if isinstance(value, dict):
    value = value.get("content")
  return value if isinstance(value, str) and value else default


class HFTokenizer:
  """A Hugging Face `tokenizers` tokenizer (tokenizer.json or a BERT vocab.txt).

  `path` is a folder holding `tokenizer.json` (preferred) or `vocab.txt`, or the path of
  either file. From a vocab.txt, a BERT WordPiece tokenizer is built (BERT normalizer and
  pre-tokenizer, '##' continuation), lowercasing as `do_lower_case` in the folder's
  tokenizer_config.json says (default True).

  Framing is the model's own single-sequence template, e.g. BERT's `[CLS] tokens [SEP]`:
  bos_id = [CLS], eos_id = [SEP]. Too-long text is truncated so that [SEP] stays last, and
  sequences are padded with the model's pad id ([PAD] = 0 for BERT; `text_mask` says
  which positions are real). The padding and truncation settings saved in a
  tokenizer.json are switched off: `max_len` decides.
  """

  def __init__(self, path: str | os.PathLike):
    try:
      import tokenizers as hf  # pylint: disable=g-import-not-at-top
    except ImportError as e:
      raise ConfigError("tokenizer='wordpiece' needs the Hugging Face tokenizers library; "
                        "`pip install 'tokenizers>=0.15'` (or mmjax[data]).") from e
    path = os.fspath(path)
    self.path = path
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    if os.path.isdir(path):
      json_file, vocab_file = (os.path.join(path, n) for n in ("tokenizer.json", "vocab.txt"))
      file = json_file if os.path.isfile(json_file) else vocab_file
      if not os.path.isfile(file):
        raise ConfigError(f"Tokenizer folder {path!r} has neither tokenizer.json nor "
                          "vocab.txt; point tokenizer_path at a Hugging Face checkpoint "
                          "folder (or one of those files).")
    elif os.path.isfile(path):
      file = path
    else:
      raise ConfigError(f"Tokenizer path {path!r} does not exist; set tokenizer_path to a "
                        "folder holding tokenizer.json or vocab.txt, or to such a file.")
    config = _read_json(os.path.join(folder, "tokenizer_config.json"))
    try:
      if file.endswith(".json"):
        tok = hf.Tokenizer.from_file(file)
      else:
        tok = self._bert_from_vocab(file, config)
    except ConfigError:
      raise
    except Exception as e:  # pylint: disable=broad-except  # tokenizers raises Exception
      raise ConfigError(f"Cannot load Hugging Face tokenizer {file!r} ({e}); check that it "
                        "is a tokenizer.json or a one-token-per-line vocab.txt.") from e
    # A saved tokenizer.json may pad/truncate to its own length; max_len decides here.
    tok.no_padding()
    tok.no_truncation()
    self._tok = tok
    self.file = file
    self.vocab_size = int(tok.get_vocab_size(with_added_tokens=True))
    # The special tokens the model's template adds around one sequence, found by encoding
    # a probe: [CLS] before and [SEP] after for BERT, <s> and </s> for RoBERTa.
    probe = tok.encode("a", add_special_tokens=True)
    special = list(probe.special_tokens_mask)
    first = special.index(0) if 0 in special else len(special)
    last = len(special) - special[::-1].index(0) if 0 in special else len(special)
    self._prefix, self._suffix = list(probe.ids[:first]), list(probe.ids[last:])
    self.bos_id = self._prefix[0] if self._prefix else -1
    self.eos_id = self._suffix[-1] if self._suffix else -1
    pad_name = _token_name(config.get("pad_token"), "[PAD]")
    pad = next((tok.token_to_id(t) for t in (pad_name, "[PAD]", "<pad>")
                if tok.token_to_id(t) is not None), None)
    self.pad_id = int(pad) if pad is not None else PAD

  @staticmethod
  def _bert_from_vocab(vocab_file: str, config: dict[str, Any]):
    """A BERT WordPiece tokenizer from vocab.txt, as transformers' BertTokenizer(Fast)."""
    from tokenizers import (  # pylint: disable=g-import-not-at-top
        Tokenizer, decoders, models, normalizers, pre_tokenizers, processors)
    names = {k: _token_name(config.get(f"{k}_token"), f"[{k.upper()}]")
             for k in ("unk", "cls", "sep", "pad", "mask")}
    tok = Tokenizer(models.WordPiece.from_file(vocab_file, unk_token=names["unk"]))
    lower = config.get("do_lower_case", True)
    tok.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=bool(config.get("tokenize_chinese_chars", True)),
        strip_accents=config.get("strip_accents"), lowercase=bool(lower))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    present = [t for t in names.values() if tok.token_to_id(t) is not None]
    tok.add_special_tokens(present)  # Never split, and skipped by decode.
    cls, sep = tok.token_to_id(names["cls"]), tok.token_to_id(names["sep"])
    if cls is None or sep is None:
      raise ConfigError(f"Vocabulary {vocab_file!r} has no {names['cls']} or {names['sep']} "
                        "token, so it is not a BERT vocab.txt; use the checkpoint's "
                        "tokenizer.json instead.")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{names['cls']} $A {names['sep']}",
        pair=f"{names['cls']} $A {names['sep']} $B:1 {names['sep']}:1",
        special_tokens=[(names["cls"], cls), (names["sep"], sep)])
    return tok

  def encode(self, text: str | bytes, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """text -> (ids [max_len] int32, mask [max_len] int32), e.g. [CLS] ... [SEP] [PAD]..."""
    body = self._tok.encode(_as_str(text), add_special_tokens=False).ids
    ids, mask, _ = _frame_labeled(body, [IGNORE_LABEL] * len(body), max_len, self._prefix,
                                  self._suffix, self.pad_id)
    return ids, mask

  def encode_words(self, words: Sequence[str | bytes], word_labels: Sequence[int],
                   max_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pre-split words [n] + labels [n] -> (ids, mask, token_labels), each [max_len] int32.

    Words are encoded with `is_pretokenized=True` (the tokenizer may still split a word,
    e.g. "U.S." -> u . s .); each word's label goes on its first sub-token, -1 on its
    other sub-tokens, on [CLS]/[SEP] and on padding. Truncation may drop the last words.
    """
    words = [_as_str(w) for w in words]
    if len(words) != len(word_labels):
      raise ValueError(f"encode_words needs one label per word, got {len(words)} words "
                       f"and {len(word_labels)} labels.")
    enc = self._tok.encode(words, is_pretokenized=True, add_special_tokens=False)
    labels, prev = [], None
    for w in enc.word_ids:
      labels.append(int(word_labels[w]) if w is not None and w != prev else IGNORE_LABEL)
      prev = w
    return _frame_labeled(enc.ids, labels, max_len, self._prefix, self._suffix, self.pad_id)

  def decode(self, ids: Sequence[int], mask: Sequence[int] | None = None) -> str:
    """ids [T] (+ optional mask [T]) -> text; stops at EOS, drops specials and padding."""
    ids = np.asarray(ids).reshape(-1).tolist()
    if mask is not None:
      ids = [i for i, m in zip(ids, np.asarray(mask).reshape(-1).tolist()) if m]
    if self.eos_id >= 0 and self.eos_id in ids:
      ids = ids[: ids.index(self.eos_id)]
    ids = [i for i in ids if i != self.pad_id and 0 <= i < self.vocab_size]
    return self._tok.decode(ids, skip_special_tokens=True)


TOKENIZER_NAMES = ("bytes", "sentencepiece", "wordpiece")


def make_tokenizer(tokenizer: str = "bytes", tokenizer_path: str | os.PathLike | None = None,
                   *, sp_model: str | None = None) -> Tokenizer:
  """Tokenizer by name: 'bytes' -> ByteTokenizer (no path); 'sentencepiece' -> a .model
  file; 'wordpiece' (alias 'huggingface') -> HFTokenizer of a folder with tokenizer.json
  or vocab.txt (or such a file). `sp_model` is the old name of `tokenizer_path`.
  """
  if sp_model and tokenizer_path and os.fspath(sp_model) != os.fspath(tokenizer_path):
    raise ConfigError(f"Both tokenizer_path={tokenizer_path!r} and its old name "
                      f"sp_model={sp_model!r} are set and differ; set only tokenizer_path.")
  path = tokenizer_path or sp_model or None
  if tokenizer == "bytes":
    return ByteTokenizer()
  if tokenizer in ("sentencepiece", "sp"):
    if not path:
      raise ConfigError("tokenizer='sentencepiece' needs tokenizer_path='/path/to/model.model' "
                        "(sp_model= also works).")
    return SentencePieceTokenizer(os.fspath(path))
  if tokenizer in ("wordpiece", "huggingface"):
    if not path:
      raise ConfigError(f"tokenizer={tokenizer!r} needs tokenizer_path=PATH, a folder with "
                        "tokenizer.json or vocab.txt (e.g. a Hugging Face BERT checkpoint).")
    return HFTokenizer(path)
  raise ConfigError(f"Unknown tokenizer {tokenizer!r}. Choose one of: "
                    f"{', '.join(TOKENIZER_NAMES)}.")
