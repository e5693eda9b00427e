"""Curves of runs from their metrics.jsonl: reading the rows into series, grouping them
into families (loss, accuracy, learning rate, privacy ε, gradient norm) and drawing PNGs,
for one run (`plot_run`, WORKDIR/plots/) or several on shared axes (mmjax.compare),
without pyplot (mmjax.figures).
"""
from __future__ import annotations

import json
import os
import re
from typing import Callable, Mapping, Sequence

import numpy as np

from mmjax import figures

# Per-check details (AutoAttack's after/<attack>, sanity checks, example counts) are in
# metrics.jsonl for reading, not for curves.
DETAIL = ("/sanity/", "/after/", "num_examples", "sanity_passed")


def _last(key: str) -> str:
  return key.rsplit("/", 1)[-1]


# family -> (does the metric name, without its split, belong to it; log-scale y).
FAMILIES: dict[str, tuple[Callable[[str], bool], bool]] = {
    "loss": (lambda k: _last(k) == "loss" or _last(k).endswith("_loss"), False),
    "accuracy": (lambda k: "accuracy" in _last(k), False),
    "lr": (lambda k: k == "lr", True),
    "privacy": (lambda k: k.startswith("privacy/") and _last(k) == "epsilon", False),
    "grad_norm": (lambda k: k == "grad_norm", True),
}

Series = dict[str, tuple[np.ndarray, np.ndarray]]   # 'split/metric' -> (steps, values)


def read_rows(workdir: str) -> list[dict]:
  """The rows of WORKDIR/metrics.jsonl, in file order (a line cut short by a kill is
  skipped); [] when there is no file."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return []
  rows = []
  with open(path) as f:
    for line in f:
      try:
        rows.append(json.loads(line))
      except ValueError:
        continue
  return rows


def series(rows: Sequence[Mapping]) -> Series:
  """{'split/metric': (steps [N] int, values [N] float)} sorted by step; the last row of
  a step wins. Detail metrics (DETAIL) are left out."""
  points: dict[str, dict[int, float]] = {}
  for row in rows:
    split, step = row.get("split", "?"), int(row.get("step", 0))
    for k, v in row.items():
      if k in ("step", "split", "time") or any(d in f"/{k}" for d in DETAIL):
        continue
      if isinstance(v, (int, float)) and not isinstance(v, bool):
        points.setdefault(f"{split}/{k}", {})[step] = float(v)
  out = {}
  for name, by_step in points.items():
    steps = np.array(sorted(by_step), dtype=np.int64)
    out[name] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
  return out


def family_of(name: str) -> str | None:
  """The family of 'split/metric' (FAMILIES' order decides ties), or None."""
  metric = name.split("/", 1)[1] if "/" in name else name
  return next((f for f, (match, _) in FAMILIES.items() if match(metric)), None)


def final_values(s: Series) -> dict[str, float]:
  """{'split/metric': its value at its last step}."""
  return {name: float(values[-1]) for name, (_, values) in s.items()}


def draw(path: str, title: str, lines: Mapping[str, tuple[np.ndarray, np.ndarray]],
         log_y: bool = False) -> str:
  """A PNG at `path` with one line per {label: (steps [N], values [N])} on shared axes
  (markers where a line has few points, e.g. a single final eval); -> `path`."""
  fig = figures.new_figure(6.4, 4.0)
  ax = fig.add_subplot()
  for label, (steps, values) in lines.items():
    ax.plot(steps, values, marker="o" if len(steps) <= 12 else None, markersize=3,
            label=label)
  if log_y and all((v > 0).all() for _, v in lines.values()):
    ax.set_yscale("log")
  ax.set_xlabel("step")
  ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(fontsize=7, loc="best")
  fig.tight_layout()
  os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
  fig.savefig(path, dpi=100)
  return path


def plot_run(workdir: str, out_dir: str | None = None) -> list[str]:
  """One PNG per metric family present in WORKDIR/metrics.jsonl (loss.png: every loss,
  train and eval; accuracy.png: clean and robust; lr.png on a log scale; privacy.png:
  ε; grad_norm.png), in `out_dir` (default WORKDIR/plots/); -> the paths written."""
  s = series(read_rows(workdir))
  out_dir = out_dir or os.path.join(workdir, "plots")
  paths = []
  for family, (_, log_y) in FAMILIES.items():
    lines = {name: xy for name, xy in s.items() if family_of(name) == family}
    if lines:
      paths.append(draw(os.path.join(out_dir, f"{family}.png"), family, lines, log_y))
  return paths


def file_name(metric: str) -> str:
  """'eval/robust/accuracy' -> 'eval_robust_accuracy' (a PNG's name per metric)."""
  return re.sub(r"[^A-Za-z0-9_.-]+", "_", metric).strip("_")
