"""Every mistake in config.sweep is one ConfigError naming the cause and the fix, raised
before any compute, with nothing written."""
import os

import pytest

from mmjax.config import sweep_space
from mmjax.errors import ConfigError
from mmjax.sweep import study as study_lib

LR = {"optim.learning_rate": dict(type="log_uniform", low=1e-4, high=1e-1)}


@pytest.mark.parametrize("parameters, sweep, message", [
    ({"optim.learnig_rate": LR["optim.learning_rate"]}, {},
     "not a config key: optim has no key 'learnig_rate'. Did you mean 'learning_rate'?"),
    ({"optim.learning_rate": dict(type="uniform", low=0.1, high=0.01)}, {},
     "low=0.1 >= high=0.01"),
    ({"optim.learning_rate": dict(type="log_uniform", low=0.0, high=0.1)}, {},
     "log-scaled but low=0.0 <= 0"),
    ({"optim.learning_rate": dict(type="loguniform", low=1e-4, high=0.1)}, {},
     "type='loguniform'; choose one of uniform, log_uniform, int, categorical. "
     "Did you mean 'log_uniform'?"),
    ({}, {}, "config.sweep.parameters is empty"),
    (LR, {"metric": "report/accuracy"},
     "sweep.metric='report/accuracy' is produced by no configured evaluator. "
     "config.evals has: loss (type loss"),
    (LR, {"metric": ""}, "sweep.metric is empty"),
    (LR, {"storage": "sqlite:////nonexistent_dir_mmjax/study.db"},
     "the directory /nonexistent_dir_mmjax does not exist"),
    (LR, {"storage": "postgresql://u:secret@db.invalid:5432/optuna"},
     "its database driver is not installed"),
    (LR, {"storage": "redis://localhost"}, "is not a storage URL"),
    (LR, {"num_trials": 0}, "sweep.num_trials=0 must be an integer >= 1"),
    ({"train.total_steps": dict(type="int", low=0, high=100)}, {},
     "train.total_steps must be positive, got 0"),   # the trainer's check, per extreme
    ({"train.batch_size": dict(type="uniform", low=16.0, high=64.0)}, {},
     "cannot be the value of train.batch_size"),
    ({"optim": dict(type="uniform", low=0.0, high=1.0)}, {}, "a whole section"),
])
def test_refused_before_compute_with_nothing_written(tiny_config, tmp_path, parameters,
                                                      sweep, message):
  config = tiny_config()
  config.sweep.parameters = sweep_space(parameters)
  config.sweep.update(dict(dict(metric="accuracy"), **sweep))
  workdir = tmp_path / "sweep"
  with pytest.raises(ConfigError) as e:
    study_lib.prepare(config, str(workdir))
  assert message in str(e.value)
  assert "secret" not in str(e.value)   # a password never lands in a log
  assert not os.path.exists(workdir)


def test_a_dict_of_dotted_keys_is_refused_with_the_helper_named(tiny_config, tmp_path):
  config = tiny_config()
  config.sweep.parameters = LR   # a dict: a ConfigDict cannot copy dotted keys
  config.sweep.metric = "accuracy"
  with pytest.raises(ConfigError, match="sweep_space"):
    study_lib.prepare(config, str(tmp_path / "sweep"))
  assert not os.path.exists(tmp_path / "sweep")


def test_import_mmjax_and_the_sweep_space_stays_light():
  # Optuna (and its SQLAlchemy) load only when a sweep runs, never with `import mmjax`.
  import subprocess, sys   # noqa: E401
  code = ("import sys, mmjax, mmjax.config, mmjax.sweep, mmjax.sweep.space; "
          "print(sorted(m for m in ('optuna', 'sqlalchemy') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
  assert out.stdout.strip() == "[]", out.stderr


def test_the_command_prints_one_error_line_and_exits_2(tmp_path):
  import subprocess, sys   # noqa: E401
  repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  proc = subprocess.run(
      [sys.executable, "-m", "mmjax.sweep", "--config=configs/digits_cnn_sweep.py",
       f"--workdir={tmp_path / 'sweep'}", "--config.sweep.metric=report/accuracy"],
      capture_output=True, text=True, cwd=repo, env=dict(os.environ, PYTHONPATH=repo))
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().splitlines()[-1].startswith(
      "mmjax: error: sweep.metric='report/accuracy' is produced by no configured "
      "evaluator. config.evals has: loss (type loss")
  assert not os.path.exists(tmp_path / "sweep")
