"""data.in_memory: held splits served by gathers - coverage, resume, shards, eval equality
with the tf.data iterator, and the errors that refuse it before any data is read."""
import ml_collections
import numpy as np
import pytest

import mmjax.data as data
from mmjax import config as config_lib
from mmjax.train import checks
from mmjax.data import in_memory
from mmjax.errors import ConfigError, DataError
from tests.data.test_pipeline import (assert_batches_equal, assert_resumes_exactly,
                                      assert_shards_match_processes, take)

HOST = "tokenize('caption', 'text', max_len=16)|keep('image', 'text', 'audio', 'label', 'id')"


@pytest.fixture
def cfg(digits_dir):
  return dict(name="mmjax_digits", data_dir=digits_dir, preprocess_train=HOST,
              preprocess_eval=HOST, in_memory=True)


# ------------------------------------------------------------------ the stream, in numpy
def test_positions_are_one_permutation_per_epoch_and_start_anywhere():
  n = 10
  stream = in_memory.shard_positions(7, 0, n, 0, 3 * n)
  epochs = stream.reshape(3, n)
  for e in epochs:
    assert sorted(e.tolist()) == list(range(n))
  assert not np.array_equal(epochs[0], epochs[1])
  # Any window, including one across an epoch boundary, is that slice of the stream.
  np.testing.assert_array_equal(in_memory.shard_positions(7, 0, n, 7, 9), stream[7:16])
  np.testing.assert_array_equal(in_memory.shard_positions(7, 0, n, 0, 3 * n), stream)
  assert not np.array_equal(in_memory.shard_positions(7, 1, n, 0, n), epochs[0])
  assert not np.array_equal(in_memory.shard_positions(8, 0, n, 0, n), epochs[0])


def test_train_batches_resume_and_concatenate_shards():
  shard0 = {"x": np.arange(10), "s": np.array([b"a%d" % i for i in range(10)], object)}
  shard1 = {"x": np.arange(100, 106), "s": np.array([b"b%d" % i for i in range(6)], object)}
  fresh = take(in_memory.train_batches([(0, shard0), (1, shard1)], shard_batch=4,
                                       seed=3), 6)
  resumed = take(in_memory.train_batches([(0, shard0), (1, shard1)], shard_batch=4, seed=3,
                                         start_batch=4), 2)
  for a, b in zip(fresh[4:], resumed):
    assert_batches_equal(a, b)
  xs = np.stack([b["x"] for b in fresh])            # [6 batches, 8]
  # Shard 0 fills the first half of each batch, shard 1 the second.
  assert (xs[:, :4] < 10).all() and (xs[:, 4:] >= 100).all()
  assert sorted(xs[:, 4:].reshape(-1)[:6].tolist()) == list(range(100, 106))
  assert [s.decode()[1:] for s in fresh[0]["s"][:4]] == [str(x) for x in xs[0, :4]]


def test_eval_batches_pad_with_zeros_and_mask():
  arrays = {"x": np.arange(1, 6, dtype=np.int32), "s": np.array([b"q"] * 5, object)}
  batches = list(in_memory.eval_batches(arrays, batch_size=2, num_batches=4))
  x = np.concatenate([b["x"] for b in batches])
  mask = np.concatenate([b["mask"] for b in batches])
  np.testing.assert_array_equal(x, [1, 2, 3, 4, 5, 0, 0, 0])
  np.testing.assert_array_equal(mask, [1, 1, 1, 1, 1, 0, 0, 0])
  assert mask.dtype == np.float32 and x.dtype == np.int32
  assert batches[3]["s"].tolist() == [b"", b""]


def test_check_fits_refuses_what_memory_cannot_hold():
  element = {"image": ((224, 224, 3), 1), "label": ((), 4)}     # 150,532 bytes
  in_memory.check_fits(1000, element, "train", memory=2**30)
  with pytest.raises(ConfigError, match=r"1\.4 GiB of train .*data.in_memory=False"):
    in_memory.check_fits(10_000, element, "train", memory=2**30)


# ------------------------------------------------------------------ through the pipeline
def test_train_epochs_cover_the_split(cfg):
  ids = np.concatenate([b["id"] for b in take(data.make_train_iterator(
      cfg, batch_size=80, seed=0), 100)]).reshape(2, 4000)     # 50 batches per epoch
  for epoch in ids:
    assert len(set(epoch.tolist())) == 4000
  assert not np.array_equal(ids[0], ids[1])


def test_train_batches_hold_the_tfdata_examples(cfg):
  """A held batch has the keys, dtypes and values the tf.data stream gives the same ids."""
  (held,) = take(data.make_train_iterator(cfg, batch_size=32, seed=1), 1)
  full = next(iter(data.make_train_iterator({**cfg, "in_memory": False, "shuffle_buffer": 1},
                                            batch_size=4000, seed=0)))
  by_id = {int(i): n for n, i in enumerate(full["id"])}
  rows = [by_id[int(i)] for i in held["id"]]
  assert held.keys() == full.keys()
  for k in held:
    assert held[k].dtype == full[k].dtype
    np.testing.assert_array_equal(held[k], full[k][rows], err_msg=k)


@pytest.mark.parametrize("start_batch", [2, 49])
def test_start_batch_resumes_exactly(cfg, start_batch):
  # 50 batches of 80 per epoch: start_batch=49 resumes across the epoch boundary.
  assert_resumes_exactly(cfg, batch_size=80, start_batch=start_batch, count=2)


def test_shards_on_one_process_match_two_processes(cfg, monkeypatch):
  assert_shards_match_processes(cfg, monkeypatch)


@pytest.mark.parametrize("batch_size", [300, 1000, 4096])
def test_eval_batches_equal_the_tfdata_iterator(cfg, batch_size):
  """Same order, padding and mask; a string key ('caption') pads with b''."""
  cfg = {**cfg, "preprocess_eval": "tokenize('caption', 'text', max_len=16)|"
                                   "keep('image', 'text', 'caption', 'label', 'id')"}
  held = list(data.make_eval_iterator(cfg, batch_size=batch_size))
  again = list(data.make_eval_iterator(cfg, batch_size=batch_size))  # reused, not re-read
  streamed = data.make_eval_iterator({**cfg, "in_memory": False}, batch_size=batch_size)
  assert len(held) == len(streamed) == -(-1000 // batch_size)
  for a, b, c in zip(held, again, streamed):
    assert_batches_equal(a, c)
    assert_batches_equal(b, c)


def test_quickstart_config_holds_its_data(digits_dir):
  """The digits configs hold their data and apply the device ops to held batches."""
  from configs import quickstart
  c = quickstart.get_config()
  c.data.data_dir = digits_dir
  assert c.data.in_memory
  (batch,) = take(data.make_eval_iterator(c.data, batch_size=64), 1)
  assert batch["spectrogram"].shape == (64, 64, 28) and "audio" not in batch
  (train,) = take(data.make_train_iterator(c.data, batch_size=64, seed=0), 1)
  assert train["image"].dtype == np.uint8 and train["audio"].shape == (64, 2000)


# ------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("spec", ["random_crop(28, pad=2)|keep('image', 'label')",
                                  "flip_lr|keep('image', 'label')",
                                  "audio_noise|keep('audio', 'label')"])
def test_random_host_ops_are_refused_before_reading(spec, tmp_path):
  """The iterator and the config checks both refuse (no dataset is even prepared)."""
  cfg = dict(name="mmjax_digits", data_dir=str(tmp_path), preprocess_train=spec,
             in_memory=True)
  with pytest.raises(ConfigError, match="device_preprocess_train .*in_memory=False"):
    data.make_train_iterator(cfg, batch_size=8, seed=0)
  assert not any(tmp_path.iterdir())
  c = config_lib.default_config()
  c.data.update(ml_collections.ConfigDict(cfg))
  with pytest.raises(ConfigError, match="random host op"):
    checks.check_config(c, "train")


def test_packing_is_refused(cfg):
  with pytest.raises(ConfigError, match="data.pack"):
    in_memory.check_config(ml_collections.ConfigDict(
        {**cfg, "pack": {"length": 64, "documents": 8, "blocks": 4}}))


def test_too_big_for_memory_is_a_config_error(cfg, monkeypatch):
  monkeypatch.setattr(in_memory, "_physical_memory", lambda: 2**20)
  with pytest.raises(ConfigError, match="more than 50% of this machine's"):
    data.make_train_iterator(cfg, batch_size=8, seed=0)


def test_variable_shapes_cannot_be_held(cfg):
  # caption_ner splits each caption into its words: [n] differs between examples.
  with pytest.raises(DataError, match="'words' with variable shape .*data.preprocess_train"):
    data.make_train_iterator({**cfg, "preprocess_train": "caption_ner|keep('words')"},
                             batch_size=8, seed=0)
