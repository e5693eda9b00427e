"""One sweep worker: opens (or creates) the study in its storage and runs trials until
the study holds `num_trials` of them, each an ordinary training run in WORKDIR/trial_<n>.

Resume and many workers (docs/sweeps.md):

- Every worker started with the same command joins the same study (the storage is the
  only shared state). `study.ask()` hands each trial, and each enqueued one, to exactly
  one worker (an atomic update in the journal file or the database).
- A trial records its `owner` (host, pid) and a `heartbeat` time, refreshed every
  `sweep.heartbeat_s`. A RUNNING trial whose owner process is gone (same host) or whose
  heartbeat is older than `sweep.stale_after_s` (another host) is an orphan. A worker
  claims it by marking it FAIL (a state change only one worker can win) and enqueues a
  retry with the same parameters and the same workdir, so the retry resumes from the
  orphan's newest checkpoint. The orphan's row then reads FAIL, with `resumed_as`.
- SIGTERM (a preemption notice) makes the trial's run save a checkpoint and stop; the
  worker then stops too, leaving the trial RUNNING, to be claimed and resumed like an
  orphan once the worker is gone.
- COMPLETE, PRUNED and FAIL trials are never run again.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import threading
import time
import zlib
from typing import Any

import ml_collections
from absl import logging

from mmjax.errors import ConfigError, MmjaxError
from mmjax.sweep import pruning, space, storage as storage_lib


@dataclasses.dataclass
class Sweep:
  """A checked sweep: the base config (file + overrides), its parameters and workdir."""
  config: ml_collections.ConfigDict
  params: list[space.Param]
  workdir: str
  num_trials: int

  @property
  def s(self) -> ml_collections.ConfigDict:
    return self.config.sweep


def prepare(config: ml_collections.ConfigDict, workdir: str,
            num_trials: int | None = None) -> Sweep:
  """Every check before compute (space, metric, storage, workdir); ConfigError on the
  first failure, with nothing written. Then creates the workdir."""
  params = space.parse(config)
  space.check_metric(config, config.sweep.metric)
  if num_trials is not None and num_trials < 1:
    raise ConfigError(f"--trials={num_trials} must be >= 1.")
  if not workdir:
    raise ConfigError("--workdir is required: the sweep's directory (trials, study).")
  workdir = os.path.abspath(os.path.expanduser(workdir))
  storage_lib.check(config.sweep.storage, workdir)
  from mmjax.train import loop   # pylint: disable=g-import-not-at-top
  workdir = loop.check_workdir(workdir)
  return Sweep(config, params, workdir, num_trials or config.sweep.num_trials)


def _sampler(s: ml_collections.ConfigDict, params: list[space.Param], seed: int):
  import optuna   # pylint: disable=g-import-not-at-top
  if s.sampler == "random":
    return optuna.samplers.RandomSampler(seed=seed)
  if s.sampler == "grid":
    return optuna.samplers.GridSampler({p.key: p.grid() for p in params}, seed=seed)
  # constant_liar: RUNNING trials of other workers count as bad guesses, so parallel
  # workers spread out instead of all sampling the same promising point.
  return optuna.samplers.TPESampler(seed=seed, constant_liar=True)


def _pruner(s: ml_collections.ConfigDict):
  import optuna   # pylint: disable=g-import-not-at-top
  if s.pruner == "median":
    return optuna.pruners.MedianPruner(n_startup_trials=s.pruner_startup_trials,
                                       n_warmup_steps=s.pruner_warmup_steps)
  if s.pruner == "hyperband":
    return optuna.pruners.HyperbandPruner()
  return optuna.pruners.NopPruner()


def worker_seed(seed: int, worker_id: str) -> int:
  """The sampler's seed: sweep.seed plus the worker's id (an integer id adds itself, so
  --worker_id=0 reproduces a single-worker sweep), so parallel workers draw apart."""
  offset = int(worker_id) if worker_id.isdigit() else zlib.crc32(worker_id.encode())
  return (seed + offset) % 2**31


def open_study(sweep: Sweep, worker_id: str = "0", create: bool = True):
  """The optuna.Study of the sweep, created on first use (load_if_exists)."""
  import optuna   # pylint: disable=g-import-not-at-top
  optuna.logging.set_verbosity(optuna.logging.WARNING)
  storage = storage_lib.open_storage(sweep.s.storage, sweep.workdir)
  kwargs = dict(storage=storage, study_name=sweep.s.study_name,
                sampler=_sampler(sweep.s, sweep.params,
                                 worker_seed(sweep.s.seed, worker_id)),
                pruner=_pruner(sweep.s))
  if not create:
    try:
      return optuna.load_study(**kwargs)
    except KeyError:
      raise ConfigError(f"No study {sweep.s.study_name!r} in "
                        f"{storage_lib.describe(sweep.s.storage, sweep.workdir)}; run the "
                        "sweep first (without --report_only).") from None
  study = optuna.create_study(direction=sweep.s.direction, load_if_exists=True, **kwargs)
  if study.direction.name.lower() != sweep.s.direction:
    raise ConfigError(f"The study {sweep.s.study_name!r} in this storage was created to "
                      f"{study.direction.name.lower()}; sweep.direction="
                      f"{sweep.s.direction!r} would mix goals. Use another "
                      "--config.sweep.study_name or workdir.")
  for values in sweep.s.enqueue:
    study.enqueue_trial(dict(values), user_attrs={"enqueued": True}, skip_if_exists=True)
  return study


# --- bookkeeping over the study's trials ---------------------------------------------

def _states():
  from optuna.trial import TrialState   # pylint: disable=g-import-not-at-top
  return TrialState


def counted(trials) -> list:
  """The trials that count towards num_trials: all but orphans replaced by a retry and
  surplus trials given back (a race between workers at the end)."""
  fail = _states().FAIL
  resumed = {t.user_attrs.get("retry_of") for t in trials}
  return [t for t in trials
          if not (t.state == fail and (t.number in resumed or t.user_attrs.get("surplus")))]


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def is_orphan(trial, stale_after_s: float, now: float | None = None) -> bool:
  """A RUNNING trial whose worker is gone: its process no longer exists on this host, or
  its heartbeat (or start, before the first one) is older than `stale_after_s`."""
  now = time.time() if now is None else now
  owner = trial.user_attrs.get("owner") or {}
  if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
    if owner["pid"] != os.getpid() and not _alive(owner["pid"]):
      return True
  beat = trial.user_attrs.get("heartbeat")
  if beat is None and trial.datetime_start is not None:
    beat = trial.datetime_start.timestamp()
  return beat is not None and now - beat > stale_after_s


def reclaim_orphans(study, sweep: Sweep) -> list[int]:
  """Marks each orphaned RUNNING trial FAIL and enqueues its retry (same parameters, same
  workdir, `retry_of` = its number). Returns the numbers reclaimed by this worker."""
  # pylint: disable-next=g-import-not-at-top
  from optuna.exceptions import UpdateFinishedTrialError
  states = _states()
  trials = study.get_trials(deepcopy=False)
  resumed = {t.user_attrs.get("retry_of") for t in trials}
  mine = []
  for t in trials:
    if t.state == states.RUNNING and is_orphan(t, sweep.s.stale_after_s):
      try:
        # Marked first: a claimer that dies before enqueueing the retry leaves a trace.
        storage = study._storage   # pylint: disable=protected-access
        # pylint: disable-next=protected-access
        storage.set_trial_user_attr(t._trial_id, "reclaiming", True)
        study.tell(t.number, state=states.FAIL)   # only one worker wins this
      except (UpdateFinishedTrialError, ValueError, RuntimeError):
        continue   # another worker reclaimed (or its owner finished) it first
      _enqueue_retry(study, t)
      mine.append(t.number)
    elif (t.state == states.FAIL and t.user_attrs.get("reclaiming")
          and t.number not in resumed and t.datetime_complete is not None
          and time.time() - t.datetime_complete.timestamp() > sweep.s.stale_after_s):
      # A reclaimer died between marking the orphan and enqueueing its retry.
      _enqueue_retry(study, t)
      mine.append(t.number)
  return mine


def _enqueue_retry(study, orphan) -> None:
  workdir = orphan.user_attrs.get("workdir", f"trial_{orphan.number}")
  study.enqueue_trial(orphan.params, user_attrs={"workdir": workdir,
                                                 "retry_of": orphan.number})
  logging.warning("Trial %d was left RUNNING by a worker that is gone (%s); it resumes "
                  "from the newest checkpoint in %s as a new trial.", orphan.number,
                  orphan.user_attrs.get("owner"), workdir)


class _Heartbeat:
  """Refreshes the trial's `heartbeat` user attribute every `every` seconds."""

  def __init__(self, trial, every: float):
    self.trial, self.every = trial, every
    self.stop = threading.Event()
    self.thread = threading.Thread(target=self._beat, daemon=True)

  def __enter__(self):
    self.thread.start()
    return self

  def __exit__(self, *exc) -> None:
    self.stop.set()
    self.thread.join()

  def _beat(self) -> None:
    while not self.stop.wait(self.every):
      try:
        self.trial.set_user_attr("heartbeat", time.time())
      except Exception as e:   # a finished trial or a storage hiccup: the next beat tries
        logging.warning("Heartbeat of trial %d not written: %s", self.trial.number, e)


# --- running trials -----------------------------------------------------------------

def _latest_checkpoint(run_dir: str) -> int:
  directory = os.path.join(run_dir, "checkpoints")
  steps = [int(d) for d in os.listdir(directory) if d.isdigit()] if os.path.isdir(
      directory) else []
  return max(steps, default=0)


def _final_value(run_dir: str, metric: str) -> float | None:
  """The metric's value in the last eval row of run_dir/metrics.jsonl, or None."""
  path = os.path.join(run_dir, "metrics.jsonl")
  value = None
  if os.path.exists(path):
    with open(path) as f:
      for line in f:
        row = json.loads(line)
        if row.get("split") == "eval" and metric in row:
          value = row[metric]
  return value


def run_trial(study, trial, sweep: Sweep) -> str:
  """Runs one trial in its workdir and tells the study its outcome; returns its state
  name. A ConfigError (the sweep's config is wrong for every trial) is re-raised after
  the trial is marked FAIL."""
  from mmjax.train import loop   # pylint: disable=g-import-not-at-top
  states = _states()
  values = space.suggest(trial, sweep.params)
  name = trial.user_attrs.get("workdir") or f"trial_{trial.number}"
  run_dir = os.path.join(sweep.workdir, name)
  trial.set_user_attr("workdir", name)
  trial.set_user_attr("owner", {"host": socket.gethostname(), "pid": os.getpid()})
  trial.set_user_attr("heartbeat", time.time())
  start_step = _latest_checkpoint(run_dir)
  trial.set_user_attr("start_step", start_step)
  logging.info("Trial %d in %s%s: %s", trial.number, run_dir,
               f" (resuming from step {start_step})" if start_step else "",
               " ".join(f"--config.{k}={format_value(v)}" for k, v in values.items()))
  config = space.apply(sweep.config, values)
  reporter = pruning.TrialReporter(
      trial, sweep.s.metric,
      worst=-math.inf if sweep.s.direction == "maximize" else math.inf)
  started = time.perf_counter()
  try:
    with _Heartbeat(trial, sweep.s.heartbeat_s), pruning.reporting_to(reporter):
      metrics = loop.train_and_evaluate(config, run_dir)
  except MmjaxError as e:
    trial.set_user_attr("error", str(e)[:500])
    study.tell(trial, state=states.FAIL)
    if isinstance(e, ConfigError):
      raise
    logging.warning("Trial %d failed: %s", trial.number, e)
    return "FAIL"
  if reporter.preempted:
    # SIGTERM: the run saved its checkpoint. The trial stays RUNNING with this dead
    # worker as owner, so the next worker claims it and resumes it from there.
    logging.warning("Trial %d preempted at its checkpoint; this worker stops. Rerun the "
                    "command to resume it.", trial.number)
    return "PREEMPTED"
  trial.set_user_attr("seconds", round(time.perf_counter() - started, 2))
  if reporter.pruned_at is not None:
    trial.set_user_attr("pruned_at", reporter.pruned_at)
    study.tell(trial, state=states.PRUNED)
    return "PRUNED"
  value = metrics.get(sweep.s.metric)
  if value is None:   # resumed at total_steps: the run had nothing left to evaluate
    value = _final_value(run_dir, sweep.s.metric)
  if value is None:
    value = loop.evaluate(config, run_dir).get(sweep.s.metric)
  if value is None or math.isnan(value):
    trial.set_user_attr("error", f"no finite {sweep.s.metric} at the end")
    study.tell(trial, state=states.FAIL)
    return "FAIL"
  study.tell(trial, float(value))
  logging.info("Trial %d: %s = %.4g", trial.number, sweep.s.metric, value)
  return "COMPLETE"


def format_value(value: Any) -> str:
  """A value as --config.KEY=VALUE writes it (floats to 4 significant digits)."""
  if isinstance(value, float):
    return f"{value:.4g}"
  return str(value)


def run_worker(sweep: Sweep, worker_id: str = "0") -> Any:
  """Runs trials until the study holds sweep.num_trials counted trials (and no retry
  waits); returns the study."""
  states = _states()
  study = open_study(sweep, worker_id)
  logging.info("Sweep %r in %s: %d trials, %s %s; worker %s.", sweep.s.study_name,
               storage_lib.describe(sweep.s.storage, sweep.workdir), sweep.num_trials,
               sweep.s.direction, sweep.s.metric, worker_id)
  while True:
    reclaim_orphans(study, sweep)
    trials = counted(study.get_trials(deepcopy=False))
    waiting = [t for t in trials if t.state == states.WAITING]
    if len(trials) >= sweep.num_trials and not waiting:
      break
    trial = study.ask()
    if not (trial.user_attrs.get("retry_of") is not None
            or trial.user_attrs.get("enqueued")):
      now = counted(study.get_trials(deepcopy=False))
      rank = sum(t.number <= trial.number for t in now)
      if rank > sweep.num_trials:   # another worker asked at the same moment
        trial.set_user_attr("surplus", True)
        study.tell(trial, state=states.FAIL)
        break
    if run_trial(study, trial, sweep) == "PREEMPTED":
      break
  done = counted(study.get_trials(deepcopy=False))
  logging.info("Sweep done here: %s.", ", ".join(
      f"{sum(t.state == s for t in done)} {s.name.lower()}"
      for s in (states.COMPLETE, states.PRUNED, states.FAIL, states.RUNNING)))
  return study
