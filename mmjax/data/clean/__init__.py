"""`mmjax.data.clean`: find and remove problems in a prepared TFDS dataset, writing a
cleaned copy and a report (docs/data.md); the original is only read.

  python -m mmjax.data.clean --name=NAME --data_dir=DIR --out_name=NAME_clean

Detectors (one module each): filters (undecodable / constant images, empty / short / long
texts, silent audio), duplicates (exact content hashes; near: perceptual hashes for
images and spectrograms, MinHash-LSH for text), contamination (eval examples with a copy
in train), label_noise (out-of-fold probabilities + cleanlab's confident learning).
detect runs them, run writes the outputs, report formats them. Needs the `clean` extra
(imagehash, datasketch, cleanlab), imported only when a detector runs.
"""
from __future__ import annotations


def clean(*args, **kwargs):
  """See `mmjax.data.clean.run.clean`."""
  from mmjax.data.clean import run   # pylint: disable=g-import-not-at-top
  return run.clean(*args, **kwargs)


__all__ = ["clean"]
