"""The PyTorch reference model equals mmjax's (tests/bench/torch_checks.py), checked in a
fresh process: importing PyTorch where TensorFlow is already loaded aborts the process.
Skipped where PyTorch (optional: the `bench` extra) is not installed."""
import importlib.util
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                    reason="PyTorch is not installed (pip install -e '.[bench]')")
def test_torch_reference_matches_mmjax():
  proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                         "tests/bench/torch_checks.py"], cwd=REPO, capture_output=True,
                        text=True, timeout=300, env=dict(os.environ, JAX_PLATFORMS="cpu"))
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
  assert " passed" in proc.stdout and "failed" not in proc.stdout
