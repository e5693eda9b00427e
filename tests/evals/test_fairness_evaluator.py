"""The fairness evaluator in the trainer: per-class groups clean and under attack, its
report files, --mode=eval, and its refusals."""
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from mmjax.errors import ConfigError
from mmjax.train import loop
from tests import tensorboard_events


def test_per_class_fairness_clean_and_robust_with_its_report(tiny_config, tmp_path):
  config = tiny_config(total_steps=10, checkpoint_every=10)
  config.evals.fairness = dict(type="fairness", num_examples=200, attack="fgsm", eps=0.1,
                               num_groups=12)   # classes 10 and 11 do not exist: empty
  workdir = str(tmp_path / "run")
  result = loop.train_and_evaluate(config, workdir)
  accs = [result[f"fairness/group/label{c}/accuracy"] for c in range(10)]
  robust = [result[f"fairness/group/label{c}/robust_accuracy"] for c in range(10)]
  assert "fairness/group/label10/accuracy" not in result
  assert result["fairness/worst_group_accuracy"] == min(accs)
  assert result["fairness/max_gap"] == pytest.approx(max(accs) - min(accs))
  assert result["fairness/robust/worst_group_accuracy"] == min(robust)
  assert all(r <= a + 1e-9 for r, a in zip(robust, accs))   # FGSM only removes
  report = json.load(open(os.path.join(workdir, "fairness", "step_10.json")))
  groups = report["groups"]
  assert groups["label10"]["count"] == 0 and groups["label11"]["count"] == 0
  counts = np.array([groups[f"label{c}"]["count"] for c in range(10)])
  assert counts.sum() == 200
  # The overall accuracy is the count-weighted mean of the groups'.
  assert result["fairness/accuracy"] == pytest.approx(
      float(np.dot(counts, accs) / counts.sum()))
  # Per-class groups: class c's TPR for its own class is the group's accuracy.
  for c in range(10):
    assert groups[f"label{c}"]["tpr"][c] == pytest.approx(accs[c])
  md = open(os.path.join(workdir, "fairness", "step_10.md")).read()
  assert "| label3 |" in md and "worst-group accuracy" in md
  assert os.path.getsize(os.path.join(workdir, "fairness", "step_10.png")) > 1000
  again = loop.evaluate(config, workdir, ["fairness"])
  assert again["fairness/worst_group_accuracy"] == result["fairness/worst_group_accuracy"]
  assert "loss" not in again
  # The bar chart is in TensorBoard too, once from training and once from --mode=eval.
  images = tensorboard_events.images(os.path.join(workdir, "tensorboard"))
  assert [(tag, step) for tag, step, _ in images] == [("fairness/groups", 10)] * 2
  written = Image.open(os.path.join(workdir, "fairness", "step_10.png"))
  assert Image.open(io.BytesIO(images[0][2])).size == written.size



@pytest.mark.parametrize("entry, match", [
    (dict(group_key="colour"), r"group_key='colour' is not in the eval examples, which "
                               r"hold \['image', 'label'\]"),
    (dict(group_key="image"), r"group_key='image' must hold one integer"),
    (dict(group_key=""), r"group_key is empty"),
    (dict(attack="pgd"), r"attack is set but evals.fairness.eps=0.0 is not positive"),
    (dict(attack="pgdd", eps=0.1), r"Unknown evals.fairness.attack='pgdd'.*Did you mean "
                                   r"'pgd'"),
])
def test_bad_fairness_settings_are_refused_before_training(tiny_config, tmp_path, entry,
                                                           match):
  config = tiny_config(total_steps=3)
  config.evals.fairness = dict(type="fairness", **entry)
  with pytest.raises(ConfigError, match=match):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run" / "checkpoints")
