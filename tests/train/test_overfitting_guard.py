"""The catastrophic-overfitting guard: checks healthy runs without stopping them, stops
a collapsed run with the best parameters it saw, and never forgets a stop."""
import json
import os

import pytest

from mmjax.train import loop
from mmjax.train.overfitting_guard import EARLY_STOP_FILE, OverfittingGuard
from tests.train.test_loop import assert_trees_equal, final_params, read_metrics


def guard_config(tiny_config, **adversarial):
  config = tiny_config(total_steps=20, checkpoint_every=10)
  config.adversarial.update(dict(kind="madry", attack="fgsm_rs", eps=0.1, guard_every=5,
                                 guard_steps=3, **adversarial))
  return config


def test_guard_checks_a_healthy_run_without_stopping_it(tiny_config, tmp_path):
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(guard_config(tiny_config), workdir)
  history = json.load(open(os.path.join(workdir, "guard.json")))["history"]
  assert [h["step"] for h in history] == [5, 10, 15, 20]
  assert all(0 <= h["pgd_accuracy"] <= 1 for h in history)
  assert all(0 <= h["fgsm_accuracy"] <= 1 for h in history)
  assert not os.path.exists(os.path.join(workdir, EARLY_STOP_FILE))


def stub_guard_accuracies(monkeypatch, pgd_sequence, fgsm=0.9):
  """The guard's checks read `pgd_sequence` in order: which model overfits when is not
  what these tests check, but what the guard does with the numbers."""
  values = iter(pgd_sequence)
  monkeypatch.setattr(OverfittingGuard, "measure",
                      lambda self, *a: {"pgd_accuracy": next(values), "fgsm_accuracy": fgsm})


def test_guard_never_stops_on_a_wide_fgsm_pgd_gap_early_in_a_healthy_run(
    tiny_config, tmp_path, monkeypatch):
  """Early in training FGSM accuracy far above PGD accuracy is normal (FGSM 0.63 vs PGD
  0.07 fired the old gap check at step 600 of a healthy fast_at_mnist run and restored
  the step-0 parameters): the guard records the gap and trains on."""
  stub_guard_accuracies(monkeypatch, [0.07, 0.2, 0.35, 0.5], fgsm=0.63)
  workdir = str(tmp_path / "run")
  result = loop.train_and_evaluate(guard_config(tiny_config), workdir)
  assert not os.path.exists(os.path.join(workdir, EARLY_STOP_FILE))
  assert "guard/stopped" not in result
  guard_rows = read_metrics(workdir, "guard")
  assert [(r["step"], r["fgsm_accuracy"], r["stopped"]) for r in guard_rows] == [
      (5, 0.63, 0.0), (10, 0.63, 0.0), (15, 0.63, 0.0), (20, 0.63, 0.0)]


def test_guard_compares_with_the_best_check_and_restores_its_parameters(
    tiny_config, tmp_path, monkeypatch):
  """Each fall from the previous check is small (0.1), but 0.25 below the best (step 5):
  the guard stops at step 20 with the parameters of step 5, and says so in the final
  eval's metrics."""
  stub_guard_accuracies(monkeypatch, [0.5, 0.4, 0.35, 0.25])
  workdir = str(tmp_path / "run")
  config = guard_config(tiny_config, guard_start=5)
  config.train.update(dict(total_steps=25, checkpoint_every=5, keep_checkpoints=10))
  result = loop.train_and_evaluate(config, workdir)
  stop = json.load(open(os.path.join(workdir, EARLY_STOP_FILE)))
  assert (stop["step"], stop["parameters_of_step"], stop["best_step"]) == (20, 5, 5)
  assert stop["best_pgd_accuracy"] == 0.5 and stop["pgd_accuracy"] == 0.25
  assert result["guard/stopped"] == 1.0 and result["guard/parameters_of_step"] == 5.0
  assert_trees_equal(final_params(workdir, 20), final_params(workdir, 5))


def test_guard_waits_for_guard_start(tiny_config, tmp_path, monkeypatch):
  stub_guard_accuracies(monkeypatch, [0.9, 0.1])
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(guard_config(tiny_config, guard_start=15), workdir)
  assert [r["step"] for r in read_metrics(workdir, "guard")] == [15, 20]
  assert os.path.exists(os.path.join(workdir, EARLY_STOP_FILE))


def test_guard_stops_on_a_collapse_and_keeps_the_earlier_parameters(tiny_config, tmp_path):
  workdir = str(tmp_path / "run")
  config = guard_config(tiny_config)
  # Training 10 steps, then a pretend earlier check at step 10 with PGD accuracy 1.0:
  # the real check at step 15 is far lower, which the guard must read as a collapse.
  short = guard_config(tiny_config)
  short.train.total_steps = 10
  short.optim.schedule = config.optim.schedule
  loop.train_and_evaluate(short, workdir)
  params_at_10 = final_params(workdir, 10)
  with open(os.path.join(workdir, "guard.json"), "w") as f:
    json.dump({"history": [{"step": 10, "pgd_accuracy": 1.0}]}, f)
  result = loop.train_and_evaluate(config, workdir)
  stop = json.load(open(os.path.join(workdir, EARLY_STOP_FILE)))
  assert stop["step"] == 15 and stop["parameters_of_step"] == 10
  assert stop["pgd_accuracy"] < 0.8 and stop["best_pgd_accuracy"] == 1.0
  assert stop["reason"] == "drop"
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10", "15"]
  assert_trees_equal(final_params(workdir, 15), params_at_10)
  assert [r["step"] for r in read_metrics(workdir, "eval")] == [10, 15]
  # A rerun neither trains past the stop nor forgets it.
  again = loop.train_and_evaluate(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10", "15"]
  assert again["adv/loss"] == pytest.approx(result["adv/loss"], abs=1e-6)
