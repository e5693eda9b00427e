"""Device meshes from config, and the placement of host-local batches onto them.

The mesh always has the three axes of `MESH_AXES`, 'data', 'fsdp' and 'model' (size 1
where the config leaves one out), so a rule table can name any of them on any mesh. The
batch is split over the mesh axes that the rule for the logical axis 'batch' names
(by default 'data' and 'fsdp': FSDP is data parallelism whose parameters are sharded).
"""
from __future__ import annotations

import collections
import math
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mmjax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "model")


def mesh_shape(shape: Mapping[str, int], device_count: int) -> dict[str, int]:
  """{axis: size} over all MESH_AXES for `device_count` devices; one size may be -1
  (the devices left over). Raises ConfigError for unknown axes or sizes that do not
  multiply to the device count."""
  shape = dict(shape)
  unknown = sorted(set(shape) - set(MESH_AXES))
  if unknown:
    raise ConfigError(f"mesh.shape has unknown axes {unknown}; the mesh axes are "
                      f"{', '.join(MESH_AXES)}, e.g. {{'data': -1, 'fsdp': 1, 'model': 1}}.")
  sizes = {axis: int(shape.get(axis, 1)) for axis in MESH_AXES}
  free = [a for a, s in sizes.items() if s == -1]
  if len(free) > 1 or any(s == 0 or s < -1 for s in sizes.values()):
    raise ConfigError(f"mesh.shape={shape}: sizes must be positive, with at most one -1 "
                      "(the devices left over).")
  fixed = math.prod(s for s in sizes.values() if s != -1)
  if free:
    if device_count % fixed:
      raise ConfigError(f"mesh.shape={shape} needs a multiple of {fixed} devices, but there "
                        f"are {device_count}; change the fixed axis sizes.")
    sizes[free[0]] = device_count // fixed
  elif fixed != device_count:
    raise ConfigError(f"mesh.shape={shape} has {fixed} devices but there are "
                      f"{device_count}; make the sizes multiply to {device_count} or set "
                      "one of them to -1.")
  return sizes


def make_mesh(mesh_config: Mapping[str, Any], devices: Sequence[Any] | None = None
              ) -> Mesh:
  """A ('data', 'fsdp', 'model') mesh over `devices` (default: all) from mesh.shape.

  Devices keep their global order (process by process), so the 'data' axis runs over
  processes outermost and each process's batch rows are contiguous.
  """
  devices = list(jax.devices() if devices is None else devices)
  sizes = mesh_shape(mesh_config.get("shape", {"data": -1}), len(devices))
  grid = np.asarray(devices, dtype=object).reshape([sizes[a] for a in MESH_AXES])
  return Mesh(grid, MESH_AXES)


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh, batch_axes: Sequence[str] = ("data", "fsdp")
                   ) -> NamedSharding:
  """Leading (batch) dimension split over `batch_axes` (the rule for 'batch')."""
  return NamedSharding(mesh, P(tuple(batch_axes)))


def batch_shards(mesh: Mesh, batch_axes: Sequence[str] = ("data", "fsdp")) -> int:
  """How many ways the batch is split: the product of the batch axes' sizes."""
  return math.prod(mesh.shape[a] for a in batch_axes)


def check_process_batches(mesh: Mesh, sharding: NamedSharding, global_batch: int) -> None:
  """Raises ConfigError unless every process holds its own, disjoint rows of the batch.

  `make_array_from_process_local_data` builds the global batch from each process's
  rows; when an axis that replicates the batch (e.g. 'model') spans processes, two
  processes would need the same rows, which the per-process input pipeline cannot give.
  """
  if jax.process_count() == 1:
    return
  rows: dict[int, set] = collections.defaultdict(set)
  for device, index in sharding.devices_indices_map((global_batch,)).items():
    rows[device.process_index].add(index[0].indices(global_batch)[:2])
  owners = collections.Counter(r for process_rows in rows.values() for r in process_rows)
  if any(n > 1 for n in owners.values()):
    raise ConfigError(f"mesh.shape={dict(mesh.shape)} replicates batch rows across "
                      "processes; keep the axes that are not in the 'batch' rule (e.g. "
                      "'model') within one host, i.e. at most the devices of one process.")


def to_global_batch(batch: Mapping[str, np.ndarray], mesh: Mesh,
                    sharding: NamedSharding | None = None) -> dict[str, jax.Array]:
  """Host-local numpy batch [B_local, ...] -> global jax.Arrays [B_local * processes, ...]
  placed with `sharding` (default: `batch_sharding(mesh)`)."""
  sharding = sharding or batch_sharding(mesh)
  return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
          for k, v in batch.items()}


def prefetch_to_mesh(batches: Iterator[Mapping[str, np.ndarray]], mesh: Mesh,
                     size: int = 2, sharding: NamedSharding | None = None,
                     transform: Callable[[dict, int], dict] | None = None
                     ) -> Iterator[dict[str, jax.Array]]:
  """Keeps `size` batches in flight on the devices ahead of the consumer.

  Transfers are asynchronous, so the next steps' inputs copy while the current step runs.
  `transform(batch, i)`, applied to the i-th global batch when it is enqueued, runs on
  the devices ahead of the step too (the data.device_preprocess_train ops).
  """
  queue: collections.deque = collections.deque()
  for i, batch in enumerate(batches):
    device_batch = to_global_batch(batch, mesh, sharding)
    queue.append(device_batch if transform is None else transform(device_batch, i))
    if len(queue) > size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()
