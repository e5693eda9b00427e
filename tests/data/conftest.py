"""Shared fixtures for tests/data: one offline-prepared copy of `mmjax_digits` per session."""
from __future__ import annotations

import contextlib
import socket
import time

import pytest


@contextlib.contextmanager
def network_blocked():
  """Any socket connection attempt raises OSError (so a download cannot even start)."""
  def refuse(*args, **kwargs):
    raise OSError("network access blocked by the test")
  with pytest.MonkeyPatch.context() as mp:
    mp.setattr(socket.socket, "connect", refuse)
    mp.setattr(socket.socket, "connect_ex", refuse)
    mp.setattr(socket, "create_connection", refuse)
    mp.setattr(socket, "getaddrinfo", refuse)
    yield


@pytest.fixture
def no_network():
  """Blocks socket connections for the duration of a test."""
  with network_blocked():
    yield


@pytest.fixture(scope="session")
def sp_model(tmp_path_factory) -> str:
  """Path of a tiny SentencePiece model trained offline (unk=0, bos=1, eos=2, no pad)."""
  import numpy as np
  import sentencepiece as spm
  words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
  rng = np.random.default_rng(0)
  lines = [f"a handwritten {w} the digit {i} written by hand a thick {w}"
           for _ in range(20) for i, w in enumerate(rng.permutation(words))]
  tmp = tmp_path_factory.mktemp("sentencepiece")
  (tmp / "corpus.txt").write_text("\n".join(lines))
  spm.SentencePieceTrainer.train(input=str(tmp / "corpus.txt"), model_prefix=str(tmp / "sp"),
                                 vocab_size=40, model_type="unigram", minloglevel=2)
  return str(tmp / "sp.model")


@pytest.fixture(scope="session")
def digits_prepared(tmp_path_factory):
  """(data_dir, seconds to prepare): `mmjax_digits` prepared with the network blocked."""
  from mmjax.data.embedded import digits
  data_dir = str(tmp_path_factory.mktemp("tfds"))
  start = time.perf_counter()
  with network_blocked():
    digits.ensure_prepared(data_dir)
  return data_dir, time.perf_counter() - start


@pytest.fixture(scope="session")
def digits_dir(digits_prepared):
  return digits_prepared[0]


@pytest.fixture(scope="session")
def digits_split(digits_dir):
  """{'train': {...}, 'test': {...}}: every example of each split as numpy arrays."""
  import tensorflow_datasets as tfds
  from mmjax.data.embedded import digits
  builder = digits.MmjaxDigits(data_dir=digits_dir)
  out = {}
  for split in ("train", "test"):
    ds = builder.as_dataset(split=split, batch_size=-1)
    out[split] = tfds.as_numpy(ds)
  return out
