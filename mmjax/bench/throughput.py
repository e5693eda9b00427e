"""`--mode=bench`: warm train steps of any config on synthetic on-device data.

Reports step time (median, p10, p90 of steps each timed to completion, and the mean of a
pipelined run with no host synchronisation inside), examples/s, tokens/s, model TFLOP/s
and MFU against the device's peak, compile time and peak device memory, as JSON in
`<workdir>/bench.json`. No TensorFlow is needed: the batch is random data shaped like
the training examples (from the dataset's description when it is readable here, else
from the model config: `mmjax.bench.synthetic`), placed on the devices once.

MFU = model FLOPs per step (matmuls counted from the jaxpr, remat's recompute excluded)
/ (step time x devices x peak FLOP/s per device). Peaks are the vendors' dense numbers
for the compute dtype (`PEAK_FLOPS`); on a CPU the peak is this machine's measured
throughput of a large jitted matmul in that dtype, timed in every round beside the steps
(the median over rounds), so that a shared machine's drift moves step and peak alike.

`bench.compare` adds, in the same run and on the same batch:
  'bare'      the same model and loss in a bare hand-written `jax.jit` step (value_and_grad
              + optax, donated), the overhead ratio of mmjax's step against it;
  'pipeline'  the config's real input pipeline (TFDS, needs TensorFlow) feeding the same
              compiled step through the trainer's device prefetch, against synthetic data;
  'nonprivate' (with privacy.enabled) the same step without DP-SGD's per-example
              clipping and noise: the cost of privacy, as a ratio;
  'torch_eager', 'torch_compile'
              the same causal GPT in PyTorch, eager and torch.compile, in a child process
              that runs its blocks while this one waits (CPU; mmjax/bench/torch_compare.py).
Each of `bench.rounds` rounds runs every contender for `bench.steps` steps in turn, and
each ratio is the median over rounds of the two steps' times in the same round.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from mmjax.bench import flops as flops_lib
from mmjax.bench import plan as plan_lib
from mmjax.bench import synthetic
from mmjax.bench import torch_compare
from mmjax.errors import ConfigError

# Dense peak FLOP/s per device by compute dtype, from the vendors' data sheets (no
# sparsity). float32 on NVIDIA GPUs runs matmuls in TF32 under XLA's default precision.
# Matched by substring of `device.device_kind`, most specific first.
PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("H100 PCIe", {"bfloat16": 756e12, "float32": 378e12}),
    ("H100", {"bfloat16": 989e12, "float32": 494e12}),       # SXM
    ("H200", {"bfloat16": 989e12, "float32": 494e12}),
    ("A100", {"bfloat16": 312e12, "float32": 156e12}),
    ("TPU v6", {"bfloat16": 918e12, "float32": 918e12}),
    ("TPU v5 lite", {"bfloat16": 197e12, "float32": 197e12}),
    ("TPU v5", {"bfloat16": 459e12, "float32": 459e12}),
    ("TPU v4", {"bfloat16": 275e12, "float32": 275e12}),
)
COMPARISONS = ("bare", "pipeline", "nonprivate", "torch_eager", "torch_compile")


# The CPU's MFU reference: a jitted matmul of this size in the compute dtype, timed for at
# least this long in every round beside the steps, after settling as long untimed
# (`flops.MatmulTimer` says why).
CPU_PEAK_MATMUL_N = 2048
CPU_PEAK_MIN_SECONDS = 0.5
CPU_PEAK_SETTLE_SECONDS = 0.5


def datasheet_peak(device, dtype: str) -> tuple[float, str]:
  """(peak FLOP/s, where it came from) for one accelerator and compute dtype."""
  for kind, peaks in PEAK_FLOPS:
    if kind in device.device_kind:
      return peaks[dtype], f"data sheet: {kind} dense {dtype}"
  raise ConfigError(f"No peak FLOP/s known for device {device.device_kind!r}; add it to "
                    "mmjax.bench.throughput.PEAK_FLOPS.")


def host_description() -> dict[str, Any]:
  """The host's CPU model and core count, and the XLA_FLAGS in force: what a CPU row
  needs to be compared with another machine's (every CPU device is 'cpu')."""
  model = platform.processor() or platform.machine()
  with contextlib.suppress(OSError):
    with open("/proc/cpuinfo") as f:
      model = next((line.split(":", 1)[1].strip() for line in f
                    if line.startswith("model name")), model)
  return {"cpu_model": model, "cpu_count": os.cpu_count(),
          "xla_flags": os.environ.get("XLA_FLAGS", "")}


def _stats(times: list[float]) -> dict[str, float]:
  q = np.percentile(np.asarray(times), [10, 50, 90])
  return {"p10_s": float(q[0]), "median_s": float(q[1]), "p90_s": float(q[2])}


class _LocalStep:
  """A jitted step run in this process. Contenders with the same `key` thread one carry
  (state) through `carries` between them."""

  def __init__(self, step, batch_fn, carries: dict[str, Any], key: str):
    self._step, self._batch_fn, self._carries, self._key = step, batch_fn, carries, key

  def _run(self, count: int, sync_each: bool) -> list[float]:
    carry, times = self._carries[self._key], []
    for _ in range(count):
      start = time.perf_counter()
      carry = self._step(carry, self._batch_fn())
      if sync_each:
        jax.block_until_ready(carry)
        times.append(time.perf_counter() - start)
    jax.block_until_ready(carry)
    self._carries[self._key] = carry
    return times

  def latencies(self, count: int) -> list[float]:
    """[count] seconds, each step timed to completion."""
    return self._run(count, sync_each=True)

  def block(self, count: int) -> float:
    """Mean seconds per step of `count` steps back to back, one synchronisation."""
    start = time.perf_counter()
    self._run(count, sync_each=False)
    return (time.perf_counter() - start) / count


def _time_contenders(contenders: dict[str, Any], b) -> dict[str, dict[str, Any]]:
  """Times each contender (`latencies(n)`, `block(n)`: a _LocalStep, the PyTorch
  child's torch_compare.RemoteStep, or the CPU's reference flops.MatmulTimer): `warmup`
  steps, then `steps` steps each timed to completion (latency), then `rounds` rounds in
  which every contender in turn runs `steps` steps back to back with one synchronisation
  at the end (throughput).
  Alternating the blocks puts each comparison next to mmjax's step in time, so the
  machine's slow drift (±4% on the 2-core CPU) shows in no ratio of one round.
  -> {name: {'times': [steps] latencies, 'blocks': [rounds] mean step times}}."""
  out = {}
  for name, contender in contenders.items():
    contender.block(b.warmup)
    out[name] = {"times": contender.latencies(b.steps), "blocks": []}
  for _ in range(b.rounds):
    for name, contender in contenders.items():
      out[name]["blocks"].append(contender.block(b.steps))
  return out


def _ratio(timed: dict, numerator: str, denominator: str) -> float:
  """Median over rounds of (one contender's step / another's in the same round)."""
  return statistics.median(x / y for x, y in zip(timed[numerator]["blocks"],
                                                 timed[denominator]["blocks"]))


# Each comparison's headline: (report key, numerator, denominator, minus one?).
_RATIOS = {"bare": ("overhead_vs_bare", "mmjax", "bare", True),
           "pipeline": ("pipeline_slowdown", "pipeline", "mmjax", True),
           "nonprivate": ("privacy_cost", "mmjax", "nonprivate", False),
           "torch_eager": ("speedup_vs_torch_eager", "torch_eager", "mmjax", False),
           "torch_compile": ("speedup_vs_torch_compile", "torch_compile", "mmjax", False)}


def _peak_memory(device, compiled) -> tuple[int | None, str]:
  stats = device.memory_stats() if hasattr(device, "memory_stats") else None
  if stats and "peak_bytes_in_use" in stats:
    return int(stats["peak_bytes_in_use"]), "device allocator peak"
  memory = compiled.memory_analysis()
  if memory is None:
    return None, "unknown"
  return plan_lib.compiled_peak_bytes(memory), "compiled executable (arguments + temporaries)"


def run_bench(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Benchmarks the train step of `config`; returns the report (and writes bench.json)."""
  from mmjax import parallel  # pylint: disable=g-import-not-at-top
  from mmjax.train import loop  # pylint: disable=g-import-not-at-top
  b = config.bench
  unknown = sorted(set(b.compare) - set(COMPARISONS))
  if unknown or b.steps < 1 or b.warmup < 1 or b.rounds < 1:
    raise ConfigError(f"bench.steps, bench.warmup and bench.rounds must be >= 1 and "
                      f"bench.compare a subset of {COMPARISONS}; got steps={b.steps}, "
                      f"warmup={b.warmup}, rounds={b.rounds}, compare={tuple(b.compare)}.")
  if "nonprivate" in b.compare and not config.privacy.enabled:
    raise ConfigError("bench.compare='nonprivate' times the DP step against the ordinary "
                      "one: set privacy.enabled=True (and privacy.noise_multiplier).")
  element = plan_lib.example_element(config)
  torch_modes = [torch_compare.MODES[c] for c in b.compare if c in torch_compare.MODES]
  if torch_modes:   # Refused here, before anything compiles.
    torch_args = torch_compare.reference_args(
        config, batch=config.train.batch_size,
        seq=element["text"]["shape"][0] if "text" in element else 0,
        platform=jax.devices()[0].platform, processes=jax.process_count())
  exp = loop.build_experiment(config, workdir, "bench", element=element)
  m = config.model
  host = synthetic.synthetic_batch(element, exp.per_process_batch,
                                   vocab_size=m.get("vocab_size", 256),
                                   num_classes=m.get("num_classes", 10) or 10)
  batch = parallel.to_global_batch(host, exp.mesh, exp.batch_sharding)
  train_step, _ = loop.compile_steps(exp)
  state = exp.init_state()
  acc = loop.accumulator_factory(exp)()
  start = time.perf_counter()
  compiled = train_step.lower(state, batch, acc).compile()
  compile_s = time.perf_counter() - start
  abstract_batch, abstract_acc = plan_lib.abstract_step_inputs(exp)
  model_flops, hardware_flops = plan_lib.step_flops(exp, workdir, abstract_batch,
                                                    abstract_acc)

  def mmjax_step(carry, batch):
    return compiled(carry[0], batch, carry[1])

  device = exp.mesh.devices.flat[0]
  dtype = str(m.get("dtype", "float32"))
  if device.platform == "cpu":   # Timed last in each round, beside the steps.
    reference = flops_lib.MatmulTimer(CPU_PEAK_MATMUL_N, jnp.dtype(dtype),
                                      min_seconds=CPU_PEAK_MIN_SECONDS,
                                      settle_seconds=CPU_PEAK_SETTLE_SECONDS)
  else:   # Refused before any step runs if the chip is unknown.
    reference = None
    peak, peak_source = datasheet_peak(device, dtype)

  carries = {"mmjax": (state, acc)}
  contenders = {"mmjax": _LocalStep(mmjax_step, lambda: batch, carries, "mmjax")}
  if "bare" in b.compare:
    bare_step, carries["bare"] = _bare_step(exp)
    contenders["bare"] = _LocalStep(bare_step, lambda: batch, carries, "bare")
  if "nonprivate" in b.compare:
    plain_step, carries["nonprivate"] = _nonprivate_step(config, workdir, element)
    contenders["nonprivate"] = _LocalStep(plain_step, lambda: batch, carries, "nonprivate")
  with contextlib.ExitStack() as stack:
    if "pipeline" in b.compare:
      device_batches = _pipeline_batches(exp)
      stack.callback(device_batches.close)
      contenders["pipeline"] = _LocalStep(mmjax_step, lambda: next(device_batches),
                                          carries, "mmjax")
    extra = {}   # Per comparison, what its entry in the report adds to the timings.
    if torch_modes:   # Started after mmjax's compile, so that the two never overlap.
      # The child runs only the first (compiling) step; `_time_contenders` then warms
      # every contender up alike.
      server = stack.enter_context(torch_compare.TorchServer(
          torch_compare.server_command(torch_args, torch_modes, warmup=1)))
      torch_meta = {"version": server.info["torch"], "threads": server.info["threads"]}
      for name, mode in torch_compare.MODES.items():
        if mode in torch_modes:
          ready = server.info["modes"][mode]
          if "error" in ready:
            logging.warning("PyTorch %s failed, left out of the comparison: %s", mode,
                            ready["error"])
            extra[name] = ready
          else:
            contenders[name] = torch_compare.RemoteStep(server, mode)
            extra[name] = {"first_step_s": ready["first_step_s"]}
    if reference is not None:
      contenders["matmul_peak"] = reference
    timed = _time_contenders(contenders, b)
    if "pipeline" in b.compare:
      extra["pipeline"] = _pipeline_alone(device_batches, max(b.steps * b.rounds, 20))
  times = timed["mmjax"]["times"]
  pipelined = statistics.median(timed["mmjax"]["blocks"])

  n_dev = exp.mesh.devices.size
  if reference is not None:
    peak = reference.flops / statistics.median(timed["matmul_peak"]["blocks"])
    peak_source = (f"measured: jitted {reference.n}x{reference.n} {dtype} matmul on this "
                   f"CPU, in each of the {b.rounds} rounds beside the steps (median)")
  stats = _stats(times)
  memory, memory_source = _peak_memory(device, compiled)
  global_batch = exp.batch_size
  # Text tokens per step (0 for models without text).
  tokens = int(np.prod(element["text"]["shape"])) * global_batch if "text" in element else 0
  report = {
      "config_model": m.name, "objective": config.objective.name,
      "adversarial": config.adversarial.kind, "device": device.device_kind,
      "devices": n_dev, "platform": device.platform, "jax": jax.__version__,
      "host": host_description(),
      "date": time.strftime("%Y-%m-%d"), "mesh": dict(exp.mesh.shape),
      "global_batch": global_batch, "dtype": dtype, "remat": m.get("remat", "none"),
      "steps": b.steps, "warmup": b.warmup, "rounds": b.rounds, **stats,
      "pipelined_mean_s": pipelined,
      "round_means_s": {name: t["blocks"] for name, t in timed.items()},
      "examples_per_s": global_batch / pipelined,
      "tokens_per_s": tokens / pipelined if tokens else None,
      "model_flops_per_step": model_flops, "hardware_flops_per_step": hardware_flops,
      "model_tflops_per_s": model_flops / pipelined / 1e12,
      "peak_flops_per_device": peak, "peak_source": peak_source,
      "mfu": model_flops / (pipelined * n_dev * peak),
      "compile_s": compile_s, "peak_memory_bytes": memory, "memory_source": memory_source,
  }
  for name, (key, numerator, denominator, minus_one) in _RATIOS.items():
    if name in timed:
      report[name] = {**_stats(timed[name]["times"]), **extra.get(name, {}),
                      "pipelined_mean_s": statistics.median(timed[name]["blocks"])}
      report[key] = _ratio(timed, numerator, denominator) - (1.0 if minus_one else 0.0)
    elif name in extra:   # A PyTorch mode that failed to build: its error.
      report[name] = extra[name]
  if torch_modes:
    report["torch"] = torch_meta
  if jax.process_index() == 0:
    with open(os.path.join(exp.workdir, "bench.json"), "w") as f:
      json.dump(report, f, indent=2)
  logging.info("%s", format_report(report))
  return report


def _nonprivate_step(config, workdir: str, element: dict) -> tuple[Any, tuple]:
  """(step(carry, batch) -> carry, carry) of the config with privacy off, compiled."""
  from mmjax.train import loop  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  with config.unlocked():
    config.privacy.enabled = False
  exp = loop.build_experiment(config, workdir, "bench", element=element)
  train_step, _ = loop.compile_steps(exp)
  step = lambda carry, batch: train_step(carry[0], batch, carry[1])
  return step, (exp.init_state(), loop.accumulator_factory(exp)())


def _bare_step(exp) -> tuple[Any, tuple]:
  """The same model and loss in a minimal hand-written jitted step: value_and_grad of the
  objective, an optax update, donated buffers; no metrics, shardings or checks.
  -> (step(carry, batch) -> carry, initial carry)."""
  loss_fn, tx = exp.loss_fn, exp.tx
  init = exp.init_state()
  params, opt_state, model_state = init.params, init.opt_state, init.model_state
  rng = jax.random.key(0)

  def bare_step(carry, batch):
    params, opt_state = carry
    (_, _), grads = jax.value_and_grad(loss_fn, has_aux=True)(
        params, batch, rng, model_state=model_state, train=True)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state

  return jax.jit(bare_step, donate_argnums=(0,)), (params, opt_state)


def _pipeline_alone(device_batches, count: int) -> dict[str, float]:
  """The pipeline by itself, each batch made ready before the next: wall and process CPU
  seconds per batch over `count` batches (CPU of every thread: tf.data's and XLA's). On
  a machine whose host shares the step's cores, its CPU is what the step loses."""
  wall, cpu = time.perf_counter(), time.process_time()
  for _ in range(count):
    jax.block_until_ready(next(device_batches))
  return {"alone_s": (time.perf_counter() - wall) / count,
          "alone_cpu_s": (time.process_time() - cpu) / count}


def _pipeline_batches(exp):
  """The config's real input pipeline (host and device preprocessing) through the
  trainer's device prefetch: an iterator of device batches."""
  from mmjax import data, parallel  # pylint: disable=g-import-not-at-top  # TensorFlow
  from mmjax.data import device_ops  # pylint: disable=g-import-not-at-top
  t = exp.config.train
  batches = data.make_train_iterator(exp.config.data, batch_size=exp.per_process_batch,
                                     seed=t.seed)
  return parallel.prefetch_to_mesh(
      batches, exp.mesh, t.device_prefetch, exp.batch_sharding,
      transform=device_ops.train_transform(exp.config.data, seed=t.seed,
                                           sharding=exp.batch_sharding))


def format_report(r: dict) -> str:
  """The report as a few human-readable lines."""
  lines = [
      f"bench: {r['config_model']} ({r['objective']}, adversarial {r['adversarial']}), "
      f"{r['devices']} x {r['device']}, batch {r['global_batch']}, {r['dtype']}",
      f"  step {r['pipelined_mean_s'] * 1e3:.1f} ms pipelined; timed one by one: median "
      f"{r['median_s'] * 1e3:.1f}, p10 {r['p10_s'] * 1e3:.1f}, p90 {r['p90_s'] * 1e3:.1f} ms",
      f"  {r['examples_per_s']:.1f} examples/s"
      + (f", {r['tokens_per_s']:.0f} tokens/s" if r["tokens_per_s"] else ""),
      f"  {r['model_tflops_per_s']:.3f} model TFLOP/s; MFU {100 * r['mfu']:.1f}% of "
      f"{r['peak_flops_per_device'] / 1e12:.3f} TFLOP/s per device ({r['peak_source']})",
      f"  compile {r['compile_s']:.1f} s; peak memory "
      f"{(r['peak_memory_bytes'] or 0) / 2**20:.1f} MiB ({r['memory_source']})",
  ]
  if "bare" in r:
    lines.append(f"  bare jax.jit step {r['bare']['pipelined_mean_s'] * 1e3:.1f} ms: mmjax "
                 f"overhead {100 * r['overhead_vs_bare']:+.1f}%")
  if "nonprivate" in r:
    lines.append(f"  without DP-SGD {r['nonprivate']['pipelined_mean_s'] * 1e3:.1f} ms: the "
                 f"private step costs {r['privacy_cost']:.2f}x")
  if "pipeline" in r:
    lines.append(f"  real input pipeline {r['pipeline']['pipelined_mean_s'] * 1e3:.1f} ms: "
                 f"{100 * r['pipeline_slowdown']:+.1f}% vs synthetic; alone "
                 f"{r['pipeline']['alone_s'] * 1e3:.2f} ms per batch "
                 f"({r['pipeline']['alone_cpu_s'] * 1e3:.2f} ms CPU)")
  for name, label in (("torch_eager", "eager"), ("torch_compile", "torch.compile")):
    if "error" in r.get(name, {}):
      lines.append(f"  PyTorch {label}: failed ({r[name]['error'].splitlines()[0][:120]})")
    elif name in r:
      speedup = r[f"speedup_vs_{name}"]
      lines.append(f"  PyTorch {r['torch']['version']} {label} "
                   f"({r['torch']['threads']} threads) {r[name]['pipelined_mean_s'] * 1e3:.1f}"
                   f" ms: mmjax {max(speedup, 1 / speedup):.2f}x "
                   f"{'faster' if speedup >= 1 else 'slower'}")
  return "\n".join(lines)
