"""Every setting DP training cannot honour is refused before any compute, naming the
fix, and the workdir a refused run would have created is not left behind."""
import logging
import os

import pytest

from mmjax.errors import ConfigError
from mmjax.train import loop
from tests.privacy.test_dp_training_in_the_trainer import dp_config


@pytest.mark.parametrize("change, match", [
    (dict(privacy=dict(clip_norm=0.0)), r"clip_norm=0.0 must be positive"),
    (dict(privacy=dict(noise_multiplier=-1.0)), r"must not be negative"),
    (dict(privacy=dict(target_epsilon=3.0)), r"Set one of .*noise_multiplier.*not both"),
    (dict(privacy=dict(noise_multiplier=0.0)), r"without noise gives no privacy"),
    (dict(privacy=dict(delta=1.5)), r"delta=1.5 must be in \(0, 1\)"),
    (dict(privacy=dict(accountant="gdp")), r"Unknown privacy.accountant='gdp'"),
    (dict(data=dict(in_memory=False)), r"sampling='poisson' .* data.in_memory=True"),
    (dict(model=dict(name="wide_resnet", depth=10, widen_factor=1, num_classes=10)),
     r"BatchNorm.*GroupNorm or LayerNorm"),
    (dict(objective=dict(name="simclr"), model=dict(name="mnist_cnn", num_classes=0)),
     r"not a sum of per-example losses"),
    (dict(adversarial=dict(kind="free", eps=0.1, steps=2)), r"'free' replays each batch"),
    (dict(objective=dict(name="group_dro", group_key="label", num_groups=10)),
     r"keeps state updated from each batch.*group_balanced"),
    (dict(privacy=dict(noise_multiplier=0.0, target_epsilon=1e-4)),
     r"target_epsilon"),
    (dict(privacy=dict(audit_canaries=-1)), r"audit_canaries=-1 must be an integer >= 0"),
])
def test_refused_before_compute(tiny_config, tmp_path, change, match):
  config = dp_config(tiny_config)
  for section, values in change.items():
    if section in ("model", "objective"):
      config[section] = values
    else:
      config[section].update(values)
  if change.get("data", {}).get("in_memory") is False:
    config.data.preprocess_train = "to_float|keep('image', 'label')"
  workdir = tmp_path / "run"
  with pytest.raises(ConfigError, match=match):
    loop.train_and_evaluate(config, str(workdir))
  assert not os.path.exists(workdir)


def test_the_audit_evaluator_needs_planted_canaries(tiny_config, tmp_path):
  config = dp_config(tiny_config)
  config.evals.audit = dict(type="privacy_audit")
  with pytest.raises(ConfigError, match=r"set privacy.audit_canaries"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))


def test_delta_above_one_over_n_is_warned_about(tiny_config, tmp_path, caplog):
  config = dp_config(tiny_config, total_steps=1, delta=1e-3)
  with caplog.at_level(logging.WARNING):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert any("1/N" in r.getMessage() for r in caplog.records)
