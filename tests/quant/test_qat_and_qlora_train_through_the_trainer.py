"""The trainer with the quantization switches: a QAT run (`quantization.qat=True`)
lowers its loss and its float32 params then lose little in int8 PTQ (--mode=quantize)."""
import json
import os

from mmjax.train import loop
from tests.conftest import tiny_vit_config


def _train_losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]


def test_qat_run_learns_and_its_params_keep_their_predictions_in_int8(digits_data_dir,
                                                                      tmp_path):
  config = tiny_vit_config(digits_data_dir, total_steps=40, log_every=10,
                           checkpoint_every=40)
  config.quantization.update(dict(qat=True, method="int8_dynamic", latency_batches=1))
  config.evals = {}
  workdir = str(tmp_path / "qat")
  loop.train_and_evaluate(config, workdir)
  losses = _train_losses(workdir)
  assert len(losses) == 4 and losses[-1] < 0.7 * losses[0], losses
  metrics = loop.quantize(config, workdir)
  assert metrics["quantization/accuracy_f32"] > 0.5   # it learned digits
  assert metrics["quantization/agreement"] >= 0.98
  assert abs(metrics["quantization/accuracy_drop"]) <= 1.0
