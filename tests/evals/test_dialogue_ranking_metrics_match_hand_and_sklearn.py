"""VisDial's ranking metrics (MRR, R@k, mean rank, NDCG) and the answer metrics (exact
match, token F1) equal a hand computation on a small example, and MRR / NDCG equal
scikit-learn's (label ranking average precision with one relevant label; ndcg_score at
the number of relevant candidates) on random scores."""
import numpy as np
import pytest
from sklearn import metrics as skm

from mmjax.evals import dialogue_metrics as dm


def test_ranking_metrics_by_hand():
  scores = np.array([[0.1, 0.9, 0.3, 0.5, 0.2],
                     [2.0, 1.0, 1.0, 0.0, 3.0]])
  true = np.array([3, 1])
  relevance = np.array([[0, 0, 0, 1, 1],     # candidate 4 paraphrases the true answer
                        [0, 1, 0, 0, 0]], float)
  # Row 0: only 0.9 beats 0.5 -> rank 2. Row 1: 2, 3 and the tied 1 -> rank 4.
  assert dm.ranks(scores, true).tolist() == [2, 4]
  got = dm.ranking_metrics(scores, true, relevance)
  # NDCG row 0, K=2: top two are candidates 1 (rel 0) and 3 (rel 1):
  # (0 + 1/log2 3) / (1 + 1/log2 3); row 1, K=1: top is candidate 4 (rel 0) -> 0.
  ndcg0 = (1 / np.log2(3)) / (1 + 1 / np.log2(3))
  assert got == pytest.approx({"mrr": (1 / 2 + 1 / 4) / 2, "r@1": 0.0, "r@5": 1.0,
                               "r@10": 1.0, "mean_rank": 3.0, "ndcg": ndcg0 / 2})
  assert dm.chance_levels(4) == pytest.approx(
      {"mrr": (1 + 1 / 2 + 1 / 3 + 1 / 4) / 4, "r@1": 0.25, "mean_rank": 2.5})


def test_answer_metrics_by_hand():
  predictions = ["the left one", "Four", "the top one", "", "no"]
  references = ["the right one", "four", "the one", "yes", "no"]
  assert dm.exact_match(predictions, references).tolist() == [0, 1, 0, 0, 1]
  # 2 of 3 tokens shared: P = R = 2/3; "the top one" vs "the one": P 2/3, R 1 -> 0.8.
  np.testing.assert_allclose(dm.token_f1(predictions, references),
                             [2 / 3, 1.0, 0.8, 0.0, 1.0])


def test_mrr_and_ndcg_equal_scikit_learn():
  rng = np.random.default_rng(0)
  scores = rng.normal(size=(30, 100))
  true = rng.integers(100, size=30)
  onehot = np.zeros_like(scores)
  onehot[np.arange(30), true] = 1
  got = dm.ranking_metrics(scores, true, onehot)
  assert got["mrr"] == pytest.approx(skm.label_ranking_average_precision_score(onehot,
                                                                               scores))
  relevance = (rng.random((30, 100)) < 0.05).astype(float)
  relevance[np.arange(30), true] = 1
  expected = [skm.ndcg_score(r[None], s[None], k=int(r.sum()))
              for r, s in zip(relevance, scores)]
  np.testing.assert_allclose(dm.ndcg(scores, relevance), expected, rtol=1e-12)
