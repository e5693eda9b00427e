"""The binary: bad inputs give one clear error line and change nothing; SIGKILL resume."""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import files_snapshot
from tests.main_in_process import run_main
from tests.train.test_loop import assert_trees_equal, final_params

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "tests", "tiny_config.py")


def main_args(workdir, data_dir, config=CONFIG):
  """mmjax.main's --config and --workdir (for run_main in this process, or mmjax_cmd)."""
  return [f"--config={config}:{data_dir}", f"--workdir={workdir}"]


def mmjax_cmd(workdir, data_dir, *overrides, config=CONFIG):
  return [sys.executable, "-m", "mmjax.main", *main_args(workdir, data_dir, config),
          *overrides]


def run(cmd, env_extra=None, timeout=300):
  env = dict(os.environ, **(env_extra or {}))
  return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env,
                        cwd=REPO)


@pytest.fixture(scope="module")
def trained_workdir(digits_data_dir, tmp_path_factory):
  """A workdir holding a 10-step run, to prove bad inputs don't touch saved work."""
  workdir = str(tmp_path_factory.mktemp("trained") / "run")
  code, stderr = run_main(*main_args(workdir, digits_data_dir),
                          "--config.train.total_steps=10")
  assert code == 0, stderr[-3000:]
  assert "step 10/10" in stderr
  return workdir


BAD_INPUTS = {
    "unknown_key": (["--config.train.foo=1"], r"Unknown config key 'train.foo'"),
    # The MNIST CNN's own fields are listed; a transformer's `attention` is not one of them.
    "unknown_model_field": (["--config.model.attention=xla"],
                            r"model has no key 'attention'. Valid keys there: .*num_classes"),
    "wrong_type": (["--config.train.batch_size=abc"],
                   r"--config.train.batch_size=abc: train.batch_size is an integer"),
    "wrong_type_in_a_flag": (["--num_processes=two"], r"--num_processes=two.*int"),
    "unknown_model": (["--config.model.name=vitt"], r"Unknown model 'vitt'.*vit"),
    "unknown_objective": (["--config.objective.name=mle"], r"Unknown objective 'mle'"),
    "unknown_dataset": (["--config.data.name=not_a_dataset_xyz"], r"not_a_dataset_xyz"),
    "unprepared_dataset": (["--config.data.name=cifar10"], r"cifar10.*(tfds build|download)"),
    "unknown_mode": (["--mode=serve"], r"--mode.*(train|eval)"),
    "negative_steps": (["--config.train.total_steps=-5"], r"total_steps must be positive"),
    "other_shape": (["--config.model.name=preact_resnet18"], r"does not fit the configured model"),
    "bad_accum": (["--config.optim.grad_accum_steps=5"], r"grad_accum_steps=5"),
    "adversarial_without_eps": (["--config.adversarial.kind=madry"],
                                r"needs a positive adversarial.eps"),
    "adversarial_bad_modality": (["--config.adversarial.kind=madry",
                                  "--config.adversarial.eps=0.1",
                                  "--config.adversarial.modalities=('audio',)"],
                                 r"\['audio'\] are not model inputs"),
    # A method's own options are valid keys once it is chosen, and checked by it.
    "adversarial_misspelt_option": (["--config.adversarial.kind=trades",
                                     "--config.adversarial.eps=0.1",
                                     "--config.adversarial.bta=3"],
                                    r"Unknown key\(s\) \['bta'\].*kind='trades'.*Did you "
                                    r"mean 'beta'\?.*its own beta"),
    "adversarial_other_methods_option": (["--config.adversarial.kind=madry",
                                          "--config.adversarial.eps=0.1",
                                          "--config.adversarial.beta=3"],
                                         r"adversarial.beta is an option of "
                                         r"adversarial.kind='trades', not of 'madry'"),
    # Evaluators: added by flags, each checks its own options before any compute.
    "evaluator_misspelt_type": (["--config.evals.robust.type=robustt",
                                 "--config.evals.robust.eps=0.1"],
                                r"Unknown evaluator type 'robustt' \(config key "
                                r"evals.robust.type\).*Did you mean 'robust'\?"),
    "evaluator_misspelt_option": (["--config.evals.robust.type=robust",
                                   "--config.evals.robust.attack=pgd",
                                   "--config.evals.robust.epss=0.1"],
                                  r"Unknown option\(s\) \['epss'\] of evals.robust "
                                  r"\(type 'robust'\). Did you mean 'epss' -> 'eps'\?"),
    "evaluator_option_wrong_type": (["--config.evals.robust.type=robust",
                                     "--config.evals.robust.attack=pgd",
                                     "--config.evals.robust.eps=0.1",
                                     "--config.evals.robust.steps=ten"],
                                    r"evals.robust.steps='ten' must be an integer"),
    "evaluator_bad_value": (["--config.evals.robust.type=robust",
                             "--config.evals.robust.attack=apgd-ce",
                             "--config.evals.robust.eps=0.1",
                             "--config.evals.robust.step_size=0.01"],
                            r"evals.robust.step_size.*own step sizes"),
    "old_style_robust_key": (["--config.evals.robust.attack=pgd"],
                             r"evals.robust.attack: this config has no evaluator named "
                             r"'robust'.*--config.evals.robust.type=robust"),
    "old_style_shared_key": (["--config.evals.batch_size=64"],
                             r"evals.batch_size is no longer a shared setting.*"
                             r"train.eval_batch_size"),
    "eval_names_outside_eval_mode": (["--evals=loss"], r"--evals chooses evaluators for "
                                                       r"--mode=eval"),
    "explain_misspelt_option": (["--mode=explain", "--config.explain.ig_step=3"],
                                r"Unknown option\(s\) \['ig_step'\] of evals.explain "
                                r"\(type 'attribution'\). Did you mean 'ig_step' -> "
                                r"'ig_steps'"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_one_clear_error_nothing_damaged(case, trained_workdir, digits_data_dir):
  """Each bad input through mmjax.main's entry point, in this process (the binary's code
  path without an interpreter start per case)."""
  overrides, message = BAD_INPUTS[case]
  before = files_snapshot(trained_workdir)
  code, stderr = run_main(*main_args(trained_workdir, digits_data_dir), *overrides)
  assert code == 2, stderr[-2000:]
  assert re.search(r"mmjax: error: .*" + message, stderr, re.S), stderr[-2000:]
  assert files_snapshot(trained_workdir) == before


# The command line itself, once per stage that can refuse: the override-key check, absl's
# flag parsing, and the trainer (a checkpoint of another model's shape, at restore).
@pytest.mark.parametrize("case", ["unknown_key", "wrong_type_in_a_flag", "other_shape"])
def test_bad_input_on_the_command_line_is_one_line_exit_2_no_traceback(
    case, trained_workdir, digits_data_dir):
  overrides, message = BAD_INPUTS[case]
  before = files_snapshot(trained_workdir)
  proc = run(mmjax_cmd(trained_workdir, digits_data_dir, *overrides))
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert re.search(r"mmjax: error: .*" + message, proc.stderr, re.S), proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
  assert files_snapshot(trained_workdir) == before


def test_overrides_may_set_model_fields_left_at_their_defaults():
  import functools
  from mmjax import config as config_lib
  from mmjax.errors import ConfigError
  from mmjax.models import config_fields
  # As mmjax.main checks them: with the model class's fields.
  check_override_keys = functools.partial(config_lib.check_override_keys,
                                          model_fields=config_fields)
  config = "--config=" + os.path.join(REPO, "configs/bench/gpt2_124m.py") + ":tiny"
  # Neither key is in the config file: both are TextTransformer fields with defaults.
  check_override_keys([config, "--config.model.attention=xla", "--config.model.lora_rank=2"])
  for bad, missing in (("model.atention", "'atention'"), ("model.attention.x", "'x'"),
                       ("modle.attention", "'modle'")):
    with pytest.raises(ConfigError, match=f"Unknown config key '{bad}'.*no key {missing}"):
      check_override_keys([config, f"--config.{bad}=1"])


def test_overrides_may_set_an_adversarial_methods_own_options():
  from mmjax.config import check_override_keys
  from mmjax.errors import ConfigError
  config = "--config=" + os.path.join(REPO, "configs/papers/madry_pgd_mnist.py") + ":tiny"
  # Not in the config: TRADES' and free AT's own options, checked when the method is built.
  check_override_keys([config, "--config.adversarial.kind=trades",
                       "--config.adversarial.beta=3", "--config.adversarial.replays=2"])
  with pytest.raises(ConfigError, match="Unknown config key 'adversarial.beta.x'"):
    check_override_keys([config, "--config.adversarial.beta.x=1"])


def test_mode_eval_runs_chosen_evaluators_including_one_added_by_flags(
    trained_workdir, digits_data_dir, tmp_path):
  """--mode=eval on a checkpoint runs the evaluators --evals names: here only a robust
  one that flags add to a config without it."""
  import shutil
  workdir = str(tmp_path / "copy")
  shutil.copytree(trained_workdir, workdir)
  code, stderr = run_main(*main_args(workdir, digits_data_dir), "--mode=eval", "--evals=fgsm",
                          "--config.evals.fgsm.type=robust", "--config.evals.fgsm.attack=fgsm",
                          "--config.evals.fgsm.eps=0.1", "--config.evals.fgsm.num_examples=20",
                          "--config.evals.fgsm.sanity=False")
  assert code == 0, stderr[-3000:]
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    row = [json.loads(line) for line in f][-1]
  assert row["split"] == "eval" and row["step"] == 10
  assert row["fgsm/num_examples"] == 20 and 0 <= row["fgsm/accuracy"] <= 1
  assert "loss" not in row   # the eval loss was not chosen
  assert os.path.isfile(os.path.join(workdir, "robustness_fgsm", "step_10.json"))
  code, stderr = run_main(*main_args(workdir, digits_data_dir), "--mode=eval",
                          "--evals=robsut")
  assert code == 2 and "--evals names ['robsut']" in stderr


def test_mode_explain_draws_the_attributions_of_the_newest_checkpoint(
    trained_workdir, digits_data_dir, tmp_path):
  import shutil
  workdir = str(tmp_path / "copy")
  shutil.copytree(trained_workdir, workdir)
  code, stderr = run_main(*main_args(workdir, digits_data_dir), "--mode=explain",
                          "--config.explain.num_examples=8",
                          "--config.explain.methods=('gradient',)",
                          "--config.explain.randomization=False")
  assert code == 0, stderr[-3000:]
  row = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))][-1]
  assert row["step"] == 10 and 0 <= row["explain/gradient/deletion_auc"] <= 1
  assert os.path.getsize(os.path.join(workdir, "attributions_explain", "step_10.png")) > 1000


def test_a_variant_of_a_config_without_variants_is_an_error(tmp_path):
  code, stderr = run_main(f"--config={os.path.join(REPO, 'configs/digits_cnn.py')}:tiny",
                          f"--workdir={tmp_path / 'run'}")
  assert code == 2
  assert "configs/digits_cnn.py has no variants" in stderr
  assert not os.path.exists(tmp_path / "run")


def test_sigterm_saves_a_checkpoint_and_exits_cleanly_then_resumes(digits_data_dir,
                                                                    tmp_path):
  """A preemption notice (SIGTERM) mid-run: the step it arrived in is checkpointed, the
  process exits 0 without evaluating, and the same command resumes and finishes (here in
  this process: the resume needs no signal)."""
  workdir = str(tmp_path / "run")
  # 180 steps (~2 s) between the 20th metrics row and the end: ample for the signal.
  steps = ["--config.train.total_steps=200", "--config.train.checkpoint_every=1000",
           "--config.train.log_every=1"]
  victim = subprocess.Popen(mmjax_cmd(workdir, digits_data_dir, *steps), cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 240
  metrics = os.path.join(workdir, "metrics.jsonl")
  while time.time() < deadline and not (
      os.path.exists(metrics) and sum(1 for _ in open(metrics)) >= 20):
    time.sleep(0.01)
  victim.send_signal(signal.SIGTERM)
  _, stderr = victim.communicate(timeout=120)
  assert victim.returncode == 0, stderr[-3000:]
  assert "Preempted at step" in stderr
  # Library INFO chatter (orbax, tfds) is filtered; mmjax's own lines remain.
  assert "checkpoint_manager.py" not in stderr and "loop.py" in stderr
  saved = os.listdir(os.path.join(workdir, "checkpoints"))
  assert len(saved) == 1 and 20 <= int(saved[0]) < 200, saved
  assert '"split": "eval"' not in open(metrics).read()
  code, stderr = run_main(*main_args(workdir, digits_data_dir), *steps)
  assert code == 0, stderr[-3000:]
  assert f"Resumed from the checkpoint at step {saved[0]}" in stderr
  assert "200" in os.listdir(os.path.join(workdir, "checkpoints"))


def test_unwritable_workdir(digits_data_dir, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  code, stderr = run_main(*main_args(str(blocker / "run"), digits_data_dir))
  assert code == 2 and "is not writable" in stderr
  assert blocker.read_text() == "not a directory"


def test_batch_not_divisible_by_devices(digits_data_dir, tmp_path):
  proc = run(mmjax_cmd(str(tmp_path / "run"), digits_data_dir,
                       "--config.train.batch_size=12"),
             env_extra={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"})
  assert proc.returncode == 2
  assert "batch_size=12 is not divisible by the 8 devices" in proc.stderr
  assert not os.path.exists(tmp_path / "run" / "checkpoints")


def _kill_when(cmd, ckpts, ready, timeout=240):
  """Starts `cmd`, SIGKILLs it as soon as `ready(entries of the checkpoint directory)`;
  -> whether it was killed before it finished."""
  victim = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
  deadline = time.time() + timeout
  while time.time() < deadline and victim.poll() is None:
    if ready(os.listdir(ckpts) if os.path.isdir(ckpts) else []):
      break
    time.sleep(0.01)
  victim.send_signal(signal.SIGKILL)
  return victim.wait() == -signal.SIGKILL


def test_sigkill_and_restart_gives_bit_identical_params(digits_data_dir, tmp_path):
  """Killed twice (once while a checkpoint is being written, once after a random later
  checkpoint), restarted each time: the final parameters equal an unbroken run's, the
  metrics hold one row per step and split, and the dead runs' locks were taken over.
  The killed runs are processes of the binary; the unbroken run and the last restart,
  which need no signal, run the same command in this process."""
  steps = ["--config.train.total_steps=160", "--config.train.checkpoint_every=20",
           "--config.train.log_every=20"]
  unbroken, killed = str(tmp_path / "unbroken"), str(tmp_path / "killed")
  code, stderr = run_main(*main_args(unbroken, digits_data_dir), *steps)
  assert code == 0, stderr[-3000:]

  ckpts = os.path.join(killed, "checkpoints")
  cmd = mmjax_cmd(killed, digits_data_dir, *steps)
  # Mid-save: orbax writes a step into a temporary directory and renames it when done.
  mid_save = lambda entries: any("tmp" in e and int(e.split(".")[0]) >= 40
                                 for e in entries if e.split(".")[0].isdigit())
  assert _kill_when(cmd, ckpts, mid_save)
  later = random.Random(0).randrange(60, 140, 20)
  saved = lambda entries: any(e.isdigit() and int(e) >= later for e in entries)
  assert _kill_when(cmd, ckpts, saved)
  assert max(int(d) for d in os.listdir(ckpts) if d.isdigit()) < 160

  code, stderr = run_main(*main_args(killed, digits_data_dir), *steps)
  assert code == 0, stderr[-3000:]
  assert "Resumed from the checkpoint at step" in stderr
  assert "Taking over the workdir lock" in stderr
  assert_trees_equal(final_params(unbroken, 160), final_params(killed, 160))
  rows = [json.loads(line) for line in open(os.path.join(killed, "metrics.jsonl"))]
  keys = [(r["step"], r["split"]) for r in rows]
  assert len(keys) == len(set(keys)), "duplicated metric rows after the kills"
  assert not os.path.exists(os.path.join(killed, "run.lock"))
