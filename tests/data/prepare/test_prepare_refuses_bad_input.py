"""`mmjax.data.prepare` refuses bad input with one clear error, before writing anything."""
import json
import os

import numpy as np
import pytest

from mmjax.data.prepare import prepare
from mmjax.errors import DataError
from tests.conftest import files_snapshot
from tests.data.prepare.conftest import write_png


def test_empty_folder(tmp_path):
  (tmp_path / "empty" / "cats").mkdir(parents=True)
  with pytest.raises(DataError,
                     match=r"holds no \.png/\.jpg/\.jpeg files.*one subfolder per class"):
    prepare("image_folder", str(tmp_path / "empty"), "x", str(tmp_path / "d"))
  assert not (tmp_path / "d").exists()


def test_mixed_image_sizes_need_resize(small_digits, tmp_path):
  images, _ = small_digits
  write_png(tmp_path / "src" / "a" / "0.png", images[0])
  write_png(tmp_path / "src" / "a" / "1.png", images[1])
  write_png(tmp_path / "src" / "b" / "2.png", np.zeros((32, 20), np.uint8))
  with pytest.raises(DataError, match=r"2 different sizes: 28x28 \(2, e\.g\. .*0\.png\), "
                     r"32x20 \(1, .*2\.png\)\. Pass --resize=HxW"):
    prepare("image_folder", str(tmp_path / "src"), "x", str(tmp_path / "d"))
  assert not (tmp_path / "d").exists()
  builder, _ = prepare("image_folder", str(tmp_path / "src"), "x", str(tmp_path / "d"),
                       resize="16x16", split_fraction=0.0)
  assert builder.info.features["image"].shape == (16, 16, 1)


def test_unreadable_files_listed_then_stop_or_skip(small_digits, tmp_path):
  images, _ = small_digits
  for i in range(4):
    write_png(tmp_path / "src" / "a" / f"{i}.png", images[i])
  for i in range(7):
    (tmp_path / "src" / "b" / f"bad{i}.jpg").parent.mkdir(exist_ok=True)
    (tmp_path / "src" / "b" / f"bad{i}.jpg").write_bytes(b"not a jpeg")
  with pytest.raises(DataError, match=r"7 of 11 inputs cannot be read: .*bad0\.jpg "
                     r"\(UnidentifiedImageError.*bad4\.jpg.* and 2 more\. .*--on_error=skip"):
    prepare("image_folder", str(tmp_path / "src"), "x", str(tmp_path / "d"))
  assert not (tmp_path / "d").exists()
  _, summary = prepare("image_folder", str(tmp_path / "src"), "x", str(tmp_path / "d"),
                       on_error="skip", split_fraction=0.0)
  assert summary["splits"] == {"train": 4} and len(summary["skipped"]) == 7


def test_missing_label_column_names_the_columns(tmp_path):
  (tmp_path / "t.csv").write_text("sentence,sentiment\nhello,pos\n")
  with pytest.raises(DataError, match=r"no column 'label' \(--label_column\); its columns "
                     r"are \['sentence', 'sentiment'\]"):
    prepare("csv", str(tmp_path / "t.csv"), "x", str(tmp_path / "d"), text_column="sentence")


def test_bad_names_are_refused(tmp_path):
  with pytest.raises(DataError, match="must be snake_case"):
    prepare("csv", str(tmp_path), "My-Data", str(tmp_path / "d"))
  with pytest.raises(DataError, match="is a TFDS catalogue dataset.*--name=my_mnist"):
    prepare("csv", str(tmp_path), "mnist", str(tmp_path / "d"))


def test_never_replaces_another_dataset_silently(tmp_path):
  def rows(n):
    return "\n".join(json.dumps({"text": f"t{i}", "label": "a"}) for i in range(n))
  (tmp_path / "one.jsonl").write_text(rows(5))
  (tmp_path / "two.jsonl").write_text(rows(7))
  data_dir = str(tmp_path / "d")
  prepare("jsonl", str(tmp_path / "one.jsonl"), "texts", data_dir, split_fraction=0.0)
  info = os.path.join(data_dir, "texts", "1.0.0", "dataset_info.json")
  before = open(info).read()
  _, again = prepare("jsonl", str(tmp_path / "one.jsonl"), "texts", data_dir,
                     split_fraction=0.0)
  assert again["reused"]   # the same files and options: nothing to do
  with pytest.raises(DataError, match=r"already holds a different dataset named 'texts' "
                     r"\(prepared from .*one\.jsonl'\).*Pass --overwrite"):
    prepare("jsonl", str(tmp_path / "two.jsonl"), "texts", data_dir, split_fraction=0.0)
  assert open(info).read() == before
  builder, _ = prepare("jsonl", str(tmp_path / "two.jsonl"), "texts", data_dir,
                       split_fraction=0.0, overwrite=True)
  assert builder.info.splits["train"].num_examples == 7


def test_an_overwrite_that_fails_mid_write_keeps_the_old_dataset(tmp_path, monkeypatch):
  from mmjax.data.prepare import common
  (tmp_path / "one.jsonl").write_text(
      "\n".join(json.dumps({"text": f"t{i}", "label": "a"}) for i in range(5)))
  (tmp_path / "two.jsonl").write_text(
      "\n".join(json.dumps({"text": f"u{i}", "label": "b"}) for i in range(7)))
  data_dir = str(tmp_path / "d")
  prepare("jsonl", str(tmp_path / "one.jsonl"), "texts", data_dir, split_fraction=0.0)
  root = os.path.join(data_dir, "texts")
  before = files_snapshot(root)

  def store_then_fail(*args):
    common_store(*args)            # the new dataset is half there when the disk fills up
    raise OSError("No space left on device")
  common_store = common._store
  monkeypatch.setattr(common, "_store", store_then_fail)
  with pytest.raises(OSError, match="No space left"):
    prepare("jsonl", str(tmp_path / "two.jsonl"), "texts", data_dir, split_fraction=0.0,
            overwrite=True)
  assert files_snapshot(root) == before
  assert not [n for n in os.listdir(data_dir) if "replaced" in n]
