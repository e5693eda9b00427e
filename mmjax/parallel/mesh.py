"""Device mesh and batch placement.

Only data parallelism for now: params are replicated and the batch is split along the
'data' mesh axis. The scale-out issue adds the fsdp/model axes and logical-axis rules.
"""
from __future__ import annotations

import collections
from typing import Any, Iterator, Mapping

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mmjax.errors import ConfigError


def make_mesh(mesh_config: Mapping[str, Any]) -> Mesh:
  """A mesh over all devices; `shape` maps axis name -> size (-1 = the rest)."""
  shape = dict(mesh_config.get("shape", {"data": -1}))
  if list(shape) != ["data"]:
    raise ConfigError(f"mesh.shape={shape} is not supported yet; use {{'data': -1}} "
                      "(data parallelism).")
  n = jax.device_count()
  size = shape["data"]
  if size not in (-1, n):
    raise ConfigError(f"mesh.shape['data']={size} must be -1 or the device count {n}.")
  return Mesh(np.asarray(jax.devices()).reshape(n), ("data",))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (batch) dimension split over the 'data' axis."""
  return NamedSharding(mesh, P("data"))


def to_global_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """Host-local numpy batch [B_local, ...] -> global jax.Arrays [B_local * processes, ...]."""
  sharding = batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


def prefetch_to_mesh(batches: Iterator[Mapping[str, np.ndarray]], mesh: Mesh,
                     size: int = 2) -> Iterator[dict[str, jax.Array]]:
  """Keeps `size` batches in flight on the devices ahead of the consumer.

  Transfers are asynchronous, so the next steps' inputs copy while the current step runs.
  """
  queue: collections.deque = collections.deque()
  for batch in batches:
    queue.append(to_global_batch(batch, mesh))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
