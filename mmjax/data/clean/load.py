"""A prepared TFDS dataset read whole into memory for cleaning, with its modalities found
from the features: the first Image, Text and Audio feature, and the ClassLabel 'label'.

Images are read encoded and decoded here one by one, so an undecodable image is a
finding (the `undecodable` filter) rather than a crash.
"""
from __future__ import annotations

import dataclasses
import io
from typing import Any

import numpy as np

from mmjax.errors import DataError


@dataclasses.dataclass
class Split:
  """One split in file order: `examples` [N] dicts of numpy values (an undecodable image
  is None), `ids` int64 [N] (the 'id' feature, else the position)."""
  examples: list[dict[str, Any]]
  ids: np.ndarray
  encoded_images: list[bytes] | None = None


@dataclasses.dataclass
class Loaded:
  builder: Any
  splits: dict[str, Split]
  image: str | None      # feature keys of each modality (None if absent)
  text: str | None
  audio: str | None
  label: str | None
  class_names: list[str] | None


def _decode_png(data: bytes, shape) -> np.ndarray | None:
  from PIL import Image   # pylint: disable=g-import-not-at-top
  try:
    with Image.open(io.BytesIO(data)) as im:
      arr = np.asarray(im.convert("L" if shape[-1] == 1 else "RGB"), np.uint8)
    return arr.reshape(arr.shape[:2] + (shape[-1],))
  except Exception:  # pylint: disable=broad-except  # any decoding failure is a finding
    return None


def load(name: str, data_dir: str | None) -> Loaded:
  """Every split of dataset `name` in `data_dir` (DataError if it is not there)."""
  import tensorflow_datasets as tfds   # pylint: disable=g-import-not-at-top
  from mmjax.data import pipeline   # pylint: disable=g-import-not-at-top
  builder = pipeline.get_builder(dict(name=name, data_dir=data_dir))
  features = builder.info.features
  first = lambda kind: next((k for k, f in features.items()  # noqa: E731
                             if type(f) is kind), None)  # pylint: disable=unidiomatic-typecheck
  image, text, audio = (first(tfds.features.Image), first(tfds.features.Text),
                        first(tfds.features.Audio))
  if text == "source":   # prepare's provenance string is not content
    text = next((k for k, f in features.items() if isinstance(f, tfds.features.Text)
                 and k != "source"), None)
  if not (image or text or audio):
    raise DataError(f"Dataset {name!r} has no image, text or audio feature to clean "
                    f"(features: {sorted(features)}).")
  label = ("label" if "label" in features.keys()
           and isinstance(features["label"], tfds.features.ClassLabel) else None)
  decoders = {image: tfds.decode.SkipDecoding()} if image else None
  splits = {}
  for split in sorted(builder.info.splits):
    ds = builder.as_dataset(split=split, shuffle_files=False, decoders=decoders)
    examples, encoded = [], []
    for ex in tfds.as_numpy(ds):
      ex = dict(ex)
      if image:
        encoded.append(ex[image])
        ex[image] = _decode_png(ex[image], features[image].shape)
      examples.append(ex)
    ids = np.array([int(e["id"]) if "id" in e else i for i, e in enumerate(examples)])
    splits[split] = Split(examples, ids, encoded if image else None)
  return Loaded(builder, splits, image, text, audio, label,
                features[label].names if label else None)


def text_of(example: dict[str, Any], key: str) -> str:
  value = example[key]
  return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
