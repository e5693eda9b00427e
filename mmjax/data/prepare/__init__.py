"""`mmjax.data.prepare`: local files -> a TFDS dataset that every mmjax pipeline reads.

  python -m mmjax.data.prepare --source=image_folder --input=~/photos --name=my_photos \
      --data_dir=~/tensorflow_datasets [--split_fraction=0.2] [--resize=64x64]

then train with `--config.data.name=my_photos --config.data.data_dir=~/tensorflow_datasets`
(docs/data.md). One module per source family: images (image_folder), tables (csv, tsv,
jsonl, conll), audio (wav_folder), arrays (npz, idx), pairs (paired multimodal JSONL).

Every dataset gets 'id' (the example's index in source order) and 'source' (its file or
file:line) besides its own features. The order on disk is TFDS's (examples shuffled by a hash of
their key, the source index), the same on every run; `disable_shuffling` would make
mmjax's shuffled file reading fail.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Callable

from mmjax.errors import DataError

_LOG = logging.getLogger(__name__)


def _sources() -> dict[str, Callable[..., Any]]:
  # pylint: disable=g-import-not-at-top
  from mmjax.data.prepare import arrays, audio, images, pairs, tables
  return {"image_folder": images.image_folder, "csv": tables.text_table,
          "tsv": tables.text_table, "jsonl": tables.text_table, "conll": tables.conll,
          "wav_folder": audio.wav_folder, "npz": arrays.npz, "idx": arrays.idx,
          "pairs": pairs.pairs}


SOURCES = ("image_folder", "csv", "tsv", "jsonl", "conll", "wav_folder", "npz", "idx",
           "pairs")


def prepare(source: str, input_path: str, name: str, data_dir: str, *,
            split_fraction: float = 0.2, seed: int = 0, eval_split: str = "test",
            on_error: str = "stop", overwrite: bool = False, resize: str | None = None,
            **options: Any):
  """Writes the files at `input_path` as TFDS dataset `name` in `data_dir`; returns
  (builder, summary dict). Every check runs before any example is decoded.

  `options` go to the source: captions, text_column, label_column, tags_column,
  split_column, sample_rate (see each source module). Rows/files whose source names no
  split are divided by `split_fraction` into `eval_split` (seeded by `seed`, per class).
  An identical earlier preparation (same files, sizes, mtimes and options) is reused;
  a different dataset of the same name is refused unless `overwrite`.
  """
  from mmjax.data.prepare import common, images   # pylint: disable=g-import-not-at-top
  if source not in SOURCES:
    raise DataError(f"--source={source!r} is not one of {', '.join(SOURCES)}.")
  if eval_split not in ("test", "validation"):
    raise DataError(f"--eval_split must be 'test' or 'validation', got {eval_split!r}.")
  common.check_name(name)
  if not data_dir:
    raise DataError("--data_dir is required: the folder the dataset is written to (and "
                    "that --config.data.data_dir then names).")
  input_path = os.path.expanduser(input_path)
  if not os.path.exists(input_path):
    raise DataError(f"--input={input_path!r} does not exist.")
  data_dir = os.path.expanduser(data_dir)
  errors = common.ReadErrors(on_error)
  scanned = _sources()[source](input_path, errors=errors, resize=images.parse_resize(resize),
                               **options)
  splits = common.assign_splits(scanned.items, split_fraction, seed, eval_split)
  settings = dict(source=source, input=os.path.abspath(input_path), split_fraction=split_fraction,
                  seed=seed, eval_split=eval_split, resize=resize, **options)
  fp = common.fingerprint(scanned.inputs, settings)
  summary = {"name": name, "data_dir": data_dir,
             "splits": {k: len(v) for k, v in splits.items()},
             "features": sorted(scanned.features), "skipped": errors.errors}
  sidecar = {"fingerprint": fp, "options": settings, "skipped": errors.errors}
  if common.check_target(name, data_dir, fp, overwrite):
    _LOG.info("%s is already prepared from the same files; nothing to do.", name)
    import tensorflow_datasets as tfds   # pylint: disable=g-import-not-at-top
    return tfds.builder(name, data_dir=data_dir), {**summary, "reused": True}
  builder = common.write(name, data_dir, scanned, splits, sidecar, overwrite=overwrite)
  return builder, {**summary, "reused": False}


__all__ = ["prepare", "SOURCES"]
