"""Datasets held in host memory (`data.in_memory=True`): batches served by numpy gathers.

For a dataset that fits in memory (the embedded digits: 4,000 training examples, 20 MiB),
the tf.data stream spends its CPU time per element - reading and parsing records,
decoding, tokenizing, shuffling, batching - which on a small machine is taken from the
train step (docs/benchmarks.md). Here each split is read once through the same TFDS
pipeline (`pipeline._dataset`, deterministic host ops applied), kept as numpy arrays,
and every batch is one gather:

  train, per shard: epoch e is the permutation `default_rng((seed, shard, e))` of the
  shard's examples (a full shuffle, whatever `shuffle_buffer` says); the stream is the
  epochs back to back, so `start_batch=k` starts at example k * shard_batch at no cost.
  eval: the split in file order, zero-padded with `mask` = 0 exactly like the tf.data
  eval iterator (whose batches it equals), loaded once per process and reused.

Random host ops (registered with random=True) would be frozen into the cached copy, so a
spec with any of them is a ConfigError: put the augmentation in
`data.device_preprocess_train`, where it runs per batch. Neither TensorFlow nor JAX is
imported here (the host op registry loads TensorFlow only to build an op); the caller
passes the tf.data dataset to read.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Iterator, Sequence

import numpy as np

from mmjax.data import ops
from mmjax.data.spec import parse_spec
from mmjax.errors import ConfigError, DataError

Arrays = dict[str, np.ndarray]
# At most this share of the machine's physical memory may be held (checked before reading).
MAX_MEMORY_SHARE = 0.5
LOAD_CHUNK = 1024  # Examples per tf.data batch while reading a split.


def check_config(data_config: Any) -> None:
  """ConfigError unless `data.in_memory` can hold this config's training stream: the host
  train spec has no random ops and packing is off. No-op when in_memory is off."""
  if not data_config.get("in_memory", False):
    return
  random_ops = ops.OPS.names(random=True)
  random = [name for name, _, _ in parse_spec(data_config.get("preprocess_train"))
            if name in random_ops]
  if random:
    raise ConfigError(
        f"data.in_memory=True keeps each training example as preprocessed once, so the "
        f"random host op(s) {random} in data.preprocess_train would draw once and never "
        "again. Move them to data.device_preprocess_train (batched on the devices, a new "
        "draw every step) or set data.in_memory=False.")
  pack = data_config.get("pack", None)
  if pack is not None and pack.get("length", 0):
    raise ConfigError("data.in_memory=True cannot be combined with data.pack (packing "
                      "runs on the tf.data stream); set data.pack.length=0 or "
                      "data.in_memory=False.")


def _physical_memory() -> int | None:
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):  # Not reported on this platform.
    return None


def example_bytes(element: dict[str, tuple[tuple[int, ...], int]]) -> int:
  """{key: (shape, bytes per value)} of one example -> its size in bytes."""
  return sum(int(np.prod(shape, dtype=np.int64)) * itemsize
             for shape, itemsize in element.values())


def check_fits(num_examples: int, element: dict[str, tuple[tuple[int, ...], int]],
               what: str, memory: int | None = None) -> None:
  """ConfigError if `num_examples` examples of `element` ({key: (shape, itemsize)})
  would take more than MAX_MEMORY_SHARE of the physical memory (`memory` bytes, default
  this machine's)."""
  memory = _physical_memory() if memory is None else memory
  need = num_examples * example_bytes(element)
  if memory and need > MAX_MEMORY_SHARE * memory:
    raise ConfigError(
        f"data.in_memory=True would hold {need / 2**30:.1f} GiB of {what} "
        f"({num_examples} examples), more than {MAX_MEMORY_SHARE:.0%} of this machine's "
        f"{memory / 2**30:.1f} GiB; set data.in_memory=False to stream it with tf.data.")


def load(batches: Iterator[Arrays], num_examples: int, what: str) -> Arrays:
  """Concatenates a split's numpy batches into {key: [num_examples, ...]} arrays,
  checking the count (DataError if the split yielded another number)."""
  chunks = list(batches)
  if not chunks:
    raise DataError(f"{what} is empty; data.in_memory has nothing to hold.")
  arrays = {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}
  got = len(next(iter(arrays.values())))
  if got != num_examples:
    raise DataError(f"{what} yielded {got} examples, but its split info says "
                    f"{num_examples}; re-prepare the dataset (`tfds build`).")
  return arrays


@functools.lru_cache(maxsize=8)  # A batch reads its epoch's order; draw it once.
def _epoch_order(seed: int, shard: int, epoch: int, n: int) -> np.ndarray:
  order = np.random.default_rng((seed, shard, epoch)).permutation(n)
  order.setflags(write=False)
  return order


def shard_positions(seed: int, shard: int, n: int, start: int, count: int) -> np.ndarray:
  """Indices [count] into a shard of `n` examples of stream positions start..start+count-1:
  the shard's per-epoch permutations, back to back."""
  out, position = [], start
  while position < start + count:
    epoch, offset = divmod(position, n)
    take = min(n - offset, start + count - position)
    out.append(_epoch_order(seed, shard, epoch, n)[offset:offset + take])
    position += take
  return np.concatenate(out)


def train_batches(shards: Sequence[tuple[int, Arrays]], *, shard_batch: int, seed: int,
                  start_batch: int = 0) -> Iterator[Arrays]:
  """Endless process batches: for each (shard index, arrays) in `shards`, `shard_batch`
  examples of its stream, concatenated in shard order; batch k of a fresh iterator is
  the first batch of one started at `start_batch=k`."""
  seed = int(seed) % (2**63)
  sizes = [len(next(iter(arrays.values()))) for _, arrays in shards]
  batch = int(start_batch)
  while True:
    parts = []
    for (shard, arrays), n in zip(shards, sizes):
      index = shard_positions(seed, shard, n, batch * shard_batch, shard_batch)
      parts.append({k: v[index] for k, v in arrays.items()})
    yield parts[0] if len(parts) == 1 else {
        k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    batch += 1


# Folded into the Poisson sampler's seed, so its draws never equal the shuffles'.
_POISSON_STREAM = 0x9015


def poisson_indices(seed: int, shard: int, batch: int, n: int, rate: float, cap: int
                    ) -> np.ndarray:
  """Indices into a shard of `n` examples drawn for `batch`: each example independently
  with probability `rate` (Poisson sampling, what DP accountants assume), in random
  order, at most `cap` of them (the rest dropped at random: a truncation whose
  probability mmjax.privacy.accounting bounds)."""
  rng = np.random.default_rng((seed, shard, batch, _POISSON_STREAM))
  chosen = np.flatnonzero(rng.random(n) < rate)
  return rng.permutation(chosen)[:cap]


def poisson_batches(shards: Sequence[tuple[int, Arrays]], *, rate: float, shard_batch: int,
                    seed: int, start_batch: int = 0) -> Iterator[Arrays]:
  """Endless process batches of Poisson samples: for each (shard index, arrays) in
  `shards`, the examples `poisson_indices` draws for that batch, zero-padded to
  `shard_batch` with `mask` float32 = 0, concatenated in shard order. Batch k depends on
  (seed, shard, k) alone, so a resumed iterator (`start_batch=k`) continues exactly."""
  seed = int(seed) % (2**63)
  batch = int(start_batch)
  while True:
    parts = []
    for shard, arrays in shards:
      n = len(next(iter(arrays.values())))
      index = poisson_indices(seed, shard, batch, n, rate, shard_batch)
      pad = shard_batch - len(index)
      part = {k: np.concatenate([v[index], _padding(v, pad)]) for k, v in arrays.items()}
      part["mask"] = np.concatenate([np.ones(len(index), np.float32),
                                     np.zeros(pad, np.float32)])
      parts.append(part)
    yield parts[0] if len(parts) == 1 else {
        k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    batch += 1


def _padding(array: np.ndarray, count: int) -> np.ndarray:
  if array.dtype == object:  # Strings pad with b'', as tf.zeros does for tf.string.
    return np.full((count,) + array.shape[1:], b"", dtype=object)
  return np.zeros((count,) + array.shape[1:], array.dtype)


def eval_batches(arrays: Arrays, *, batch_size: int, num_batches: int) -> Iterator[Arrays]:
  """`num_batches` batches of `batch_size` in order, with `mask` float32 [batch_size]:
  1 for the examples, 0 for the zero padding that follows them."""
  n = len(next(iter(arrays.values())))
  for b in range(num_batches):
    lo, hi = min(b * batch_size, n), min((b + 1) * batch_size, n)
    pad = batch_size - (hi - lo)
    batch = {k: np.concatenate([v[lo:hi], _padding(v, pad)]) if pad else v[lo:hi]
             for k, v in arrays.items()}
    batch["mask"] = np.concatenate([np.ones(hi - lo, np.float32), np.zeros(pad, np.float32)])
    yield batch


__all__ = ["check_config", "check_fits", "load", "train_batches", "eval_batches",
           "poisson_batches", "poisson_indices",
           "shard_positions", "MAX_MEMORY_SHARE"]
