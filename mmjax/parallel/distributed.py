"""Multi-host start-up: find the cluster settings and call `jax.distributed.initialize`.

`initialize()` must run before anything touches JAX devices (`jax.devices()`, `jax.device_put`,
any computation, building a mesh): once the XLA backend exists it cannot join a cluster.
`jax.config` updates such as `jax_num_cpu_devices` may run before or after it, as long as no
backend has been created yet.

Where the settings come from, first match wins:
  1. explicit arguments, each falling back to our variables MMJAX_COORDINATOR_ADDRESS,
     MMJAX_NUM_PROCESSES and MMJAX_PROCESS_ID (all three or none);
  2. SLURM (SLURM_JOB_ID with SLURM_NTASKS > 1): process 0 runs on the first node of the step,
     port MMJAX_COORDINATOR_PORT (default 12355), one process per task;
  3. Cloud TPU VMs (TPU_WORKER_HOSTNAMES, TPU_WORKER_ID, CLOUD_TPU_TASK_ID, TPU_NAME or
     TPU_ACCELERATOR_TYPE set): `jax.distributed.initialize()` with no arguments, since JAX
     reads the pod's topology itself;
  4. otherwise a single-process run, and nothing is initialised.
MMJAX_DISTRIBUTED=0 skips 2 and 3: one process on its local devices inside a SLURM
allocation or on one TPU VM worker.
"""
from __future__ import annotations

import errno
import itertools
import os
import re
import socket
from typing import Mapping, Sequence

import jax
from absl import logging

from mmjax.errors import ConfigError

DEFAULT_SLURM_PORT = 12355
DEFAULT_INIT_TIMEOUT_S = 300

# (argument name, environment variable) of the three explicit settings.
_EXPLICIT = (("coordinator_address", "MMJAX_COORDINATOR_ADDRESS"),
             ("num_processes", "MMJAX_NUM_PROCESSES"),
             ("process_id", "MMJAX_PROCESS_ID"))
_TPU_VARS = ("TPU_WORKER_HOSTNAMES", "TPU_WORKER_ID", "CLOUD_TPU_TASK_ID", "TPU_NAME",
             "TPU_ACCELERATOR_TYPE")


def expand_nodelist(nodelist: str) -> list[str]:
  """SLURM host list -> host names: 'node[001-003,007],gpu-[1-2]' -> node001 .. gpu-2.

  Ranges keep the zero padding of their start ('[08-10]' -> 08, 09, 10); several bracket
  groups in one name expand to every combination, as in `scontrol show hostnames`.
  """
  hosts = []
  # Commas inside brackets separate ranges, outside they separate names.
  for name in re.findall(r"(?:[^,\[]|\[[^\]]*\])+", nodelist):
    parts = re.split(r"\[([^\]]*)\]", name)
    choices = []
    for i, part in enumerate(parts):
      choices.append(_expand_ranges(part, nodelist) if i % 2 else [part])
    hosts.extend("".join(c) for c in itertools.product(*choices))
  if not hosts:
    raise ConfigError(f"The SLURM node list {nodelist!r} names no hosts; run the job with srun.")
  return hosts


def _expand_ranges(ranges: str, nodelist: str) -> list[str]:
  out = []
  for item in ranges.split(","):
    lo, _, hi = item.partition("-")
    if not lo.isdigit() or (hi and not hi.isdigit()):
      raise ConfigError(f"Cannot read the SLURM node list {nodelist!r} (range {item!r}); "
                        "set MMJAX_COORDINATOR_ADDRESS to process 0's host:port instead.")
    out.extend(str(n).zfill(len(lo)) for n in range(int(lo), int(hi or lo) + 1))
  return out


def _to_int(value, name: str) -> int:
  try:
    return int(value)
  except (TypeError, ValueError):
    raise ConfigError(f"{name}={value!r} must be an integer.") from None


def _check_settings(address: str, num_processes: int, process_id: int, source: str) -> dict:
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise ConfigError(f"The coordinator address {address!r} ({source}) must be host:port, "
                      "e.g. 10.0.0.1:12355.")
  if num_processes < 1:
    raise ConfigError(f"num_processes={num_processes} ({source}) must be at least 1.")
  if not 0 <= process_id < num_processes:
    raise ConfigError(f"process_id={process_id} ({source}) must be in [0, {num_processes}): "
                      "give each process a distinct id from 0 to num_processes - 1.")
  return {"coordinator_address": address, "num_processes": num_processes,
          "process_id": process_id}


def _slurm_settings(env: Mapping[str, str]) -> dict:
  nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
  if not nodelist or "SLURM_PROCID" not in env:
    raise ConfigError("SLURM_NTASKS > 1 but SLURM_PROCID or the node list is missing: start "
                      "every process with srun (see launch/slurm.sbatch).")
  port = _to_int(env.get("MMJAX_COORDINATOR_PORT", DEFAULT_SLURM_PORT), "MMJAX_COORDINATOR_PORT")
  return _check_settings(f"{expand_nodelist(nodelist)[0]}:{port}",
                         _to_int(env["SLURM_NTASKS"], "SLURM_NTASKS"),
                         _to_int(env["SLURM_PROCID"], "SLURM_PROCID"), "from SLURM")


def cluster_settings(coordinator_address: str | None = None, num_processes: int | None = None,
                     process_id: int | None = None,
                     env: Mapping[str, str] = os.environ) -> dict | None:
  """The keyword arguments for `jax.distributed.initialize`, or None for a single process.

  Returns {'coordinator_address', 'num_processes', 'process_id'}, or {'auto': True} on a
  Cloud TPU VM (call `jax.distributed.initialize()` without arguments). Precedence is in the
  module docstring. Raises ConfigError for a partial or inconsistent setting.
  """
  given = {"coordinator_address": coordinator_address, "num_processes": num_processes,
           "process_id": process_id}
  values, missing = {}, []
  for arg, var in _EXPLICIT:
    value = given[arg] if given[arg] is not None else env.get(var) or None
    if value is None:
      missing.append(f"{arg} (or {var})")
    values[arg] = value
  if len(missing) < len(_EXPLICIT):
    if missing:
      raise ConfigError(f"A multi-process run needs all three settings but "
                        f"{' and '.join(missing)} "
                        f"{'is' if len(missing) == 1 else 'are'} not set: set "
                        f"{'it' if len(missing) == 1 else 'them'} as well, or unset the others "
                        "for a single-process run.")
    return _check_settings(str(values["coordinator_address"]),
                           _to_int(values["num_processes"], "num_processes"),
                           _to_int(values["process_id"], "process_id"),
                           "from arguments / MMJAX_* variables")
  if env.get("MMJAX_DISTRIBUTED") == "0":   # e.g. a single-process run inside salloc
    return None
  if env.get("SLURM_JOB_ID") and _to_int(env.get("SLURM_NTASKS", 1), "SLURM_NTASKS") > 1:
    return _slurm_settings(env)
  if any(env.get(var) for var in _TPU_VARS):
    return {"auto": True}
  return None


def _check_port_free(address: str) -> None:
  """Process 0 binds the coordinator port on all interfaces; fail clearly if it is taken.

  Otherwise the gRPC server fails to bind and the process crashes in C++ (SIGSEGV in jax
  0.10) with only a one-line log.
  """
  port = int(address.rpartition(":")[2])
  for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
    try:
      with socket.socket(family, socket.SOCK_STREAM) as s:
        # As gRPC does, so that connections left in TIME_WAIT by an earlier run don't count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
      return
    except OSError as e:
      if e.errno == errno.EADDRINUSE:
        raise ConfigError(f"The coordinator port {port} ({address}) is already in use on process "
                          "0's host (another run, or a stale one?): pick a free port in "
                          "MMJAX_COORDINATOR_ADDRESS / MMJAX_COORDINATOR_PORT.") from None
      # No IPv6 on this host: try IPv4.


def _cpu_collectives_wanted(env: Mapping[str, str]) -> bool:
  flag = env.get("MMJAX_CPU_COLLECTIVES", "").strip().lower()
  return env.get("JAX_PLATFORMS", "").startswith("cpu") or flag not in ("", "0", "false")


def _distributed_state():
  """(process_id, num_processes) as jax.distributed recorded them, without creating a backend."""
  try:
    from jax._src import distributed as jax_distributed  # pylint: disable=g-import-not-at-top
    state = jax_distributed.global_state
    return state.process_id, state.num_processes
  except (ImportError, AttributeError):  # Private API: only used for the log line.
    return "?", "?"


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None,
               local_device_ids: Sequence[int] | None = None,
               initialization_timeout: int | None = None) -> bool:
  """Joins the multi-process cluster if there is one; True if jax.distributed is initialised.

  Call it first, before anything touches JAX devices (see the module docstring). Settings come
  from `cluster_settings`. `local_device_ids` (or MMJAX_LOCAL_DEVICE_IDS='0,1') restricts this
  process to those local GPUs, e.g. one process per GPU. `initialization_timeout` (or
  MMJAX_INIT_TIMEOUT, default 300 s) bounds the wait for all processes; when it runs out JAX
  aborts the process (DEADLINE_EXCEEDED) rather than raising. On CPU (JAX_PLATFORMS=cpu or
  MMJAX_CPU_COLLECTIVES=1) cross-process collectives use gloo.
  """
  if getattr(jax.distributed, "is_initialized", lambda: False)():
    logging.info("jax.distributed is already initialised: process %s of %s.",
                 *_distributed_state())
    return True
  settings = cluster_settings(coordinator_address, num_processes, process_id)
  if settings is None:
    return False
  env = os.environ
  if local_device_ids is None and env.get("MMJAX_LOCAL_DEVICE_IDS"):
    local_device_ids = [_to_int(i, "MMJAX_LOCAL_DEVICE_IDS")
                        for i in env["MMJAX_LOCAL_DEVICE_IDS"].split(",")]
  if initialization_timeout is None:
    initialization_timeout = _to_int(env.get("MMJAX_INIT_TIMEOUT", DEFAULT_INIT_TIMEOUT_S),
                                     "MMJAX_INIT_TIMEOUT")
  kwargs = {"initialization_timeout": initialization_timeout}
  if local_device_ids is not None:
    kwargs["local_device_ids"] = list(local_device_ids)
  if settings.get("auto"):
    where = "the TPU pod's coordinator (auto-detected)"
  else:
    # 'deactivate': with local_device_ids unset, JAX would otherwise still run its own cluster
    # detection and, under SLURM, shrink each process to one GPU (SLURM_LOCALID).
    kwargs.update(settings, cluster_detection_method="deactivate")
    where = (f"coordinator {settings['coordinator_address']} as process "
             f"{settings['process_id']} of {settings['num_processes']}")
    if settings["process_id"] == 0:
      _check_port_free(settings["coordinator_address"])
  if _cpu_collectives_wanted(env):
    # Without a CPU collectives implementation, computations spanning processes fail on CPU
    # (gloo is the default only in recent JAX versions).
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # A timeout aborts the process inside XLA with no Python exception, so say what to check now.
  logging.info("Joining %s (waiting up to %d s for all processes; if it aborts with "
               "DEADLINE_EXCEEDED, check that every process started with the same address and "
               "process count and that the port is reachable).", where, initialization_timeout)
  try:
    jax.distributed.initialize(**kwargs)
  except RuntimeError as e:
    if "must be called before" in str(e):
      raise ConfigError("jax.distributed must be initialised before anything touches JAX devices: "
                        "call mmjax.parallel.distributed.initialize() first.") from e
    raise ConfigError(f"Could not join {where} ({e}): check that process 0 is running and that "
                      "the address is reachable from this host.") from e
  except (ValueError, TypeError) as e:
    raise ConfigError(f"Invalid jax.distributed settings for {where}: {e}") from e
  logging.info("jax.distributed initialised: process %s of %s.", *_distributed_state())
  return True
