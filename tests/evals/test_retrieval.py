"""Retrieval recall@K on constructed cases with known ranks."""
import numpy as np
import pytest

from mmjax.errors import ConfigError
from mmjax.evals.retrieval import recall_at_k, retrieval_metrics, zero_shot_predictions


def _ranked_case():
  """Gallery = the 12 unit vectors; query i points at gallery item i's rank r_i position."""
  n = 12
  gallery = np.eye(n)
  # Query i: decreasing similarity over a fixed order in which its own item sits at r_i.
  ranks = np.array([0, 0, 1, 2, 3, 4, 5, 6, 9, 10, 11, 0])
  queries = np.zeros((n, n))
  for i, r in enumerate(ranks):
    others = [j for j in range(n) if j != i]
    order = others[:r] + [i] + others[r:]
    queries[i, order] = np.linspace(1.0, 0.1, n)
  return queries, gallery, ranks


def test_recall_at_k_matches_the_constructed_ranks():
  q, g, ranks = _ranked_case()
  got = recall_at_k(q, g, ks=(1, 5, 10))
  assert got == {f"R@{k}": float(np.mean(ranks < k)) for k in (1, 5, 10)}
  assert got["R@1"] == 3 / 12 and got["R@5"] == 7 / 12 and got["R@10"] == 10 / 12


def test_chunking_does_not_change_the_answer():
  rng = np.random.default_rng(0)
  q, g = rng.normal(size=(50, 8)), rng.normal(size=(50, 8))
  assert recall_at_k(q, g, chunk=7) == recall_at_k(q, g, chunk=1024)


def test_class_level_retrieval_and_both_directions():
  labels = np.array([0, 0, 1, 1])
  za = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
  zb = np.array([[0.8, 0.2], [1.0, 0.0], [0.1, 1.0], [0.0, 1.0]])
  # Paired: query 0's own item (zb 0) is beaten by zb 1; class-level both are correct.
  assert recall_at_k(za, zb)["R@1"] < 1.0
  out = retrieval_metrics(za, zb, names=("image", "audio"), ks=(1,), labels=labels)
  assert out == {"image_to_audio/R@1": 1.0, "audio_to_image/R@1": 1.0}


def test_bad_inputs_are_named():
  with pytest.raises(ConfigError, match="as many queries"):
    recall_at_k(np.ones((3, 2)), np.ones((4, 2)))
  with pytest.raises(ConfigError, match="both query_labels and gallery_labels"):
    recall_at_k(np.ones((3, 2)), np.ones((3, 2)), query_labels=[0, 1, 2])
  with pytest.raises(ConfigError, match=r"\[N,P\]"):
    recall_at_k(np.ones((3, 2)), np.ones((3, 5)))


def test_zero_shot_predictions_group_prompts_by_class():
  """Class c's prompts (class-major): one on a decoy axis, one on axis c; every image on
  axis c goes to class c, which a template-major grouping would not give."""
  eye = np.eye(6)
  prompts = np.stack([v for c in range(3) for v in (10.0 * eye[c + 3], eye[c])])
  images = eye[[0, 1, 2, 1]] + 0.01
  np.testing.assert_array_equal(zero_shot_predictions(images, prompts, 2),
                                [0, 1, 2, 1])
