"""Corpus BLEU (Papineni et al. 2002) exactly as sacrebleu computes it by default.

Tokenizer 13a (mteval-v13a, WMT's), case-sensitive, n-grams up to 4, counts clipped by the
maximum count over the references, brevity penalty against the closest reference length
(ties: the shorter), 'exp' smoothing (mteval's: the k-th zero precision counts as
1/2^k matches). No dependency on sacrebleu; tests compare against it when installed.
"""
from __future__ import annotations

import collections
import math
import re
from typing import Sequence

from mmjax.errors import ConfigError

MAX_ORDER = 4

_13A_RULES = [
  (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),   # punctuation
  (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),   # period/comma unless after a digit
  (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),   # period/comma unless before a digit
  (re.compile(r"([0-9])(-)"), r"\1 \2 "),        # dash after a digit
]


def tokenize_13a(line: str) -> list[str]:
  """mteval-v13a tokenization, as sacrebleu's default tokenizer."""
  line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
  if "&" in line:
    line = (line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
            .replace("&gt;", ">"))
  line = f" {line} "
  for pattern, repl in _13A_RULES:
    line = pattern.sub(repl, line)
  return line.split()


def _ngrams(tokens: list[str]) -> collections.Counter:
  return collections.Counter(tuple(tokens[i:i + n]) for n in range(1, MAX_ORDER + 1)
                             for i in range(len(tokens) - n + 1))


def _closest_length(hyp_len: int, ref_lens: list[int]) -> int:
  return min(ref_lens, key=lambda r: (abs(hyp_len - r), r))


def corpus_bleu(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict:
  """BLEU of `hypotheses` against one or more reference streams.

  Args:
    hypotheses: N strings.
    references: R streams of N strings each (sacrebleu's layout: references[r][i] is
      the r-th reference of hypothesis i).
  Returns:
    {'bleu': score in [0, 100], 'precisions': [4] in %, 'brevity_penalty',
     'hyp_len', 'ref_len'}.
  """
  if isinstance(hypotheses, str) or not references or isinstance(references[0], str):
    raise ConfigError("corpus_bleu(hypotheses, references): hypotheses is a list of "
                      "strings and references a list of reference streams (lists of "
                      "strings), e.g. corpus_bleu(['a cat'], [['the cat']]).")
  if any(len(stream) != len(hypotheses) for stream in references):
    raise ConfigError(f"corpus_bleu: every reference stream needs {len(hypotheses)} "
                      f"strings (one per hypothesis), got "
                      f"{[len(s) for s in references]}.")
  correct, total = [0] * MAX_ORDER, [0] * MAX_ORDER
  hyp_len = ref_len = 0
  for i, hyp in enumerate(hypotheses):
    hyp_tokens = tokenize_13a(hyp.rstrip())
    ref_tokens = [tokenize_13a(stream[i].rstrip()) for stream in references]
    max_ref = collections.Counter()
    for tokens in ref_tokens:
      for gram, count in _ngrams(tokens).items():
        max_ref[gram] = max(max_ref[gram], count)
    hyp_len += len(hyp_tokens)
    ref_len += _closest_length(len(hyp_tokens), [len(t) for t in ref_tokens])
    for gram, count in _ngrams(hyp_tokens).items():
      total[len(gram) - 1] += count
      correct[len(gram) - 1] += min(count, max_ref.get(gram, 0))
  bp = 1.0
  if hyp_len < ref_len:
    bp = math.exp(1 - ref_len / hyp_len) if hyp_len > 0 else 0.0
  precisions = [0.0] * MAX_ORDER
  out = {"precisions": precisions, "brevity_penalty": bp, "hyp_len": hyp_len,
         "ref_len": ref_len, "bleu": 0.0}
  if not any(correct):
    return out
  smooth = 1.0
  for n in range(MAX_ORDER):
    if total[n] == 0:
      break
    if correct[n] == 0:
      smooth *= 2
      precisions[n] = 100.0 / (smooth * total[n])
    else:
      precisions[n] = 100.0 * correct[n] / total[n]
  log = lambda p: -9999999999 if p == 0.0 else math.log(p)   # sacrebleu's my_log
  out["bleu"] = bp * math.exp(sum(log(p) for p in precisions) / MAX_ORDER)
  return out
