"""Representation evaluators: the linear probe's fit, modality selection, config
errors."""
import types

import numpy as np
import pytest

from mmjax import models
from mmjax.config import default_config
from mmjax.errors import ConfigError
from mmjax.evals import base, evaluators  # noqa: F401  (registers the types)
from mmjax.evals import representation_eval as rep


def test_linear_probe_separates_separable_classes():
  rng = np.random.default_rng(0)
  centers = rng.normal(size=(4, 8)) * 3
  labels = rng.integers(0, 4, 400)
  features = centers[labels] + rng.normal(size=(400, 8))
  probe = rep.fit_linear_probe(features[:300], labels[:300], 4, steps=300)
  pred = np.argmax(rep.probe_logits(probe, features[300:]), axis=-1)
  assert np.mean(pred == labels[300:]) > 0.95
  # Standardisation is part of the probe: a shifted, scaled copy gives the same answer.
  shifted = rep.fit_linear_probe(features[:300] * 10 + 5, labels[:300], 4, steps=300)
  np.testing.assert_array_equal(
      np.argmax(rep.probe_logits(shifted, features[300:] * 10 + 5), axis=-1), pred)


def test_modality_inputs_selects_one_modality():
  inputs = {"image": 0, "image_present": 1, "text": 2, "text_mask": 3, "text_present": 4,
            "spectrogram": 5, "audio_present": 6}
  assert set(rep.modality_inputs(inputs, "text")) == {"text", "text_mask", "text_present"}
  assert set(rep.modality_inputs(inputs, "audio")) == {"spectrogram", "audio_present"}
  assert set(rep.modality_inputs(inputs, "image")) == {"image", "image_present"}


def _exp(model_config, **evals):
  config = default_config()
  for name, values in evals.items():
    config.evals[name] = dict(type=name, **values)
  return types.SimpleNamespace(config=config, model=models.build_model(model_config),
                               workdir="/nonexistent")


def build(exp, name: str):
  """The evaluator `name` of exp.config.evals, checked and built as the trainer does."""
  cls, options = base.resolve(name, exp.config)
  cls.check_options(options, f"evals.{name}", exp.config)
  return cls(exp, name, options)


MM = dict(name="multimodal", modalities=("image", "text"), width=32, depth=1, num_heads=2,
          mlp_dim=32)


@pytest.mark.parametrize("evaluator,model,evals,match", [
    (rep.RetrievalEvaluator, MM, dict(retrieval=dict(pairs=(("image", "audio"),))),
     r"\['audio'\] are not modalities"),
    (rep.RetrievalEvaluator, MM, dict(retrieval=dict(pairs=(("image",),))),
     "must be modality pairs"),
    (rep.RetrievalEvaluator, dict(name="vit"), dict(retrieval=dict(pairs=(("image", "text"),))),
     "needs the multimodal model"),
    (rep.ProbeEvaluator, MM, dict(probe=dict(modality="audio")), "not modalities"),
    (rep.ProbeEvaluator, MM, dict(probe=dict(modality="image", attack="pgdd", eps=0.1)),
     "Unknown evals.probe.attack"),
    (rep.ProbeEvaluator, MM, dict(probe=dict(modality="image", attack="pgd")),
     "eps is not positive"),
    (rep.ProbeEvaluator, MM, dict(probe=dict(modality="image", attack="pgd", eps=0.1,
                                             attack_step_size=-0.01)),
     "attack_step_size=-0.01 must be >= 0"),
    (rep.ZeroShotEvaluator, MM, dict(zero_shot=dict(class_names=("a", "b"),
                                                     templates=("a photo",),
                                                     tokenize="tokenize('prompt', 'text')")),
     "must be prompts with '{}'"),
    (rep.ZeroShotEvaluator, MM, dict(zero_shot=dict(class_names=("a", "b"))),
     "needs tokenize, e.g."),
    (rep.ZeroShotEvaluator, dict(name="vit"), dict(zero_shot=dict(
        class_names=("a",), tokenize="tokenize('prompt', 'text')")),
     "needs the multimodal model"),
    (rep.CaptionEvaluator, MM, dict(caption=dict(num_examples=8)), "caption_depth > 0"),
    (rep.CaptionEvaluator, dict(MM, caption_depth=1), dict(caption=dict(num_examples=8,
                                                                        beam_size=0)),
     "beam_size=0 must be >= 1"),
])
def test_bad_eval_configs_fail_before_reading_data(evaluator, model, evals, match):
  exp = _exp(model, **evals)
  assert base.EVALUATORS.get(next(iter(evals))) is evaluator
  with pytest.raises(ConfigError, match=match):
    build(exp, next(iter(evals)))


@pytest.mark.parametrize("model", [
    dict(name="mnist_cnn", num_classes=0),
    dict(name="vit", image_size=28, patch_size=7, channels=1, width=32, depth=1,
         num_heads=2, mlp_dim=32, num_classes=0, pool="gap", decoder_width=32,
         decoder_depth=1, decoder_heads=2)])
def test_probe_on_a_single_modality_model_reads_its_pooled_features(model, tiny_config):
  """A CNN or an MAE-style ViT (no `modalities`): the probe fits on 'pooled', clean and
  robust accuracy are measured through encoder + probe, robust <= clean."""
  from mmjax.train import loop
  config = tiny_config()
  config.model = model
  config.objective = dict(name="mae") if model["name"] == "vit" else dict(name="supervised")
  if model["name"] == "mnist_cnn":
    config.model.num_classes = 10
  config.evals.probe = dict(type="probe", modality="image", train_examples=200,
                            test_examples=100, steps=200, attack="pgd", eps=0.3,
                            attack_steps=5)
  config.train.eval_batch_size = 100
  exp = loop.build_experiment(config, "/nonexistent")
  evaluator = build(exp, "probe")
  assert evaluator.feature_key == "pooled"
  state = exp.init_state()
  metrics = evaluator(state.params, state.model_state, 0)
  # Random features of digits already separate them well above chance (10%).
  assert 0.3 < metrics["accuracy"] <= 1.0
  assert 0.0 <= metrics["robust_accuracy"] < metrics["accuracy"]
  assert metrics["robust/pgd-5x1_linf_eps0.3"] == metrics["robust_accuracy"]
  if model["name"] == "mnist_cnn":
    # A step too small to move far from the random start is a much weaker attack.
    evaluator.cfg.attack_step_size = 1e-6
    weak = evaluator(state.params, state.model_state, 0)
    assert weak["accuracy"] == metrics["accuracy"]
    assert weak["robust_accuracy"] > metrics["robust_accuracy"]


def test_probe_modality_absent_from_a_single_modality_models_data(tiny_config):
  from mmjax.train import loop
  config = tiny_config()
  config.evals.probe = dict(type="probe", modality="audio", train_examples=50,
                            test_examples=50)
  with pytest.raises(ConfigError, match="needs 'spectrogram' and 'label'"):
    build(loop.build_experiment(config, "/nonexistent"), "probe")
  config.evals.probe.modality = "smell"
  with pytest.raises(ConfigError, match="choose one of"):
    loop.build_experiment(config, "/nonexistent")


def _zero_shot_experiment(digits_data_dir, names):
  from configs.common import use_multimodal_digits
  from mmjax.train import loop
  config = default_config()
  use_multimodal_digits(config, audio=False)
  config.data.data_dir = digits_data_dir
  config.model = dict(MM, image_size=28, patch_size=7, channels=1, vocab_size=260,
                      max_len=32, projection_dim=8)
  config.objective = dict(name="contrastive")
  config.train.eval_batch_size = 100
  config.evals.zero_shot = dict(type="zero_shot", class_names=names,
                                templates=("a {}", "the {} digit"),
                                tokenize="tokenize('prompt', 'text', max_len=32)",
                                num_examples=100)
  return loop.build_experiment(config, "/nonexistent")


def test_zero_shot_averages_each_classs_prompts_and_picks_the_closest(digits_data_dir,
                                                                      monkeypatch):
  """With embeddings stood in: an image of class c points along axis c; class c's first
  prompt points along axis c + 10 and its second along axis c, so only the per-class mean
  of the normalised prompts classifies every image right."""
  names = tuple(str(i) for i in range(10))
  exp = _zero_shot_experiment(digits_data_dir, names)
  evaluator = build(exp, "zero_shot")
  assert evaluator.prompts["text"].shape == (20, 32)   # 10 classes x 2 templates
  labels = evaluator.labels
  eye = np.eye(20)

  def fake_embeddings(model, variables, examples, modalities, batch_size):
    (m,) = modalities
    if m == "image":
      return {"image": 3.0 * eye[labels] + 0.1}
    prompts = [eye[c + 10] * 5.0 if t == 0 else eye[c] for c in range(10) for t in (0, 1)]
    return {"text": np.stack(prompts)}

  monkeypatch.setattr(rep, "embeddings", fake_embeddings)
  state = exp.init_state()
  assert evaluator(state.params, state.model_state, 0) == {"accuracy": 1.0}


def test_zero_shot_needs_a_name_for_every_label(digits_data_dir):
  with pytest.raises(ConfigError, match="has 3 names but the eval labels go up to 9"):
    build(_zero_shot_experiment(digits_data_dir, ("0", "1", "2")), "zero_shot")
