"""Run by launch/local.py in the distributed test: sums a global array across processes.

Prints `PROBE process=i processes=n devices=d sum=s`. PROBE_FAIL_PROCESS=i makes process i
exit with code 3 before joining, to test that the launcher stops the others.
"""
import os
import sys

import jax


def main() -> None:
  """Joins the cluster from the MMJAX_* environment and prints one PROBE line."""
  if os.environ.get("PROBE_FAIL_PROCESS") == os.environ.get("MMJAX_PROCESS_ID"):
    sys.exit(3)
  # Before any device is created, as mmjax.main does.
  jax.config.update("jax_num_cpu_devices", int(os.environ["MMJAX_CPU_DEVICES_PER_PROCESS"]))
  from mmjax.parallel import distributed  # pylint: disable=g-import-not-at-top
  assert distributed.initialize()
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
  mesh = Mesh(np.asarray(jax.devices()), ("data",))
  # Process p contributes 100 * p + [0, 1, ...]: the sum shows every process's rows arrived.
  local = 100 * jax.process_index() + np.arange(jax.local_device_count(), dtype=np.float32)
  x = jax.make_array_from_process_local_data(NamedSharding(mesh, P("data")), local)
  total = jax.jit(lambda a: a.sum(), out_shardings=NamedSharding(mesh, P()))(x)
  print(f"PROBE process={jax.process_index()} processes={jax.process_count()} "
        f"devices={jax.device_count()} sum={float(total)}", flush=True)


if __name__ == "__main__":
  main()
