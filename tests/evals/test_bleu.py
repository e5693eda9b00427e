"""Corpus BLEU equals sacrebleu's numbers on fixture sentences.

The expected values were produced with sacrebleu 2.6.0's defaults,
`sacrebleu.corpus_bleu(hyps, refs).score` (13a tokenizer, exp smoothing), and are checked
against a live sacrebleu too (scores, precisions and lengths) when it is installed
(`pip install sacrebleu`).
"""
import pytest

from mmjax.errors import ConfigError
from mmjax.evals.bleu import corpus_bleu, tokenize_13a

HYPS = ["a handwritten seven", "the digit 7 written by hand.", "The cat sat on the mat!",
        "It costs $3.50, or 3-4 euros.", "zero", "a   spaced-out &amp; escaped line"]
REFS = [["a handwritten 7", "the digit 7, written by hand.", "The cat sat on a mat!",
         "It costs $3.50 or 3-4 euros.", "the number zero", "a spaced-out & escaped line"],
        ["a handwritten seven .", "digit seven written by hand", "the cat is on the mat",
         "It costs 3.50 dollars.", "zero", "a spaced out and escaped line"]]
CASES = {  # name -> (hypotheses, references, sacrebleu 2.6.0 score)
    "two_refs": (HYPS, REFS, 71.9460006311207),
    "one_ref": (HYPS, REFS[:1], 62.55968347658767),
    "too_short_for_4grams": (["the cat"], [["the cat sat on the mat"]], 0.0),
    "brevity_penalty": (["the cat sat on the"], [["the cat sat on the mat"]],
                        81.87307530779823),
    "no_4gram_match_smoothing": (["the cat sat mat"], [["the cat sat on the mat"]],
                                 38.75385825373298),
    "nothing_matches": (["dog"], [["cat"]], 0.0),
}


def test_tokenize_13a_splits_punctuation_like_mteval():
  assert tokenize_13a("It costs $3.50, or 3-4 euros.") == [
      "It", "costs", "$", "3.50", ",", "or", "3", "-", "4", "euros", "."]
  assert tokenize_13a("a &amp; b") == ["a", "&", "b"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_bleu_equals_sacrebleu(name):
  hyps, refs, want = CASES[name]
  ours = corpus_bleu(hyps, refs)
  assert ours["bleu"] == pytest.approx(want, abs=1e-9)
  sacrebleu = pytest.importorskip("sacrebleu")
  theirs = sacrebleu.corpus_bleu(hyps, refs)
  assert ours["bleu"] == pytest.approx(theirs.score, abs=1e-9)
  assert ours["precisions"] == pytest.approx(theirs.precisions, abs=1e-9)
  assert (ours["hyp_len"], ours["ref_len"]) == (theirs.sys_len, theirs.ref_len)


def test_bad_layouts_are_named():
  with pytest.raises(ConfigError, match="reference streams"):
    corpus_bleu(["a"], ["a"])
  with pytest.raises(ConfigError, match="needs 2 strings"):
    corpus_bleu(["a", "b"], [["a"]])
