"""Byte-level and SentencePiece tokenizers (TensorFlow-free)."""
import subprocess
import sys

import numpy as np
import pytest

from mmjax.data import tokenizers as tok
from mmjax.errors import ConfigError


def test_constants():
  assert (tok.PAD, tok.BOS, tok.EOS, tok.MASK, tok.NUM_SPECIAL) == (0, 1, 2, 3, 4)
  assert tok.VOCAB_SIZE == 260


@pytest.mark.parametrize("text", ["a handwritten seven", "", "naïve café ✓ 7", "x" * 5])
def test_round_trip(text):
  ids, mask = tok.encode_bytes(text, 64)
  assert ids.shape == mask.shape == (64,) and ids.dtype == mask.dtype == np.int32
  n = len(text.encode("utf-8"))
  assert ids[0] == tok.BOS and ids[n + 1] == tok.EOS
  assert (ids[n + 2:] == tok.PAD).all()
  np.testing.assert_array_equal(mask, (np.arange(64) < n + 2).astype(np.int32))
  assert tok.decode_bytes(ids) == text
  assert tok.ByteTokenizer().decode(tok.ByteTokenizer().encode(text, 64)[0]) == text


def test_byte_mapping_and_specials():
  ids, _ = tok.encode_bytes("A", 4)
  np.testing.assert_array_equal(ids, [tok.BOS, ord("A") + 4, tok.EOS, tok.PAD])
  # decode skips PAD/BOS/MASK and stops at the first EOS.
  assert tok.decode_bytes([1, 3, 69, 0, 70, 2, 71]) == "AB"


def test_truncation_keeps_eos():
  ids, mask = tok.encode_bytes("abcdefgh", 5)
  np.testing.assert_array_equal(ids, [1, 101, 102, 103, 2])
  assert mask.sum() == 5
  assert tok.decode_bytes(ids) == "abc"


def test_bad_max_len():
  with pytest.raises(ConfigError, match="max_len"):
    tok.encode_bytes("a", 1)
  with pytest.raises(ConfigError, match="Unknown tokenizer"):
    tok.make_tokenizer("bpe")  # 'wordpiece' exists now: see test_tokenizers_hf.py
  with pytest.raises(ConfigError, match="sp_model"):
    tok.make_tokenizer("sentencepiece")


def test_sentencepiece_round_trip(sp_model):
  t = tok.make_tokenizer("sentencepiece", sp_model)
  ids, mask = t.encode("a thick seven", 16)
  assert ids.shape == (16,) and ids[0] == t.bos_id
  assert ids[mask.sum() - 1] == t.eos_id and (ids[mask.sum():] == 0).all()
  assert t.decode(ids) == "a thick seven"
  assert t.decode(ids, mask) == "a thick seven"


def test_sentencepiece_bad_path(tmp_path):
  with pytest.raises(ConfigError, match="SentencePiece"):
    tok.make_tokenizer("sentencepiece", str(tmp_path / "missing.model"))


def test_import_without_tensorflow():
  """`mmjax.data` and its tokenizers import (and work) without importing TensorFlow."""
  code = ("import sys; sys.modules['tensorflow'] = None; "  # any TF import would now fail
          "import mmjax.data, mmjax.data.tokenizers as t; "
          "assert t.decode_bytes(t.encode_bytes('ok', 8)[0]) == 'ok'; "
          "assert callable(mmjax.data.make_train_iterator)")
  subprocess.run([sys.executable, "-c", code], check=True)
