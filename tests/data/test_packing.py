"""Sequence packing: documents -> full blocks in order with EOS, the fixed blocks per window
that make resuming exact, and the training pipeline with packing on the real captions."""
import numpy as np
import pytest
import tensorflow as tf

from mmjax import data
from mmjax.data import packing
from mmjax.errors import ConfigError


def _spec(**kw):
  return packing.pack_spec({"pack": {"length": 4, "documents": 3, "blocks": 2, **kw}})


def _documents(rows):
  """Ragged token lists -> a dataset of {'text': [6], 'text_mask': [6]} padded rows."""
  ids = np.zeros((len(rows), 6), np.int32)
  mask = np.zeros((len(rows), 6), np.int32)
  for i, row in enumerate(rows):
    ids[i, :len(row)], mask[i, :len(row)] = row, 1
  return tf.data.Dataset.from_tensor_slices({"text": ids, "text_mask": mask,
                                             "label": np.arange(len(rows))})


def _blocks(ds):
  out = list(ds.as_numpy_iterator())
  return [b["text"].tolist() for b in out], [b["text_mask"].tolist() for b in out]


def test_documents_fill_blocks_in_order_with_eos_and_the_overflow_is_dropped():
  docs = [[1, 2], [3, 4, 5], [6], [7, 8, 9, 10, 11, 12], [13], [14, 15]]
  blocks, masks = _blocks(packing.pack_dataset(_documents(docs), _spec(eos_id=99)))
  # Window 1: 1 2 E 3 4 5 E 6 E (9 tokens) -> 2 blocks of 4, the 9th token dropped.
  # Window 2: 7..12 E 13 E 14 15 E (12 tokens) -> the first 8.
  assert blocks == [[1, 2, 99, 3], [4, 5, 99, 6], [7, 8, 9, 10], [11, 12, 99, 13]]
  assert all(m == [1, 1, 1, 1] for m in masks)


def test_a_short_window_is_padded_with_mask_zero_and_labels_are_dropped():
  out = list(packing.pack_dataset(_documents([[5, 6, 7]]), _spec()).as_numpy_iterator())
  assert set(out[0]) == {"text", "text_mask"}
  assert [b["text"].tolist() for b in out] == [[5, 6, 7, 0], [0, 0, 0, 0]]
  assert [b["text_mask"].tolist() for b in out] == [[1, 1, 1, 0], [0, 0, 0, 0]]


def test_window_stats_measure_fill_and_dropped_tokens():
  spec = _spec(eos_id=99)   # windows of 3 documents -> 2 blocks of 4 = 8 slots
  # Windows of 2+3+1 (+3 EOS = 9 tokens: 8 kept, 1 dropped) and 1+1+1 (+3 = 6: 6 kept).
  stats = packing.window_stats([2, 3, 1, 1, 1, 1, 5], spec)   # the 7th: no full window
  assert stats == pytest.approx({"fill": 14 / 16, "dropped": 1 / 15}, rel=1e-12)
  with pytest.raises(ConfigError, match="at least 3 document lengths"):
    packing.window_stats([4, 4], spec)


def test_window_and_offset_counts_whole_windows_of_documents():
  spec = _spec()
  assert [spec.window_and_offset(k) for k in (0, 1, 2, 5)] == [(0, 0), (0, 1), (3, 0),
                                                               (6, 1)]


@pytest.mark.parametrize("pack, match", [
    (dict(length=4, documents=0, blocks=2), "documents and blocks >= 1"),
    (dict(length=4, blocks=0), "documents and blocks >= 1"),
    (dict(length=4.5, blocks=2), "data.pack.length must be an integer"),
    (dict(length=4, blocks=2, eos_id=-2), "eos_id=-2 must be a token id or -1"),
    (dict(length=4, blocks=2, size=3), r"Unknown data.pack keys \['size'\]"),
])
def test_bad_pack_settings_fail_with_the_key_named(pack, match):
  with pytest.raises(ConfigError, match=match):
    packing.pack_spec({"pack": pack})


def test_packing_is_off_by_default():
  assert packing.pack_spec({}) is None
  assert packing.pack_spec({"pack": {"length": 0}}) is None


def _caption_config(digits_data_dir, **pack):
  return {"name": "mmjax_digits", "data_dir": digits_data_dir, "shuffle_buffer": 64,
          "preprocess_train": "tokenize('caption', 'text', max_len=48)|keep('text', 'text_mask')",
          "pack": {"length": 32, "documents": 8, "blocks": 5, "eos_id": 2, **pack}}


def test_packed_training_stream_resumes_exactly_at_any_batch(digits_data_dir):
  """Batches of 3 blocks straddle windows of 5 blocks: starting at batch k gives exactly
  batches k, k+1, ... of a fresh iterator."""
  config = _caption_config(digits_data_dir)
  fresh = data.make_train_iterator(config, batch_size=3, seed=7)
  batches = [next(fresh) for _ in range(8)]
  for k in (1, 3, 5):
    resumed = data.make_train_iterator(config, batch_size=3, seed=7, start_batch=k)
    for want in batches[k:k + 3]:
      got = next(resumed)
      np.testing.assert_array_equal(got["text"], want["text"])
      np.testing.assert_array_equal(got["text_mask"], want["text_mask"])
  # Blocks are full: byte captions of ~20 tokens, 8 per window, fill 5 x 32 slots.
  assert batches[0]["text"].shape == (3, 32)
  assert np.mean([b["text_mask"].mean() for b in batches]) > 0.9
  assert (np.concatenate([b["text"] for b in batches]) == 2).sum() >= 8   # EOS tokens


def test_dataset_info_reports_the_packed_element(digits_data_dir):
  info = data.dataset_info(_caption_config(digits_data_dir))
  assert info["train_element"] == {"text": {"shape": (32,), "dtype": "int32"},
                                   "text_mask": {"shape": (32,), "dtype": "int32"}}


def test_packing_a_key_the_preprocessing_does_not_make_is_a_config_error(digits_data_dir):
  config = _caption_config(digits_data_dir, key="tokens")
  with pytest.raises(ConfigError, match="data.pack packs 'tokens'"):
    next(data.make_train_iterator(config, batch_size=3, seed=0))
