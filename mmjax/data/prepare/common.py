"""What every source of `mmjax.data.prepare` shares: the scanned source, read errors,
class names, deterministic splits, and the one place a TFDS dataset is written.

A source is read in two passes. The scan lists the examples (paths, rows, labels, the
split a source names) and checks what is cheap to check: file headers, image sizes,
columns. Every refusal happens there, before any example is decoded or written. The
write pass then loads one example at a time (`Source.load`) while TFDS writes the files.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import shutil
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from mmjax.errors import DataError

VERSION = "1.0.0"
SPLIT_NAMES = ("train", "validation", "test")
SIDECAR = "mmjax_prepare.json"   # how a dataset was prepared, next to dataset_info.json
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclasses.dataclass
class Item:
  """One example before it is loaded: `ref` is whatever `Source.load` needs (a path, a
  row), `label` its class id (or None), `split` the split its source names (or None),
  `source` a human-readable origin ('cats/01.png', 'data.csv:17')."""
  ref: Any
  source: str
  label: int | None = None
  split: str | None = None


@dataclasses.dataclass
class Source:
  """A scanned source: `features` {key: tfds feature} of the loaded examples (the writer
  adds 'id' and 'source'), the `items` in source order, and `load(item) -> {key: value}`."""
  features: dict[str, Any]
  items: list[Item]
  load: Callable[[Item], dict[str, Any]]
  description: str
  inputs: list[str]          # files whose size and mtime fingerprint the source


class ReadErrors:
  """Unreadable inputs found by a scan; `--on_error=stop` refuses with the first few
  named, `--on_error=skip` leaves them out (and says how many)."""

  def __init__(self, on_error: str):
    if on_error not in ("skip", "stop"):
      raise DataError(f"--on_error must be 'skip' or 'stop', got {on_error!r}.")
    self.on_error = on_error
    self.errors: list[tuple[str, str]] = []

  def add(self, where: str, why: str) -> None:
    self.errors.append((where, why))

  def check(self, total: int) -> None:
    """Raises DataError under 'stop' if anything was unreadable (before any compute)."""
    if not self.errors or self.on_error == "skip":
      return
    first = "; ".join(f"{w} ({why})" for w, why in self.errors[:5])
    more = f" and {len(self.errors) - 5} more" if len(self.errors) > 5 else ""
    raise DataError(f"{len(self.errors)} of {total} inputs cannot be read: {first}{more}. "
                    "Fix or remove them, or pass --on_error=skip to leave them out.")

  def summary(self) -> str:
    return f"skipped {len(self.errors)} unreadable inputs" if self.errors else ""


def class_names(values: Iterable[str]) -> list[str]:
  """Sorted distinct class names; numerically when every name is an integer ('2' < '10')."""
  names = sorted({str(v) for v in values})
  if names and all(re.fullmatch(r"-?\d+", n) for n in names):
    names.sort(key=int)
  return names


def check_name(name: str) -> None:
  """A TFDS dataset name mmjax can read back: snake_case, not a TFDS catalogue name."""
  if not name or not _NAME.match(name):
    raise DataError(f"--name={name!r} must be snake_case (lowercase letters, digits and "
                    "'_', starting with a letter), as TFDS names are; e.g. --name=my_photos.")
  import tensorflow_datasets as tfds   # pylint: disable=g-import-not-at-top
  from mmjax.data.embedded import colored_digits, digits   # pylint: disable=g-import-not-at-top
  del colored_digits, digits   # registered, so builder_cls finds the embedded names too
  try:
    tfds.builder_cls(name)   # imports one module; list_builders() imports all (15 s)
    registered = True
  except tfds.core.DatasetNotFoundError:
    registered = False
  if registered:
    raise DataError(f"--name={name!r} is a TFDS catalogue dataset; reading it back would "
                    f"load that builder, not your files. Choose another name, e.g. "
                    f"--name=my_{name}.")


def assign_splits(items: Sequence[Item], split_fraction: float, seed: int,
                  eval_split: str = "test") -> dict[str, list[int]]:
  """{split: item indices}, each split in a seeded random order.

  Items whose source names a split keep it. The others are divided by a seeded
  permutation, `split_fraction` of them (per class, when there are labels) to
  `eval_split`; the same items, fraction and seed always give the same splits.
  """
  if not 0.0 <= split_fraction < 1.0:
    raise DataError(f"--split_fraction must be in [0, 1), got {split_fraction}.")
  rng = np.random.default_rng(seed)
  splits: dict[str, list[int]] = {}
  free = [i for i, item in enumerate(items) if item.split is None]
  for i, item in enumerate(items):
    if item.split is not None:
      splits.setdefault(item.split, []).append(i)
  groups: dict[Any, list[int]] = {}
  for i in free:
    groups.setdefault(items[i].label, []).append(i)
  for label in sorted(groups, key=lambda v: (v is None, v)):
    rows = np.asarray(groups[label])[rng.permutation(len(groups[label]))]
    n_eval = int(round(split_fraction * len(rows)))
    splits.setdefault(eval_split, []).extend(rows[:n_eval].tolist())
    splits.setdefault("train", []).extend(rows[n_eval:].tolist())
  return {name: [int(j) for j in np.asarray(rows)[rng.permutation(len(rows))]]
          for name, rows in sorted(splits.items()) if rows}


def fingerprint(inputs: Sequence[str], options: dict[str, Any]) -> str:
  """sha256 of the input files' paths, sizes and mtimes and the options (no content is
  read, so it costs nothing before a refusal)."""
  h = hashlib.sha256(json.dumps(options, sort_keys=True, default=str).encode())
  for path in sorted(inputs):
    st = os.stat(path)
    h.update(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
  return h.hexdigest()


def existing(name: str, data_dir: str) -> dict[str, Any] | None:
  """The sidecar of a dataset `name` already in `data_dir` ({} if it has none), or None."""
  root = os.path.join(data_dir, name)
  if not os.path.isdir(root):
    return None
  for version in sorted(os.listdir(root)):
    sidecar = os.path.join(root, version, SIDECAR)
    if os.path.isfile(sidecar):
      with open(sidecar) as f:
        return json.load(f)
  return {}


def check_target(name: str, data_dir: str, fp: str, overwrite: bool) -> bool:
  """True if `data_dir` already holds exactly this preparation (nothing to do); raises
  DataError if it holds another dataset of that name and `overwrite` is off."""
  previous = existing(name, data_dir)
  if previous is None:
    return False
  if previous.get("fingerprint") == fp and not overwrite:
    return True
  if not overwrite:
    what = (f"prepared from {previous.get('options', {}).get('input')!r}" if previous
            else "not written by mmjax.data.prepare")
    raise DataError(f"{os.path.join(data_dir, name)} already holds a different dataset "
                    f"named {name!r} ({what}); mmjax never replaces it silently. Pass "
                    "--overwrite to replace it, or choose another --name or --data_dir.")
  return False


def write(name: str, data_dir: str, source: Source, splits: dict[str, list[int]],
          sidecar: dict[str, Any], overwrite: bool = False):
  """Writes `source` as TFDS dataset `name` (version 1.0.0) in `data_dir`, the examples
  of `splits` keyed by their index in source order (also the 'id' feature) and with a
  'source' feature; returns the builder that reads it back. With `overwrite`, an
  existing dataset of that name is replaced only once the new one is complete."""
  root = os.path.join(data_dir, name)
  # The old dataset moves aside and is deleted only once the new one is written, so a
  # failure mid-write (a bad file, a full disk, Ctrl-C) puts it back unharmed.
  aside = f"{root}.replaced-{os.getpid()}"
  if overwrite and os.path.isdir(root):
    os.rename(root, aside)
  try:
    builder = _store(name, data_dir, source, splits)
  except BaseException:
    if os.path.isdir(aside):
      shutil.rmtree(root, ignore_errors=True)
      os.rename(aside, root)
    raise
  shutil.rmtree(aside, ignore_errors=True)
  with open(os.path.join(str(builder.data_dir), SIDECAR), "w") as f:
    json.dump(sidecar, f, indent=1, sort_keys=True, default=str)
  return builder


def _store(name: str, data_dir: str, source: Source, splits: dict[str, list[int]]):
  """The TFDS writer of `write`: the examples of `splits` in dataset `name`."""
  import tensorflow_datasets as tfds   # pylint: disable=g-import-not-at-top
  features = tfds.features.FeaturesDict({**source.features, "id": np.int64,
                                         "source": tfds.features.Text()})

  def examples(rows):
    for i in rows:
      item = source.items[i]
      yield i, {**source.load(item), "id": i, "source": item.source}

  builder = tfds.dataset_builders.store_as_tfds_dataset(
      name=name, version=VERSION, features=features, data_dir=data_dir,
      split_datasets={split: examples(rows) for split, rows in splits.items()},
      description=source.description)
  return builder


def split_of_folder(folder: str) -> str | None:
  """'train' / 'validation' / 'test' for a top-level folder of that name ('val', 'dev'
  and 'eval' too), else None."""
  alias = {"val": "validation", "valid": "validation", "dev": "validation", "eval": "test"}
  low = folder.lower()
  return low if low in SPLIT_NAMES else alias.get(low)


def list_files(root: str, suffixes: Sequence[str]) -> list[str]:
  """Files under `root` (recursively) whose lowercase name ends in a suffix, sorted."""
  out = []
  for d, _, files in os.walk(root):
    out += [os.path.join(d, f) for f in files if f.lower().endswith(tuple(suffixes))]
  return sorted(out)


def class_folder_items(root: str, suffixes: Sequence[str], what: str
                       ) -> tuple[list[Item], list[str]]:
  """Items of ROOT/[SPLIT/]CLASS/FILE (one subfolder per class, optionally inside
  train/test folders) and the class names; DataError if there is nothing to read."""
  if not os.path.isdir(root):
    raise DataError(f"--input={root!r} is not a folder; {what} needs one subfolder per "
                    "class (INPUT/CLASS/FILE or INPUT/train|test/CLASS/FILE).")
  files = list_files(root, suffixes)
  if not files:
    raise DataError(f"--input={root!r} holds no {'/'.join(suffixes)} files; {what} needs "
                    "one subfolder per class (INPUT/CLASS/FILE or INPUT/train|test/CLASS/FILE).")
  rows = []
  for path in files:
    parts = os.path.relpath(path, root).split(os.sep)
    split = split_of_folder(parts[0]) if len(parts) == 3 else None
    if len(parts) != (3 if split else 2):
      raise DataError(f"{path} is not in a class folder: {what} expects INPUT/CLASS/FILE "
                      "or INPUT/train|test/CLASS/FILE, one subfolder per class.")
    rows.append((path, parts[-2], split))
  names = class_names(r[1] for r in rows)
  index = {n: i for i, n in enumerate(names)}
  items = [Item(ref=p, source=os.path.relpath(p, root), label=index[c], split=s)
           for p, c, s in rows]
  return items, names
