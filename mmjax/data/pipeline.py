"""TFDS input pipelines: deterministic, resumable train iterators and padded eval iterators.

Train, per data shard: the split is cut into `data.shards` equal shards (default: one
per process) and each process reads only its own, shards/processes of them:
  read the shard -> shuffle (seeded, reshuffled each epoch) -> repeat -> enumerate
  -> skip(start_batch * shard_batch) -> decode images + preprocess with a stateless seed
  fold_in((seed, shard), element index) -> batch(drop_remainder); a process's batch is
  its shards' batches concatenated in shard order -> prefetch -> numpy (then, on the
  devices, `data.device_preprocess_train`: mmjax/data/device_ops.py).
Everything before the map is a pure function of `seed`, and the map is a pure function of
(seed, shard, index, example), so `start_batch=k` yields exactly batches k, k+1, ... of a
fresh iterator, while skipping costs only reading and shuffling (images are decoded after
the skip, and no preprocessing runs for skipped elements). Because the stream is defined
by shards, not processes, a run on one process with `data.shards=2` sees exactly the
global batches of a 2-process run: multi-host runs can be reproduced on one host.

With `data.pack` (mmjax/data/packing.py) the preprocessed documents of each shard are
packed into full token blocks before batching, a fixed number per window of documents, so
`start_batch=k` still skips whole windows before decoding and re-packs only one.

Eval, per host: one pass over the host's shard in file order, `mask` = 1 for real
examples, then zero-filled examples with `mask` = 0 up to a batch count that is the same
on every host (hosts stay in lockstep even when the shards differ by one example).
"""
from __future__ import annotations

import difflib
import importlib.util
import math
import os
import socket
import urllib.parse
from typing import Any, Callable, Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from mmjax.data import device_ops, in_memory, ops, packing
from mmjax.errors import ConfigError, DataError

if not os.environ.get("MMJAX_LIBRARY_LOGS"):
  # tqdm bars (escape codes in non-TTY logs) and "Unknown size" notices are library noise
  # in a training log; `python -m mmjax.main --library_logs` keeps them.
  tfds.disable_progress_bar()

EMBEDDED = ("mmjax_digits", "mmjax_colored_digits", "mmjax_visdial_digits")
_DEFAULTS = dict(name="mmjax_digits", data_dir=None, train_split="train", eval_split="test",
                 download=False, shuffle_buffer=10_000, preprocess_train=None,
                 preprocess_eval=None, prefetch=2, shards=0, pack=None, in_memory=False)
Batch = dict[str, np.ndarray]


def _get(cfg: Any, key: str) -> Any:
  """data_config[key] for a ConfigDict, dict or None, with the documented default."""
  if cfg is None:
    return _DEFAULTS[key]
  value = cfg.get(key, _DEFAULTS[key]) if hasattr(cfg, "get") else getattr(cfg, key, None)
  return _DEFAULTS[key] if value is None else value


def process_index_and_count() -> tuple[int, int]:
  """(jax.process_index(), jax.process_count()); jax is imported only for this."""
  import jax  # pylint: disable=g-import-not-at-top
  return jax.process_index(), jax.process_count()


def _manual_instructions(builder) -> str:
  """A dataset's manual-download instructions on one line ('' if it downloads itself)."""
  return " ".join(str(getattr(builder, "MANUAL_DOWNLOAD_INSTRUCTIONS", "") or "").split())


def _prepare_hint(name: str, root: str, builder=None) -> str:
  manual = _manual_instructions(builder) if builder is not None else ""
  if manual:  # e.g. imagenet2012, laion400m: tfds cannot fetch the files itself.
    return (f"{name!r} needs a manual download, which neither mmjax nor tfds can do: "
            f"{manual.rstrip('.')}. Put the files in a folder DIR and run `tfds build {name} "
            f"--data_dir={root} --manual_dir=DIR`")
  return (f"To prepare it offline, run `tfds build {name} --data_dir={root}` on a machine "
          f"with internet and copy its `{root}/{name.split(':')[0].split('/')[0]}` folder "
          "to the same place here")


def get_builder(data_config: Any) -> tfds.core.DatasetBuilder:
  """The prepared TFDS builder for `data_config.name` (DataError if it cannot be had).

  `mmjax_digits` is prepared on first use, offline. Other datasets are prepared only when
  `download=True`; otherwise an unprepared dataset is an immediate DataError.
  """
  name, data_dir = str(_get(data_config, "name")), _get(data_config, "data_dir")
  base = name.split(":")[0].split("/")[0]
  if base in EMBEDDED:
    # pylint: disable-next=g-import-not-at-top
    from mmjax.data.embedded import colored_digits, digits, visdial_digits  # registers all
    del colored_digits, digits, visdial_digits
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except tfds.core.DatasetNotFoundError:
    known = tfds.list_builders(with_community_datasets=False) + list(EMBEDDED)
    close = difflib.get_close_matches(base, known, n=3)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise DataError(f"Unknown dataset {name!r} (config.data.name): TFDS has no builder of "
                    f"that name and no prepared copy was found in data_dir "
                    f"{data_dir or 'None (the TFDS default)'}.{hint}") from None
  except Exception as e:  # e.g. a version that does not exist
    raise DataError(f"Cannot load dataset {name!r} (config.data.name): {e}") from None
  if builder.is_prepared():
    return builder
  root = str(builder.data_dir_root)
  if base in EMBEDDED:
    try:
      builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(try_download_gcs=False))
    except Exception:  # Another host sharing data_dir may have won the race to prepare.
      builder = tfds.builder(name, data_dir=data_dir)
      if not builder.is_prepared():
        raise
    return builder
  if _manual_instructions(builder):
    raise DataError(f"Dataset {name!r} is not prepared in data_dir {root!r}. "
                    f"{_prepare_hint(name, root, builder)}.")
  if not _get(data_config, "download"):
    raise DataError(f"Dataset {name!r} is not prepared in data_dir {root!r} and "
                    f"config.data.download is False, so mmjax will not download it. "
                    f"{_prepare_hint(name, root)}, or set --config.data.download=True.")
  _check_can_download(builder, name, root)
  try:
    builder.download_and_prepare()
  except Exception as e:  # Any failure here is reported the same way; the cause is kept.
    raise DataError(f"Downloading dataset {name!r} failed ({type(e).__name__}: {e}); the "
                    f"network may be unreachable. {_prepare_hint(name, root)}.") from e
  return builder


def _check_can_download(builder, name: str, root: str) -> None:
  """Fails fast where tfds would fail slowly (its downloader retries for ~3.5 minutes)."""
  if importlib.util.find_spec("importlib_resources") is None:
    # tensorflow-datasets 4.9.x imports it to download but does not depend on it
    # (tensorflow/datasets#11212).
    raise DataError(f"Cannot download dataset {name!r}: tensorflow-datasets needs the "
                    "`importlib_resources` package to download; `pip install "
                    f"importlib_resources`. {_prepare_hint(name, root)}.")
  if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY",
                                     "http_proxy", "ALL_PROXY", "all_proxy")):
    return  # Direct connections say nothing about a proxied network.
  try:
    urls = list(builder.url_infos or ())  # From the builder's checksums file, if any.
  except Exception:  # pylint: disable=broad-except
    urls = []
  hosts = sorted({(u.hostname, u.port or (443 if u.scheme == "https" else 80))
                  for u in map(urllib.parse.urlparse, urls)
                  if u.scheme in ("http", "https") and u.hostname})
  if not hosts:
    return
  host, port = hosts[0]
  try:
    socket.create_connection((host, port), timeout=10).close()
  except OSError as e:
    raise DataError(f"Cannot download dataset {name!r}: the network is unreachable "
                    f"({host}:{port}: {e}). {_prepare_hint(name, root)}.") from None


def _num_examples(builder, split, what: str) -> int:
  try:
    return int(builder.info.splits[split].num_examples)
  except (ValueError, KeyError, AssertionError) as e:
    raise DataError(f"Bad split {split!r} ({what}) for dataset {builder.info.full_name}: "
                    f"{e} Available splits: {sorted(builder.info.splits)}; sub-splits "
                    "look like 'train[:90%]' or 'train[1000:]'.") from None


def _host_split(builder, split: str, *, drop_remainder: bool, what: str):
  """(this host's sub-split, its size, size of the whole split)."""
  total = _num_examples(builder, split, what)
  index, count = process_index_and_count()
  host = tfds.even_splits(split, n=count, drop_remainder=drop_remainder)[index]
  return host, _num_examples(builder, host, what), total


def process_shards(data_config: Any, batch_size: int) -> tuple[int, list[int]]:
  """(number of train shards, indices of those this process reads): `data.shards`
  (0 = one per process), checked against the process count and the per-process
  `batch_size`."""
  index, count = process_index_and_count()
  shards = int(_get(data_config, "shards")) or count
  if shards % count or batch_size % (shards // count):
    raise ConfigError(f"data.shards={shards} must be a multiple of the {count} processes "
                      f"and divide the per-process batch of {batch_size} into equal parts "
                      "(0 = one shard per process).")
  per_process = shards // count
  return shards, list(range(index * per_process, (index + 1) * per_process))


def _to_jax_dtypes(example: dict) -> dict:
  """int64 -> int32, float64 -> float32 (jax disables 64-bit types by default)."""
  cast = {tf.int64: tf.int32, tf.float64: tf.float32}
  return {k: tf.cast(v, cast[v.dtype]) if v.dtype in cast else v for k, v in example.items()}


def _dataset(builder, split, preprocess, *, seed: int, shuffle: bool,
             shuffle_buffer: int = 0, skip: int = 0, shard: int | None = None
             ) -> tf.data.Dataset:
  """Reads `split`, (shuffles + repeats), skips, then decodes and `preprocess`es with
  seeds from (seed, shard) (shard defaults to the process index)."""
  seed = int(seed) % (2**63)  # tf.data and the stateless ops take int64 seeds.
  features = builder.info.features
  # Images are decoded after `skip`, so resuming deep into an epoch is cheap.
  lazy = [k for k, f in features.items() if isinstance(f, tfds.features.Image)]
  options = tf.data.Options()
  options.deterministic = True
  read_config = tfds.ReadConfig(shuffle_seed=seed, options=options)
  ds = builder.as_dataset(split=split, shuffle_files=shuffle, read_config=read_config,
                          decoders={k: tfds.decode.SkipDecoding() for k in lazy})
  if shuffle:
    ds = ds.shuffle(max(1, shuffle_buffer), seed=seed, reshuffle_each_iteration=True).repeat()
  ds = ds.enumerate().skip(skip)
  shard = process_index_and_count()[0] if shard is None else shard
  base_seed = tf.constant([seed, shard], tf.int64)

  def decode_and_preprocess(i, example):
    example = {**example, **{k: features[k].decode_example(example[k]) for k in lazy}}
    example_seed = tf.random.experimental.stateless_fold_in(base_seed, i)
    return _to_jax_dtypes(preprocess(example, example_seed))

  ds = ds.map(decode_and_preprocess, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return ds.with_options(options)


def make_train_iterator(data_config: Any, *, batch_size: int, seed: int,
                        start_batch: int = 0, poisson_rate: float = 0.0,
                        held_transform: Callable[[in_memory.Arrays], in_memory.Arrays]
                        | None = None) -> Iterator[Batch]:
  """Endless iterator of host-local numpy batches, each value [batch_size, ...].

  Deterministic given `seed`; `start_batch=k` yields exactly batches k, k+1, ... of a
  fresh iterator. `batch_size` is the per-host batch size. The keys are whatever
  `preprocess_train` leaves (int64 is cast to int32, float64 to float32).

  `poisson_rate` > 0 (DP training; data.in_memory only): each batch holds every
  example with that probability instead, zero-padded to `batch_size` with a `mask`.
  `held_transform` (data.in_memory only) changes each held shard's arrays before any
  batch is drawn (e.g. the privacy audit's canaries).
  """
  if batch_size <= 0 or start_batch < 0:
    raise ConfigError(f"Need batch_size > 0 and start_batch >= 0, got {batch_size}, {start_batch}.")
  # The specs are checked before the dataset is touched (or prepared).
  preprocess = ops.build_preprocess_fn(_get(data_config, "preprocess_train"))
  pack = packing.pack_spec(data_config)
  held = bool(_get(data_config, "in_memory"))
  if held:
    in_memory.check_config(data_config)
  elif poisson_rate > 0 or held_transform is not None:
    raise ConfigError("Poisson sampling and audit canaries need data.in_memory=True.")
  num_shards, shards = process_shards(data_config, batch_size)
  builder = get_builder(data_config)
  split = _get(data_config, "train_split")
  total = _num_examples(builder, split, "train_split")
  shard_splits = tfds.even_splits(split, n=num_shards, drop_remainder=True)
  shard_batch = batch_size // len(shards)
  shard_n = total // num_shards
  if shard_batch > shard_n:
    raise ConfigError(f"The per-shard train batch {shard_batch} is larger than a shard of "
                      f"{split!r} ({shard_n} examples in each of {num_shards}); lower the "
                      "batch size or data.shards.")
  if held:
    arrays = [(i, _held_split(builder, shard_splits[i], preprocess,
                              f"train shard {i} of {split!r}", "preprocess_train"))
              for i in shards]
    if held_transform is not None:
      arrays = [(i, held_transform(a)) for i, a in arrays]
    if poisson_rate > 0:
      return in_memory.poisson_batches(arrays, rate=float(poisson_rate),
                                       shard_batch=shard_batch, seed=int(seed),
                                       start_batch=int(start_batch))
    return in_memory.train_batches(arrays, shard_batch=shard_batch, seed=int(seed),
                                   start_batch=int(start_batch))
  datasets = [_shard_stream(builder, shard_splits[i], preprocess, pack, seed=int(seed),
                            shuffle_buffer=int(_get(data_config, "shuffle_buffer")),
                            start=int(start_batch) * shard_batch, shard=i
                            ).batch(shard_batch, drop_remainder=True)
              for i in shards]
  if len(datasets) == 1:
    ds = datasets[0]
  else:
    ds = tf.data.Dataset.zip(tuple(datasets)).map(
        lambda *parts: {k: tf.concat([p[k] for p in parts], 0) for k in parts[0]})
  ds = ds.prefetch(int(_get(data_config, "prefetch")))
  return ds.as_numpy_iterator()


def _shard_stream(builder, split, preprocess, pack, *, seed: int, shuffle_buffer: int,
                  start: int, shard: int) -> tf.data.Dataset:
  """One shard's endless training examples from example `start` on: preprocessed
  documents, or with `pack` the packed blocks (skipping whole windows before decoding,
  then the blocks of the window `start` falls in)."""
  if pack is None:
    return _dataset(builder, split, preprocess, seed=seed, shuffle=True,
                    shuffle_buffer=shuffle_buffer, skip=start, shard=shard)
  documents, blocks = pack.window_and_offset(start)
  ds = _dataset(builder, split, preprocess, seed=seed, shuffle=True,
                shuffle_buffer=shuffle_buffer, skip=documents, shard=shard)
  return packing.pack_dataset(ds, pack).skip(blocks)


class SizedIterator:
  """An iterator that also knows how many items it yields (`len(it)`)."""

  def __init__(self, iterator: Iterator[Batch], length: int):
    self._it, self._len = iterator, length

  def __iter__(self):
    return self

  def __next__(self) -> Batch:
    return next(self._it)

  def __len__(self) -> int:
    return self._len


def _require_fixed_shapes(spec: dict[str, tf.TensorSpec], what: str, config_key: str) -> None:
  for k, s in spec.items():
    if not s.shape.is_fully_defined():
      raise DataError(f"Examples of {what} have key {k!r} with variable shape {s.shape}; "
                      f"add ops to data.{config_key} that fix it (e.g. resize, "
                      f"center_crop, tokenize) or drop the key with keep(...).")


def _pad_example(spec: dict[str, tf.TensorSpec], split: str) -> dict[str, tf.Tensor]:
  """A zero example (empty strings, mask 0) matching `spec`."""
  _require_fixed_shapes(spec, f"eval split {split!r}", "preprocess_eval")
  return {k: tf.zeros(s.shape, s.dtype) for k, s in spec.items()}


_STRING_BYTES = 64  # A guess for the memory check: tf.string has no fixed size.
_HELD: dict[tuple, in_memory.Arrays] = {}  # Eval splits held by this process, by source.
_HELD_EVAL_SPLITS = 2


def _held_split(builder, split, preprocess, what: str, config_key: str) -> in_memory.Arrays:
  """`split` of `builder`, preprocessed (deterministically), as numpy arrays [N, ...]."""
  ds = _dataset(builder, split, preprocess, seed=0, shuffle=False)
  _require_fixed_shapes(ds.element_spec, what, config_key)
  n = _num_examples(builder, split, what)
  in_memory.check_fits(n, {k: (tuple(s.shape.as_list()),
                               _STRING_BYTES if s.dtype == tf.string else s.dtype.size)
                           for k, s in ds.element_spec.items()}, what)
  batches = ds.batch(in_memory.LOAD_CHUNK).prefetch(1).as_numpy_iterator()
  return in_memory.load(batches, n, what)


def _held_eval_split(data_config, builder, split, preprocess, what: str) -> in_memory.Arrays:
  """`_held_split` for eval, read once per process and (split, spec) and then reused."""
  key = (builder.info.full_name, str(builder.data_dir), str(split),
         str(_get(data_config, "preprocess_eval")))
  if key not in _HELD:
    while len(_HELD) >= _HELD_EVAL_SPLITS:
      _HELD.pop(next(iter(_HELD)))
    _HELD[key] = _held_split(builder, split, preprocess, what, "preprocess_eval")
  return _HELD[key]


def held_train_split(data_config: Any) -> in_memory.Arrays:
  """The whole train split as the one train shard of a one-process run holds it
  (preprocessed by data.preprocess_train, which in memory has no random ops), as numpy
  arrays [N, ...] in file order."""
  preprocess = ops.build_preprocess_fn(_get(data_config, "preprocess_train"))
  builder = get_builder(data_config)
  split = _get(data_config, "train_split")
  shard = tfds.even_splits(split, n=1, drop_remainder=True)[0]
  return _held_split(builder, shard, preprocess, f"train split {split!r}",
                     "preprocess_train")


def make_eval_iterator(data_config: Any, *, batch_size: int) -> SizedIterator:
  """One pass over this host's shard of `eval_split`, batches of exactly `batch_size`.

  Each batch has `mask` float32 [batch_size]: 1 for real examples, 0 for the zero-filled
  padding that completes the last batch. `data.device_preprocess_eval`, if set, has been
  applied (on the default device; the batches are numpy). Every host yields the same
  number of batches, `len(iterator)` = ceil(ceil(split_size / hosts) / batch_size).
  """
  if batch_size <= 0:
    raise ConfigError(f"Eval batch size must be > 0, got {batch_size}.")
  preprocess = ops.build_preprocess_fn(_get(data_config, "preprocess_eval"))
  transform = device_ops.eval_transform(data_config)
  builder = get_builder(data_config)
  split = _get(data_config, "eval_split")
  host_split, _, total = _host_split(builder, split, drop_remainder=False, what="eval_split")
  _, count = process_index_and_count()
  num_batches = math.ceil(math.ceil(total / count) / batch_size)
  if _get(data_config, "in_memory"):
    arrays = _held_eval_split(data_config, builder, host_split, preprocess,
                              f"eval split {split!r}")
    batches = in_memory.eval_batches(arrays, batch_size=batch_size, num_batches=num_batches)
  else:
    ds = _dataset(builder, host_split, preprocess, seed=0, shuffle=False)
    ds = ds.map(lambda ex: {**ex, "mask": tf.constant(1.0)})
    padding = tf.data.Dataset.from_tensors(_pad_example(ds.element_spec, split)).repeat()
    ds = ds.concatenate(padding.map(lambda ex: {**ex, "mask": tf.constant(0.0)}))
    ds = ds.take(num_batches * batch_size).batch(batch_size)
    batches = ds.prefetch(int(_get(data_config, "prefetch"))).as_numpy_iterator()
  return SizedIterator(batches if transform is None else map(transform, batches),
                       num_batches)


def _spec_dict(element_spec: dict) -> dict[str, dict[str, Any]]:
  return {k: {"shape": tuple(s.shape.as_list()), "dtype": s.dtype.name}
          for k, s in element_spec.items()}


def dataset_info(data_config: Any) -> dict[str, Any]:
  """What the trainer needs to know before reading data. Prepares `mmjax_digits`.

  Returns a dict with: `name` (full name incl. version), `data_dir`, `splits`
  ({split: num_examples}), `train_examples` / `eval_examples` (sizes of the configured
  splits, all hosts), `num_classes` (if there is a ClassLabel 'label'), `features`
  (stored features {key: {'shape', 'dtype'}}) and `train_element` / `eval_element`
  (one example after the host and device preprocessing, without the batch dimension; no
  data is read).
  """
  preprocess_train = ops.build_preprocess_fn(_get(data_config, "preprocess_train"))
  preprocess_eval = ops.build_preprocess_fn(_get(data_config, "preprocess_eval"))
  for split in ("train", "eval"):
    device_ops.device_fn(data_config, split)
  builder = get_builder(data_config)
  info = builder.info
  train_split, eval_split = _get(data_config, "train_split"), _get(data_config, "eval_split")
  train_examples = _num_examples(builder, train_split, "train_split")
  eval_examples = _num_examples(builder, eval_split, "eval_split")
  label = info.features["label"] if "label" in info.features.keys() else None
  train_ds = _dataset(builder, train_split, preprocess_train, seed=0, shuffle=False)
  pack = packing.pack_spec(data_config)
  if pack is not None:
    train_ds = packing.pack_dataset(train_ds, pack)
  eval_ds = _dataset(builder, eval_split, preprocess_eval, seed=0, shuffle=False)
  return {
      "name": info.full_name,
      "data_dir": str(builder.data_dir_root),
      "splits": {k: int(v.num_examples) for k, v in info.splits.items()},
      "train_examples": train_examples,
      "eval_examples": eval_examples,
      "num_classes": label.num_classes if isinstance(label, tfds.features.ClassLabel) else None,
      "features": {k: {"shape": tuple(t.shape), "dtype": t.tf_dtype.name}
                   for k, t in info.features.get_tensor_info().items()},
      "train_element": device_ops.element_after(data_config, "train",
                                                _spec_dict(train_ds.element_spec)),
      "eval_element": {**device_ops.element_after(data_config, "eval",
                                                  _spec_dict(eval_ds.element_spec)),
                       "mask": {"shape": (), "dtype": "float32"}},
  }


__all__ = ["make_train_iterator", "make_eval_iterator", "dataset_info", "get_builder",
           "SizedIterator"]
