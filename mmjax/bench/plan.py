"""AOT plans (`--mode=plan`): lower and compile a config's train step for a target mesh
without running it, and report FLOPs per step, per-device memory and whether it fits.

The target devices are the machine's own (`plan.devices = 0`), fake CPU devices
(`plan.devices = N`: `mmjax.main` makes N CPU devices before JAX starts), or a TPU
topology (`plan.topology = 'v5e:16x16'`, with jax[tpu] installed). Nothing is allocated:
the state and the batch are abstract (shapes, dtypes and shardings only).

Memory per device, as XLA's compiled executable reports it:
  parameters, optimizer state (+ EMA)   from each array's shard shape (exact);
  batch                                 the per-device slice of the global batch;
  temporaries                           XLA's temp buffers: activations kept for the
                                        backward pass, gradients, workspace;
  peak ≈ arguments + temporaries        outputs alias the donated state.
On fake CPU devices temporaries are the CPU compiler's, an estimate for an accelerator
(its fusion and layouts differ); a TPU topology gives the TPU compiler's own numbers.
"""
from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import jax
import ml_collections
from absl import logging

from mmjax.bench import flops as flops_lib
from mmjax.bench import synthetic
from mmjax.errors import ConfigError

GIB = 2**30


def topology_devices(topology: str) -> list:
  """The devices of a TPU topology such as 'v5e:16x16' or 'v4:4x4x4' (AOT only)."""
  try:
    from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
    return list(topologies.get_topology_desc(platform="tpu", topology_name=topology).devices)
  except Exception as e:  # no libtpu, or an unknown topology name
    raise ConfigError(f"Cannot make TPU topology plan.topology={topology!r} ({e}). It needs "
                      "jax[tpu] installed and a name like 'v5e:16x16'; or plan on fake CPU "
                      "devices with plan.topology='' and plan.devices=N.") from None


def _shard_bytes(tree: Any) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs with shardings (the largest
  shard, so uneven shards count their padding)."""
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding else leaf.shape
    total += math.prod(shape) * leaf.dtype.itemsize
  return total


def example_element(config) -> dict:
  """The train example's shapes: from the dataset when it can be described here, else
  from the model (no TensorFlow or dataset needed)."""
  try:
    from mmjax import data  # pylint: disable=g-import-not-at-top
    return data.dataset_info(config.data)["train_element"]
  except Exception as e:  # pylint: disable=broad-except  # no TF, or data not here
    logging.info("Shapes from the model config (dataset not readable here: %s).",
                 str(e).splitlines()[0][:120] if str(e) else type(e).__name__)
    return synthetic.element_spec(config)


def plan_train_step(config: ml_collections.ConfigDict, workdir: str,
                    devices: list | None = None) -> dict[str, Any]:
  """Compiles the train step of `config` for `devices` (default: the plan's target) and
  returns the plan as a dict (also written to `<workdir>/plan.json`)."""
  from mmjax.train import loop  # pylint: disable=g-import-not-at-top
  if devices is None and config.plan.topology:
    devices = topology_devices(config.plan.topology)
  devices = list(jax.devices() if devices is None else devices)
  exp = loop.build_experiment(config, workdir, "plan", devices=devices,
                              element=example_element(config))
  state = exp.abstract_state
  batch, acc = abstract_step_inputs(exp)
  train_step, _ = loop.compile_steps(exp)
  start = time.perf_counter()
  lowered = train_step.lower(state, batch, acc)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  model_flops, hardware_flops = step_flops(exp, workdir, batch, acc)
  memory = compiled.memory_analysis()
  n = len(devices)
  peak = compiled_peak_bytes(memory)
  per_device = {
      "params": _shard_bytes(state.params) + _shard_bytes(state.ema_params or {}),
      "opt_state": _shard_bytes(state.opt_state),
      "batch": _shard_bytes(batch),
      "temporaries": int(getattr(memory, "temp_size_in_bytes", 0)),
      "arguments": int(getattr(memory, "argument_size_in_bytes", 0)),
      "outputs": int(getattr(memory, "output_size_in_bytes", 0)),
      "aliased": int(getattr(memory, "alias_size_in_bytes", 0)),
      "code": int(getattr(memory, "generated_code_size_in_bytes", 0)),
  }
  hbm = float(config.plan.hbm_gib) * GIB
  from mmjax import models  # pylint: disable=g-import-not-at-top
  plan = {
      "config_model": config.model.name,
      "devices": n,
      "device_kind": devices[0].device_kind,
      "mesh": dict(exp.mesh.shape),
      "global_batch": config.train.batch_size,
      "grad_accum_steps": config.optim.grad_accum_steps,
      "remat": config.model.get("remat", "none"),
      "parameters": models.param_count(state.params),
      "flops_per_step": model_flops,
      "flops_per_step_per_device": model_flops / n,
      "hardware_flops_per_step": hardware_flops,
      "xla_flops_per_device": _xla_flops(compiled),
      "bytes_per_device": per_device,
      "peak_bytes_per_device": peak,
      "hbm_bytes": hbm or None,
      "fits": None if not hbm else peak <= hbm,
      "compile_seconds": compile_s,
  }
  if jax.process_index() == 0:
    with open(os.path.join(exp.workdir, "plan.json"), "w") as f:
      json.dump(plan, f, indent=2)
  logging.info("%s", format_plan(plan))
  return plan


def compiled_peak_bytes(memory) -> int:
  """Peak bytes per device of a compiled executable from its memory analysis: arguments
  + temporaries + the outputs that do not alias (donated) arguments."""
  return int(memory.argument_size_in_bytes + memory.temp_size_in_bytes
             + max(memory.output_size_in_bytes - memory.alias_size_in_bytes, 0))


def abstract_step_inputs(exp) -> tuple[dict, dict]:
  """(global batch, metric accumulator) as ShapeDtypeStructs with the step's shardings."""
  from mmjax.train import loop  # pylint: disable=g-import-not-at-top
  batch = {k: jax.ShapeDtypeStruct((exp.config.train.batch_size, *v.shape[1:]), v.dtype,
                                   sharding=exp.batch_sharding)
           for k, v in exp.example_batch.items()}
  replicated = jax.sharding.NamedSharding(exp.mesh, jax.sharding.PartitionSpec())
  acc = jax.tree.map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated),
                     jax.eval_shape(loop.accumulator_factory(exp)))
  return batch, acc


def _matmul_flops(exp, batch, acc) -> float:
  """Matmul FLOPs of one train step of `exp` (traced only, never compiled)."""
  from mmjax.train import loop  # pylint: disable=g-import-not-at-top
  step_fn = loop.train_step_fn(exp)
  return flops_lib.count_flops(step_fn, exp.abstract_state, batch, acc)["matmul"]


def step_flops(exp, workdir: str, batch, acc) -> tuple[float, float]:
  """(model FLOPs, hardware FLOPs) of one train step: matmul FLOPs counted from the
  jaxpr, the first without remat's recomputation (what MFU divides by), the second with
  it (what the device executes)."""
  from mmjax.train import loop  # pylint: disable=g-import-not-at-top
  hardware = _matmul_flops(exp, batch, acc)
  if exp.config.model.get("remat", "none") == "none":
    return hardware, hardware
  plain = exp.config.copy_and_resolve_references()
  plain.model.remat = "none"
  element = {k: {"shape": v.shape[1:], "dtype": v.dtype.name}
             for k, v in exp.example_batch.items()}
  plain_exp = loop.build_experiment(plain, workdir, "plan", devices=list(
      exp.mesh.devices.flat), element=element)
  return _matmul_flops(plain_exp, batch, acc), hardware


def _xla_flops(compiled) -> float | None:
  """XLA's own count for one device (a scanned body is counted once, not per layer)."""
  try:
    analysis = compiled.cost_analysis()
    analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
    return float(analysis.get("flops", 0.0))
  except Exception:  # pylint: disable=broad-except  # not every backend reports it
    return None


def _fmt_bytes(b: float) -> str:
  for unit, size in (("GiB", GIB), ("MiB", 2**20), ("KiB", 2**10)):
    if b >= size:
      return f"{b / size:.2f} {unit}"
  return f"{int(b)} B"


def format_plan(plan: dict) -> str:
  """The plan as a short human-readable table."""
  gib = _fmt_bytes
  mem = plan["bytes_per_device"]
  fits = ("unknown (set plan.hbm_gib)" if plan["fits"] is None else
          f"{'yes' if plan['fits'] else 'NO'} ({gib(plan['peak_bytes_per_device'])} of "
          f"{gib(plan['hbm_bytes'])})")
  lines = [
      f"plan: {plan['config_model']}, {plan['parameters']:,} parameters, "
      f"{plan['devices']} x {plan['device_kind']}, mesh {plan['mesh']}",
      f"  global batch {plan['global_batch']}, grad_accum_steps "
      f"{plan['grad_accum_steps']}, remat {plan['remat']}",
      f"  model FLOPs per step {plan['flops_per_step']:.4g} "
      f"({plan['flops_per_step_per_device']:.4g} per device; with remat's recompute "
      f"{plan['hardware_flops_per_step']:.4g})",
      f"  per device: params {gib(mem['params'])}, optimizer state "
      f"{gib(mem['opt_state'])}, batch {gib(mem['batch'])}, temporaries "
      f"{gib(mem['temporaries'])}",
      f"  peak per device {gib(plan['peak_bytes_per_device'])}; fits: {fits}",
      f"  compiled in {plan['compile_seconds']:.1f} s",
  ]
  return "\n".join(lines)
