"""The trainer with the quantization switches: a QAT run (`quantization.qat=True`)
lowers its loss and its float32 params then lose little in int8 PTQ (--mode=quantize);
a QLoRA run (`quantization.qlora=True`, finetune.mode=lora) trains only the adapters and
head, and its step computes with the int8 base that `qlora.split` stores."""
import json
import os

import jax
import numpy as np

from mmjax import models
from mmjax.quant import qat, qlora
from mmjax.train import loop
from tests.conftest import tiny_vit_config
from tests.train.test_finetune import (  # noqa: F401  (caption_batches: a fixture)
    EXPECTED, _flat, _text_config, _train, caption_batches)


def _train_losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r["loss"] for r in map(json.loads, f) if r["split"] == "train"]


def _assert_trained_model_is_fake_quantized(config, workdir):
  """The trainer's model on the trained (host) params is not the float model: its
  forward pass really is fake-quantized."""
  exp = loop.build_experiment(config, workdir, "eval")
  try:
    state, _, _ = exp.checkpointer.restore_latest(exp.abstract_state)
  finally:
    exp.close()
  assert qat.quantized_weights(exp.model) > 0
  variables = jax.device_get({"params": state.params, **state.model_state})
  shape = exp.example_batch["image"].shape
  batch = {"image": np.random.default_rng(0).uniform(size=(8, *shape[1:])).astype(
      np.float32)}
  qat_logits = exp.model.apply(variables, batch)["logits"]
  float_logits = models.build_model(config.model).apply(variables, batch)["logits"]
  assert not np.allclose(qat_logits, float_logits, rtol=1e-4, atol=1e-5)


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
  _assert_trained_model_is_fake_quantized(config, workdir)
  metrics = loop.quantize(config, workdir)
  assert metrics["quantization/accuracy_f32"] > 0.5   # it learned digits
  assert metrics["quantization/agreement"] >= 0.98
  assert abs(metrics["quantization/accuracy_drop"]) <= 1.0


def test_qlora_run_trains_adapters_on_the_int8_base(digits_data_dir, caption_batches,
                                                    tmp_path):
  config = _text_config(digits_data_dir, "lora")
  config.quantization.qlora = True
  initial, final, losses = _train(config, str(tmp_path / "qlora"), caption_batches)
  before, after = _flat(initial.params), _flat(final.params)
  changed = {k for k in before if not np.array_equal(before[k], after[k])}
  assert changed == {k for k in before if EXPECTED["lora"](k)}
  assert np.mean(losses[-5:]) < 0.93 * np.mean(losses[:5]), losses

  # The trainer's model on the trained params is the int8-base model of qlora.split:
  # same logits, and not the float base's.
  float_model = models.build_model(config.model)
  trainer_model = qat.training_model(config.quantization, float_model)
  batch = {k: v for k, v in caption_batches[0].items() if k != "label"}
  variables = {"params": final.params}
  qmodel, frozen, trainable = qlora.split(float_model, variables, batch)
  # 2 blocks x (query, key, value, out, fc1, fc2 and the 4 Dense of the two adapters)
  assert [x.dtype for x in jax.tree.leaves(frozen)].count(np.int8) == 20
  int8_logits = qmodel.apply({"params": qlora.merge(frozen, trainable)}, batch)["logits"]
  step_logits = trainer_model.apply(variables, batch)["logits"]
  float_logits = float_model.apply(variables, batch)["logits"]
  np.testing.assert_allclose(step_logits, int8_logits, rtol=1e-4, atol=1e-5)
  assert not np.allclose(step_logits, float_logits, rtol=1e-4, atol=1e-5)
