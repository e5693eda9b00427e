"""Array sources: numpy `.npz` files (`--source=npz`) and MNIST IDX files (`--source=idx`).

npz: each array is a feature with the examples on axis 0. A name ending in _train /
  _validation / _test (or _val, _dev) gives that split's examples ('x_train', 'y_test',
  'image_train'); all splits must hold the same features. 'x' is stored as 'image' and
  'y' as 'label'. uint8 arrays [N, H, W] or [N, H, W, C] become images, an integer array
  named 'label' a ClassLabel (names 0..max), others tensors of their dtype.
idx: a folder (or one file) of MNIST IDX files, gzipped or not: train-images-idx3-ubyte,
  train-labels-idx1-ubyte, t10k-* (the test split); images [N, H, W] uint8 -> 'image'
  [H, W, 1], labels -> 'label'.
"""
from __future__ import annotations

import gzip
import os
import re
from typing import Any

import numpy as np

from mmjax.data.prepare import common
from mmjax.errors import DataError

_ALIASES = {"x": "image", "y": "label"}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
               0x0E: ">f8"}


def _split_key(key: str) -> tuple[str, str | None]:
  """'x_train' -> ('image', 'train'); 'label' -> ('label', None)."""
  m = re.fullmatch(r"(.+)_([a-z]+)", key)
  split = common.split_of_folder(m.group(2)) if m else None
  base = m.group(1) if split else key
  return _ALIASES.get(base, base), split


def _feature(name: str, a: np.ndarray):
  import tensorflow_datasets as tfds   # pylint: disable=g-import-not-at-top
  if name == "label" and np.issubdtype(a.dtype, np.integer):
    if a.ndim != 1 or a.min() < 0:
      raise DataError(f"'label' must be non-negative integers [N], got shape {a.shape} "
                      f"and minimum {a.min()}.")
    return tfds.features.ClassLabel(num_classes=int(a.max()) + 1)
  if a.dtype == np.uint8 and a.ndim in (3, 4):
    shape = a.shape[1:] + ((1,) if a.ndim == 3 else ())
    if shape[-1] not in (1, 3, 4):
      raise DataError(f"{name!r}: a uint8 image array needs 1, 3 or 4 channels last, "
                      f"got {a.shape}.")
    return tfds.features.Image(shape=shape, dtype=np.uint8)
  if a.dtype.kind in "US":
    return tfds.features.Text()
  return tfds.features.Tensor(shape=a.shape[1:], dtype=a.dtype)


def _arrays_source(arrays: dict[tuple[str, str | None], np.ndarray], where: str,
                   inputs: list[str]) -> common.Source:
  """A Source over {(feature, split or None): array [N, ...]}."""
  import tensorflow_datasets as tfds   # pylint: disable=g-import-not-at-top
  by_split: dict[str | None, dict[str, np.ndarray]] = {}
  for (name, split), a in arrays.items():
    by_split.setdefault(split, {})[name] = a
  if None in by_split and len(by_split) > 1:
    raise DataError(f"{where} mixes arrays with and without a split suffix "
                    f"({sorted(k[0] + ('_' + k[1] if k[1] else '') for k in arrays)}); name "
                    "all of them FEATURE_train/FEATURE_test or none.")
  names = {s: sorted(d) for s, d in by_split.items()}
  first = next(iter(names.values()))
  for split, keys in names.items():
    if keys != first:
      raise DataError(f"{where}: split {split!r} has features {keys} but another has "
                      f"{first}; every split needs the same arrays.")
    sizes = {k: len(by_split[split][k]) for k in keys}
    if len(set(sizes.values())) != 1:
      raise DataError(f"{where}: the arrays of split {split or 'all'} disagree on the number "
                      f"of examples (axis 0): {sizes}.")
  sample = {k: np.concatenate([d[k] for d in by_split.values()]) for k in first}
  features = {k: _feature(k, a) for k, a in sample.items()}
  images = {k for k, f in features.items() if isinstance(f, tfds.features.Image)}
  items = []
  for split, d in by_split.items():
    n = len(d[first[0]])
    labels = d["label"] if "label" in d and np.issubdtype(d["label"].dtype, np.integer) else None
    items += [common.Item(ref=(split, i), source=f"{split or 'all'}[{i}]", split=split,
                          label=None if labels is None else int(labels[i])) for i in range(n)]

  def load(item: common.Item) -> dict[str, Any]:
    split, i = item.ref
    d = by_split[split]
    # An image [N, H, W] gains its channel axis here: Image features are [H, W, C].
    return {k: d[k][i].reshape(features[k].shape) if k in images else d[k][i] for k in first}

  return common.Source(features, items, load, f"Arrays from {where}.", inputs)


def npz(input_path: str, **_) -> common.Source:
  """A `.npz` file (naming in the module docstring) as a Source."""
  if not os.path.isfile(input_path):
    raise DataError(f"--input={input_path!r} is not a .npz file.")
  try:
    with np.load(input_path, allow_pickle=False) as f:
      arrays = {_split_key(k): f[k] for k in f.files}
  except Exception as e:  # pylint: disable=broad-except
    raise DataError(f"Cannot read {input_path} as a numpy .npz file ({type(e).__name__}: "
                    f"{e}).") from None
  if not arrays:
    raise DataError(f"{input_path} holds no arrays.")
  return _arrays_source(arrays, input_path, [input_path])


def read_idx(path: str) -> np.ndarray:
  """An IDX file (MNIST's format, gzipped or not) as a numpy array."""
  opener = gzip.open if path.endswith(".gz") else open
  with opener(path, "rb") as f:
    raw = f.read()
  if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
    raise DataError(f"{path} is not an IDX file (its first bytes are {raw[:4]!r}; IDX files "
                    "start with two zero bytes, a type code and the number of dimensions).")
  ndim = raw[3]
  shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
  dtype = np.dtype(_IDX_DTYPES[raw[2]])
  body = raw[4 + 4 * ndim:]
  if len(body) != int(np.prod(shape)) * dtype.itemsize:
    raise DataError(f"{path} is truncated: its header says {shape} of {dtype} "
                    f"({int(np.prod(shape)) * dtype.itemsize} bytes), it holds {len(body)}.")
  return np.frombuffer(body, dtype).reshape(shape).astype(dtype.newbyteorder("="))


def idx(input_path: str, **_) -> common.Source:
  """MNIST IDX files (a folder of them, or one images file) as a Source."""
  if os.path.isdir(input_path):
    files = [os.path.join(input_path, f) for f in sorted(os.listdir(input_path))
             if "idx" in f]
  else:
    files = [input_path] if os.path.isfile(input_path) else []
  if not files:
    raise DataError(f"--input={input_path!r} holds no IDX files (MNIST's "
                    "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-...).")
  arrays = {}
  for path in files:
    base = os.path.basename(path)
    kind = "image" if "images" in base or "idx3" in base else "label"
    split = "test" if base.startswith(("t10k", "test")) else "train" if len(files) > 1 else None
    a = read_idx(path)
    arrays[(kind, split)] = a.astype(np.int64) if kind == "label" else a
  return _arrays_source(arrays, input_path, files)
