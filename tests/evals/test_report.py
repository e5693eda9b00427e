"""Classification / entity reports equal sklearn's and seqeval's numbers and text.

Every number of `classification_report` is compared with sklearn's
`classification_report(..., labels=range(K), zero_division=0, output_dict=True)` (micro avg
with `precision_recall_fscore_support(average='micro')`), and every number of
`entity_report` with seqeval's default-mode `classification_report(output_dict=True)`, on
fixtures covering the zero-division and chunking edge cases. Both references are test-only
dependencies (`pip install -e .[test]`); tests needing one skip without it. Hand-worked
expectations keep the chunking rules checked even then.
"""
from __future__ import annotations

import json
import math
import re
import warnings

import numpy as np
import pytest

from mmjax.errors import ConfigError
from mmjax.evals.report import (classification_report, confusion_matrix, entity_f1,
                                entity_report, format_report, perplexity, save_confusion_png,
                                tags_from_ids, write_report)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
METRICS = ("precision", "recall", "f1-score", "support")


def _classification_cases():
  """name -> (y_true [N], y_pred [N], K)."""
  rng = np.random.default_rng(0)
  cases = {"random_k5": (rng.integers(0, 5, 200), rng.integers(0, 5, 200), 5)}
  # Imbalanced: mostly class 0; predictions right 80% of the time, else uniform.
  y = rng.choice(5, size=300, p=[0.75, 0.12, 0.08, 0.04, 0.01])
  noisy = np.where(rng.random(300) < 0.8, y, rng.integers(0, 5, 300))
  cases["imbalanced"] = (y, noisy, 5)
  # Class 2 is never predicted: its precision (and F1) are 0/0 -> 0.
  y = rng.integers(0, 4, 100)
  cases["never_predicted"] = (y, np.where(y == 2, 1, y), 4)
  # Class 3 never occurs in y_true (recall 0/0) and class 5 in neither (K=6 via num_classes).
  y = rng.integers(0, 3, 120)
  cases["absent_from_true"] = (y, np.where(rng.random(120) < 0.2, 3, y), 6)
  cases["single_example"] = (np.array([1]), np.array([0]), 2)
  return cases


CLASSIFICATION = _classification_cases()


@pytest.mark.parametrize("name", sorted(CLASSIFICATION))
def test_classification_report_equals_sklearn(name):
  metrics = pytest.importorskip("sklearn.metrics")
  y_true, y_pred, k = CLASSIFICATION[name]
  ours = classification_report(y_true, y_pred, num_classes=k)
  theirs = metrics.classification_report(y_true, y_pred, labels=range(k), zero_division=0,
                                         output_dict=True)
  # sklearn's keys (classes, 'accuracy', macro, weighted) in its order, plus 'micro avg'.
  assert [key for key in ours if key != "micro avg"] == list(theirs)
  for key, want in theirs.items():
    if key == "accuracy":
      np.testing.assert_allclose(ours[key], want, rtol=1e-12, atol=1e-15)
      continue
    for m in METRICS:
      np.testing.assert_allclose(ours[key][m], want[m], rtol=1e-12, atol=1e-15,
                                 err_msg=f"{key} {m}")
    assert isinstance(ours[key]["support"], int)
  micro = metrics.precision_recall_fscore_support(y_true, y_pred, labels=range(k),
                                                  average="micro", zero_division=0)
  np.testing.assert_allclose([ours["micro avg"][m] for m in METRICS[:3]], micro[:3],
                             rtol=1e-12)
  assert ours["micro avg"]["support"] == len(y_true)


def test_zero_division_cases_are_zero_not_nan():
  y_true, y_pred, k = CLASSIFICATION["absent_from_true"]
  report = classification_report(y_true, y_pred, num_classes=k)
  assert report["3"]["support"] == 0 and report["3"]["recall"] == 0.0
  assert report["3"]["precision"] == 0.0   # predicted, never right
  assert report["5"] == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0}
  y_true, y_pred, _ = CLASSIFICATION["never_predicted"]
  report = classification_report(y_true, y_pred)
  assert report["2"]["precision"] == 0.0 and report["2"]["f1-score"] == 0.0


def test_class_names_set_keys_and_k():
  report = classification_report([0, 1, 2, 2], [0, 2, 2, 2], class_names=["cat", "dog", "owl"])
  assert list(report)[:3] == ["cat", "dog", "owl"]
  assert report["owl"] == {"precision": 2 / 3, "recall": 1.0, "f1-score": 0.8, "support": 2}
  assert report["accuracy"] == 0.75
  with pytest.raises(ConfigError, match="one name per class"):
    classification_report([0, 1], [0, 1], num_classes=3, class_names=["a", "b"])


def test_bad_labels_raise_config_error():
  with pytest.raises(ConfigError, match="num_classes is 3"):
    classification_report([0, 3], [0, 1], num_classes=3)
  with pytest.raises(ConfigError, match=">= 0"):
    classification_report([0, -1], [0, 1])
  with pytest.raises(ConfigError, match="one prediction per example"):
    classification_report([0, 1], [0])
  with pytest.raises(ConfigError, match="empty"):
    classification_report([], [])
  with pytest.raises(ConfigError, match="1-D"):
    confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 2), int), 2)
  with pytest.raises(ConfigError, match="integer class ids"):
    classification_report([0.5, 1.0], [0, 1])


@pytest.mark.parametrize("name", sorted(CLASSIFICATION))
def test_confusion_matrix_equals_sklearn(name):
  metrics = pytest.importorskip("sklearn.metrics")
  y_true, y_pred, k = CLASSIFICATION[name]
  ours = confusion_matrix(y_true, y_pred, k)
  assert ours.dtype == np.int64 and ours.shape == (k, k)
  np.testing.assert_array_equal(ours, metrics.confusion_matrix(y_true, y_pred,
                                                               labels=range(k)))
  # Rows are true classes: row sums are the supports.
  np.testing.assert_array_equal(ours.sum(1), np.bincount(y_true, minlength=k))


@pytest.mark.parametrize("digits", [2, 4])
def test_format_report_is_sklearn_text_plus_micro_row(digits):
  metrics = pytest.importorskip("sklearn.metrics")
  y_true, y_pred, k = CLASSIFICATION["absent_from_true"]
  report = classification_report(y_true, y_pred, num_classes=k)
  text = format_report(report, digits=digits)
  want = metrics.classification_report(y_true, y_pred, labels=range(k), zero_division=0,
                                       digits=digits)
  lines = text.split("\n")
  micro = [line for line in lines if line.strip().startswith("micro avg")]
  assert len(micro) == 1
  assert "\n".join(line for line in lines if line not in micro) == want


def test_format_report_rows_hold_the_numbers():
  report = classification_report([0, 0, 1, 1, 2], [0, 1, 1, 1, 2],
                                 class_names=["neg", "neutral", "pos"])
  text = format_report(report, digits=3)
  lines = text.splitlines()
  assert lines[0].split() == ["precision", "recall", "f1-score", "support"]
  rows = {line.split()[0]: line.split()[1:] for line in lines[1:] if line.strip()}
  assert rows["neg"] == ["1.000", "0.500", "0.667", "2"]
  assert rows["neutral"] == ["0.667", "1.000", "0.800", "2"]
  assert rows["pos"] == ["1.000", "1.000", "1.000", "1"]
  assert rows["accuracy"] == ["0.800", "5"]
  assert re.search(r"^\s+micro avg\s+0\.800\s+0\.800\s+0\.800\s+5$", text, re.M)
  assert re.search(r"^\s+macro avg\s+0\.889\s+0\.833\s+0\.822\s+5$", text, re.M)
  # Blank line between the class rows and the accuracy row.
  assert lines[lines.index(next(l for l in lines if "pos" in l)) + 1] == ""
  with pytest.raises(ConfigError, match="needs the keys"):
    format_report({"a": {"precision": 1.0}})


# --- entities ------------------------------------------------------------------------------

ENTITY_CASES = {  # name -> (true_tags, pred_tags)
    "multi_token": ([["B-PER", "I-PER", "I-PER", "O", "B-LOC", "I-LOC"]],
                    [["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]]),
    "i_without_b": ([["I-PER", "I-PER", "O", "O", "I-LOC"], ["O", "I-ORG", "I-ORG"]],
                    [["B-PER", "I-PER", "O", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"]]),
    "type_switch": ([["B-PER", "I-PER", "O", "B-LOC"]],
                    [["B-PER", "I-LOC", "O", "B-LOC"]]),
    "entity_at_end": ([["O", "O", "B-MISC", "I-MISC"], ["B-PER"]],
                      [["O", "O", "B-MISC", "I-MISC"], ["B-LOC"]]),
    "empty_prediction": ([["B-PER", "I-PER", "O", "B-ORG"], ["O", "B-LOC"]],
                         [["O", "O", "O", "O"], ["O", "O"]]),
    "prediction_only_type": ([["B-PER", "O", "O"]], [["B-PER", "O", "B-DATE"]]),
    "several_types": (
        [["B-PER", "I-PER", "O", "B-ORG", "I-ORG", "I-ORG", "O", "B-LOC"],
         ["B-MISC", "O", "B-PER", "B-PER", "O"], [], ["O", "B-LOC", "I-LOC", "I-LOC"]],
        [["B-PER", "I-PER", "O", "B-ORG", "I-ORG", "O", "O", "B-LOC"],
         ["B-MISC", "O", "B-PER", "I-PER", "O"], [], ["O", "B-LOC", "I-LOC", "I-LOC"]]),
    "b_then_b_same_type": ([["B-PER", "B-PER", "I-PER"]], [["B-PER", "I-PER", "I-PER"]]),
    "iobes": ([["S-PER", "O", "B-LOC", "E-LOC", "E-LOC"]],
              [["S-PER", "O", "B-LOC", "I-LOC", "E-LOC"]]),
}


def _random_tag_cases(n_sentences=150, seed=1):
  """Random sequences over BIO, IOBES and odd tags: exercises every chunk-rule branch."""
  rng = np.random.default_rng(seed)
  vocab = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "B-ORG", "E-PER",
           "S-LOC", "E-ORG", "S-PER", ".", "B", "I"]
  true, pred = [], []
  for _ in range(n_sentences):
    n = int(rng.integers(0, 12))
    t = [vocab[i] for i in rng.integers(0, len(vocab), n)]
    # Predictions mostly copy the truth so that many entities match.
    p = [t[j] if rng.random() < 0.7 else vocab[int(rng.integers(0, len(vocab)))]
         for j in range(n)]
    true.append(t)
    pred.append(p)
  return true, pred


ENTITY_CASES["random_mixed_schemes"] = _random_tag_cases()


def _seqeval_report(true, pred):
  seqeval = pytest.importorskip("seqeval.metrics")
  with warnings.catch_warnings():   # its zero-division and "not NE tag" warnings
    warnings.simplefilter("ignore")
    return (seqeval.classification_report(true, pred, output_dict=True),
            seqeval.f1_score(true, pred),
            seqeval.classification_report(true, pred, digits=4))


@pytest.mark.parametrize("name", sorted(ENTITY_CASES))
def test_entity_report_equals_seqeval(name):
  true, pred = ENTITY_CASES[name]
  theirs, f1, text = _seqeval_report(true, pred)
  ours = entity_report(true, pred)
  assert list(ours) == list(theirs)
  for key, want in theirs.items():
    for m in METRICS:
      np.testing.assert_allclose(ours[key][m], want[m], rtol=1e-12, atol=1e-15,
                                 err_msg=f"{key} {m}")
  np.testing.assert_allclose(entity_f1(true, pred), f1, rtol=1e-12, atol=1e-15)
  # seqeval's own text table, byte for byte.
  assert format_report(ours) == text


def test_chunk_rules_by_hand():
  """seqeval default-mode chunking, worked out by hand (no seqeval needed)."""
  def types(tags):   # {type: support} of the true side
    report = entity_report([tags], [["O"] * len(tags)])
    return {k: v["support"] for k, v in report.items() if not k.endswith(" avg")}
  assert types(["I-PER", "I-PER", "O"]) == {"PER": 1}               # I- after O opens one
  assert types(["B-PER", "I-LOC"]) == {"PER": 1, "LOC": 1}          # type switch: two
  assert types(["B-PER", "B-PER"]) == {"PER": 2}                    # B- always opens
  assert types(["B-PER", "I-PER", "I-PER"]) == {"PER": 1}           # runs to the end
  # Exact spans: only the identical span [0, 1] counts, so P = R = 1/2.
  report = entity_report([["B-PER", "I-PER", "O", "B-PER"]], [["B-PER", "I-PER", "I-PER", "O"]])
  assert report["PER"] == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 2}
  report = entity_report([["B-PER", "I-PER", "O", "B-PER"]], [["B-PER", "I-PER", "O", "O"]])
  assert report["PER"] == {"precision": 1.0, "recall": 0.5, "f1-score": 2 / 3, "support": 2}
  # A flat list is one sentence, as in seqeval.
  assert entity_f1(["B-PER", "O"], ["B-PER", "O"]) == 1.0


def test_no_entities_anywhere_gives_zeros():
  # seqeval's macro avg is NaN here (mean of nothing); ours is 0.0 so logs stay finite.
  report = entity_report([["O", "O"]], [["O", "O"]])
  assert list(report) == ["micro avg", "macro avg", "weighted avg"]
  for key in report:
    assert report[key] == {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0}


def test_entity_inputs_must_align():
  with pytest.raises(ConfigError, match="2 sequences"):
    entity_report([["O"], ["O"]], [["O"]])
  with pytest.raises(ConfigError, match="one tag per token"):
    entity_report([["O", "B-PER"]], [["O"]])
  with pytest.raises(ConfigError, match="tags_from_ids"):
    entity_report([[0, 1]], [[0, 1]])


def test_tags_from_ids_drops_ignored_positions():
  names = ["O", "B-PER", "I-PER", "B-LOC"]
  labels = np.array([[1, 2, -1, 0, 3], [0, -1, -1, -1, -1], [-1, -1, -1, -1, -1]])
  preds = np.array([[1, 1, 2, 0, 3], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]])
  true = tags_from_ids(labels, labels, names)
  pred = tags_from_ids(preds, labels, names)
  assert true == [["B-PER", "I-PER", "O", "B-LOC"], ["O"], []]
  assert pred == [["B-PER", "B-PER", "O", "B-LOC"], ["B-PER"], []]
  assert tags_from_ids(preds, labels >= 0, names) == pred   # a bool mask works the same
  report = entity_report(true, pred)
  assert report["LOC"]["f1-score"] == 1.0 and report["PER"]["support"] == 1
  assert report["PER"]["precision"] == 0.0   # B-PER B-PER: two one-token chunks, no match
  with pytest.raises(ConfigError, match=r"\[0, 4\)"):
    tags_from_ids(np.array([[4, 0]]), np.array([[0, 0]]), names)
  with pytest.raises(ConfigError, match="one shape"):
    tags_from_ids(preds, labels[:, :2], names)


# --- files, perplexity ---------------------------------------------------------------------

def test_save_confusion_png_30_classes(tmp_path):
  rng = np.random.default_rng(2)
  m = rng.integers(0, 500, (30, 30))
  path = save_confusion_png(m, [f"class_{i}" for i in range(30)], str(tmp_path / "cm.png"),
                            title="30 classes")
  with open(path, "rb") as f:
    data = f.read()
  assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
  with pytest.raises(ConfigError, match="one name per row"):
    save_confusion_png(m, ["a"], str(tmp_path / "bad.png"))
  with pytest.raises(ConfigError, match="square"):
    save_confusion_png(m[:3], None, str(tmp_path / "bad.png"))


def test_write_report_round_trips(tmp_path):
  y_true, y_pred, k = CLASSIFICATION["imbalanced"]
  names = ["a", "b", "c", "d", "e"]
  report = classification_report(y_true, y_pred, class_names=names)
  cm = confusion_matrix(y_true, y_pred, k)
  paths = write_report(report, str(tmp_path / "eval"), "test", confusion=cm)
  assert set(paths) == {"json", "txt", "png"}
  assert paths["json"].endswith("eval/test.json")
  with open(paths["json"]) as f:
    assert json.load(f) == report
  with open(paths["txt"]) as f:
    assert f.read() == format_report(report)
  with open(paths["png"], "rb") as f:
    assert f.read(8) == PNG_SIGNATURE
  # numpy scalars (e.g. a report built elsewhere) are converted; no png without confusion.
  paths = write_report({"x": {"precision": np.float64(0.5), "recall": np.float32(1.0),
                              "f1-score": 2 / 3, "support": np.int64(3)}},
                       str(tmp_path), "np")
  assert set(paths) == {"json", "txt"}
  with open(paths["json"]) as f:
    assert json.load(f)["x"] == {"precision": 0.5, "recall": 1.0, "f1-score": 2 / 3,
                                 "support": 3}


def test_perplexity():
  assert perplexity(20.0, 10) == math.exp(2.0)
  assert perplexity(0.0, 5) == 1.0
  assert perplexity(10 * math.log(7.0), 10.0) == pytest.approx(7.0, rel=1e-14)
  assert perplexity(1e6, 1) == math.inf
  for bad in (0, -3, float("nan")):
    with pytest.raises(ConfigError, match="total_tokens > 0"):
      perplexity(1.0, bad)
