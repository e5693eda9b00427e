"""Run as a script with 8 fake CPU devices: restores checkpoints onto meshes other than
the one that wrote them. Prints RESULTS {name: max abs param diff vs the reference}.

  python -m tests.parallel.restore_across_meshes DATA_DIR REFERENCE_WORKDIR \
      MULTIPROCESS_WORKDIR SCRATCH

1. The 2-process run's checkpoint (4 devices, {'data': 2, 'fsdp': 2}) restored in this one
   process on 8 devices ({'fsdp': 8}) and on 1 device, against the 1-process run's.
2. That state saved again from 8 devices, restored on 4 ({'fsdp': 4}).
"""
import json
import sys

import jax

jax.config.update("jax_num_cpu_devices", 8)
import numpy as np  # noqa: E402

from mmjax.train import loop  # noqa: E402
from tests.parallel.vit_fsdp_config import get_config  # noqa: E402


def restore(data_dir, workdir, shape, devices):
  c = get_config(data_dir)
  c.mesh.shape = shape
  exp = loop.build_experiment(c, workdir, "eval", devices=devices)
  state, _, step = exp.checkpointer.restore_latest(exp.abstract_state)
  return exp, state, step


def max_diff(a, b):
  return max(float(np.max(np.abs(x - y))) for x, y in
             zip(jax.tree.leaves(jax.device_get(a)), jax.tree.leaves(jax.device_get(b))))


def main(data_dir, reference_dir, multi_dir, scratch):
  devices = jax.devices()
  ref_exp, ref, _ = restore(data_dir, reference_dir, {"data": 1}, devices[:1])
  ref_exp.checkpointer.close()
  results = {}
  exp8, on8, step = restore(data_dir, multi_dir, {"fsdp": 8}, devices)
  results["two_process_ckpt_on_8_devices"] = max_diff(on8.params, ref.params)
  results["sharded_8_ways"] = len(jax.tree.leaves(on8.params)[-1].sharding.device_set)
  exp1, on1, _ = restore(data_dir, multi_dir, {"data": 1}, devices[:1])
  results["two_process_ckpt_on_1_device"] = max_diff(on1.params, ref.params)
  exp8.checkpointer.close()
  exp1.checkpointer.close()
  c = get_config(data_dir)
  c.mesh.shape = {"fsdp": 8}
  writer = loop.build_experiment(c, scratch, "eval", devices=devices)
  writer.checkpointer.save(step, on8, batches_consumed=step)
  writer.checkpointer.close()
  exp4, on4, _ = restore(data_dir, scratch, {"fsdp": 4}, devices[:4])
  results["saved_on_8_restored_on_4"] = max_diff(on4.params, ref.params)
  results["restored_on_4_devices"] = len(
      set().union(*(leaf.sharding.device_set for leaf in jax.tree.leaves(on4.params))))
  exp4.checkpointer.close()
  print("RESULTS " + json.dumps(results))


if __name__ == "__main__":
  main(*sys.argv[1:])
