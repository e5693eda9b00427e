"""`python -m mmjax.sweep`: a hyperparameter search over the config's `sweep` section.

  python -m mmjax.sweep --config=configs/digits_cnn.py --workdir=/tmp/sweep \
      [--config.sweep.num_trials=20 ...] [--trials=N] [--worker_id=ID] [--report_only]

Every trial is an ordinary run in WORKDIR/trial_<n>. Rerunning the same command resumes
the study; several processes with the same command share it (docs/sweeps.md).
"""
from __future__ import annotations

import os

from absl import flags, logging

from mmjax import cli
from mmjax.errors import MmjaxError

_CONFIG = cli.define_config_flag()
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep's directory: the study journal, "
                               "trial_<n>/ run directories and the reports.")
_TRIALS = flags.DEFINE_integer("trials", None, "Trials in the study (default "
                               "config.sweep.num_trials).")
_WORKER_ID = flags.DEFINE_string("worker_id", None, "This worker's name, also seeding its "
                                 "sampler (default host-pid; 0 reproduces a single-worker "
                                 "sweep); e.g. $SLURM_ARRAY_TASK_ID.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Write the reports of the study in "
                                 "the storage and exit, running nothing.")
_LIBRARY_LOGS = flags.DEFINE_bool("library_logs", False, "Also show INFO logs of jax, "
                                  "orbax and tfds.")
flags.mark_flags_as_required(["config", "workdir"])


def use_compilation_cache(workdir: str) -> str:
  """Points JAX's persistent compilation cache at WORKDIR/xla_cache (unless
  JAX_COMPILATION_CACHE_DIR is set), so that trials reuse each other's compiled
  computations where they match (eval steps; a resumed trial's train step)."""
  import jax   # pylint: disable=g-import-not-at-top
  directory = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.path.join(workdir,
                                                                          "xla_cache")
  jax.config.update("jax_compilation_cache_dir", directory)
  if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.1)
  return directory


def _main(argv) -> None:
  if len(argv) > 1:
    cli.fail(f"Unexpected arguments {argv[1:]}; pass options as --flag=value.")
  config = _CONFIG.value
  config.lock()
  logging.set_verbosity(logging.INFO)
  if not _LIBRARY_LOGS.value:
    logging.get_absl_handler().addFilter(cli.OnlyMmjaxInfo())
  from mmjax.sweep import report, study as study_lib   # pylint: disable=g-import-not-at-top
  import socket   # pylint: disable=g-import-not-at-top
  worker_id = _WORKER_ID.value or f"{socket.gethostname()}-{os.getpid()}"
  try:
    sweep = study_lib.prepare(config, _WORKDIR.value, _TRIALS.value)
    if _REPORT_ONLY.value:
      study = study_lib.open_study(sweep, worker_id, create=False)
    else:
      use_compilation_cache(sweep.workdir)
      study = study_lib.run_worker(sweep, worker_id)
    summary = report.write(study, sweep.workdir, sweep.s.metric)
  except MmjaxError as e:
    cli.fail(str(e))
  if summary["best_overrides"]:
    print(f"best {sweep.s.metric} = {summary['best_value']:.4g}: "
          f"{summary['best_overrides']}")
  print(f"trials: {summary['counts']}; reports in {sweep.workdir}")


def run() -> None:
  cli.run(_main)


if __name__ == "__main__":
  run()
