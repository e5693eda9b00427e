"""Per-group metrics and disparities equal fairlearn's on the same inputs (live), and
the calibration error equals a hand computation."""
import numpy as np
import pytest

from mmjax.evals import fairness

fairlearn_metrics = pytest.importorskip("fairlearn.metrics")


def _data(seed, n=600, k=3, groups=4):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, k, n)
  group = rng.integers(0, groups, n)
  # Predictions right more often in some groups: disparities are not all zero.
  right = rng.random(n) < 0.5 + 0.1 * group
  pred = np.where(right, labels, rng.integers(0, k, n))
  return labels, pred, group


@pytest.mark.parametrize("seed, k", [(0, 2), (1, 3), (2, 5)])
def test_per_group_rates_and_disparities_equal_fairlearns(seed, k):
  labels, pred, group = _data(seed, k=k)
  per_group = fairness.group_metrics(labels, pred, group, k)
  summary = fairness.disparities(per_group, k)
  frame = fairlearn_metrics.MetricFrame(
      metrics={"accuracy": lambda y, p: float(np.mean(y == p))}, y_true=labels,
      y_pred=pred, sensitive_features=group)
  for g, acc in frame.by_group["accuracy"].items():
    assert per_group[g]["accuracy"] == pytest.approx(acc, abs=1e-12)
  assert summary["worst_group_accuracy"] == pytest.approx(frame.group_min()["accuracy"])
  assert summary["max_gap"] == pytest.approx(frame.difference()["accuracy"])
  for c in range(k):
    y, p = labels == c, pred == c   # one-vs-rest, as fairlearn's binary metrics take it
    rates = fairlearn_metrics.MetricFrame(
        metrics={"sel": fairlearn_metrics.selection_rate,
                 "tpr": fairlearn_metrics.true_positive_rate,
                 "fpr": fairlearn_metrics.false_positive_rate},
        y_true=y, y_pred=p, sensitive_features=group).by_group
    for g in per_group:
      assert per_group[g]["selection_rate"][c] == pytest.approx(rates["sel"][g], abs=1e-12)
      assert per_group[g]["tpr"][c] == pytest.approx(rates["tpr"][g], abs=1e-12)
      assert per_group[g]["fpr"][c] == pytest.approx(rates["fpr"][g], abs=1e-12)
    per_class = summary["per_class"]
    assert per_class["demographic_parity_difference"][c] == pytest.approx(
        fairlearn_metrics.demographic_parity_difference(y, p, sensitive_features=group))
    assert per_class["demographic_parity_ratio"][c] == pytest.approx(
        fairlearn_metrics.demographic_parity_ratio(y, p, sensitive_features=group))
    assert per_class["equalized_odds_difference"][c] == pytest.approx(
        fairlearn_metrics.equalized_odds_difference(y, p, sensitive_features=group))
  assert summary["demographic_parity_difference"] == max(
      summary["per_class"]["demographic_parity_difference"])
  assert summary["demographic_parity_ratio"] == min(
      summary["per_class"]["demographic_parity_ratio"])


def test_an_empty_group_is_reported_empty_and_left_out_of_the_summaries():
  labels, pred, group = _data(3)
  per_group = fairness.group_metrics(labels, pred, group, 3, group_ids=range(6))
  assert per_group[5]["count"] == 0 and np.isnan(per_group[5]["accuracy"])
  summary = fairness.disparities(per_group, 3)
  present = fairness.disparities(fairness.group_metrics(labels, pred, group, 3), 3)
  assert summary["worst_group_accuracy"] == present["worst_group_accuracy"]
  assert summary["max_gap"] == present["max_gap"]


def test_calibration_error_by_hand():
  # Two bins of ten used: confidences 0.9, 0.9 (one right) and 0.6, 0.6 (both right).
  probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.4, 0.6], [0.4, 0.6]])
  labels = np.array([0, 1, 1, 1])
  expected = 0.5 * abs(0.5 - 0.9) + 0.5 * abs(1.0 - 0.6)
  assert fairness.calibration_error(probs, labels, bins=10) == pytest.approx(expected)
  assert fairness.calibration_error(np.eye(2)[[0, 1]], np.array([0, 1])) == 0.0


def test_crossed_groups_are_unique_per_pair():
  g = fairness.crossed_groups(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), 2)
  assert g.tolist() == [0, 1, 3, 4]
