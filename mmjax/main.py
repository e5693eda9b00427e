"""mmjax's binary.

  python -m mmjax.main --config=configs/quickstart.py --workdir=/tmp/qs \
      [--mode=train|eval|explain|quantize|plan|bench|export] [--config.train.total_steps=300 ...]
      [--mode=eval --evals=robust,probe] [--config.evals.NAME.type=robust ...]

Multi-host runs start JAX's distributed runtime first: from --coordinator_address,
--num_processes and --process_id, or the MMJAX_* / SLURM / TPU environment
(mmjax/parallel/distributed.py; launchers in launch/).

Any config key can be overridden with --config.KEY=VALUE; an unknown key is an error.
User errors (bad config, dataset, workdir, checkpoint, NaN loss) print one line and exit
with status 2; anything else is a bug and shows its traceback.
"""
from __future__ import annotations

import os

from absl import flags, logging

from mmjax import cli, config as config_lib
from mmjax.errors import MmjaxError

_CONFIG = cli.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints and metrics.")
_MODE = flags.DEFINE_enum("mode", "train", list(config_lib.MODES),
                          "train: train (resuming from the workdir); eval: evaluate the "
                          "newest checkpoint in the workdir; explain: attributions of the newest checkpoint "
                          "(config.explain); quantize: int8 post-training quantization of the newest checkpoint, "
                          "accuracy/bytes/latency against float32 (config.quantization); plan: compile the train step "
                          "for the config's mesh without running it and report FLOPs and "
                          "per-device memory (config.plan); bench: time warm train steps on "
                          "synthetic data, with MFU (config.bench); export: the newest checkpoint as "
                          "a jax.export artifact and a TensorFlow SavedModel "
                          "(config.export, docs/deployment.md).")
_EVALS = flags.DEFINE_list(
    "evals", None, "--mode=eval only: the names of the config.evals entries to run "
    "(default: all).")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "host:port of process 0, for multi-host runs (else from "
    "MMJAX_COORDINATOR_ADDRESS, SLURM or the TPU pod).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index.")
_LIBRARY_LOGS = flags.DEFINE_bool(
    "library_logs", False, "Also show INFO logs of jax, orbax and tfds (warnings and "
    "errors of every library are always shown).")
flags.mark_flags_as_required(["config", "workdir"])


_fail = cli.fail


def _main(argv) -> None:
  if len(argv) > 1:
    _fail(f"Unexpected arguments {argv[1:]}; pass options as --flag=value.")
  _CONFIG.value.lock()
  if _EVALS.value and _MODE.value != "eval":
    _fail("--evals chooses evaluators for --mode=eval; in training every entry of "
          "config.evals runs on its own cadence (evals.NAME.every).")
  logging.set_verbosity(logging.INFO)
  if not _LIBRARY_LOGS.value:
    logging.get_absl_handler().addFilter(cli.OnlyMmjaxInfo())
  try:
    _start_devices(_CONFIG.value, _MODE.value)
    from mmjax.train import loop  # after flag parsing: keeps --help fast
    if _MODE.value == "train":
      loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    elif _MODE.value == "eval":
      loop.evaluate(_CONFIG.value, _WORKDIR.value, _EVALS.value)
    elif _MODE.value == "explain":
      loop.explain(_CONFIG.value, _WORKDIR.value)
    elif _MODE.value == "quantize":
      loop.quantize(_CONFIG.value, _WORKDIR.value)
    elif _MODE.value == "export":
      from mmjax.interop import export
      export.export_checkpoint(_CONFIG.value, _WORKDIR.value)
    elif _MODE.value == "plan":
      from mmjax.bench import plan
      plan.plan_train_step(_CONFIG.value, _WORKDIR.value)
    else:
      from mmjax.bench import throughput
      throughput.run_bench(_CONFIG.value, _WORKDIR.value)
  except MmjaxError as e:
    _fail(str(e))


def _start_devices(config, mode: str) -> None:
  """Before any JAX computation: fake CPU devices for a plan (plan.devices) or a local
  multi-process launch (MMJAX_CPU_DEVICES_PER_PROCESS), then the distributed runtime."""
  import jax
  from mmjax.parallel import distributed
  if mode == "plan" and config.plan.devices and not config.plan.topology:
    jax.config.update("jax_platforms", "cpu")
    jax.config.update("jax_num_cpu_devices", int(config.plan.devices))
  elif os.environ.get("MMJAX_CPU_DEVICES_PER_PROCESS"):
    jax.config.update("jax_num_cpu_devices", int(os.environ["MMJAX_CPU_DEVICES_PER_PROCESS"]))
  if distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value):
    if jax.process_index() != 0:  # one log for the run: process 0's (warnings from all)
      logging.set_verbosity(logging.WARNING)


def run() -> None:
  cli.run(_main)


if __name__ == "__main__":
  run()
