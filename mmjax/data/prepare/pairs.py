"""Paired multimodal records (`--source=pairs`): a JSONL (or CSV) whose rows name an image
file, a text and an audio file of one example, so the quickstart's three-tower recipe
(configs/quickstart.py: image + caption + audio) trains on a user's own pairs.

  {"image": "img/0001.png", "text": "a red bicycle", "audio": "wav/0001.wav",
   "label": "bike", "split": "train"}

Paths are relative to the records file. Every modality column is optional but the rows
must agree on which they have (at least two); 'label' (a ClassLabel, sorted names) and
'split' are optional too. Features, named as configs/common.py's recipes read them:
image uint8 [H, W, C] (--resize=HxW for mixed sizes), caption string (from 'text'),
audio int16 [S] at --sample_rate, label.
"""
from __future__ import annotations

import os
from typing import Any

from mmjax.data.prepare import audio as audio_lib, common, images as images_lib, tables
from mmjax.errors import DataError

MODALITIES = ("image", "text", "audio")


def pairs(input_path: str, *, errors: common.ReadErrors, resize=None,
          sample_rate: int = 8000, label_column: str = "label", split_column: str = "split",
          **_) -> common.Source:
  """The records file at `input_path` (format in the module docstring) as a Source."""
  import tensorflow_datasets as tfds   # pylint: disable=g-import-not-at-top
  rows, columns = tables.read_rows(input_path)
  if not rows:
    raise DataError(f"{input_path} has no rows.")
  present = [m for m in MODALITIES if m in columns]
  if len(present) < 2:
    raise DataError(f"{os.path.basename(input_path)} names {present or 'no'} modality "
                    f"columns; paired records need at least two of {list(MODALITIES)} (its "
                    f"columns are {columns}).")
  for row, where in rows:
    empty = [m for m in present if not str(row.get(m) or "").strip()]
    if empty:
      raise DataError(f"{where}: {empty} is empty; every row needs each of {present}.")
  root = os.path.dirname(os.path.abspath(input_path))
  path_of = lambda row, m: os.path.normpath(os.path.join(root, str(row[m])))  # noqa: E731
  has_label = label_column in columns
  names = common.class_names(str(r[label_column]) for r, _ in rows) if has_label else []
  items = [common.Item(ref=row, source=where,
                       label=names.index(str(row[label_column])) if has_label else None,
                       split=(tables.row_split(row[split_column], where)
                              if split_column in columns else None))
           for row, where in rows]
  features: dict[str, Any] = {}
  readable = set(range(len(items)))
  if "image" in present:
    shapes, shape = images_lib.scan_images(sorted({path_of(it.ref, "image") for it in items}),
                                           errors, resize, input_path)
    readable &= {i for i, it in enumerate(items) if path_of(it.ref, "image") in shapes}
    features["image"] = tfds.features.Image(shape=shape)
  if "text" in present:
    features["caption"] = tfds.features.Text()
  if "audio" in present:
    lengths = audio_lib.scan_wavs(sorted({path_of(it.ref, "audio") for it in items}),
                                  errors, sample_rate)
    readable &= {i for i, it in enumerate(items) if path_of(it.ref, "audio") in lengths}
    features["audio"] = audio_lib.audio_feature(lengths, sample_rate)
  if has_label:
    features["label"] = tfds.features.ClassLabel(names=names)
  items = [it for i, it in enumerate(items) if i in readable]

  def load(item: common.Item) -> dict[str, Any]:
    row, example = item.ref, {}
    if "image" in present:
      example["image"] = images_lib.load_image(path_of(row, "image"), shape)
    if "text" in present:
      example["caption"] = str(row["text"])
    if "audio" in present:
      example["audio"] = audio_lib.load_wav(path_of(row, "audio"), sample_rate)
    if has_label:
      example["label"] = item.label
    return example

  files = [path_of(it.ref, m) for it in items for m in present if m != "text"]
  return common.Source(features, items, load,
                       f"Paired {'+'.join(present)} records from {input_path}.",
                       [input_path, *files])
