"""Meshes, shardings and the placement of host data onto devices."""
from mmjax.parallel.mesh import (batch_sharding, make_mesh, prefetch_to_mesh, replicated,
                                 to_global_batch)

__all__ = ["batch_sharding", "make_mesh", "prefetch_to_mesh", "replicated",
           "to_global_batch"]
