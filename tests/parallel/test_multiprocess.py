"""Multi-host training on one machine: 2 processes x 2 CPU devices (jax.distributed, gloo
collectives) started by launch/local.py match 1 process x 4 devices step for step, and
their checkpoint restores in 1 process on other meshes."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "tests/parallel/vit_fsdp_config.py"


def _run(cmd, env_extra, timeout=420):
  env = dict(os.environ, JAX_PLATFORMS="cpu", MMJAX_INIT_TIMEOUT="120", **env_extra)
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                        env=env)
  assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
  return proc


def _metrics(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  train = {r["step"]: r["loss"] for r in rows if r["split"] == "train"}
  evals = [r for r in rows if r["split"] == "eval"]
  return train, evals[-1]


@pytest.fixture(scope="module")
def runs(digits_data_dir, tmp_path_factory):
  root = tmp_path_factory.mktemp("multiprocess")
  single, multi = str(root / "single"), str(root / "multi")
  flags = [f"--config={CONFIG}:{digits_data_dir}"]
  _run([sys.executable, "-m", "mmjax.main", *flags, f"--workdir={single}"],
       {"MMJAX_CPU_DEVICES_PER_PROCESS": "4"})
  launched = _run([sys.executable, "launch/local.py", "--num_processes=2",
                   "--devices_per_process=2", "--", *flags, f"--workdir={multi}"], {})
  return root, single, multi, launched.stdout


def test_two_processes_match_one_process_step_for_step(runs):
  _, single, multi, _ = runs
  train_1, eval_1 = _metrics(single)
  train_2, eval_2 = _metrics(multi)
  assert sorted(train_1) == sorted(train_2) == list(range(1, 11))
  for step in train_1:
    assert train_2[step] == pytest.approx(train_1[step], abs=1e-5), step
  losses = [train_1[s] for s in range(1, 11)]
  assert sum(losses[5:]) < sum(losses[:5]) - 0.5      # it trained
  assert eval_2["accuracy"] == pytest.approx(eval_1["accuracy"], abs=1e-6)
  assert eval_2["loss"] == pytest.approx(eval_1["loss"], abs=1e-5)


def test_only_process_zero_writes_logs_and_both_processes_ran(runs):
  _, _, multi, stdout = runs
  with open(os.path.join(multi, "metrics.jsonl")) as f:
    steps = [json.loads(line)["step"] for line in f if '"train"' in line]
  assert steps == list(range(1, 11))                  # one writer: no duplicated rows
  progress = [line for line in stdout.splitlines() if "step 10/10" in line]
  assert progress and all(line.startswith("[0]") for line in progress)


def test_checkpoint_restores_on_other_meshes_in_one_process(runs, digits_data_dir):
  root, single, multi, _ = runs
  proc = _run([sys.executable, "-m", "tests.parallel.restore_across_meshes", digits_data_dir,
               single, multi, str(root / "resaved")], {})
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULTS "))
  r = json.loads(line[len("RESULTS "):])
  assert r["two_process_ckpt_on_8_devices"] < 1e-5
  assert r["sharded_8_ways"] == 8
  assert r["two_process_ckpt_on_1_device"] < 1e-5
  assert r["saved_on_8_restored_on_4"] < 1e-5
  assert r["restored_on_4_devices"] == 4
