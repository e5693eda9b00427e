"""Configs, flags and config files written for the old fixed `config.evals` sections
(evals.robust.attack='' as an off-switch, shared evals.batch_size) fail with one error
that names the new spelling, before anything runs."""
import os

import pytest

from mmjax.config import check_override_keys, default_config, load_config_file
from mmjax.errors import ConfigError
from mmjax.train.checks import check_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CNN = f"--config={REPO}/configs/digits_cnn.py"


@pytest.mark.parametrize("flag, match", [
    ("--config.evals.robust.attack=pgd",
     r"no evaluator named 'robust'.*--config.evals.robust.type=robust"),
    ("--config.evals.probe.modality=image",
     r"no evaluator named 'probe'.*--config.evals.probe.type=probe"),
    ("--config.evals.batch_size=64",
     r"evals.batch_size is no longer a shared setting.*train.eval_batch_size"),
    ("--config.evals.max_batches=2", r"write evals.loss.max_batches"),
    ("--config.evals.use_ema=false", r"write evals.NAME.use_ema"),
])
def test_an_old_style_flag_names_the_new_spelling(flag, match):
  with pytest.raises(ConfigError, match=match):
    check_override_keys([CNN, flag])


def test_flags_that_add_an_evaluator_are_accepted():
  check_override_keys([CNN, "--config.evals.robust.type=robust",
                       "--config.evals.robust.attack=pgd", "--config.evals.robust.eps=0.1"])
  # A config that lists `robust` takes its options under the old path unchanged.
  check_override_keys([f"--config={REPO}/configs/papers/trades_cifar10.py:tiny",
                       "--config.evals.robust.steps=20"])


def test_an_old_style_config_file_names_the_new_spelling(tmp_path):
  path = tmp_path / "old_config.py"
  path.write_text("from mmjax.config import default_config\n\n"
                  "def get_config():\n"
                  "  c = default_config()\n"
                  "  c.evals.robust.update(dict(attack='pgd', eps=0.1))\n"
                  "  return c\n")
  with pytest.raises(ConfigError, match=r"reads config.evals.robust.*"
                                        r"c.evals.robust = dict\(type='robust'"):
    load_config_file(str(path))


@pytest.mark.parametrize("old, match", [
    (dict(batch_size=64), r"evals.batch_size is no longer a shared setting"),
    (dict(robust=dict(attack="pgd", eps=0.1)),
     r"evals.robust has no 'type': evaluators are named entries now"),
])
def test_an_old_style_config_object_names_the_new_spelling(old, match):
  """E.g. a config rebuilt from an old workdir's config.json."""
  config = default_config()
  config.evals.update(old)
  with pytest.raises(ConfigError, match=match):
    check_config(config)
