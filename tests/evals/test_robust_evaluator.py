"""Robust evaluators inside the trainer, and bad robustness settings refused before any
compute."""
import json
import os

import pytest

from mmjax.errors import ConfigError
from mmjax.train import loop
from tests.train.test_loop import read_metrics


def test_robust_eval_reports_accuracy_sanity_verdicts_and_a_curve(tiny_config, tmp_path):
  config = tiny_config(total_steps=10, eval_every=5, checkpoint_every=10)
  config.evals.robust = dict(type="robust", attack="pgd", eps=0.1, steps=3,
                             num_examples=40, curve_eps=(0.0, 0.1, 0.3))
  # A second robust eval, at a larger eps, only at the end: its own metrics and files.
  config.evals.robust_large = dict(type="robust", attack="pgd", eps=0.3, steps=3,
                                   num_examples=40, sanity=False, every=1000)
  workdir = str(tmp_path / "run")
  result = loop.train_and_evaluate(config, workdir)
  evals = read_metrics(workdir, "eval")
  assert [r["step"] for r in evals] == [5, 10]
  assert "robust_large/accuracy" not in evals[0]
  assert result["robust_large/pgd-3x1_linf_eps0.3"] == result["robust_large/accuracy"]
  assert result["robust_large/accuracy"] <= result["robust/accuracy"]
  assert result["robust_large/clean_accuracy"] == result["robust/clean_accuracy"]
  large = json.load(open(os.path.join(workdir, "robustness_robust_large", "step_10.json")))
  assert large["eps"] == 0.3 and large["label"] == "pgd-3x1_linf_eps0.3"
  assert 0 <= result["robust/accuracy"] <= result["robust/clean_accuracy"] <= 1
  assert result["robust/num_examples"] == 40
  names = {"eps0_equals_clean", "robust_le_clean", "monotone_in_eps", "pgd_beats_fgsm",
           "more_steps_restarts", "nonzero_gradients"}
  assert {k.split("/")[-1] for k in result if k.startswith("robust/sanity/")} == names
  assert result["robust/sanity_passed"] == float(
      all(result[f"robust/sanity/{n}"] == 1.0 for n in names))
  report = json.load(open(os.path.join(workdir, "robustness", "step_10.json")))
  assert report["metrics"]["accuracy"] == result["robust/accuracy"]
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
  if section == "evals.robust":
    config.evals.robust = dict(type="robust", **options)
  else:
    config.adversarial.update(options)
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
