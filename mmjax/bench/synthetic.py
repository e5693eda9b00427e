"""Synthetic inputs shaped like a config's training examples, without TensorFlow.

Plans and benchmarks must run where TensorFlow or the dataset is missing (accelerator
images, a pod whose data lives elsewhere), so the example shapes come from the model's
config: the keys the model and objective read, with the sizes the model expects.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from mmjax.errors import ConfigError

Element = dict[str, dict[str, Any]]


def _spec(shape, dtype: str) -> dict[str, Any]:
  return {"shape": tuple(shape), "dtype": dtype}


def element_spec(config: Any) -> Element:
  """{key: {'shape', 'dtype'}} of one training example for `config.model` (no batch dim).

  Text models get 'text' and 'text_mask' of model.max_len tokens; image models an
  'image' [H,W,C]; the multimodal model every modality it has ('spectrogram' [F,T] for
  audio); models with classes a 'label'. Raises ConfigError for a model it cannot shape.
  """
  m = config.model
  name = m.get("name")
  text = {"text": _spec((m.get("max_len", 64),), "int32"),
          "text_mask": _spec((m.get("max_len", 64),), "int32")}
  label = {"label": _spec((), "int32")} if m.get("num_classes", 0) else {}
  if name == "text_transformer":
    return text | label
  if name == "vit":
    size = m.get("image_size", 28)
    return {"image": _spec((size, size, m.get("channels", 1)), "float32")} | label
  if name in ("mnist_cnn", "dp_mnist_cnn"):
    return {"image": _spec((28, 28, 1), "float32")} | label
  if name in ("preact_resnet18", "wide_resnet"):
    return {"image": _spec((32, 32, 3), "float32")} | label
  if name == "multimodal":
    modalities = tuple(m.get("modalities", ("image", "text", "audio")))
    out = dict(label)
    if "image" in modalities:
      size = m.get("image_size", 28)
      out["image"] = _spec((size, size, m.get("channels", 1)), "float32")
    if "text" in modalities or m.get("caption_depth", 0):
      out.update({"text": _spec((m.get("max_len", 32),), "int32"),
                  "text_mask": _spec((m.get("max_len", 32),), "int32")})
    if "audio" in modalities:
      out["spectrogram"] = _spec((m.get("mel_bins", 64), m.get("frames", 28)), "float32")
    return out
  raise ConfigError(f"No synthetic inputs for model {name!r}; plan and bench modes know "
                    "text_transformer, vit, multimodal and the CNNs.")


def synthetic_batch(element: Mapping[str, Mapping[str, Any]], batch_size: int,
                    vocab_size: int = 256, num_classes: int = 10, seed: int = 0
                    ) -> dict[str, np.ndarray]:
  """A host batch [batch_size, ...] of random values shaped like `element`: tokens in
  [0, vocab_size), masks of ones, labels in [0, num_classes), floats in [0, 1)."""
  rng = np.random.default_rng(seed)
  batch = {}
  for key, spec in element.items():
    shape = (batch_size, *spec["shape"])
    if key.endswith("mask"):
      batch[key] = np.ones(shape, spec["dtype"])
    elif key == "label":
      batch[key] = rng.integers(0, max(num_classes, 1), shape).astype(spec["dtype"])
    elif np.issubdtype(np.dtype(spec["dtype"]), np.integer):
      batch[key] = rng.integers(0, vocab_size, shape).astype(spec["dtype"])
    else:
      batch[key] = rng.uniform(size=shape).astype(spec["dtype"])
  return batch
