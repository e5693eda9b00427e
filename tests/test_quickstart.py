"""The quickstart config itself: 30 steps of ViT + MAE + classification lower the loss."""
import json
import os

from mmjax.config import load_config_file
from mmjax.train import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_30_steps_loss_falls(digits_data_dir, tmp_path):
  config = load_config_file(os.path.join(REPO, "configs", "quickstart.py"))
  config.data.data_dir = digits_data_dir
  config.train.update(dict(total_steps=30, log_every=5, eval_every=0, checkpoint_every=0))
  config.optim.warmup_steps = 5
  config.evals.max_batches = 1
  result = loop.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    train = [r for r in map(json.loads, f) if r["split"] == "train"]
  assert len(train) == 6
  first, last = train[0], train[-1]
  assert last["loss"] < first["loss"] - 0.2, (first, last)
  assert last["mae/loss"] < first["mae/loss"]
  assert last["supervised/loss"] < first["supervised/loss"]
  assert {"loss", "mae/loss", "supervised/loss", "supervised/accuracy"} <= set(result)
