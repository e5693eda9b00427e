"""Likely label errors: out-of-fold predicted probabilities from a quick classifier, then
confident learning (`cleanlab.filter.find_label_issues`, Northcutt et al. 2021).

The classifier is scikit-learn's k-nearest neighbours (k=10, distance-weighted) on a
50-component PCA of simple features, not an mmjax model: five folds of it take ~3 s on
the 4,000 digits on 2 CPU cores, where five mmjax CNN trainings would take minutes, and
its out-of-fold accuracy there is 94% (a logistic regression on the same features: 89%).
Features per modality (the first present of image, audio, text):
  image  pixels in [0, 1] at 32 x 32 greyscale
  audio  the time-averaged log-magnitude spectrum (mmjax.data.clean.duplicates)
  text   TF-IDF of word unigrams and bigrams (reduced by truncated SVD instead of PCA)
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from mmjax.data.clean import duplicates
from mmjax.data.clean.load import text_of


def features(examples: Sequence[dict[str, Any]], key: str, kind: str):
  """[N, D] features of one modality (dense, or sparse TF-IDF for text)."""
  if kind == "image":
    return np.stack([duplicates.small_grey(e[key]).reshape(-1) / 255.0
                     for e in examples])
  if kind == "audio":
    return np.stack([duplicates.spectrogram_image(e[key]).mean(axis=1) / 255.0
                     for e in examples])
  # pylint: disable-next=g-import-not-at-top
  from sklearn.feature_extraction.text import TfidfVectorizer
  return TfidfVectorizer(ngram_range=(1, 2), min_df=1).fit_transform(
      [text_of(e, key) for e in examples])


def out_of_fold_probabilities(x, labels: np.ndarray, num_classes: int, *, folds: int = 5,
                              seed: int = 0) -> np.ndarray:
  """[N, num_classes] probabilities, each from a model that never saw that example."""
  # pylint: disable=g-import-not-at-top
  from scipy import sparse
  from sklearn.decomposition import PCA, TruncatedSVD
  from sklearn.model_selection import StratifiedKFold, cross_val_predict
  from sklearn.neighbors import KNeighborsClassifier
  from sklearn.pipeline import make_pipeline
  import threadpoolctl   # a scikit-learn dependency
  dims = min(50, x.shape[1] - 1, len(labels) // 2)
  reduce = (TruncatedSVD(dims, random_state=seed) if sparse.issparse(x)
            else PCA(dims, random_state=seed))
  smallest = int(np.bincount(labels, minlength=num_classes)[np.unique(labels)].min())
  folds = max(2, min(folds, smallest))
  model = make_pipeline(reduce, KNeighborsClassifier(n_neighbors=min(10, len(labels) // 2),
                                                     weights="distance"))
  # One BLAS thread: these matrices are small (N x 1024 at most per example), and a
  # multi-threaded OpenBLAS on a busy 2-core machine took 66 s instead of 3 s for one PCA
  # of 3,500 digits (measured 2026-12-07).
  with threadpoolctl.threadpool_limits(limits=1, user_api="blas"):
    probs = cross_val_predict(model, x, labels, method="predict_proba",
                              cv=StratifiedKFold(folds, shuffle=True, random_state=seed))
  full = np.zeros((len(labels), num_classes))   # classes absent from the split stay 0
  full[:, np.unique(labels)] = probs
  return full


def find_issues(x, labels: np.ndarray, num_classes: int, *, seed: int = 0
                ) -> tuple[np.ndarray, np.ndarray]:
  """(positions of likely label errors, most likely first; [N, C] out-of-fold
  probabilities)."""
  from cleanlab.filter import find_label_issues   # pylint: disable=g-import-not-at-top
  probs = out_of_fold_probabilities(x, labels, num_classes, seed=seed)
  present = np.unique(labels)
  # cleanlab wants every class in pred_probs to have examples: use the present ones.
  remap = {c: i for i, c in enumerate(present)}
  issues = find_label_issues(np.array([remap[c] for c in labels]), probs[:, present],
                             filter_by="prune_by_noise_rate",
                             return_indices_ranked_by="self_confidence",
                             n_jobs=1)   # its default forks workers, unsafe once JAX runs
  return np.asarray(issues, np.int64), probs
