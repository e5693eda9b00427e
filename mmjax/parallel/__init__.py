"""Meshes, logical-axis rules, shardings, and the placement of host data onto devices."""
from mmjax.parallel.mesh import (MESH_AXES, batch_sharding, batch_shards,
                                 check_process_batches, make_mesh, mesh_shape,
                                 prefetch_to_mesh, replicated, to_global_batch)
from mmjax.parallel.rules import (DEFAULT_RULES, activation_rules, batch_axes, constrain,
                                  mesh_spec, opt_state_shardings, param_shardings,
                                  rules_from_config, with_activation_rules)

__all__ = ["MESH_AXES", "DEFAULT_RULES", "activation_rules", "batch_axes", "batch_sharding",
           "batch_shards", "check_process_batches", "constrain", "make_mesh", "mesh_shape",
           "mesh_spec", "opt_state_shardings", "param_shardings", "prefetch_to_mesh",
           "replicated", "rules_from_config", "to_global_batch", "with_activation_rules"]
