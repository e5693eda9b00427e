"""Per-example quality filters: undecodable or constant images, empty / too short / too
long texts, silent audio. Each returns {position: reason} for one split."""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from mmjax.data.clean.load import text_of


@dataclasses.dataclass
class Options:
  min_text_chars: int = 1       # after stripping whitespace; 1 = only empty texts
  max_text_chars: int = 0       # 0 = no limit
  silence_dbfs: float = -50.0   # RMS below this (dB re full scale) is silent


def image_problems(examples: Sequence[dict[str, Any]], key: str) -> dict[int, str]:
  out = {}
  for i, e in enumerate(examples):
    image = e[key]
    if image is None:
      out[i] = "undecodable image"
    elif image.min() == image.max():
      out[i] = f"constant image (every pixel {int(image.min())})"
  return out


def text_problems(examples: Sequence[dict[str, Any]], key: str, options: Options
                  ) -> dict[int, str]:
  out = {}
  for i, e in enumerate(examples):
    n = len(text_of(e, key).strip())
    if n == 0:
      out[i] = "empty text"
    elif n < options.min_text_chars:
      out[i] = f"text too short ({n} < {options.min_text_chars} characters)"
    elif options.max_text_chars and n > options.max_text_chars:
      out[i] = f"text too long ({n} > {options.max_text_chars} characters)"
  return out


def rms_dbfs(audio: np.ndarray) -> float:
  """RMS level of int16 samples in dB relative to full scale (-inf for all zeros)."""
  x = np.asarray(audio, np.float64).reshape(-1) / 32768.0
  rms = np.sqrt(np.mean(x * x)) if x.size else 0.0
  return float(20 * np.log10(rms)) if rms > 0 else float("-inf")


def audio_problems(examples: Sequence[dict[str, Any]], key: str, options: Options
                   ) -> dict[int, str]:
  out = {}
  for i, e in enumerate(examples):
    level = rms_dbfs(e[key])
    if level < options.silence_dbfs:
      out[i] = f"silent audio (RMS {level:.1f} dBFS < {options.silence_dbfs:g})"
  return out
