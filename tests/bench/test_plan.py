"""--mode=plan: AOT compile for 8 fake devices without running; FLOPs, per-device memory
and the fit verdict respond to the mesh, remat, gradient accumulation and HBM size."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(cmd):
  proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


@pytest.fixture(scope="module")
def plans():
  proc = _run([sys.executable, "-m", "tests.bench.plans"])
  line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULTS "))
  return json.loads(line[len("RESULTS "):])


def test_flops_are_the_analytic_transformer_count(plans):
  p = plans["fsdp"]
  tokens, d, f, t, v, depth = 64 * 64, 128, 512, 64, 260, 4
  forward = tokens * (depth * (8 * d * d + 4 * d * f + 4 * t * d) + 2 * d * v)
  assert p["flops_per_step"] == pytest.approx(3 * forward, rel=1e-6)  # fwd + 2 x bwd
  assert p["flops_per_step_per_device"] == pytest.approx(3 * forward / 8, rel=1e-6)
  assert p["devices"] == 8 and p["mesh"] == {"data": 1, "fsdp": 8, "model": 1}


def test_fsdp_divides_parameter_and_optimizer_memory(plans):
  fsdp, dp = plans["fsdp"]["bytes_per_device"], plans["dp"]["bytes_per_device"]
  assert fsdp["params"] < dp["params"] / 6          # ~1/8 (a few small arrays replicated)
  assert fsdp["opt_state"] < dp["opt_state"] / 6
  assert dp["params"] == 4 * plans["dp"]["parameters"]      # float32, every device


def test_remat_and_accumulation_trade_compute_for_memory(plans):
  base = plans["fsdp"]
  remat, accum = plans["remat_full"], plans["accum4"]
  assert remat["bytes_per_device"]["temporaries"] < base["bytes_per_device"]["temporaries"]
  assert remat["hardware_flops_per_step"] > remat["flops_per_step"]  # recompute counted
  assert remat["flops_per_step"] == pytest.approx(base["flops_per_step"], rel=1e-6)
  assert accum["bytes_per_device"]["temporaries"] < base["bytes_per_device"]["temporaries"]
  assert accum["flops_per_step"] == pytest.approx(base["flops_per_step"], rel=1e-6)


def test_fit_verdict(plans):
  assert plans["fsdp"]["fits"] is True
  assert plans["dp"]["fits"] is False
  assert plans["dp"]["peak_bytes_per_device"] > 0.001 * 2**30


def test_plan_mode_from_the_command_line(tmp_path):
  proc = _run([sys.executable, "-m", "mmjax.main", "--config=configs/scale/vit_h14_fsdp.py:tiny",
               f"--workdir={tmp_path}", "--mode=plan"])
  plan = json.loads((tmp_path / "plan.json").read_text())
  assert plan["devices"] == 8 and plan["mesh"]["fsdp"] == 8   # plan.devices fake devices
  assert plan["fits"] is True and plan["flops_per_step"] > 0
  assert "peak per device" in proc.stderr
  assert not (tmp_path / "checkpoints").exists()             # compiled, never run
