"""A small student distilled from a digits teacher against the same student trained from
scratch, same steps, on the embedded digits (4,000 train / 1,000 test).

Teacher: configs/digits_cnn.py as it is (the Fast-AT MNIST CNN, 166k parameters, 400
steps). Student: Papernot et al.'s small MNIST CNN (`dp_mnist_cnn`, ReLU, 26k
parameters), trained with the teacher's recipe (AdamW, batch 100, the same schedule and
steps) four ways: from scratch (`supervised`), distilled (`distillation`, T and alpha
below), Madry PGD adversarial training from scratch, and ARD (`adversarial.kind='ard'`,
the same attack). Each row: test accuracy on the 1,000 test digits and PGD-20 robust
accuracy at eps (500 test digits, step 0.01), with the clean accuracy on those 500.

  python benchmarks/distill_digits.py [--steps 400] [--eps 0.1] [--workdir DIR] [--reuse]

--reuse reads a run's final eval from its workdir's metrics.jsonl when it finished
there, instead of training it again.
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


def _config(args, workdir_of_teacher: str | None, objective: dict, adversarial: dict):
  c = load_config_file(os.path.join(REPO, "configs/digits_cnn.py"))
  if workdir_of_teacher is not None:   # a student
    c.model = dict(name="dp_mnist_cnn", activation="relu", num_classes=10)
    c.objective = objective
    c.adversarial.update(adversarial)
  c.train.update(dict(total_steps=args.steps, eval_every=0, checkpoint_every=0,
                      log_every=100))
  c.evals.robust = dict(type="robust", attack="pgd", eps=args.eps, steps=20,
                        step_size=0.01, restarts=1, num_examples=500)
  return c


def _finished(workdir: str, steps: int) -> dict | None:
  """The final eval row of a run that finished in `workdir`, else None."""
  path = os.path.join(workdir, "metrics.jsonl")
  if not os.path.exists(path):
    return None
  rows = [json.loads(line) for line in open(path)]
  evals = [r for r in rows if r["split"] == "eval" and r["step"] == steps]
  return evals[-1] if evals else None


def run(name: str, config, workdir: str, reuse: bool) -> dict:
  start = time.perf_counter()
  result = _finished(workdir, config.train.total_steps) if reuse else None
  if result is None:
    shutil.rmtree(workdir, ignore_errors=True)
    result = loop.train_and_evaluate(config, workdir)
  # Madry's eval loss is at the attacked inputs ('adv/accuracy'): no clean 'accuracy'.
  row = {"run": name, "model": config.model.name,
         "accuracy": result.get("accuracy", float("nan")),
         "clean_500": result["robust/clean_accuracy"],
         "robust_accuracy": result["robust/accuracy"],
         "gradient_sanity": result["robust/sanity/nonzero_gradients"],
         "seconds": time.perf_counter() - start}
  print(json.dumps(row), flush=True)
  return row


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=400)
  parser.add_argument("--eps", type=float, default=0.1)
  parser.add_argument("--temperature", type=float, default=4.0)
  parser.add_argument("--alpha", type=float, default=0.9)
  parser.add_argument("--workdir", default="/tmp/mmjax_distill_digits")
  parser.add_argument("--reuse", action="store_true")
  args = parser.parse_args()
  teacher_dir = os.path.join(args.workdir, "teacher")
  kd = dict(name="distillation", teacher_workdir=teacher_dir,
            temperature=args.temperature, alpha=args.alpha)
  attack = dict(modalities=("image",), attack="pgd", eps=args.eps, steps=5,
                step_size=args.eps / 4)
  rows = [run("teacher (digits_cnn)", _config(args, None, {}, {}), teacher_dir, args.reuse)]
  for name, objective, adversarial in (
      ("student, scratch", dict(name="supervised"), {}),
      ("student, distilled", kd, {}),
      ("student, Madry PGD-5", dict(name="supervised"), dict(kind="madry", **attack)),
      ("student, ARD PGD-5", kd, dict(kind="ard", **attack))):
    rows.append(run(name, _config(args, teacher_dir, objective, adversarial),
                    os.path.join(args.workdir, name.split(", ")[-1].split()[0].lower()),
                    args.reuse))
  print(f"\n| run | model | test accuracy (1,000) | clean / PGD-20 eps {args.eps} (500) "
        "| input gradients nonzero | time |")
  print("|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['run']} | {r['model']} | {r['accuracy']:.3f} | {r['clean_500']:.3f} / "
          f"{r['robust_accuracy']:.3f} | {r['gradient_sanity']:.0f} | {r['seconds']:.0f} s |")


if __name__ == "__main__":
  main()
