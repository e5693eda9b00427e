"""Sequence packing for language-model pretraining: documents -> full fixed-length blocks.

GPT-style pretraining (nanoGPT, llm.c) trains on contiguous windows of all documents
concatenated with an end-of-text token between them, so no step is spent on padding.
Here every window of `documents` consecutive (shuffled) documents is packed on its own:
their tokens, each document followed by `eos_id`, are concatenated and cut into exactly
`blocks` blocks of `length` tokens; tokens past blocks x length are dropped and a short
window is padded (mask 0). Because every window yields the same number of blocks, block
k of the stream is block k % blocks of window k // blocks: resuming at any batch skips
whole windows of unread documents (cheap: nothing is tokenized) and re-packs only one.
Choose `blocks` near the window's typical token count / length: fewer drops tokens,
more pads; `window_stats` measures both from a sample of document lengths.

data.pack = dict(length=L, documents=G, blocks=K, eos_id=E, key='text'); length 0 = off.
Packing applies to the training stream; evaluation reads one document per example.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import tensorflow as tf

from mmjax.errors import ConfigError

DEFAULTS = dict(length=0, documents=64, blocks=0, eos_id=-1, key="text")


@dataclasses.dataclass(frozen=True)
class PackSpec:
  """A checked `data.pack`: blocks of `length` tokens, `blocks` per window of
  `documents` documents, `eos_id` after each document (-1: none), from `key` and
  `key`_mask."""
  length: int
  documents: int
  blocks: int
  eos_id: int
  key: str

  def window_and_offset(self, start_block: int) -> tuple[int, int]:
    """Block index in the packed stream -> (documents to skip, blocks to skip after)."""
    window, offset = divmod(int(start_block), self.blocks)
    return window * self.documents, offset


def pack_spec(data_config: Any) -> PackSpec | None:
  """config.data.pack -> PackSpec, or None when packing is off (length 0 or no `pack`).

  Raises ConfigError for a non-integer or non-positive size, or an eos_id below -1.
  """
  raw = data_config.get("pack", None) if hasattr(data_config, "get") else None
  values = {**DEFAULTS, **dict(raw or {})}
  unknown = set(values) - set(DEFAULTS)
  if unknown:
    raise ConfigError(f"Unknown data.pack keys {sorted(unknown)}; known: {sorted(DEFAULTS)}.")
  for name in ("length", "documents", "blocks", "eos_id"):
    if not isinstance(values[name], int) or isinstance(values[name], bool):
      raise ConfigError(f"data.pack.{name} must be an integer, got {values[name]!r}.")
  if values["length"] == 0:
    return None
  if values["length"] < 1 or values["documents"] < 1 or values["blocks"] < 1:
    raise ConfigError(f"data.pack needs length, documents and blocks >= 1 (got "
                      f"{values['length']}, {values['documents']}, {values['blocks']}); "
                      "set length=0 to turn packing off.")
  if values["eos_id"] < -1:
    raise ConfigError(f"data.pack.eos_id={values['eos_id']} must be a token id or -1 (none).")
  return PackSpec(**values)


def window_stats(lengths: Any, spec: PackSpec) -> dict[str, float]:
  """Document token counts [N] (without EOS), in stream order -> {'fill': share of block
  slots holding tokens, 'dropped': share of tokens cut off at a window's end}, over the
  N // documents full windows; how to choose `spec.blocks` for a corpus."""
  per_doc = np.asarray(lengths, np.int64) + (spec.eos_id >= 0)
  windows = len(per_doc) // spec.documents
  if windows == 0:
    raise ConfigError(f"window_stats needs at least {spec.documents} document lengths, "
                      f"got {len(per_doc)}.")
  tokens = per_doc[:windows * spec.documents].reshape(windows, spec.documents).sum(1)
  slots = spec.blocks * spec.length
  kept = np.minimum(tokens, slots)
  return {"fill": float(kept.sum() / (slots * windows)),
          "dropped": float(1 - kept.sum() / tokens.sum())}


def pack_window(window: dict[str, tf.Tensor], spec: PackSpec) -> dict[str, tf.Tensor]:
  """One window {key: [G,T] ids, key_mask: [G,T]} -> {key: [K,L], key_mask: [K,L]}.

  The real tokens of each row (mask > 0; they must come first in the row, as `tokenize`
  puts them) and then eos_id, row after row, fill the K x L grid in order; the rest of
  the grid is 0 with mask 0, and tokens beyond K x L are dropped.
  """
  key = spec.key
  tokens, mask = window[key], window[f"{key}_mask"] > 0
  if spec.eos_id >= 0:   # an EOS column after each row: flattening puts it after the row
    rows = tf.shape(tokens)[0]
    tokens = tf.concat([tokens, tf.fill([rows, 1], tf.cast(spec.eos_id, tokens.dtype))], 1)
    mask = tf.concat([mask, tf.ones([rows, 1], tf.bool)], 1)
  flat = tf.boolean_mask(tokens, mask)
  size = spec.blocks * spec.length
  kept = tf.minimum(tf.size(flat), size)
  flat = tf.pad(flat[:kept], [[0, size - kept]])
  block_mask = tf.cast(tf.range(size) < kept, window[f"{key}_mask"].dtype)
  return {key: tf.reshape(flat, [spec.blocks, spec.length]),
          f"{key}_mask": tf.reshape(block_mask, [spec.blocks, spec.length])}


def pack_dataset(ds: tf.data.Dataset, spec: PackSpec) -> tf.data.Dataset:
  """Documents -> packed blocks {key: [L], key_mask: [L]}, `spec.blocks` per window of
  `spec.documents` documents (a final short window is packed too). Other keys are
  dropped: a block has no single label. Raises ConfigError when the documents lack the
  key or its mask."""
  have = sorted(ds.element_spec)
  if spec.key not in have or f"{spec.key}_mask" not in have:
    raise ConfigError(f"data.pack packs {spec.key!r} and {spec.key + '_mask'!r}, but "
                      f"preprocess_train gives {have}; tokenize into {spec.key!r} first (or "
                      "set data.pack.key).")
  return (ds.batch(spec.documents)
          .map(lambda w: pack_window(w, spec), num_parallel_calls=tf.data.AUTOTUNE,
               deterministic=True)
          .unbatch())


__all__ = ["PackSpec", "pack_spec", "pack_window", "pack_dataset", "window_stats", "DEFAULTS"]
