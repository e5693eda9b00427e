"""Exact and near duplicates of one modality, within a split and across splits.

  exact   sha256 of the content (image pixels, text after whitespace normalisation,
          audio samples)
  image   perceptual hash (imagehash.phash, 64 bits) within `image_bits`, confirmed by
          the pixels: at most `image_changed` of them (at 32 x 32 greyscale) may differ
          by more than 32 of 255. On small images such as 28 x 28 digits different
          digits share a phash (13 pairs of distinct training digits at distance 0, 298
          within 2), so the hash proposes and the pixels decide: of the 7,642 pairs of
          distinct training digits within 6 bits, none has fewer than 1.9% of its pixels
          changed, while a copy with +-12 noise on every pixel has 0%. (A mean absolute
          difference cannot tell them apart: sparse digits on a black background differ
          little on average.)
  text    MinHash-LSH (datasketch) over word 3-shingles (character 5-grams for texts of
          fewer than 3 words), Jaccard estimate of at least `text_jaccard`
  audio   average hash (imagehash.average_hash, 8 x 8 bands x segments above their
          mean) of the spectrogram in dB, within `audio_bits`; the phash of a pure tone's
          one-line spectrogram barely depends on the line's height (tones of 1,100 and
          1,500 Hz collided), the average hash sets a different row of bits

Within a split, each group keeps its first member in source order (lowest 'id') and flags
the others. Across splits, an eval example with a (near) duplicate in train is
contamination: the train copies are listed (and removed by default).
"""
from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Sequence

import numpy as np

from mmjax.data.clean.load import text_of


@dataclasses.dataclass
class Options:
  image_bits: int = 6
  image_changed: float = 0.01
  text_jaccard: float = 0.8
  audio_bits: int = 4


def content_hash(example: dict[str, Any], key: str, kind: str) -> str:
  """sha256 of one example's `key` content ('' for an undecodable image)."""
  value = example[key]
  if value is None:
    return ""
  if kind == "text":
    return hashlib.sha256(" ".join(text_of(example, key).split()).encode()).hexdigest()
  return hashlib.sha256(np.ascontiguousarray(value).tobytes()).hexdigest()


def _image_hash(array2d: np.ndarray, method: str = "phash") -> int:
  """imagehash.`method` of a uint8 [H, W] image as a 64-bit integer."""
  import imagehash   # pylint: disable=g-import-not-at-top
  from PIL import Image   # pylint: disable=g-import-not-at-top
  return int(str(getattr(imagehash, method)(Image.fromarray(array2d))), 16)


def small_grey(image: np.ndarray) -> np.ndarray:
  """uint8 [H, W, C] -> float32 [32, 32] greyscale."""
  from PIL import Image   # pylint: disable=g-import-not-at-top
  im = Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).convert("L")
  return np.asarray(im.resize((32, 32), Image.Resampling.BILINEAR), np.float32)


def spectrogram_image(audio: np.ndarray, frame: int = 256, range_db: float = 60.0
                      ) -> np.ndarray:
  """int16 [S] -> uint8 [frame // 2 + 1, T]: the magnitude spectrogram in dB, from
  `range_db` below its peak (0) to the peak (255), so a quiet noise floor reads as 0 and
  the level does not matter (silence and clips shorter than a frame: all zeros)."""
  x = np.asarray(audio, np.float32).reshape(-1) / 32768.0
  if len(x) < frame:
    x = np.pad(x, (0, frame - len(x)))
  hop = frame // 2
  frames = np.lib.stride_tricks.sliding_window_view(x, frame)[::hop] * np.hanning(frame)
  magnitude = np.abs(np.fft.rfft(frames, axis=1)).T
  if magnitude.max() <= 0:
    return np.zeros(magnitude.shape, np.uint8)
  db = 20 * np.log10(np.maximum(magnitude, 1e-12) / magnitude.max())
  return np.round(255 * np.clip(1 + db / range_db, 0, 1)).astype(np.uint8)


class Signatures:
  """Per-example signatures of one modality for near-duplicate search: 64-bit hashes
  (image, audio; plus 32 x 32 pixels for the image check) or MinHashes (text)."""

  def __init__(self, examples: Sequence[dict], key: str, kind: str, options: Options):
    self.kind, self.options = kind, options
    self.valid = np.array([e[key] is not None for e in examples])
    if kind == "image":
      self.hashes = np.array([_image_hash(small_grey(e[key]).astype(np.uint8)) if ok else 0
                              for e, ok in zip(examples, self.valid)], np.uint64)
      self.pixels = np.stack([small_grey(e[key]) if ok else np.zeros((32, 32), np.float32)
                              for e, ok in zip(examples, self.valid)]) if len(examples) else None
    elif kind == "audio":
      self.hashes = np.array([_image_hash(spectrogram_image(e[key]), "average_hash")
                              for e in examples], np.uint64)
    else:
      from datasketch import MinHash   # pylint: disable=g-import-not-at-top
      self.minhashes = []
      for e in examples:
        words = text_of(e, key).lower().split()
        text = " ".join(words)
        shingles = ({" ".join(words[i:i + 3]) for i in range(len(words) - 2)} if
                    len(words) >= 3 else {text[i:i + 5] for i in range(max(1, len(text) - 4))})
        m = MinHash(num_perm=128, seed=1)
        m.update_batch([s.encode() for s in shingles])
        self.minhashes.append(m)

  def pairs(self, other: "Signatures | None" = None) -> list[tuple[int, int]]:
    """Near-duplicate pairs (i, j): i in self, j in `other` (or in self with i < j)."""
    other_sig = other or self
    if self.kind == "text":
      return self._text_pairs(other_sig, other is None)
    bits = self.options.image_bits if self.kind == "image" else self.options.audio_bits
    out = []
    for start in range(0, len(self.hashes), 512):   # [512, M] distances at a time
      block = self.hashes[start:start + 512]
      dist = np.bitwise_count(block[:, None] ^ other_sig.hashes[None, :])
      for i, j in zip(*np.nonzero(dist <= bits)):
        i = int(i) + start
        if (other is None and j <= i) or not (self.valid[i] and other_sig.valid[j]):
          continue
        if self.kind == "image" and (np.abs(self.pixels[i] - other_sig.pixels[j]) > 32
                                     ).mean() > self.options.image_changed:
          continue
        out.append((i, int(j)))
    return out

  def _text_pairs(self, other: "Signatures", same: bool) -> list[tuple[int, int]]:
    from datasketch import MinHashLSH   # pylint: disable=g-import-not-at-top
    lsh = MinHashLSH(threshold=self.options.text_jaccard, num_perm=128)
    for j, m in enumerate(other.minhashes):
      lsh.insert(j, m)
    out = []
    for i, m in enumerate(self.minhashes):
      for j in lsh.query(m):
        if (not same or j > i) and m.jaccard(other.minhashes[j]) >= self.options.text_jaccard:
          out.append((i, int(j)))
    return sorted(out)


def groups(n: int, pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
  """Connected components (size >= 2) of the pair graph over 0..n-1, each sorted."""
  parent = list(range(n))

  def root(i):
    while parent[i] != i:
      parent[i] = parent[parent[i]]
      i = parent[i]
    return i

  for i, j in pairs:
    parent[root(i)] = root(j)
  comps: dict[int, list[int]] = {}
  for i in range(n):
    comps.setdefault(root(i), []).append(i)
  return [sorted(c) for c in comps.values() if len(c) > 1]
