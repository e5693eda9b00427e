"""mmjax.data: TFDS input pipelines, preprocessing ops, tokenizers, embedded datasets.

The only mmjax package that imports TensorFlow, and only on use: importing
`mmjax.data`, `mmjax.data.tokenizers` or the host op registry (`mmjax.data.ops`) does
not import TensorFlow; calling `make_train_iterator`, `make_eval_iterator` or
`dataset_info`, or building a host op, does.

  make_train_iterator(data_config, *, batch_size, seed, start_batch=0) -> endless iterator
      of host-local numpy batches {key: [batch_size, ...]}
  make_eval_iterator(data_config, *, batch_size) -> one pass, padded, with `mask` [batch_size]
  dataset_info(data_config) -> dict of split sizes, features, num_classes, element specs
  held_train_split(data_config) -> the train split as numpy arrays (privacy audits)
"""
from __future__ import annotations

from typing import Any


def make_train_iterator(data_config: Any, *, batch_size: int, seed: int, start_batch: int = 0,
                        poisson_rate: float = 0.0, held_transform=None):
  """See `mmjax.data.pipeline.make_train_iterator`."""
  from mmjax.data import pipeline  # pylint: disable=g-import-not-at-top  # imports TF
  return pipeline.make_train_iterator(data_config, batch_size=batch_size, seed=seed,
                                      start_batch=start_batch, poisson_rate=poisson_rate,
                                      held_transform=held_transform)


def held_train_split(data_config: Any):
  """See `mmjax.data.pipeline.held_train_split`."""
  from mmjax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.held_train_split(data_config)


def make_eval_iterator(data_config: Any, *, batch_size: int):
  """See `mmjax.data.pipeline.make_eval_iterator`."""
  from mmjax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.make_eval_iterator(data_config, batch_size=batch_size)


def dataset_info(data_config: Any) -> dict[str, Any]:
  """See `mmjax.data.pipeline.dataset_info`."""
  from mmjax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.dataset_info(data_config)


__all__ = ["make_train_iterator", "make_eval_iterator", "dataset_info", "held_train_split"]
