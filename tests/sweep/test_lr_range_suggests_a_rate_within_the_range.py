"""The LR range test writes its CSV and plot and suggests a learning rate in range."""
import csv
import os

import numpy as np

from mmjax.sweep import lr_range


def test_lr_range_writes_csv_and_png_and_suggests_a_rate(tiny_config, tmp_path):
  out = lr_range.lr_range(tiny_config(), str(tmp_path / "lr"), min_lr=1e-5, max_lr=1.0,
                          steps=40)
  with open(out["csv"]) as f:
    rows = list(csv.DictReader(f))
  lrs = np.array([float(r["lr"]) for r in rows])
  assert len(rows) == out["steps_run"] >= 3
  assert lrs[0] == np.float32(1e-5) and np.all(np.diff(lrs) > 0)   # exponential ramp
  assert np.allclose(np.diff(np.log(lrs)), np.log(1e5) / 40, rtol=1e-3)
  assert 1e-5 <= out["suggested"] <= 1.0
  assert out["min_loss_over_10"] == out["min_loss"] / 10
  assert os.path.getsize(out["png"]) > 10_000


def test_suggestion_is_the_steepest_descent_before_the_minimum():
  lrs = np.logspace(-6, 0, 61)
  # Flat, a steep fall centred at 1e-3, minimum near 1e-2, then divergence.
  x = np.log10(lrs)
  losses = 2 - 1.5 / (1 + np.exp(-(x + 3) * 4)) + np.where(x > -2, (x + 2) ** 2 * 3, 0)
  picks = lr_range.suggest(lrs, losses)
  assert 3e-4 < picks["steepest"] < 3e-3
  assert 3e-3 < picks["min_loss"] < 3e-2
