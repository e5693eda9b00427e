"""mmjax.sweep: trials find better values, bad ones are pruned early, workers share one
study, and a killed sweep resumes its running trial from that trial's checkpoint."""
import json
import os
import signal
import subprocess
import sys
import threading
import time

import optuna
import pytest

from mmjax.config import sweep_space
from mmjax.sweep import report, study as study_lib

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "tests", "sweep", "sweep_config.py")
State = optuna.trial.TrialState


def _sweep_config(tiny_config, **sweep):
  c = tiny_config(total_steps=20, eval_every=10, checkpoint_every=10, log_every=10)
  c.evals.loss.max_batches = 1
  c.sweep.parameters = sweep_space(
      {"optim.learning_rate": dict(type="categorical", choices=(1e-6, 1e-4, 3e-3))})
  c.sweep.update(dict(metric="accuracy", num_trials=3, pruner="none"))
  c.sweep.update(sweep)
  return c


def _eval_steps(run_dir):
  with open(os.path.join(run_dir, "metrics.jsonl")) as f:
    return [r["step"] for r in map(json.loads, f) if r["split"] == "eval"]


def test_three_trials_complete_the_best_beats_the_worst_and_reports_are_written(
    tiny_config, tmp_path):
  # Each choice once, in an order the sampler cannot change: a fixed comparison.
  config = _sweep_config(tiny_config, enqueue=({"optim.learning_rate": 1e-6},
                                               {"optim.learning_rate": 3e-3},
                                               {"optim.learning_rate": 1e-4}))
  sweep = study_lib.prepare(config, str(tmp_path / "sweep"))
  study = study_lib.run_worker(sweep, "0")
  summary = report.write(study, sweep.workdir, "accuracy")
  values = [t.value for t in study.trials if t.state == State.COMPLETE]
  assert len(values) == 3
  assert max(values) > min(values) + 0.2, values   # 3e-3 learns, 1e-6 does not
  assert study.best_params == {"optim.learning_rate": 3e-3}
  with open(tmp_path / "sweep" / "best_overrides.txt") as f:
    assert f.read().strip() == "--config.optim.learning_rate=0.003"
  assert summary["counts"] == {"COMPLETE": 3}
  for name in ("trials.csv", "trials.md", "optimization_history.png",
               "param_importances.png"):
    assert os.path.getsize(tmp_path / "sweep" / name) > 0, name
  with open(tmp_path / "sweep" / "trials.csv") as f:
    assert f.readline().startswith("number,state,optim.learning_rate,value,duration_s")
  # The same sweep again: finished trials are never run again.
  again = study_lib.run_worker(sweep, "0")
  assert [(t.number, t.datetime_complete) for t in again.trials] == [
      (t.number, t.datetime_complete) for t in study.trials]


def test_a_bad_trial_is_pruned_at_its_first_eval(tiny_config, tmp_path):
  # Trial 0 (a good rate) completes; trial 1 (1e-6 learns nothing) falls below trial 0's
  # value at step 10, and the median pruner (1 startup trial) stops it there.
  config = _sweep_config(tiny_config, pruner="median", pruner_startup_trials=1,
                         num_trials=2, enqueue=({"optim.learning_rate": 3e-3},
                                                {"optim.learning_rate": 1e-6}))
  sweep = study_lib.prepare(config, str(tmp_path / "sweep"))
  study = study_lib.run_worker(sweep, "0")
  good, bad = study.trials
  assert good.state == State.COMPLETE and bad.state == State.PRUNED
  assert bad.user_attrs["pruned_at"] == 10
  assert _eval_steps(tmp_path / "sweep" / "trial_1") == [10]   # stopped early
  assert _eval_steps(tmp_path / "sweep" / "trial_0") == [10, 20]
  assert report.write(study, sweep.workdir, "accuracy")["counts"] == {
      "COMPLETE": 1, "PRUNED": 1}


def _worker(workdir, data_dir, *flags, **popen):
  cmd = [sys.executable, "-m", "mmjax.sweep", f"--config={CONFIG}:{data_dir}",
         f"--workdir={workdir}", *flags]
  return subprocess.Popen(cmd, cwd=REPO, env=dict(os.environ, PYTHONPATH=REPO),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          **popen)


def _load(workdir):
  return optuna.load_study(study_name="mmjax", storage=optuna.storages.JournalStorage(
      optuna.storages.journal.JournalFileBackend(os.path.join(workdir, "study.journal"))))


def test_a_killed_sweep_resumes_in_two_workers_without_duplicates_or_losses(
    digits_data_dir, tmp_path):
  """A worker SIGKILLed mid trial 0 leaves it RUNNING; the same command, started twice at
  once, claims the orphan once, resumes it from its step-10 checkpoint and runs the
  study's last trial: each trial trained once, none lost."""
  workdir = str(tmp_path / "sweep")
  # Evals every 2 steps (not part of what defines a run) slow the victim down, so the
  # kill lands between trial 0's step-10 checkpoint and its end.
  victim = _worker(workdir, digits_data_dir, "--trials=2", "--worker_id=0",
                   "--config.evals.loss.every=2")
  checkpoint = os.path.join(workdir, "trial_0", "checkpoints", "10")
  deadline = time.time() + 180
  while not os.path.isdir(checkpoint) and victim.poll() is None and time.time() < deadline:
    time.sleep(0.02)
  assert victim.poll() is None, victim.communicate()[0]
  victim.send_signal(signal.SIGKILL)   # mid trial 0: after its step-10 checkpoint
  victim.communicate()
  assert [t.state for t in _load(workdir).trials] == [State.RUNNING]

  workers = [_worker(workdir, digits_data_dir, "--trials=2", f"--worker_id={i}")
             for i in (1, 2)]
  outputs = [w.communicate(timeout=240)[0] for w in workers]
  assert [w.returncode for w in workers] == [0, 0], outputs
  trials = _load(workdir).trials
  # Trial 0 was claimed (FAIL) once and enqueued again as trial 1, which resumed in
  # trial_0/ from step 10; trial 2 ran; two trials count (1 and 2).
  assert [t.state for t in trials] == [State.FAIL, State.COMPLETE, State.COMPLETE], outputs
  retry = trials[1]
  assert retry.user_attrs["retry_of"] == 0 and retry.user_attrs["workdir"] == "trial_0"
  assert retry.user_attrs["start_step"] == 10
  assert retry.params == trials[0].params
  assert {t.user_attrs["owner"]["pid"] for t in trials[1:]} <= {w.pid for w in workers}
  # One eval row per step, nothing twice: the victim's rows to its kill, then the
  # retry's from step 10 on (a row of step 10 only if the victim's eval there came
  # before the kill).
  assert _eval_steps(os.path.join(workdir, "trial_0")) in ([2, 4, 6, 8, 20],
                                                            [2, 4, 6, 8, 10, 20])
  assert _eval_steps(os.path.join(workdir, "trial_2")) == [10, 20]
  assert len(study_lib.counted(trials)) == 2
  with open(os.path.join(workdir, "trials.md")) as f:
    assert "resumed as trial 1" in f.read()


def test_sigterm_leaves_the_trial_to_be_resumed_from_its_checkpoint(tiny_config,
                                                                    tmp_path):
  """A preemption notice mid trial: the run saves its checkpoint, the worker stops, and
  the trial stays RUNNING (not told with a partial value) for the next worker."""
  config = _sweep_config(tiny_config, num_trials=1)
  with config.unlocked():
    config.evals.loss.every = 2   # slows the run: SIGTERM lands before its end
  sweep = study_lib.prepare(config, str(tmp_path / "sweep"))
  checkpoints = tmp_path / "sweep" / "trial_0" / "checkpoints"

  def preempt():
    while not (checkpoints / "10").is_dir():
      time.sleep(0.01)
    os.kill(os.getpid(), signal.SIGTERM)   # the run's preemption hook catches it

  threading.Thread(target=preempt, daemon=True).start()
  study = study_lib.run_worker(sweep, "0")
  (trial,) = study.trials
  assert trial.state == State.RUNNING
  steps = [int(d) for d in os.listdir(checkpoints) if d.isdigit()]
  assert 10 <= max(steps) < 20
