"""Train/eval iterators: determinism, exact resume, eval coverage, sharding, errors."""
import importlib.resources
import importlib.util
import itertools
import subprocess
import sys
import time

import numpy as np
import pytest

import mmjax.data as data
from mmjax.data import pipeline
from mmjax.errors import ConfigError, DataError

TRAIN = ("to_float|random_crop(28, pad=2)|flip_lr|rotate(15)|tokenize(max_len=24)|"
         "log_mel|audio_to_float|keep('image', 'label', 'text', 'text_mask', 'audio', "
         "'spectrogram', 'id')")
EVAL = "to_float|keep('image', 'label', 'id')"


@pytest.fixture
def cfg(digits_dir):
  return dict(name="mmjax_digits", data_dir=digits_dir, preprocess_train=TRAIN,
              preprocess_eval=EVAL, shuffle_buffer=10_000)


def take(it, n):
  return list(itertools.islice(it, n))


def assert_batches_equal(a, b):
  assert a.keys() == b.keys()
  for k in a:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_train_batch_layout(cfg):
  (batch,) = take(data.make_train_iterator(cfg, batch_size=8, seed=0), 1)
  want = {"image": ((8, 28, 28, 1), np.float32), "label": ((8,), np.int32),
          "text": ((8, 24), np.int32), "text_mask": ((8, 24), np.int32),
          "audio": ((8, 2000), np.float32), "spectrogram": ((8, 64, 28), np.float32),
          "id": ((8,), np.int32)}
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == want
  assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
  assert (batch["text"][:, 0] == 1).all() and np.abs(batch["audio"]).max() <= 1.0


def test_same_seed_same_batches_other_seed_differs(cfg):
  a = take(data.make_train_iterator(cfg, batch_size=16, seed=1), 3)
  b = take(data.make_train_iterator(cfg, batch_size=16, seed=1), 3)
  c = take(data.make_train_iterator(cfg, batch_size=16, seed=2), 3)
  for x, y in zip(a, b):
    assert_batches_equal(x, y)
  assert not np.array_equal(a[0]["id"], c[0]["id"])


def test_same_examples_get_different_augmentation_under_other_seed(cfg):
  """Two seeds that happen to read the same example still augment it differently."""
  cfg = {**cfg, "shuffle_buffer": 1}  # no example shuffle: both seeds read file order
  a = take(data.make_train_iterator(cfg, batch_size=16, seed=1), 1)[0]
  b = take(data.make_train_iterator(cfg, batch_size=16, seed=2), 1)[0]
  np.testing.assert_array_equal(a["id"], b["id"])
  assert not np.array_equal(a["image"], b["image"])


def assert_resumes_exactly(cfg, *, batch_size: int, start_batch: int, count: int):
  """Batches start_batch.. of a fresh iterator equal those of one started there."""
  fresh = take(data.make_train_iterator(cfg, batch_size=batch_size, seed=5),
               start_batch + count)
  resumed = take(data.make_train_iterator(cfg, batch_size=batch_size, seed=5,
                                          start_batch=start_batch), count)
  for x, y in zip(fresh[start_batch:], resumed):
    assert_batches_equal(x, y)


@pytest.mark.parametrize("start_batch", [3, 14])
def test_start_batch_resumes_exactly(cfg, start_batch):
  # 4000 / 256 = 15.6 batches per epoch: start_batch=14 resumes across the epoch boundary.
  assert_resumes_exactly(cfg, batch_size=256, start_batch=start_batch, count=3)


def test_epochs_cover_the_split_and_reshuffle(cfg):
  cfg = {**cfg, "preprocess_train": "keep('id')"}
  epochs = take(data.make_train_iterator(cfg, batch_size=4000, seed=0), 2)
  for e in epochs:
    assert len(set(e["id"].tolist())) == 4000
  assert not np.array_equal(epochs[0]["id"], epochs[1]["id"])


def eval_ids(cfg, batch_size):
  it = data.make_eval_iterator(cfg, batch_size=batch_size)
  batches = list(it)
  assert len(batches) == len(it)
  return batches


@pytest.mark.parametrize("batch_size", [300, 1000, 4096])
def test_eval_covers_every_example_once(cfg, digits_split, batch_size):
  batches = eval_ids(cfg, batch_size)
  assert len(batches) == -(-1000 // batch_size)
  for b in batches:
    assert b["image"].shape == (batch_size, 28, 28, 1) and b["mask"].dtype == np.float32
  mask = np.concatenate([b["mask"] for b in batches])
  ids = np.concatenate([b["id"] for b in batches])
  images = np.concatenate([b["image"] for b in batches])
  assert mask.sum() == 1000 and (mask[:1000] == 1).all() and (mask[1000:] == 0).all()
  assert sorted(ids[mask == 1].tolist()) == sorted(digits_split["test"]["id"].tolist())
  assert (images[mask == 0] == 0).all()


def test_per_host_shards(cfg, monkeypatch):
  """Each process reads a disjoint shard; eval hosts stay in lockstep."""
  cfg = {**cfg, "preprocess_train": "keep('id')"}
  train_ids, eval_ids_, lengths = [], [], []
  for index in range(3):
    monkeypatch.setattr(pipeline, "process_index_and_count", lambda i=index: (i, 3))
    (b,) = take(data.make_train_iterator(cfg, batch_size=1333, seed=0), 1)
    train_ids.append(set(b["id"].tolist()))
    it = data.make_eval_iterator(cfg, batch_size=100)
    batches = list(it)
    lengths.append(len(batches))
    eval_ids_ += [i for bb in batches for i, m in zip(bb["id"], bb["mask"]) if m]
  assert all(len(s) == 1333 for s in train_ids)
  assert not (train_ids[0] & train_ids[1] or train_ids[1] & train_ids[2])
  assert lengths == [4, 4, 4]  # 334/333/333 examples, padded to the same batch count
  assert len(eval_ids_) == len(set(eval_ids_)) == 1000


def assert_shards_match_processes(cfg, monkeypatch, keys=("id",), steps=3):
  """data.shards=2 on one process (batch 8) yields the batches of two processes (batch
  4 each) side by side, and the two read different examples. -> the one-process batches."""
  one = take(data.make_train_iterator({**cfg, "shards": 2}, batch_size=8, seed=3), steps)
  parts = []
  for index in range(2):
    monkeypatch.setattr(pipeline, "process_index_and_count", lambda i=index: (i, 2))
    parts.append(take(data.make_train_iterator(cfg, batch_size=4, seed=3), steps))
  for step in range(steps):
    for key in keys:
      np.testing.assert_array_equal(
          one[step][key], np.concatenate([parts[0][step][key], parts[1][step][key]]))
  assert not set(parts[0][0]["id"].tolist()) & set(parts[1][0]["id"].tolist())
  return one


def test_shards_make_one_process_see_the_batches_of_several(cfg, monkeypatch):
  """data.shards=2 on 1 process yields exactly the global batches of 2 processes (one
  shard each), resumes exactly, and must divide into processes and the batch."""
  cfg = {**cfg, "preprocess_train": "random_crop(28, pad=2)|keep('id', 'image')"}
  one = assert_shards_match_processes(cfg, monkeypatch, keys=("id", "image"))
  monkeypatch.setattr(pipeline, "process_index_and_count", lambda: (0, 1))
  (resumed,) = take(data.make_train_iterator({**cfg, "shards": 2}, batch_size=8, seed=3,
                                             start_batch=2), 1)
  assert_batches_equal(resumed, one[2])
  with pytest.raises(ConfigError, match="data.shards=3"):
    data.make_train_iterator({**cfg, "shards": 3}, batch_size=8, seed=0)


def test_dataset_info(cfg):
  info = data.dataset_info({**cfg, "train_split": "train[:90%]"})
  assert info["name"] == "mmjax_digits/1.0.0" and info["num_classes"] == 10
  assert info["splits"] == {"train": 4000, "test": 1000}
  assert info["train_examples"] == 3600 and info["eval_examples"] == 1000
  assert info["features"]["audio"] == {"shape": (2000,), "dtype": "int16"}
  assert info["train_element"]["spectrogram"] == {"shape": (64, 28), "dtype": "float32"}
  assert info["eval_element"]["mask"]["dtype"] == "float32"


def test_config_dict_and_sub_split(cfg):
  from ml_collections import ConfigDict
  c = ConfigDict({**cfg, "train_split": "train[:10%]", "preprocess_train": "keep('id')"})
  (b,) = take(data.make_train_iterator(c, batch_size=400, seed=0), 1)
  assert len(set(b["id"].tolist())) == 400


# ------------------------------------------------------------------------------- errors
def test_unknown_op(cfg):
  with pytest.raises(ConfigError, match="Unknown preprocessing op 'flip_rl'.*flip_lr"):
    data.make_train_iterator({**cfg, "preprocess_train": "to_float|flip_rl"},
                             batch_size=8, seed=0)


def test_unknown_dataset(tmp_path, no_network):
  with pytest.raises(DataError, match="Unknown dataset 'mnistt'.*'mnist'"):
    data.make_train_iterator({"name": "mnistt", "data_dir": str(tmp_path)},
                             batch_size=8, seed=0)


def test_unprepared_real_dataset_says_how_to_prepare(tmp_path, no_network):
  start = time.perf_counter()
  with pytest.raises(DataError) as e:
    data.make_eval_iterator({"name": "cifar10", "data_dir": str(tmp_path)}, batch_size=8)
  assert time.perf_counter() - start < 10
  msg = str(e.value)
  assert "not prepared" in msg and f"tfds build cifar10 --data_dir={tmp_path}" in msg
  assert "download=True" in msg


@pytest.mark.parametrize("download", [False, True])
def test_manual_download_dataset_says_so_instead_of_offering_a_download(tmp_path, download):
  """imagenet2012 cannot be fetched by tfds: the error gives its instructions and the
  --manual_dir command whatever config.data.download says, and touches no network."""
  with pytest.raises(DataError) as e:
    data.make_eval_iterator({"name": "imagenet2012", "data_dir": str(tmp_path),
                             "download": download}, batch_size=8)
  msg = str(e.value)
  assert "needs a manual download" in msg and "ILSVRC2012" in msg
  assert f"tfds build imagenet2012 --data_dir={tmp_path} --manual_dir=DIR" in msg
  assert "download=True" not in msg


def test_download_without_network_fails_fast(tmp_path, monkeypatch, no_network):
  if importlib.util.find_spec("importlib_resources") is None:
    # tfds 4.9.x needs it to download (tensorflow/datasets#11212); check the message,
    # then stand the stdlib module (its origin) in for it to reach the network check.
    with pytest.raises(DataError, match="importlib_resources"):
      data.make_train_iterator({"name": "cifar10", "data_dir": str(tmp_path),
                                "download": True}, batch_size=8, seed=0)
    monkeypatch.setitem(sys.modules, "importlib_resources", importlib.resources)
  for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY",
              "all_proxy"):
    monkeypatch.delenv(var, raising=False)
  start = time.perf_counter()
  with pytest.raises(DataError, match="network is unreachable.*tfds build"):
    data.make_train_iterator({"name": "cifar10", "data_dir": str(tmp_path),
                              "download": True}, batch_size=8, seed=0)
  assert time.perf_counter() - start < 10


def test_bad_split(cfg):
  with pytest.raises(DataError, match="Bad split 'trian' .train_split.*'test', 'train'"):
    data.make_train_iterator({**cfg, "train_split": "trian"}, batch_size=8, seed=0)
  with pytest.raises(DataError, match=r"Bad split 'test\[:200%\]' .eval_split"):
    data.make_eval_iterator({**cfg, "eval_split": "test[:200%]"}, batch_size=8)


def test_train_batch_larger_than_shard(cfg):
  with pytest.raises(ConfigError, match="larger than a shard"):
    data.make_train_iterator(cfg, batch_size=4001, seed=0)


def test_bad_version(cfg):
  with pytest.raises(DataError, match="2.0.0"):
    data.dataset_info({**cfg, "name": "mmjax_digits:2.0.0"})


def test_resume_in_a_new_process_matches(cfg, tmp_path):
  """A restarted program (new process, new TF runtime) resumes the same batch stream."""
  code = (
      "import sys, numpy as np, mmjax.data as d; "
      f"it = d.make_train_iterator({cfg!r}, batch_size=64, seed=9, start_batch=2); "
      "b = next(it); np.savez(sys.argv[1], **{k: v for k, v in b.items()})")
  out = str(tmp_path / "resumed.npz")
  subprocess.run([sys.executable, "-c", code, out], check=True, capture_output=True)
  fresh = take(data.make_train_iterator(cfg, batch_size=64, seed=9), 3)[2]
  with np.load(out) as saved:
    assert_batches_equal(fresh, dict(saved))
