"""Per-group metrics and disparity summaries of a classifier's predictions.

Groups are integer ids per example (a dataset feature, the label, or both crossed). The
definitions equal fairlearn's (`fairlearn.metrics`), which the tests compare with live:

  selection rate of class c in group g   P(pred = c | g)
  TPR / FPR of class c in group g        one-vs-rest P(pred = c | y = c, g) / P(pred = c | y != c, g)
  demographic parity difference (c)      max_g - min_g of the selection rate of c
  demographic parity ratio (c)           min_g / max_g of it
  equalized odds difference (c)          max(TPR gap, FPR gap) over groups ('worst_case')

For several classes the summaries are the worst class's (the largest difference, the
smallest ratio), with every class's in the report. Calibration error per group is the
expected calibration error of the top-class confidence (`bins` equal-width bins).
"""
from __future__ import annotations

import numpy as np


def crossed_groups(first: np.ndarray, second: np.ndarray, second_count: int) -> np.ndarray:
  """Group ids of two integer attributes crossed: first * second_count + second ([N])."""
  return np.asarray(first, np.int64) * second_count + np.asarray(second, np.int64)


def _rate(hits: np.ndarray, where: np.ndarray) -> float:
  n = int(where.sum())
  return float(hits[where].mean()) if n else float("nan")


def calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
  """Expected calibration error of the top-class confidence: sum over equal-width
  confidence bins of |accuracy - mean confidence| weighted by the bin's share. probs
  [N,K] rows summing to 1, labels [N]."""
  if len(labels) == 0:
    return float("nan")
  conf, pred = probs.max(-1), probs.argmax(-1)
  correct = (pred == labels).astype(np.float64)
  edges = np.linspace(0.0, 1.0, bins + 1)
  which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
  ece = 0.0
  for b in range(bins):
    in_bin = which == b
    if in_bin.any():
      ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
  return float(ece)


def group_metrics(labels: np.ndarray, pred: np.ndarray, groups: np.ndarray,
                  num_classes: int, *, probs: np.ndarray | None = None,
                  group_ids=None, bins: int = 15) -> dict:
  """{group id: {count, accuracy, error, selection_rate [K], tpr [K], fpr [K], ece}} for
  labels, predictions and groups [N] (and class probabilities [N,K] for the ECE).
  `group_ids`: the groups to report, also those without examples (count 0, NaN rates);
  default: those present."""
  labels, pred, groups = (np.asarray(a).reshape(-1) for a in (labels, pred, groups))
  ids = sorted(set(groups.tolist())) if group_ids is None else list(group_ids)
  out = {}
  for g in ids:
    in_g = groups == g
    correct = pred == labels
    row = {"count": int(in_g.sum()), "accuracy": _rate(correct, in_g),
           "selection_rate": [_rate(pred == c, in_g) for c in range(num_classes)],
           "tpr": [_rate(pred == c, in_g & (labels == c)) for c in range(num_classes)],
           "fpr": [_rate(pred == c, in_g & (labels != c)) for c in range(num_classes)]}
    row["error"] = 1.0 - row["accuracy"]
    if probs is not None:
      row["ece"] = calibration_error(probs[in_g], labels[in_g], bins)
    out[g] = row
  return out


def _spread(values: list[float]) -> tuple[float, float]:
  """(max - min, min / max) of the finite values (NaN when there are none)."""
  v = [x for x in values if np.isfinite(x)]
  if not v:
    return float("nan"), float("nan")
  hi, lo = max(v), min(v)
  return hi - lo, (lo / hi if hi > 0 else float("nan"))


def disparities(per_group: dict, num_classes: int) -> dict:
  """Summaries over the groups of `group_metrics`: worst_group_accuracy, best, max_gap,
  and per class (lists [K]) and worst over classes: demographic_parity_difference,
  demographic_parity_ratio, equalized_odds_difference."""
  rows = [r for r in per_group.values() if r["count"]]
  accs = [r["accuracy"] for r in rows]
  gap, _ = _spread(accs)
  dp_diff, dp_ratio, eo_diff = [], [], []
  for c in range(num_classes):
    d, r = _spread([row["selection_rate"][c] for row in rows])
    tpr_gap, _ = _spread([row["tpr"][c] for row in rows])
    fpr_gap, _ = _spread([row["fpr"][c] for row in rows])
    dp_diff.append(d)
    dp_ratio.append(r)
    eo_diff.append(float(np.nanmax([tpr_gap, fpr_gap]))
                   if np.isfinite([tpr_gap, fpr_gap]).any() else float("nan"))
  finite = lambda xs: [x for x in xs if np.isfinite(x)]
  return {
      "worst_group_accuracy": min(accs) if accs else float("nan"),
      "best_group_accuracy": max(accs) if accs else float("nan"),
      "max_gap": gap,
      "demographic_parity_difference": max(finite(dp_diff), default=float("nan")),
      "demographic_parity_ratio": min(finite(dp_ratio), default=float("nan")),
      "equalized_odds_difference": max(finite(eo_diff), default=float("nan")),
      "per_class": {"demographic_parity_difference": dp_diff,
                    "demographic_parity_ratio": dp_ratio,
                    "equalized_odds_difference": eo_diff},
  }
