"""The stock Fast-AT MNIST recipe, guard on, trains a robust model on the real digits: the
study that was tests/train/test_fast_at_mnist_recipe_trains_robust.py (70 s of the test
suite; a quality result, so a reproduction, docs/reproductions.md "Fast-AT on the real
MNIST digits").

`configs/papers/fast_at_mnist.py:digits` unchanged (eps 0.3, alpha 0.375, unclipped random
start, guard every epoch, 2,000 steps) except for a smaller final eval: PGD-20 x 1 on
NUM test digits, no eps curve or sanity suite. Checks what the test checked (clean
accuracy > 0.9, PGD accuracy > 0.5 where chance is 0.1 and a collapse reads ~0, the guard
ran every epoch, a guard stop keeps a trained model) and prints the numbers; exit status 1
if a check fails.

  python benchmarks/fast_at_mnist_digits.py [--workdir /tmp/mmjax_fast_at_digits] [--num 200]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from mmjax.config import load_config_file
from mmjax.train import loop
from mmjax.train.overfitting_guard import EARLY_STOP_FILE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="/tmp/mmjax_fast_at_digits")
  parser.add_argument("--num", type=int, default=200, help="test digits of the PGD eval")
  args = parser.parse_args()
  config = load_config_file(os.path.join(REPO, "configs/papers/fast_at_mnist.py"), "digits")
  assert config.adversarial.guard_every and not config.adversarial.clip_start
  config.evals.robust.update(dict(num_examples=args.num, steps=20, restarts=1, curve_eps=(),
                                  sanity=False))
  config.train.update(dict(checkpoint_every=0, log_every=500))
  shutil.rmtree(args.workdir, ignore_errors=True)   # a fresh run, not a resumed one
  start = time.time()
  result = loop.train_and_evaluate(config, args.workdir)
  wall = time.time() - start
  history = json.load(open(os.path.join(args.workdir, "guard.json")))["history"]
  stop_file = os.path.join(args.workdir, EARLY_STOP_FILE)
  stop = json.load(open(stop_file)) if os.path.exists(stop_file) else None
  checks = {
      "clean accuracy > 0.9": result["robust/clean_accuracy"] > 0.9,
      "PGD-20 accuracy > 0.5": result["robust/accuracy"] > 0.5,
      "the guard ran every epoch (>= 10 checks)": len(history) >= 10,
      "a guard stop keeps a trained model (step >= 400)":
          stop is None or (stop["parameters_of_step"] >= 400
                           and result["guard/stopped"] == 1.0),
  }
  print(json.dumps({"clean_accuracy": result["robust/clean_accuracy"],
                    "pgd20_accuracy": result["robust/accuracy"], "eval_digits": args.num,
                    "guard_checks": len(history),
                    "guard_stop": stop, "wall_s": round(wall, 1)}, indent=1))
  for name, ok in checks.items():
    print(f"{'ok  ' if ok else 'FAIL'} {name}")
  return 0 if all(checks.values()) else 1


if __name__ == "__main__":
  sys.exit(main())
