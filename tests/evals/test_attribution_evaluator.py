"""The attribution evaluator in the trainer: faithfulness beats a random ranking, IG's
completeness holds on the digits CNN, the heatmaps are a readable PNG; bad settings are
refused before training."""
import os

import matplotlib.image
import pytest

from mmjax.errors import ConfigError
from mmjax.train import loop
from tests import tensorboard_events


def test_attributions_of_the_digits_cnn_are_faithful_and_drawn(tiny_config, tmp_path):
  config = tiny_config(total_steps=60, checkpoint_every=60)
  config.evals.attr = dict(type="attribution", num_examples=16, pictures=4,
                           methods=("gradient", "integrated_gradients"), deletion_steps=10)
  workdir = str(tmp_path / "run")
  result = loop.train_and_evaluate(config, workdir)
  assert result["attr/integrated_gradients/completeness_gap"] < 0.01
  assert (result["attr/integrated_gradients/deletion_auc"]
          < result["attr/random/deletion_auc"])
  assert (result["attr/integrated_gradients/insertion_auc"]
          > result["attr/random/insertion_auc"])
  assert 0 <= result["attr/gradient/foreground_share"] <= 1
  # Adebayo et al.'s test: the gradient map of the randomised model no longer matches;
  # IG from a zero baseline keeps the input's shape whatever the weights (flagged).
  assert result["attr/gradient/randomization_passed"] == 1.0
  assert result["attr/integrated_gradients/randomized_rank_correlation"] > 0.9
  picture = matplotlib.image.imread(os.path.join(workdir, "attributions_attr",
                                                 "step_60.png"))
  assert picture.ndim == 3 and picture.shape[0] > 100 and picture.shape[1] > 100
  images = tensorboard_events.images(os.path.join(workdir, "tensorboard"))
  assert [(tag, step) for tag, step, _ in images] == [("attr/heatmaps", 60)]


@pytest.mark.parametrize("entry, match", [
    (dict(methods=("saliency",)), r"unknown \['saliency'\]"),
    (dict(ig_steps=0), r"ig_steps=0 must be a positive integer"),
    (dict(baseline="black"), r"Unknown evals.attr.baseline='black'"),
    (dict(modality="spectrogram"), r"modality='spectrogram' is not an input the model "
                                   r"embeds; it embeds \['image'\]"),
])
def test_bad_attribution_settings_are_refused(tiny_config, tmp_path, entry, match):
  config = tiny_config(total_steps=3)
  config.evals.attr = dict(type="attribution", **entry)
  with pytest.raises(ConfigError, match=match):
    loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert not os.path.exists(tmp_path / "run")
