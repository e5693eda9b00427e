"""Token-classification (NER) tag sets and the caption tagging rule, without TensorFlow.

Configs, models and reports import the tag names from here cheaply; the TF ops that
produce the tags live in `ops_ner.py` (which re-exports these constants).

`CAPTION_NER_TAGS` are the BIO tags of `caption_ner` over `mmjax_digits` captions, and
`caption_ner_tags(caption)` is the reference (pure Python) form of that op's rule:

  Words: the caption split on whitespace, a trailing comma split off as its own word
  ("seven, drawn" -> "seven", ",", "drawn"). Matching ignores case.
  NUM   a digit name ("zero".."nine") or numeral ("0".."9") -> B-NUM; when the word just
        before it is "digit" or "number", that word is B-NUM and the digit I-NUM
        ("the digit 7" -> O B-NUM I-NUM; "the number seven" -> O B-NUM I-NUM).
  STYLE each style cue is one entity of its own: an adjective (thick, thin, neat, quick,
        careful, messy, slanted) -> B-STYLE; "handwritten" -> B-STYLE; "by hand" ->
        B-STYLE I-STYLE (the verb before it, "written"/"drawn", is O). Adjacent cues stay
        separate entities: "a neat handwritten 7" -> O B-STYLE B-STYLE B-NUM. The noun
        of "in messy strokes" is O (only "messy" is STYLE).
  BG    "black background" -> B-BG I-BG.
  O     every other word ("a", "the", "on", ",", "written", "picture", "someone", ...).

`CONLL2003_NER_TAGS` are the names of TFDS conll2003's `ner` ClassLabel, in its order.
"""
from __future__ import annotations

CAPTION_NER_TAGS = ("O", "B-NUM", "I-NUM", "B-STYLE", "I-STYLE", "B-BG", "I-BG")
# TFDS `conll2003` (tfds 4.9.10, version 1.0.0): features['ner'].feature.names.
CONLL2003_NER_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC",
                      "I-MISC")

O, B_NUM, I_NUM, B_STYLE, I_STYLE, B_BG, I_BG = range(len(CAPTION_NER_TAGS))

# The vocabulary of the rule (the same words as `mmjax.data.embedded.digits`, which this
# module cannot import: it imports tensorflow_datasets).
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
               "nine")
NUMERALS = tuple(str(i) for i in range(10))
NUM_INTRO = ("digit", "number")
STYLE_ADJECTIVES = ("thick", "thin", "neat", "quick", "careful", "messy", "slanted")
STYLE_WORDS = (*STYLE_ADJECTIVES, "handwritten")


def caption_words(caption: str) -> list[str]:
  """Caption -> words: whitespace split, a trailing comma split off as the word ','."""
  words = []
  for w in caption.split():
    if len(w) > 1 and w.endswith(","):
      words += [w[:-1], ","]
    else:
      words.append(w)
  return words


def caption_ner_tags(caption: str) -> tuple[list[str], list[int]]:
  """Caption -> (words [n], tag ids [n] into CAPTION_NER_TAGS), by the rule above."""
  words = caption_words(caption)
  low = [w.lower() for w in words]
  is_num = [w in DIGIT_WORDS or w in NUMERALS for w in low]
  tags = [O] * len(low)
  for i, w in enumerate(low):
    prev = low[i - 1] if i else ""
    nxt = low[i + 1] if i + 1 < len(low) else ""
    if is_num[i]:
      tags[i] = I_NUM if prev in NUM_INTRO else B_NUM
    elif w in NUM_INTRO and i + 1 < len(low) and is_num[i + 1]:
      tags[i] = B_NUM
    elif w in STYLE_WORDS:
      tags[i] = B_STYLE
    elif w == "by" and nxt == "hand":
      tags[i] = B_STYLE
    elif w == "hand" and prev == "by":
      tags[i] = I_STYLE
    elif w == "black" and nxt == "background":
      tags[i] = B_BG
    elif w == "background" and prev == "black":
      tags[i] = I_BG
  return words, tags


__all__ = ["CAPTION_NER_TAGS", "CONLL2003_NER_TAGS", "caption_words", "caption_ner_tags"]
