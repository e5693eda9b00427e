"""Are attribution maps faithful? Deletion and insertion curves (Petsiuk et al. 2018).

Features (pixels; channels summed) are ranked by |attribution|. Deletion replaces the
top-ranked fraction with the baseline, 0 to 100% in `steps` steps, and follows the
model's probability of the target class: a faithful map makes it fall fast (low AUC).
Insertion starts from the baseline and puts the top-ranked features back: it should
rise fast (high AUC). The same curves under a random ranking are the reference a method
must beat.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def _ranks(scores: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
  """[B, F] feature order, most important first (or random with `rng`)."""
  if rng is not None:
    return np.stack([rng.permutation(scores.shape[1]) for _ in range(len(scores))])
  return np.argsort(-scores, axis=1, kind="stable")


def curves(logits_fn, x: np.ndarray, target: np.ndarray, attributions: np.ndarray, *,
           baseline: np.ndarray, steps: int = 20, random_seed: int | None = None) -> dict:
  """{'deletion', 'insertion'}: [steps + 1] mean target probability after removing
  (inserting) the top k/steps of the features, for images x [B, H, W, C]; with
  `random_seed` the ranking is random instead of by attribution."""
  b = x.shape[0]
  feature_shape = x.shape[1:-1]
  scores = np.abs(attributions).sum(-1).reshape(b, -1)
  order = _ranks(scores, None if random_seed is None else np.random.default_rng(random_seed))
  n = scores.shape[1]
  rank = np.empty_like(order)
  np.put_along_axis(rank, order, np.arange(n)[None, :].repeat(b, 0), axis=1)
  out = {"deletion": [], "insertion": []}
  for k in range(steps + 1):
    top = (rank < round(k * n / steps)).reshape((b,) + feature_shape + (1,))
    for name, start, fill in (("deletion", x, baseline), ("insertion", baseline, x)):
      mixed = np.where(top, fill, start)
      probs = jax.nn.softmax(jnp.asarray(logits_fn(jnp.asarray(mixed))), axis=-1)
      out[name].append(float(np.mean(np.asarray(probs)[np.arange(b), target])))
  return {k: np.asarray(v) for k, v in out.items()}


def auc(curve: np.ndarray) -> float:
  """Area under a curve sampled at evenly spaced fractions 0..1 (trapezoidal)."""
  curve = np.asarray(curve, np.float64)
  return float(((curve[1:] + curve[:-1]) / 2).mean())


def spearman(a: np.ndarray, b: np.ndarray) -> float:
  """Mean over examples of the Spearman rank correlation of two maps [B, ...] (of their
  absolute values, as saliency is read; ties get their average rank, as in
  scipy.stats.spearmanr)."""
  from scipy import stats   # pylint: disable=g-import-not-at-top
  a = np.abs(a).reshape(len(a), -1)
  b = np.abs(b).reshape(len(b), -1)
  ra = stats.rankdata(a, axis=1)
  rb = stats.rankdata(b, axis=1)
  ra -= ra.mean(1, keepdims=True)
  rb -= rb.mean(1, keepdims=True)
  denom = np.sqrt((ra ** 2).sum(1) * (rb ** 2).sum(1))
  return float(np.mean((ra * rb).sum(1) / np.maximum(denom, 1e-12)))


def randomize_from_top(params: dict, layers: int, key) -> dict:
  """`params` with its last `layers` top-level modules (the output end first) re-drawn
  from a normal of each array's own standard deviation: Adebayo et al.'s cascading
  model-parameter randomisation."""
  names = list(params)
  chosen = set(names[len(names) - layers:])
  out = {}
  for i, name in enumerate(names):
    if name not in chosen:
      out[name] = params[name]
      continue
    leaves, tree = jax.tree.flatten(params[name])
    keys = jax.random.split(jax.random.fold_in(key, i), len(leaves))
    out[name] = jax.tree.unflatten(tree, [
        jax.random.normal(k, x.shape, x.dtype) * (jnp.std(x) + 1e-3)
        for k, x in zip(keys, leaves)])
  return out
