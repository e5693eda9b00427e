"""A 20-trial learning-rate x eps sweep of configs/digits_cnn_sweep.py (Fast-AT on
the embedded digits, PGD-10 robust accuracy at eps 0.1 as the metric), with the median
pruner and without: wall time, best trial, pruned trials, per-trial overhead and how
trials reuse JAX's persistent compilation cache. Numbers in docs/sweeps.md.

  python benchmarks/sweep_digits.py --out=/tmp/sweep_bench [--trials=20]

Each sweep runs as its own `python -m mmjax.sweep` process with a cold cache of its own
(WORKDIR/xla_cache), so neither profits from the other's compilations.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import re
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STAMP = re.compile(r"^[IWE](\d{4}) (\d\d:\d\d:\d\d\.\d+)")


def _seconds(line: str) -> float | None:
  m = _STAMP.match(line)
  if not m:
    return None
  t = datetime.datetime.strptime(m[2], "%H:%M:%S.%f")
  return t.hour * 3600 + t.minute * 60 + t.second + t.microsecond / 1e6


def _overheads(log: list[str]) -> list[dict]:
  """Per trial, from the log: set-up (trial start -> 'Compiling the train step': build,
  data, restore/init) and the first step (its compilation included)."""
  out, current = [], None
  for line in log:
    t = _seconds(line)
    if "study.py" in line and re.search(r"Trial \d+ in ", line):
      current = {"start": t}
      out.append(current)
    elif current is not None and "Compiling the train step" in line:
      current["setup_s"] = round(t - current["start"], 2)
    elif current is not None and "First train step done in" in line:
      current["first_step_s"] = float(re.search(r"done in ([\d.]+) s", line)[1])
  return [{k: v for k, v in o.items() if k != "start"} for o in out]


def run_sweep(out: str, name: str, trials: int, pruner: str) -> dict:
  workdir = os.path.join(out, name)
  cmd = [sys.executable, "-m", "mmjax.sweep", "--config=configs/digits_cnn_sweep.py",
         f"--workdir={workdir}", f"--trials={trials}", "--worker_id=0",
         f"--config.sweep.pruner={pruner}", "--library_logs"]
  env = dict(os.environ, JAX_DEBUG_LOG_MODULES="jax._src.compiler", PYTHONPATH=REPO)
  env.pop("JAX_COMPILATION_CACHE_DIR", None)   # the sweep's own WORKDIR/xla_cache
  started = time.perf_counter()
  proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
  wall = time.perf_counter() - started
  log = (proc.stdout + proc.stderr).splitlines()
  with open(os.path.join(out, f"{name}.log"), "w") as f:
    f.write("\n".join(log))
  if proc.returncode:
    raise SystemExit(f"{name} failed (exit {proc.returncode}); see {out}/{name}.log")
  with open(os.path.join(workdir, "trials.csv")) as f:
    rows = list(csv.DictReader(f))
  done = [r for r in rows if r["state"] == "COMPLETE"]
  best = max(done, key=lambda r: float(r["value"]))
  overheads = _overheads(log)
  train_step_hits = sum("cache hit for 'jit_wrapped'" in l for l in log)
  train_step_misses = sum("CACHE MISS for 'jit_wrapped'" in l for l in log)
  return {
      "sweep": name, "wall_s": round(wall, 1), "trials": len(rows),
      "complete": len(done), "pruned": sum(r["state"] == "PRUNED" for r in rows),
      "best_value": float(best["value"]), "best_trial": int(best["number"]),
      "best_params": {k: best[k] for k in best if k.startswith(("optim.", "adversarial."))},
      "trial_seconds_mean": round(sum(float(r["duration_s"]) for r in rows) / len(rows), 1),
      "setup_s_first": overheads[0].get("setup_s"),
      "setup_s_later_mean": round(sum(o.get("setup_s", 0) for o in overheads[1:])
                                  / max(len(overheads) - 1, 1), 2),
      "first_step_s_first": overheads[0].get("first_step_s"),
      "first_step_s_later_mean": round(sum(o.get("first_step_s", 0) for o in overheads[1:])
                                       / max(len(overheads) - 1, 1), 2),
      "cache_hits": sum("Persistent compilation cache hit" in l for l in log),
      "cache_misses": sum("PERSISTENT COMPILATION CACHE MISS" in l for l in log),
      "train_step_hits": train_step_hits, "train_step_misses": train_step_misses,
  }


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--out", default="/tmp/sweep_bench")
  parser.add_argument("--trials", type=int, default=20)
  args = parser.parse_args()
  os.makedirs(args.out, exist_ok=True)
  results = [run_sweep(args.out, "median", args.trials, "median"),
             run_sweep(args.out, "no_pruning", args.trials, "none")]
  for r in results:
    print(json.dumps(r))
  with open(os.path.join(args.out, "results.json"), "w") as f:
    json.dump(results, f, indent=2)


if __name__ == "__main__":
  main()
