"""The attribution evaluator beyond images: token maps of the multimodal model's caption
(HTML and PNG), spectrogram maps, per-modality shares that obey completeness, attention
rollout and occlusion in the trainer; what it cannot explain is refused before
training."""
import json
import os

import matplotlib.image
import numpy as np
import pytest

from configs.common import use_multimodal_digits
from mmjax.config import default_config
from mmjax.errors import ConfigError
from mmjax.train import loop
from tests import tensorboard_events

MM = dict(name="multimodal", modalities=("image", "text", "audio"), width=32, depth=1,
          num_heads=2, mlp_dim=64, image_size=28, patch_size=7, channels=1,
          vocab_size=260, max_len=32, num_classes=10, fusion="concat")


def _config(data_dir, modality, **model):
  c = default_config()
  use_multimodal_digits(c, audio=True)
  c.data.data_dir = data_dir
  c.model = dict(MM, **model)
  c.objective = dict(name="supervised")
  c.optim.learning_rate = 3e-3
  c.train.update(dict(total_steps=20, batch_size=32, log_every=10, eval_every=0,
                      checkpoint_every=20))
  c.train.eval_batch_size = 100
  c.evals.attr = dict(type="attribution", modality=modality, num_examples=8, pictures=2,
                      methods=("integrated_gradients", "occlusion", "attention_rollout"),
                      deletion_steps=4, ig_steps=32, shares_steps=256)
  return c


def test_caption_tokens_are_explained_with_shares_that_sum_to_the_logit(digits_data_dir,
                                                                        tmp_path):
  workdir = str(tmp_path / "run")
  result = loop.train_and_evaluate(_config(digits_data_dir, "text"), workdir)
  shares = [result[f"attr/modality_share/{k}"] for k in ("image", "spectrogram", "text")]
  assert sum(shares) == pytest.approx(1.0, abs=1e-5) and min(shares) >= 0
  # Integrated gradients over all three inputs at once: completeness within 2%.
  assert result["attr/modality_shares/completeness_gap"] < 0.02
  assert result["attr/integrated_gradients/completeness_gap"] < 0.01
  for method in ("integrated_gradients", "occlusion", "attention_rollout"):
    assert 0 <= result[f"attr/{method}/deletion_auc"] <= 1
    assert -1 <= result[f"attr/{method}/randomized_rank_correlation"] <= 1
  out = os.path.join(workdir, "attributions_attr")
  record = json.load(open(os.path.join(out, "step_20.json")))
  first = record["tokens"][0]
  # The real tokens of the first caption, framed by BOS and EOS, one score per method.
  assert first["tokens"][0] == "<s>" and first["tokens"][-1] == "</s>"
  assert "".join(first["tokens"][1:-1]).startswith(("a ", "the "))
  assert len(first["occlusion"]) == len(first["tokens"])
  # Rollout over tokens is a distribution over the caption (its share of the joint one).
  assert 0 < sum(first["attention_rollout"]) <= 1 + 1e-5
  page = open(os.path.join(out, "step_20.html"), encoding="utf-8").read()
  assert page.count("<tr>") == 2 * 3 and "background:rgba(" in page
  for png in ("step_20.png", "step_20_shares.png"):
    assert matplotlib.image.imread(os.path.join(out, png)).shape[0] > 50
  images = tensorboard_events.images(os.path.join(workdir, "tensorboard"))
  assert sorted(tag for tag, _, _ in images) == ["attr/heatmaps", "attr/modality_shares"]


def test_spectrogram_maps_with_towers_fusion(digits_data_dir, tmp_path):
  config = _config(digits_data_dir, "spectrogram", fusion="towers")
  config.evals.attr.update(methods=("gradient", "occlusion", "attention_rollout"),
                           modality_shares=False, randomization=False)
  workdir = str(tmp_path / "run")
  result = loop.train_and_evaluate(config, workdir)
  assert "attr/modality_share/text" not in result
  for method in ("gradient", "occlusion", "attention_rollout"):
    assert 0 <= result[f"attr/{method}/insertion_auc"] <= 1
  picture = matplotlib.image.imread(os.path.join(workdir, "attributions_attr",
                                                 "step_20.png"))
  assert picture.shape[0] > 100 and picture.shape[1] > 200


@pytest.mark.parametrize("model, entry, match", [
    (dict(fusion="bottleneck", depth=2), dict(methods=("attention_rollout",)),
     "defined for 'towers' and 'concat' fusion"),
    (dict(num_classes=0, projection_dim=8), dict(),
     r"explain a class logit.*num_classes > 0"),
    (dict(), dict(occlusion_window=(40, 0)),
     r"occlusion_window / occlusion_stride: .*do not fit an input of shape \(32, 32\)"),
    (dict(), dict(rollout_residual=1.0), r"rollout_residual=1.0 must be in \[0, 1\)"),
    (dict(), dict(modality="label"), r"'label' is not an input the model embeds"),
])
def test_what_cannot_be_explained_is_refused_before_training(digits_data_dir, tmp_path,
                                                             model, entry, match):
  config = _config(digits_data_dir, "text", **model)
  if not config.model.num_classes:
    config.objective = dict(name="contrastive")
  config.evals.attr.update(entry)
  with pytest.raises(ConfigError, match=match):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")


def test_rollout_of_a_cnn_is_refused(tiny_config, tmp_path):
  config = tiny_config(total_steps=3)
  config.evals.attr = dict(type="attribution", methods=("attention_rollout",))
  with pytest.raises(ConfigError, match="MnistCNN has no attention to roll out"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
