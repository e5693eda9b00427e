"""Image sources: a folder of class subfolders (`--source=image_folder`), and the image
reading that the paired source shares.

  INPUT/CLASS/*.png|jpg|jpeg            classes = subfolder names (sorted)
  INPUT/train|test/CLASS/*.png|...      the split from the folder instead of a fraction
  --captions=FILE                       optional CSV (file,caption) or JSONL
                                        {"file": ..., "caption": ...}, file relative to INPUT

Features: image uint8 [H, W, C] (C = 1 if every image is greyscale, else 3), label
ClassLabel(class names), caption string (with --captions).
"""
from __future__ import annotations

import collections
import os
from typing import Any, Sequence

import numpy as np

from mmjax.data.prepare import common, tables
from mmjax.errors import DataError

SUFFIXES = (".png", ".jpg", ".jpeg")


def parse_resize(resize: str | None) -> tuple[int, int] | None:
  """'HxW' (or 'N' for a square) -> (H, W); None stays None."""
  if not resize:
    return None
  try:
    parts = [int(p) for p in resize.lower().split("x")]
  except ValueError:
    parts = []
  if len(parts) == 1:
    parts = parts * 2
  if len(parts) != 2 or min(parts) <= 0:
    raise DataError(f"--resize={resize!r} must be HxW (e.g. 64x64) or one size N.")
  return parts[0], parts[1]


def scan_images(paths: Sequence[str], errors: common.ReadErrors, resize, where: str
                ) -> tuple[dict[str, tuple[int, int, int]], tuple[int, int, int]]:
  """({path: (H, W, C)} of the readable images, the shape every one will be written at).

  Reads headers only (and verifies each file); mixed sizes without `resize` are refused,
  naming the sizes found and an example of each."""
  from PIL import Image   # pylint: disable=g-import-not-at-top
  shapes = {}
  for path in paths:
    try:
      with Image.open(path) as im:
        im.verify()
      with Image.open(path) as im:
        shapes[path] = (im.height, im.width, 1 if im.mode in ("L", "1", "I;16", "I") else 3)
    except Exception as e:  # pylint: disable=broad-except  # any unreadable file
      errors.add(path, f"{type(e).__name__}: {e}")
  errors.check(len(paths))
  if not shapes:
    raise DataError(f"None of the {len(paths)} images in {where} can be read.")
  channels = max(s[2] for s in shapes.values())
  if resize:
    return shapes, (resize[0], resize[1], channels)
  sizes = collections.Counter(s[:2] for s in shapes.values())
  if len(sizes) > 1:
    example = {hw: next(p for p, s in shapes.items() if s[:2] == hw) for hw in sizes}
    listed = ", ".join(f"{h}x{w} ({n}, e.g. {example[(h, w)]})"
                       for (h, w), n in sizes.most_common(4))
    raise DataError(f"The images in {where} have {len(sizes)} different sizes: {listed}. "
                    "Pass --resize=HxW (e.g. --resize=64x64) to write them at one size.")
  (h, w), = sizes
  return shapes, (h, w, channels)


def load_image(path: str, shape: tuple[int, int, int]) -> np.ndarray:
  """The image at `path` as uint8 [H, W, C] of `shape` (resized bilinearly if needed)."""
  from PIL import Image   # pylint: disable=g-import-not-at-top
  with Image.open(path) as im:
    im = im.convert("L" if shape[2] == 1 else "RGB")
    if (im.height, im.width) != shape[:2]:
      im = im.resize((shape[1], shape[0]), Image.Resampling.BILINEAR)
    arr = np.asarray(im, np.uint8)
  return arr.reshape(shape)


def read_captions(path: str, root: str) -> dict[str, str]:
  """{absolute image path: caption} from a CSV (file,caption) or JSONL captions file."""
  rows, columns = tables.read_rows(path)
  for col in ("file", "caption"):
    tables.require_column(columns, col, path, "--captions")
  return {os.path.normpath(os.path.join(root, str(r["file"]))): str(r["caption"])
          for r, _ in rows}


def image_folder(input_path: str, *, errors: common.ReadErrors, resize=None,
                 captions: str | None = None, **_) -> common.Source:
  """The image folder at `input_path` (layout in the module docstring) as a Source."""
  import tensorflow_datasets as tfds   # pylint: disable=g-import-not-at-top
  items, names = common.class_folder_items(input_path, SUFFIXES, "--source=image_folder")
  shapes, shape = scan_images([it.ref for it in items], errors, resize, input_path)
  items = [it for it in items if it.ref in shapes]
  features: dict[str, Any] = {"image": tfds.features.Image(shape=shape, dtype=np.uint8),
                              "label": tfds.features.ClassLabel(names=names)}
  caption_of = {}
  if captions:
    caption_of = read_captions(captions, input_path)
    missing = [it.source for it in items if os.path.normpath(it.ref) not in caption_of]
    if missing:
      raise DataError(f"{len(missing)} images have no caption in {captions}, e.g. "
                      f"{missing[:3]}; every image needs a row (file,caption).")
    features["caption"] = tfds.features.Text()

  def load(item: common.Item) -> dict[str, Any]:
    example = {"image": load_image(item.ref, shape), "label": item.label}
    if captions:
      example["caption"] = caption_of[os.path.normpath(item.ref)]
    return example

  return common.Source(features, items, load,
                       f"Images from {input_path}: {len(items)} in {len(names)} classes.",
                       [it.ref for it in items] + ([captions] if captions else []))
