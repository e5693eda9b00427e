"""The quickstart config itself: 20 steps of the three-modality SSL + adversarial
objective lower every loss, and every representation eval reports."""
import json
import math
import os

from mmjax.config import load_config_file
from mmjax.train import loop
from tests.test_configs import shrink_evals

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_20_steps_losses_fall_and_evals_report(digits_data_dir, tmp_path):
  config = load_config_file(os.path.join(REPO, "configs", "quickstart.py"))
  config.data.data_dir = digits_data_dir
  config.train.update(dict(total_steps=20, log_every=5, eval_every=0,
                           checkpoint_every=0))
  config.optim.warmup_steps = 3
  shrink_evals(config, batch_size=64)
  result = loop.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    train = [r for r in map(json.loads, f) if r["split"] == "train"]
  first, last = train[0], train[-1]
  for term in ("contrastive", "mae", "captioning"):
    for kind in ("clean", "adv"):
      key = f"{kind}/{term}/loss"
      assert last[key] < first[key], (key, first[key], last[key])
  # The attack raises the contrastive loss it maximises.
  assert last["adv/contrastive/loss"] > last["clean/contrastive/loss"]
  for key in ("probe/accuracy", "probe/robust_accuracy", "probe/random_init_accuracy",
              "retrieval/image_to_text/R@1", "retrieval/audio_to_image/R@10",
              "caption/bleu"):
    assert math.isfinite(result[key]), key
  assert 0 <= result["probe/robust_accuracy"] <= result["probe/accuracy"] <= 1
  assert 0 <= result["caption/bleu"] <= 100
  with open(tmp_path / "captions" / "step_20.json") as f:
    samples = json.load(f)["samples"]
  assert len(samples) == 16 and all(s["reference"] for s in samples)
