"""Every config under configs/ trains for a few steps through the real trainer and data."""
import glob
import json
import math
import os

import pytest

from mmjax.config import load_config_file
from mmjax.train import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (config file, arg): every file, plus the extra args a file documents.
CONFIGS = [(os.path.relpath(p, REPO), None)
           for p in sorted(glob.glob(os.path.join(REPO, "configs", "*.py")))]
CONFIGS.append(("configs/captions_lm.py", "mlm"))


@pytest.mark.parametrize("path, arg", CONFIGS, ids=[f"{p}:{a}" if a else p for p, a in CONFIGS])
def test_config_runs_three_steps(path, arg, digits_data_dir, tmp_path):
  config = load_config_file(os.path.join(REPO, path), arg)
  config.data.data_dir = digits_data_dir
  config.data.shuffle_buffer = 256
  config.train.update(dict(total_steps=3, batch_size=16, log_every=1, eval_every=0,
                           checkpoint_every=3))
  config.optim.warmup_steps = 0
  config.evals.update(dict(batch_size=16, max_batches=1))
  result = loop.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  assert [r["step"] for r in rows if r["split"] == "train"] == [1, 2, 3]
  assert all(math.isfinite(r["loss"]) for r in rows)
  assert math.isfinite(result["loss"])
  assert os.listdir(tmp_path / "checkpoints") == ["3"]
