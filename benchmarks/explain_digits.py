"""Every attribution method on three trained digit models, with its faithfulness scores:
the numbers of docs/explainability.md ("Every method on the digits").

Trains (or resumes, in WORKDIR/<model>) the digits CNN (configs/digits_cnn.py, 400
steps), the digits ViT (configs/digits_vit_mae.py, 1,000 steps) and an image + caption +
tone classifier (the multimodal model, concat fusion, 300 steps), then runs the
`attribution` evaluator on NUM test digits: over the pixels for the CNN and the ViT,
over the caption tokens for the multimodal model (with its per-modality shares). Prints
one markdown table per model and writes WORKDIR/explain_digits.json.

  python benchmarks/explain_digits.py [--workdir /tmp/mmjax_explain] [--num 100]
"""
from __future__ import annotations

import argparse
import json
import os
import time

from absl import logging

from configs.common import use_multimodal_digits
from mmjax.config import default_config, load_config_file
from mmjax.train import loop

ALL = ("gradient", "gradient_x_input", "smoothgrad", "integrated_gradients", "occlusion",
       "attention_rollout")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _multimodal():
  c = default_config()
  use_multimodal_digits(c, audio=True)
  c.model = dict(name="multimodal", modalities=("image", "text", "audio"), width=32,
                 depth=2, num_heads=2, mlp_dim=64, image_size=28, patch_size=7,
                 channels=1, vocab_size=260, max_len=32, num_classes=10, fusion="concat")
  c.objective = dict(name="supervised")
  c.optim.learning_rate = 3e-3
  c.train.update(dict(total_steps=300, batch_size=32, log_every=100, eval_every=0,
                      checkpoint_every=300))
  c.train.eval_batch_size = 100
  return c


def _runs(num: int):
  cnn = load_config_file(os.path.join(REPO, "configs/digits_cnn.py"))
  vit = load_config_file(os.path.join(REPO, "configs/digits_vit_mae.py"))
  pixels = dict(type="attribution", num_examples=num, pictures=8, baseline="uniform")
  yield "cnn", cnn, dict(pixels, methods=ALL[:-1])
  yield "vit", vit, dict(pixels, methods=ALL)
  yield "multimodal_text", _multimodal(), dict(type="attribution", modality="text",
                                                num_examples=num, pictures=8,
                                                methods=ALL, baseline="zeros")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default="/tmp/mmjax_explain")
  parser.add_argument("--num", type=int, default=100)
  args = parser.parse_args()
  logging.set_verbosity(logging.WARNING)
  results = {}
  for name, config, entry in _runs(args.num):
    config.evals = {"attr": entry}
    config.train.eval_every = 0
    start = time.time()
    metrics = loop.train_and_evaluate(config, os.path.join(args.workdir, name))
    results[name] = {"seconds": round(time.time() - start, 1),
                     **{k[len("attr/"):]: v for k, v in metrics.items()
                        if k.startswith("attr/")}}
    _table(name, entry["methods"], results[name])
  with open(os.path.join(args.workdir, "explain_digits.json"), "w") as f:
    json.dump(results, f, indent=2)


def _table(name: str, methods, r: dict) -> None:
  print(f"\n### {name} ({r['seconds']} s, train + explain)\n")
  print("| method | deletion AUC | insertion AUC | foreground share | completeness gap "
        "(mean / max) | randomised corr. |")
  print("|---|---|---|---|---|---|")
  for m in methods:
    gap = (f"{r[m + '/completeness_gap']:.2%} / {r[m + '/completeness_gap_max']:.2%}"
           if m + "/completeness_gap" in r else "")
    share = f"{r[m + '/foreground_share']:.1%}" if m + "/foreground_share" in r else ""
    print(f"| {m} | {r[m + '/deletion_auc']:.3f} | {r[m + '/insertion_auc']:.3f} | "
          f"{share} | {gap} | {r[m + '/randomized_rank_correlation']:.2f} |")
  print(f"| random ranking | {r['random/deletion_auc']:.3f} | "
        f"{r['random/insertion_auc']:.3f} | | | |")
  shares = {k.split("/")[1]: v for k, v in r.items() if k.startswith("modality_share/")}
  if shares:
    print("\nmodality shares: " + ", ".join(f"{k} {v:.1%}" for k, v in shares.items())
          + f" (completeness gap {r['modality_shares/completeness_gap']:.2%})")


if __name__ == "__main__":
  main()
