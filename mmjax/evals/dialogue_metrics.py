"""Metrics of generated and ranked dialogue answers (numpy; no model, no TensorFlow).

Generation: exact match and token F1 (SQuAD's: whitespace tokens of the lower-cased
answers, F1 of their multiset overlap). Ranking (VisDial, Das et al. 2017): each turn's
C candidate answers are scored (here by the decoder's log-likelihood), and the rank of the
true answer gives MRR, R@k and the mean rank; NDCG@K (VisDial v1.0) with K the number of
relevant candidates: DCG = sum over the top K of rel_i / log2(i + 1), over the DCG of
the ideal order.
"""
from __future__ import annotations

import collections
from typing import Sequence

import numpy as np


def _tokens(text: str) -> list[str]:
  return text.lower().split()


def exact_match(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
  """[N] float 1.0 where the prediction equals the reference (case and spacing aside)."""
  return np.array([float(_tokens(p) == _tokens(r))
                   for p, r in zip(predictions, references)])


def token_f1(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
  """[N] float: SQuAD token F1 of each prediction against its reference."""
  out = []
  for p, r in zip(predictions, references):
    p, r = _tokens(p), _tokens(r)
    common = sum((collections.Counter(p) & collections.Counter(r)).values())
    if not p or not r:
      out.append(float(p == r))
    elif common == 0:
      out.append(0.0)
    else:
      precision, recall = common / len(p), common / len(r)
      out.append(2 * precision * recall / (precision + recall))
  return np.array(out)


def ranks(scores: np.ndarray, true_index: np.ndarray) -> np.ndarray:
  """scores [M,C] (higher = better), true_index [M] -> [M] int rank of the true answer,
  1 = best; a tie counts against it (rank = 1 + the others scoring at least as high)."""
  scores = np.asarray(scores, np.float64)
  rows = np.arange(len(scores))
  true = scores[rows, true_index][:, None]
  others = (scores >= true).sum(-1) - 1
  return 1 + others


def ndcg(scores: np.ndarray, relevance: np.ndarray) -> np.ndarray:
  """scores, relevance [M,C] -> [M] NDCG@K, K = the row's relevant candidates (relevance
  > 0); candidates ranked by score, ties in candidate order (a stable sort)."""
  out = []
  for s, rel in zip(np.asarray(scores, np.float64), np.asarray(relevance, np.float64)):
    k = int((rel > 0).sum())
    if k == 0:
      out.append(np.nan)
      continue
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    order = np.argsort(-s, kind="stable")[:k]
    ideal = np.sort(rel)[::-1][:k]
    out.append(float((rel[order] * discount).sum() / (ideal * discount).sum()))
  return np.array(out)


def ranking_metrics(scores: np.ndarray, true_index: np.ndarray, relevance: np.ndarray
                    ) -> dict[str, float]:
  """scores [M,C], true_index [M], relevance [M,C] -> {'mrr', 'r@1', 'r@5', 'r@10',
  'mean_rank', 'ndcg'}, means over the M turns."""
  r = ranks(scores, true_index)
  return {"mrr": float(np.mean(1.0 / r)), "r@1": float(np.mean(r <= 1)),
          "r@5": float(np.mean(r <= 5)), "r@10": float(np.mean(r <= 10)),
          "mean_rank": float(np.mean(r)), "ndcg": float(np.nanmean(ndcg(scores, relevance)))}


def chance_levels(num_candidates: int) -> dict[str, float]:
  """The expected MRR, R@1 and mean rank of uniformly random scores over C candidates."""
  c = num_candidates
  return {"mrr": float(np.mean(1.0 / np.arange(1, c + 1))), "r@1": 1.0 / c,
          "mean_rank": (c + 1) / 2.0}
