"""Token classification (NER) ops: word-level BIO tags -> fixed-length token labels.

  caption_ner(key='caption', words_out='words', tags_out='word_tags')
      An `mmjax_digits` caption -> example[words_out] string [n] and example[tags_out]
      int32 [n] (ids into CAPTION_NER_TAGS); n varies per caption, so follow it with
      `tokenize_words`. The tagging rule is in `mmjax.data.ner_tags` (TF-free; its
      `caption_ner_tags` is the reference this op matches):
        NUM   "seven" / "7" -> B-NUM; "digit 7" / "number seven" -> B-NUM I-NUM.
        STYLE each cue one entity: an adjective (thick, thin, neat, quick, careful, messy,
              slanted) or "handwritten" -> B-STYLE; "by hand" -> B-STYLE I-STYLE.
        BG    "black background" -> B-BG I-BG.
        O     everything else, including the word ',' split off a trailing comma.
  tokenize_words(words='words', tags='word_tags', out='text', labels_out='token_labels',
                 max_len=32, tokenizer='wordpiece', tokenizer_path=None)
      Words [n] + word tag ids [n] -> example[out] int32 [max_len], example[out+'_mask']
      int32 [max_len], example[labels_out] int32 [max_len]: each word's tag on its first
      token, -1 on its other tokens, on the special tokens and on padding.

TFDS CoNLL-2003 (checked in tensorflow-datasets 4.9.10's source, nothing downloaded):
builder `conll2003`, one config `conll2003` (full name 'conll2003/conll2003/1.0.0'),
version 1.0.0, splits 'train', 'dev', 'test' (from https://data.deepai.org/conll2003.zip).
Features, one entry per word of a sentence:
  tokens  Sequence(Text())                    string [n]
  pos     Sequence(ClassLabel(47 POS tags))   int64 [n]
  chunks  Sequence(ClassLabel(23 chunk tags)) int64 [n]
  ner     Sequence(ClassLabel(9 names))       int64 [n], names = CONLL2003_NER_TAGS
so a BERT NER input is, e.g.,
  "tokenize_words(words='tokens', tags='ner', max_len=128, tokenizer_path=PATH)
   |keep('text', 'text_mask', 'token_labels')".
"""
from __future__ import annotations

from mmjax.data import tokenizers
from mmjax.data.host_registry import OPS
from mmjax.data.lazy_tf import tf
from mmjax.data.ner_tags import (CAPTION_NER_TAGS, CONLL2003_NER_TAGS, DIGIT_WORDS, NUM_INTRO,
                                 NUMERALS, STYLE_WORDS)
from mmjax.errors import ConfigError

_TAG = {name: i for i, name in enumerate(CAPTION_NER_TAGS)}


def _check_keys(op: str, **keys) -> None:
  for name, value in keys.items():
    if not isinstance(value, str) or not value:
      raise ConfigError(f"Preprocessing op {op!r}: {name} must be a key name (a non-empty "
                        f"string), got {value!r}.")


def _isin(words: tf.Tensor, vocab) -> tf.Tensor:
  """words string [n] -> bool [n]: whether each word is one of `vocab`."""
  return tf.reduce_any(tf.equal(words[:, None], tf.constant(vocab)[None, :]), axis=-1)


def caption_tags(caption: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """Scalar caption string -> (words string [n], tag ids int32 [n]); see ner_tags."""
  # "seven, drawn" -> "seven , drawn": a comma ending a word becomes its own word.
  words = tf.strings.split(tf.strings.regex_replace(caption, r"(\S),(\s|$)", r"\1 ,\2"))
  low = tf.strings.lower(words)
  prev = tf.concat([[""], low[:-1]], 0)
  nxt = tf.concat([low[1:], [""]], 0)
  is_num = _isin(low, DIGIT_WORDS + NUMERALS)
  next_is_num = tf.concat([is_num[1:], [False]], 0)
  # In rule order; where cases overlap the first one wins ("digit 7": I-NUM, not B-NUM).
  cases = [
      (is_num & _isin(prev, NUM_INTRO), "I-NUM"),
      (is_num, "B-NUM"),
      (_isin(low, NUM_INTRO) & next_is_num, "B-NUM"),
      (_isin(low, STYLE_WORDS), "B-STYLE"),
      (tf.equal(low, "by") & tf.equal(nxt, "hand"), "B-STYLE"),
      (tf.equal(low, "hand") & tf.equal(prev, "by"), "I-STYLE"),
      (tf.equal(low, "black") & tf.equal(nxt, "background"), "B-BG"),
      (tf.equal(low, "background") & tf.equal(prev, "black"), "I-BG"),
  ]
  tags = tf.fill(tf.shape(low), _TAG["O"])
  for cond, name in reversed(cases):  # The first matching case wins.
    tags = tf.where(cond, _TAG[name], tags)
  return words, tags


@OPS.register("caption_ner")
def caption_ner(key: str = "caption", words_out: str = "words", tags_out: str = "word_tags"):
  """example[key] caption string [] -> example[words_out] string [n], example[tags_out]
  int32 [n] (BIO ids into CAPTION_NER_TAGS). Deterministic; other keys are kept."""
  _check_keys("caption_ner", key=key, words_out=words_out, tags_out=tags_out)

  def op(example, seed):
    del seed
    caption = example[key]
    if caption.shape.rank != 0:
      raise ConfigError(f"Preprocessing op 'caption_ner' needs example[{key!r}] to be one "
                        f"caption (a scalar string), got shape {caption.shape}.")
    words, tags = caption_tags(caption)
    return {**example, words_out: words, tags_out: tags}
  return op


def _bytes_words(words: tf.Tensor, tags: tf.Tensor, max_len: int):
  """Graph version of `ByteTokenizer.encode_words`: words [n], tags int32 [n] ->
  ids, mask, labels int32 [max_len] (words joined by single spaces, label on each word's
  first byte)."""
  n = tf.size(words)
  not_first = tf.cast(tf.range(n) > 0, tf.int32)
  words = tf.where(not_first > 0, tf.strings.join([" ", words]), words)
  lengths = tf.strings.length(words)  # In bytes.
  starts = tf.cumsum(lengths, exclusive=True) + not_first  # First byte of each word.
  real = lengths > not_first  # Empty words get no token, hence no label.
  body = tf.cast(tf.io.decode_raw(tf.strings.reduce_join(words), tf.uint8), tf.int32)
  labels = tf.tensor_scatter_nd_update(
      tf.fill(tf.shape(body), tokenizers.IGNORE_LABEL),
      tf.boolean_mask(starts, real)[:, None], tf.boolean_mask(tags, real))
  body, labels = body[: max_len - 2], labels[: max_len - 2]
  ids = tf.concat([[tokenizers.BOS], body + tokenizers.NUM_SPECIAL, [tokenizers.EOS]], 0)
  labels = tf.concat([[tokenizers.IGNORE_LABEL], labels, [tokenizers.IGNORE_LABEL]], 0)
  pad = [[0, max_len - tf.shape(ids)[0]]]
  mask = tf.pad(tf.ones_like(ids), pad)
  ids = tf.pad(ids, pad, constant_values=tokenizers.PAD)
  labels = tf.pad(labels, pad, constant_values=tokenizers.IGNORE_LABEL)
  return ids, mask, labels


@OPS.register("tokenize_words")
def tokenize_words(words: str = "words", tags: str = "word_tags", out: str = "text",
                   labels_out: str = "token_labels", max_len: int = 32,
                   tokenizer: str = "wordpiece", tokenizer_path: str | None = None):
  """example[words] string [n] + example[tags] int [n] -> example[out] int32 [max_len],
  example[out+'_mask'] int32 [max_len], example[labels_out] int32 [max_len].

  Each word's tag goes on its first token; -1 (tokenizers.IGNORE_LABEL) goes on its
  other tokens, on BOS/EOS ([CLS]/[SEP]) and on padding, so a loss skips labels < 0.
  Too many tokens are truncated (EOS kept; the words cut off lose their labels).
  `tokenizer`: 'wordpiece' with tokenizer_path=a Hugging Face folder (tokenizer.json or
  vocab.txt), 'sentencepiece' with a .model path, or 'bytes' (no path; words joined by
  spaces, the ids equal `tokenize` of the joined text). Works on TFDS conll2003 with
  words='tokens', tags='ner'. Other keys are kept.
  """
  _check_keys("tokenize_words", words=words, tags=tags, out=out, labels_out=labels_out)
  if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 2:
    raise ConfigError(f"Preprocessing op 'tokenize_words': max_len must be an int >= 2 (room "
                      f"for BOS and EOS), got {max_len!r}.")
  tok = tokenizers.make_tokenizer(tokenizer, tokenizer_path)  # Validates and loads eagerly.

  if isinstance(tok, tokenizers.ByteTokenizer):
    encode = lambda w, t: _bytes_words(w, t, max_len)
  else:
    def encode_np(w, t):
      return tok.encode_words([x.decode("utf-8") for x in w.tolist()], t.tolist(), max_len)

    def encode(w, t):
      return tf.numpy_function(encode_np, [w, t], [tf.int32] * 3, stateful=False)

  def op(example, seed):
    del seed
    w, t = example[words], example[tags]
    if w.shape.rank != 1 or t.shape.rank != 1:
      raise ConfigError(f"Preprocessing op 'tokenize_words' needs example[{words!r}] and "
                        f"example[{tags!r}] to be 1-D (one entry per word), got shapes "
                        f"{w.shape} and {t.shape}; split captions first with caption_ner.")
    check = tf.debugging.assert_equal(
        tf.size(w), tf.size(t),
        message=f"Preprocessing op 'tokenize_words' needs one tag per word "
                f"(example[{words!r}] and example[{tags!r}] differ in length)")
    with tf.control_dependencies([check]):
      t = tf.cast(t, tf.int32)
    ids, mask, labels = (tf.ensure_shape(x, [max_len]) for x in encode(w, t))
    return {**example, out: ids, f"{out}_mask": mask, labels_out: labels}
  return op


__all__ = ["CAPTION_NER_TAGS", "CONLL2003_NER_TAGS", "caption_ner", "caption_tags",
           "tokenize_words"]
