"""An empirical lower bound on ε from one training run (Steinke, Nasr & Jagielski 2023,
"Privacy auditing with one (1) training run"), with jax-privacy's CanaryScoreAuditor.

`privacy.audit_canaries = m` picks m training examples as canaries and gives each a
wrong label; each canary is independently, with probability 1/2, kept in the training
set with that label ("in") or removed from it ("out"). After training, an attacker
scores every canary by the model's log-probability of its wrong label: a model that
memorised the in-canaries scores them higher. The auditor turns how well the scores
separate in from out into an ε that the training run provably exceeds with 95%
confidence, were its guarantee weaker; the accountant's ε is the upper bound it sits
under. Numpy only here (the scores come from the evaluator in
mmjax/evals/privacy_audit_eval.py).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from mmjax.errors import ConfigError

# Folded into the seed so the canaries never share draws with the batches.
_CANARY_STREAM = 0xCA7A


@dataclasses.dataclass(frozen=True)
class Canaries:
  """`index` [m]: positions in the train split; `label` [m]: their wrong labels;
  `included` [m] bool: in the training set (else removed from it)."""
  index: np.ndarray
  label: np.ndarray
  included: np.ndarray

  def apply(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The training arrays with the in-canaries relabelled and the out-canaries
    removed."""
    labels = arrays["label"].copy()
    labels[self.index[self.included]] = self.label[self.included]
    keep = np.ones(len(labels), bool)
    keep[self.index[~self.included]] = False
    out = dict(arrays, label=labels)
    return {k: v[keep] for k, v in out.items()}

  def examples(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The m canaries as they were trained on (or would have been): [m, ...] arrays."""
    return dict({k: v[self.index] for k, v in arrays.items()}, label=self.label)


def included_flags(seed: int, count: int) -> np.ndarray:
  """[count] bools: which canaries are kept in training (each with probability 1/2)."""
  return np.random.default_rng((seed, _CANARY_STREAM, 0)).random(count) < 0.5


def choose(labels: np.ndarray, count: int, num_classes: int, seed: int) -> Canaries:
  """`count` canaries among examples with these `labels` [N] (ints in [0,
  num_classes)), each given another class chosen at random."""
  n = len(labels)
  if not 0 < count <= n // 2:
    raise ConfigError(f"privacy.audit_canaries={count} must be between 1 and half the "
                      f"{n} training examples.")
  if num_classes < 2:
    raise ConfigError("privacy.audit_canaries needs a classifier (model.num_classes >= "
                      "2): each canary gets a wrong label.")
  rng = np.random.default_rng((seed, _CANARY_STREAM, 1))
  index = np.sort(rng.choice(n, size=count, replace=False))
  shift = rng.integers(1, num_classes, size=count)
  wrong = ((labels[index].astype(np.int64) + shift) % num_classes).astype(labels.dtype)
  return Canaries(index=index, label=wrong, included=included_flags(seed, count))


def audit(scores: np.ndarray, included: np.ndarray, delta: float,
          significance: float = 0.05) -> dict[str, float]:
  """Epsilon lower bounds from canary `scores` [m] (higher: more likely trained on) and
  `included` [m]: 'epsilon_lower_bound' (one-run, Steinke et al. 2023, at confidence
  1 - significance), 'auroc' of the in/out separation, and the counts."""
  from jax_privacy import auditing   # the optional privacy extra
  scores, included = np.asarray(scores, np.float64), np.asarray(included, bool)
  if included.all() or not included.any():
    raise ValueError("The audit needs canaries both in and out of training.")
  auditor = auditing.CanaryScoreAuditor(scores[included], scores[~included])
  return {"epsilon_lower_bound": float(auditor.epsilon_one_run(significance, delta)),
          "auroc": float(auditor.attack_auroc()),
          "canaries_in": float(included.sum()), "canaries_out": float((~included).sum())}
