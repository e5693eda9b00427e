"""Cluster settings from arguments / MMJAX_* / SLURM / TPU env, and a real 2-process CPU run."""
import os
import re
import socket
import subprocess
import sys

import jax
import pytest

from mmjax.errors import ConfigError
from mmjax.parallel import distributed
from mmjax.parallel.distributed import cluster_settings, expand_nodelist

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MMJAX_ENV = {"MMJAX_COORDINATOR_ADDRESS": "10.0.0.1:1234", "MMJAX_NUM_PROCESSES": "4",
             "MMJAX_PROCESS_ID": "3"}
SLURM_ENV = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "3", "SLURM_PROCID": "2",
             "SLURM_JOB_NODELIST": "node[001-003]"}


def test_explicit_arguments():
  assert cluster_settings("host:99", 2, 1, env={}) == {
      "coordinator_address": "host:99", "num_processes": 2, "process_id": 1}


def test_mmjax_env_and_arguments_take_precedence():
  assert cluster_settings(env=MMJAX_ENV) == {
      "coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
  # Arguments win over our variables, which win over SLURM and TPU.
  env = {**MMJAX_ENV, **SLURM_ENV, "TPU_NAME": "pod"}
  assert cluster_settings(process_id=0, env=env)["process_id"] == 0
  assert cluster_settings(env=env)["coordinator_address"] == "10.0.0.1:1234"


@pytest.mark.parametrize("nodelist, hosts", [
    ("node001", ["node001"]),
    ("a1,a2", ["a1", "a2"]),
    ("gpu-[1-2]", ["gpu-1", "gpu-2"]),
    ("node[001-003,007]", ["node001", "node002", "node003", "node007"]),
    ("n[08-10],x", ["n08", "n09", "n10", "x"]),
    ("r[1-2]-n[01-02]", ["r1-n01", "r1-n02", "r2-n01", "r2-n02"]),
])
def test_expand_nodelist(nodelist, hosts):
  assert expand_nodelist(nodelist) == hosts


def test_slurm():
  assert cluster_settings(env=SLURM_ENV) == {
      "coordinator_address": "node001:12355", "num_processes": 3, "process_id": 2}
  # The step's node list (inside srun) wins over the job's; the port can be changed.
  env = {**SLURM_ENV, "SLURM_STEP_NODELIST": "gpu-[7-9]", "MMJAX_COORDINATOR_PORT": "4000"}
  assert cluster_settings(env=env)["coordinator_address"] == "gpu-7:4000"


def test_opt_out_of_cluster_detection():
  assert cluster_settings(env={**SLURM_ENV, "MMJAX_DISTRIBUTED": "0"}) is None
  assert cluster_settings(env={"TPU_NAME": "pod", "MMJAX_DISTRIBUTED": "0"}) is None


def test_slurm_single_task_is_single_process():
  assert cluster_settings(env={**SLURM_ENV, "SLURM_NTASKS": "1", "SLURM_PROCID": "0"}) is None


def test_slurm_without_procid_says_use_srun():
  env = {k: v for k, v in SLURM_ENV.items() if k != "SLURM_PROCID"}
  with pytest.raises(ConfigError, match="srun"):
    cluster_settings(env=env)


@pytest.mark.parametrize("var", ["TPU_WORKER_HOSTNAMES", "TPU_WORKER_ID", "CLOUD_TPU_TASK_ID",
                                 "TPU_NAME", "TPU_ACCELERATOR_TYPE"])
def test_tpu_vm_is_auto_detected(var):
  assert cluster_settings(env={var: "x"}) == {"auto": True}


def test_nothing_set_is_single_process():
  assert cluster_settings(env={}) is None
  assert cluster_settings(env={"MMJAX_NUM_PROCESSES": ""}) is None


def test_partial_settings_name_what_is_missing():
  with pytest.raises(ConfigError, match=r"num_processes \(or MMJAX_NUM_PROCESSES\) is not set"):
    cluster_settings(env={"MMJAX_COORDINATOR_ADDRESS": "h:1", "MMJAX_PROCESS_ID": "0"})
  with pytest.raises(ConfigError) as e:
    cluster_settings(coordinator_address="h:1", env={})
  assert "MMJAX_NUM_PROCESSES" in str(e.value) and "MMJAX_PROCESS_ID" in str(e.value)


@pytest.mark.parametrize("args, env, match", [
    (("h:1", 2, 2), {}, r"process_id=2 .* must be in \[0, 2\)"),
    (("h:1", 2, -1), {}, r"process_id=-1"),
    ((), {**SLURM_ENV, "SLURM_PROCID": "3"}, r"process_id=3 \(from SLURM\)"),
    (("h", 2, 0), {}, "must be host:port"),
    ((), {**MMJAX_ENV, "MMJAX_NUM_PROCESSES": "two"}, "must be an integer"),
])
def test_invalid_settings(args, env, match):
  with pytest.raises(ConfigError, match=match):
    cluster_settings(*args, env=env)


@pytest.fixture
def fake_jax_initialize(monkeypatch):
  """Records jax.distributed.initialize's arguments instead of starting a cluster."""
  calls = []
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: calls.append(kw))
  return calls


def test_initialize_passes_settings_and_skips_jax_cluster_detection(fake_jax_initialize):
  assert distributed.initialize("localhost:1", 2, 1, local_device_ids=[3],
                                initialization_timeout=7)
  assert fake_jax_initialize == [dict(
      coordinator_address="localhost:1", num_processes=2, process_id=1, local_device_ids=[3],
      initialization_timeout=7, cluster_detection_method="deactivate")]


def test_initialize_refuses_a_busy_coordinator_port(fake_jax_initialize):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    s.listen()
    with pytest.raises(ConfigError, match=f"port {s.getsockname()[1]} .* already in use"):
      distributed.initialize(f"localhost:{s.getsockname()[1]}", 2, 0)
  assert not fake_jax_initialize


def test_initialize_after_devices_exist_explains_the_order(monkeypatch):
  def too_late(**_):
    raise RuntimeError("jax.distributed.initialize() must be called before any JAX calls")
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
  monkeypatch.setattr(jax.distributed, "initialize", too_late)
  with pytest.raises(ConfigError, match="before anything touches JAX devices"):
    distributed.initialize("localhost:1", 2, 1)


def _launch(**env):
  return subprocess.run(
      [sys.executable, "launch/local.py", "--num_processes=2", "--devices_per_process=2",
       "--module=tests.parallel.two_process_probe"],
      cwd=REPO, env=dict(os.environ, MMJAX_INIT_TIMEOUT="30", **env), capture_output=True,
      text=True, timeout=60)


def test_local_launcher_runs_a_two_process_cpu_cluster():
  r = _launch()
  assert r.returncode == 0, r.stdout + r.stderr
  for i in range(2):
    # Each process holds 2 of the 4 global devices; the sum adds both processes' rows.
    assert re.search(rf"^\[{i}\] PROBE process={i} processes=2 devices=4 sum=202.0$", r.stdout,
                     re.M), r.stdout


def test_local_launcher_stops_the_others_when_one_fails():
  # Process 0 would wait for process 1 at start-up until the init timeout (30 s) without it.
  r = _launch(PROBE_FAIL_PROCESS="1")
  assert r.returncode == 3, r.stdout + r.stderr
  assert "process 1 exited with code 3" in r.stderr
