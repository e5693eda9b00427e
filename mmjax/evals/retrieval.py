"""Cross-modal retrieval: recall@K of queries against a gallery by cosine similarity."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mmjax.errors import ConfigError


def _normalize(x: np.ndarray) -> np.ndarray:
  x = np.asarray(x, np.float32)
  return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def zero_shot_predictions(images, prompts, num_templates: int) -> np.ndarray:
  """CLIP's zero-shot classification. images [N, D], prompts [C * T, D] (class-major: the
  T template embeddings of class 0, then class 1, ...) -> predicted class [N]: the class
  whose normalised mean of normalised prompt embeddings is closest by cosine."""
  prompts = _normalize(prompts)
  classes = _normalize(prompts.reshape(-1, num_templates, prompts.shape[-1]).mean(1))
  return np.argmax(_normalize(images) @ classes.T, axis=-1)


def recall_at_k(queries, gallery, *, ks: Sequence[int] = (1, 5, 10), query_labels=None,
                gallery_labels=None, chunk: int = 1024) -> dict[str, float]:
  """Fraction of queries with a correct item among their K nearest gallery items.

  Args:
    queries: [N,P] embeddings; gallery: [M,P] embeddings (cosine similarity; ties are
      broken by gallery order, as a stable sort would).
    ks: the K values.
    query_labels, gallery_labels: [N], [M]; a gallery item is correct when its label
      equals the query's (class-level retrieval). Without labels query i's only correct
      item is gallery i (paired data, N == M).
    chunk: queries scored at once (memory: chunk x M floats).
  Returns:
    {'R@K': recall in [0, 1]} for each K.
  """
  q, g = _normalize(queries), _normalize(gallery)
  if q.ndim != 2 or g.ndim != 2 or q.shape[1] != g.shape[1]:
    raise ConfigError(f"recall_at_k needs [N,P] queries and [M,P] gallery embeddings, got "
                      f"{q.shape} and {g.shape}.")
  if (query_labels is None) != (gallery_labels is None):
    raise ConfigError("recall_at_k: give both query_labels and gallery_labels, or neither.")
  if query_labels is None:
    if len(q) != len(g):
      raise ConfigError(f"Paired retrieval needs as many queries as gallery items, got "
                        f"{len(q)} and {len(g)}; or pass labels.")
    query_labels, gallery_labels = np.arange(len(q)), np.arange(len(g))
  query_labels, gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
  bad = [k for k in ks if not 1 <= k]
  if bad:
    raise ConfigError(f"recall_at_k: K must be >= 1, got {bad}.")
  # The rank of each query's best correct item = how many items score strictly higher
  # (plus equal-scoring items before it in gallery order).
  first_hit = np.empty(len(q), np.int64)
  for start in range(0, len(q), chunk):
    sims = q[start:start + chunk] @ g.T                                  # [n, M]
    correct = query_labels[start:start + chunk, None] == gallery_labels[None, :]
    order = np.argsort(-sims, axis=1, kind="stable")
    hits = np.take_along_axis(correct, order, axis=1)
    rank = np.where(hits.any(axis=1), hits.argmax(axis=1), len(g))
    first_hit[start:start + chunk] = rank
  return {f"R@{k}": float(np.mean(first_hit < k)) for k in ks}


def retrieval_metrics(za, zb, *, names: tuple[str, str] = ("a", "b"),
                      ks: Sequence[int] = (1, 5, 10), labels=None) -> dict[str, float]:
  """Recall@K both ways between paired embeddings za [N,P] and zb [N,P]:
  {'{a}_to_{b}/R@K', '{b}_to_{a}/R@K'}; `labels` [N] makes it class-level."""
  a, b = names
  out = {}
  for (qn, q), (gn, g) in (((a, za), (b, zb)), ((b, zb), (a, za))):
    r = recall_at_k(q, g, ks=ks, query_labels=labels, gallery_labels=labels)
    out.update({f"{qn}_to_{gn}/{k}": v for k, v in r.items()})
  return out
