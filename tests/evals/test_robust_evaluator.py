"""Robust evals inside the trainer, and the catastrophic-overfitting guard."""
import json
import os

import jax
import numpy as np
import pytest

from mmjax.errors import ConfigError
from mmjax.train import loop
from tests.train.test_loop import assert_trees_equal, final_params, read_metrics


def test_robust_eval_reports_accuracy_sanity_verdicts_and_a_curve(tiny_config, tmp_path):
  config = tiny_config(total_steps=10, eval_every=5, checkpoint_every=10)
  config.evals.robust.update(dict(attack="pgd", eps=0.1, steps=3, num_examples=40,
                                  curve_eps=(0.0, 0.1, 0.3)))
  workdir = str(tmp_path / "run")
  result = loop.train_and_evaluate(config, workdir)
  evals = read_metrics(workdir, "eval")
  assert [r["step"] for r in evals] == [5, 10]
  assert 0 <= result["robust/accuracy"] <= result["robust/clean_accuracy"] <= 1
  assert result["robust/num_examples"] == 40
  names = {"eps0_equals_clean", "robust_le_clean", "monotone_in_eps", "pgd_beats_fgsm",
           "more_steps_restarts", "nonzero_gradients"}
  assert {k.split("/")[-1] for k in result if k.startswith("robust/sanity/")} == names
  assert result["robust/sanity_passed"] == float(
      all(result[f"robust/sanity/{n}"] == 1.0 for n in names))
  report = json.load(open(os.path.join(workdir, "robustness", "step_10.json")))
  assert report["metrics"]["robust/accuracy"] == result["robust/accuracy"]
  curve = json.load(open(os.path.join(workdir, "robustness", "step_10",
                                      "robustness_curve.json")))
  assert curve["eps"] == [0.0, 0.1, 0.3]
  assert curve["accuracy"][0] == result["robust/clean_accuracy"]
  assert curve["accuracy"][1] == result["robust/accuracy"]
  assert os.path.getsize(os.path.join(workdir, "robustness", "step_10",
                                      "robustness_curve.png")) > 1000
  # --mode=eval runs the same robust eval on the saved checkpoint.
  again = loop.evaluate(config, workdir)
  assert again["robust/accuracy"] == result["robust/accuracy"]


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
  assert not os.path.exists(os.path.join(workdir, loop.EARLY_STOP_FILE))


def stub_guard_accuracies(monkeypatch, pgd_sequence, fgsm=0.9):
  """The guard's checks read `pgd_sequence` in order: which model overfits when is not
  what these tests check, but what the guard does with the numbers."""
  from mmjax.train import robust_eval
  values = iter(pgd_sequence)
  monkeypatch.setattr(robust_eval.OverfittingGuard, "measure",
                      lambda self, *a: {"pgd_accuracy": next(values), "fgsm_accuracy": fgsm})


def test_guard_never_stops_on_a_wide_fgsm_pgd_gap_early_in_a_healthy_run(
    tiny_config, tmp_path, monkeypatch):
  """Early in training FGSM accuracy far above PGD accuracy is normal (FGSM 0.63 vs PGD
  0.07 fired the old gap check at step 600 of a healthy fast_at_mnist run and restored
  the step-0 parameters): the guard records the gap and trains on."""
  stub_guard_accuracies(monkeypatch, [0.07, 0.2, 0.35, 0.5], fgsm=0.63)
  workdir = str(tmp_path / "run")
  result = loop.train_and_evaluate(guard_config(tiny_config), workdir)
  assert not os.path.exists(os.path.join(workdir, loop.EARLY_STOP_FILE))
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
  stop = json.load(open(os.path.join(workdir, loop.EARLY_STOP_FILE)))
  assert (stop["step"], stop["parameters_of_step"], stop["best_step"]) == (20, 5, 5)
  assert stop["best_pgd_accuracy"] == 0.5 and stop["pgd_accuracy"] == 0.25
  assert result["guard/stopped"] == 1.0 and result["guard/parameters_of_step"] == 5.0
  assert_trees_equal(final_params(workdir, 20), final_params(workdir, 5))


def test_guard_waits_for_guard_start(tiny_config, tmp_path, monkeypatch):
  stub_guard_accuracies(monkeypatch, [0.9, 0.1])
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(guard_config(tiny_config, guard_start=15), workdir)
  assert [r["step"] for r in read_metrics(workdir, "guard")] == [15, 20]
  assert os.path.exists(os.path.join(workdir, loop.EARLY_STOP_FILE))


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
  stop = json.load(open(os.path.join(workdir, loop.EARLY_STOP_FILE)))
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


@pytest.mark.parametrize("section, options, match", [
    ("evals.robust", dict(attack="autoattac", eps=0.1), "evals.robust.attack='autoattac'"),
    ("evals.robust", dict(attack="apgd-ce", eps=0.1, step_size=0.01), "own step sizes"),
    ("evals.robust", dict(attack="autoattack", eps=0.1, version="strong"),
     "Unknown AutoAttack version"),
    ("evals.robust", dict(attack="pgd", eps=0.1, attacks=("square",)), "version='custom'"),
    ("adversarial", dict(kind="madry", eps=0.1, attack="apgd", step_size=0.01),
     "APGD sets its own step"),
    ("adversarial", dict(kind="madry", eps=0.1, attack="square"), "cannot train"),
    ("adversarial", dict(kind="madry", eps=0.1, guard_every=5, guard_max_gap=0.5),
     "guard_max_gap was removed: the FGSM-PGD gap stopped healthy runs"),
    ("evals.robust", dict(attack="pgd", eps=0.0), "evals.robust.eps"),
    ("adversarial", dict(guard_every=5), "guard_every is set but adversarial.kind is 'none'"),
    ("adversarial", dict(kind="free", eps=0.1), "grad_accum_steps"),
])
def test_bad_robustness_settings_fail_before_training(tiny_config, tmp_path, section,
                                                      options, match):
  config = tiny_config()
  node = config
  for part in section.split("."):
    node = node[part]
  node.update(options)
  if options.get("kind") == "free":
    config.optim.grad_accum_steps = 2
  with pytest.raises(ConfigError, match=match):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def test_the_removed_gap_flag_says_why_and_what_replaces_it():
  from mmjax.config import check_override_keys
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  with pytest.raises(ConfigError, match="guard_max_gap was removed.*guard_max_drop"):
    check_override_keys([f"--config={root}/configs/papers/fast_at_mnist.py:tiny",
                         "--config.adversarial.guard_max_gap=0.5"])
