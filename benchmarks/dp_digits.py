"""Accuracy at ε in {1, 3, 8} against non-private training on the embedded digits
(configs/papers/dp_sgd_mnist.py:digits and :nonprivate), each run with the canary
audit: the accountant's ε (upper bound) beside the audit's empirical lower bound.

Each row is one training run through the trainer (469 steps of expected batch 256 on
4,000 - (out-canaries) training digits); test accuracy on the 1,000 test digits.

  python benchmarks/dp_digits.py [--epsilons 1,3,8] [--canaries 200] [--workdir DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from mmjax.config import load_config_file  # noqa: E402
from mmjax.train import loop  # noqa: E402


def run(variant: str, epsilon: float | None, canaries: int, workdir: str) -> dict:
  config = load_config_file(os.path.join(REPO, "configs/papers/dp_sgd_mnist.py"), variant)
  if epsilon is not None:
    config.privacy.target_epsilon = epsilon
  if canaries:
    config.privacy.audit_canaries = canaries
    config.evals.audit = dict(type="privacy_audit")
  shutil.rmtree(workdir, ignore_errors=True)
  start = time.perf_counter()
  result = loop.train_and_evaluate(config, workdir)
  return {"variant": variant, "target_epsilon": epsilon,
          "epsilon": result.get("privacy/epsilon"),
          "noise_multiplier": result.get("privacy/noise_multiplier"),
          "accuracy": result["accuracy"],
          "audit_epsilon_lower_bound": result.get("audit/epsilon_lower_bound"),
          "audit_auroc": result.get("audit/auroc"),
          "seconds": time.perf_counter() - start}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--epsilons", default="1,3,8")
  parser.add_argument("--canaries", type=int, default=200)
  parser.add_argument("--workdir", default="/tmp/mmjax_dp_digits")
  args = parser.parse_args()
  rows = [run("digits", float(e), args.canaries, os.path.join(args.workdir, f"eps{e}"))
          for e in args.epsilons.split(",")]
  rows.append(run("nonprivate", None, args.canaries,
                  os.path.join(args.workdir, "nonprivate")))
  print("| run | ε (accountant) | noise multiplier | test accuracy | ε lower bound "
        "(audit) | audit AUROC | time |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    eps = "∞ (no DP)" if r["epsilon"] is None else f"{r['epsilon']:.3f}"
    noise = "—" if r["noise_multiplier"] is None else f"{r['noise_multiplier']:.3f}"
    print(f"| {r['variant']} | {eps} | {noise} | {100 * r['accuracy']:.1f}% | "
          f"{r['audit_epsilon_lower_bound']:.3f} | {r['audit_auroc']:.3f} | "
          f"{r['seconds']:.0f} s |")
  print("RESULTS " + json.dumps(rows))


if __name__ == "__main__":
  main()
