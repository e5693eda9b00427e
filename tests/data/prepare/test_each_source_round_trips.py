"""Each source format, written here as files, comes back unchanged through mmjax's own
pipeline (mmjax.data.pipeline) after `mmjax.data.prepare`; splits are deterministic."""
import gzip
import json

import numpy as np
import pytest

from mmjax.data import pipeline
from mmjax.data.prepare import prepare
from tests.data.prepare.conftest import tone, write_png, write_wav


def read_split(name, data_dir, split, preprocess=None):
  """Every example of `split` as the mmjax eval pipeline yields it, sorted by 'id'."""
  cfg = dict(name=name, data_dir=str(data_dir), eval_split=split, preprocess_eval=preprocess)
  n = pipeline.dataset_info(cfg)["splits"][split]
  batch = next(iter(pipeline.make_eval_iterator(cfg, batch_size=n)))
  order = np.argsort(batch["id"])
  return {k: v[order] for k, v in batch.items()}


def test_image_folder_with_split_folders_and_captions(small_digits, tmp_path):
  images, labels = small_digits
  src = tmp_path / "photos"
  rows = []
  for i, (im, y) in enumerate(zip(images, labels)):
    split = "test" if i % 4 == 0 else "train"
    rel = f"{split}/class_{y}/{i:03d}.png"
    write_png(src / rel, im)
    rows.append(f"{rel},digit number {i}")
  (src / "captions.csv").write_text("file,caption\n" + "\n".join(rows) + "\n")
  builder, summary = prepare("image_folder", str(src), "own_photos", str(tmp_path / "tfds"),
                             captions=str(src / "captions.csv"))
  assert summary["splits"] == {"test": 6, "train": 18}
  assert builder.info.features["label"].names == ["class_0", "class_1", "class_7"]
  test = read_split("own_photos", tmp_path / "tfds", "test")
  sources = [s.decode() for s in test["source"]]
  index = [int(s.split("/")[-1][:3]) for s in sources]
  assert all(s.startswith("test/") for s in sources)
  np.testing.assert_array_equal(test["image"][..., 0], images[index])
  np.testing.assert_array_equal(test["label"], np.searchsorted([0, 1, 7], labels[index]))
  assert [c.decode() for c in test["caption"]] == [f"digit number {i}" for i in index]
  # The train pipeline reads it too (shuffled file reading, batches of fixed shape).
  batch = next(pipeline.make_train_iterator(
      dict(name="own_photos", data_dir=str(tmp_path / "tfds"), shuffle_buffer=32,
           preprocess_train="to_float|keep('image', 'label')"), batch_size=6, seed=0))
  assert batch["image"].shape == (6, 28, 28, 1) and batch["label"].shape == (6,)


def test_fraction_split_is_seeded_and_stratified(small_digits, tmp_path):
  images, labels = small_digits
  for i, (im, y) in enumerate(zip(images, labels)):
    write_png(tmp_path / "src" / str(y) / f"{i}.png", im)
  kwargs = dict(split_fraction=0.25, seed=3)
  b1, _ = prepare("image_folder", str(tmp_path / "src"), "a", str(tmp_path / "d1"), **kwargs)
  b2, _ = prepare("image_folder", str(tmp_path / "src"), "a", str(tmp_path / "d2"), **kwargs)
  b3, _ = prepare("image_folder", str(tmp_path / "src"), "a", str(tmp_path / "d3"),
                  split_fraction=0.25, seed=4)
  ids = lambda b, s: [int(x["id"]) for x in b.as_dataset(split=s)]  # noqa: E731
  assert ids(b1, "test") == ids(b2, "test") and ids(b1, "train") == ids(b2, "train")
  assert sorted(ids(b1, "test")) != sorted(ids(b3, "test"))
  test_labels = [int(x["label"]) for x in b1.as_dataset(split="test")]
  assert np.bincount(test_labels).tolist() == [2, 2, 2]   # 25% of each class's 8


def test_csv_text_labels_split_column_and_ner_tags(tmp_path):
  lines = ["text,topic,tags,part"]
  words = [("cheap flights to Paris", "travel", "O O O B-LOC"),
           ("Alice met Bob", "people", "B-PER O B-PER"),
           ("rain in Oslo today", "weather", "O O B-LOC O")]
  for i in range(12):
    text, topic, tags = words[i % 3]
    lines.append(f"{text},{topic},{tags},{'test' if i >= 9 else 'train'}")
  (tmp_path / "t.csv").write_text("\n".join(lines) + "\n")
  builder, summary = prepare("csv", str(tmp_path / "t.csv"), "own_text", str(tmp_path / "d"),
                             label_column="topic", tags_column="tags", split_column="part")
  assert summary["splits"] == {"test": 3, "train": 9}
  assert builder.info.features["topic"].names == ["people", "travel", "weather"]
  assert builder.info.features["ner"].feature.names == ["B-LOC", "B-PER", "O"]
  test = read_split("own_text", tmp_path / "d", "test", "keep('text', 'topic', 'id')")
  assert [t.decode() for t in test["text"]] == [words[i % 3][0] for i in (9, 10, 11)]
  assert test["topic"].tolist() == [1, 0, 2]
  ner = {int(x["id"]): x["ner"].numpy().tolist() for x in
         pipeline.get_builder(dict(name="own_text", data_dir=str(tmp_path / "d")))
         .as_dataset(split="train")}
  assert ner[1] == [1, 2, 1]


def test_jsonl_and_conll(tmp_path):
  rows = [{"text": f"review {i}", "label": "pos" if i % 2 else "neg"} for i in range(10)]
  (tmp_path / "r.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
  prepare("jsonl", str(tmp_path / "r.jsonl"), "own_reviews", str(tmp_path / "d"),
          split_fraction=0.2)
  both = [read_split("own_reviews", tmp_path / "d", s) for s in ("train", "test")]
  ids = np.concatenate([b["id"] for b in both])
  texts = np.concatenate([b["text"] for b in both])
  labels = np.concatenate([b["label"] for b in both])
  assert sorted(ids.tolist()) == list(range(10))
  assert [t.decode() for t in texts] == [f"review {i}" for i in ids]
  assert labels.tolist() == [int(i % 2 == 1) for i in ids]   # ['neg', 'pos']
  (tmp_path / "conll").mkdir()
  (tmp_path / "conll" / "train.txt").write_text(
      "-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n")
  (tmp_path / "conll" / "test.txt").write_text("Bonn NNP B-NP B-LOC\n. . O O\n")
  builder, summary = prepare("conll", str(tmp_path / "conll"), "own_ner", str(tmp_path / "d"))
  assert summary["splits"] == {"test": 1, "train": 2}
  names = builder.info.features["ner"].feature.names
  (test,) = list(builder.as_dataset(split="test"))
  assert [t.decode() for t in test["tokens"].numpy()] == ["Bonn", "."]
  assert [names[t] for t in test["ner"].numpy()] == ["B-LOC", "O"]


def test_wav_folder_resampled_to_the_configured_rate(tmp_path):
  for i in range(6):
    write_wav(tmp_path / "wav" / ("low" if i < 3 else "high") / f"{i}.wav",
              tone(300 if i < 3 else 1200, 16000), 16000)
  builder, _ = prepare("wav_folder", str(tmp_path / "wav"), "own_tones", str(tmp_path / "d"),
                       split_fraction=0.0, sample_rate=8000)
  assert builder.info.features["audio"].sample_rate == 8000
  train = read_split("own_tones", tmp_path / "d", "train")
  assert train["audio"].shape == (6, 800)               # 0.1 s at 8 kHz
  for wav, label in zip(train["audio"], train["label"]):
    freq = np.argmax(np.abs(np.fft.rfft(wav))) * 8000 / 800
    assert freq == (1200 if label == 0 else 300)        # classes sorted: high, low
  np.testing.assert_allclose(train["audio"][train["label"] == 1][0], tone(300, 8000),
                             atol=400)   # the same sine, sampled at 8 kHz


def test_npz_and_idx_arrays(small_digits, tmp_path):
  images, labels = small_digits
  np.savez(tmp_path / "a.npz", x_train=images[:20], y_train=labels[:20],
           x_test=images[20:], y_test=labels[20:])
  prepare("npz", str(tmp_path / "a.npz"), "own_arrays", str(tmp_path / "d"))
  test = read_split("own_arrays", tmp_path / "d", "test")
  np.testing.assert_array_equal(test["image"][..., 0], images[20:])
  np.testing.assert_array_equal(test["label"], labels[20:])
  (tmp_path / "idx").mkdir()
  for prefix, rows in (("train", slice(0, 20)), ("t10k", slice(20, 24))):
    im, lab = images[rows], labels[rows].astype(np.uint8)
    head = bytes([0, 0, 8, 3]) + b"".join(int(d).to_bytes(4, "big") for d in im.shape)
    with gzip.open(tmp_path / "idx" / f"{prefix}-images-idx3-ubyte.gz", "wb") as f:
      f.write(head + im.tobytes())
    (tmp_path / "idx" / f"{prefix}-labels-idx1-ubyte").write_bytes(
        bytes([0, 0, 8, 1]) + len(lab).to_bytes(4, "big") + lab.tobytes())
  prepare("idx", str(tmp_path / "idx"), "own_idx", str(tmp_path / "d"))
  train = read_split("own_idx", tmp_path / "d", "train")
  np.testing.assert_array_equal(train["image"][..., 0], images[:20])
  np.testing.assert_array_equal(train["label"], labels[:20])


def test_paired_image_text_audio_records(small_digits, tmp_path):
  images, labels = small_digits
  rows = []
  for i in range(8):
    write_png(tmp_path / "img" / f"{i}.png", images[i * 3])
    write_wav(tmp_path / "wav" / f"{i}.wav", tone(400 + 100 * i, 8000, 0.25), 8000)
    rows.append(dict(image=f"img/{i}.png", text=f"caption {i}", audio=f"wav/{i}.wav",
                     label=str(labels[i * 3]), split="test" if i < 2 else "train"))
  (tmp_path / "pairs.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
  builder, summary = prepare("pairs", str(tmp_path / "pairs.jsonl"), "own_pairs",
                             str(tmp_path / "d"))
  assert summary["splits"] == {"test": 2, "train": 6}
  assert set(builder.info.features) >= {"image", "caption", "audio", "label"}
  test = read_split("own_pairs", tmp_path / "d", "test")
  np.testing.assert_array_equal(test["image"][..., 0], images[[0, 3]])
  assert [c.decode() for c in test["caption"]] == ["caption 0", "caption 1"]
  np.testing.assert_array_equal(test["audio"][1], tone(500, 8000, 0.25))
