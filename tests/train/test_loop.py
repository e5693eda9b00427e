"""End to end: training lowers the loss, resume is exact, bad checkpoints are handled."""
import json
import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from mmjax.errors import CheckpointError, NonFiniteLossError
from mmjax import parallel
from mmjax.train import loop
from tests.conftest import files_snapshot


def read_metrics(workdir, split="train"):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [r for r in map(json.loads, f) if r["split"] == split]


def final_params(workdir, step):
  """Raw arrays of the saved params at `step` (restored without a target tree)."""
  path = os.path.join(workdir, "checkpoints", str(step), "state")
  with ocp.PyTreeCheckpointer() as ckptr:
    state = ckptr.restore(path)
  return state["params"]


def assert_trees_equal(a, b):
  leaves_a, tree_a = jax.tree.flatten(a)
  leaves_b, tree_b = jax.tree.flatten(b)
  assert tree_a == tree_b
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_training_lowers_loss_and_writes_all_outputs(tiny_config, tmp_path):
  workdir = str(tmp_path / "run")
  result = loop.train_and_evaluate(tiny_config(total_steps=30), workdir)
  train = read_metrics(workdir)
  assert [r["step"] for r in train] == [5, 10, 15, 20, 25, 30]
  assert train[-1]["loss"] < 0.8 * train[0]["loss"]
  assert all(np.isfinite(r["loss"]) and r["steps_per_sec"] > 0 for r in train)
  evals = read_metrics(workdir, "eval")
  assert evals[-1]["num_examples"] == 1000  # the whole test split, padding masked out
  assert result["accuracy"] == evals[-1]["accuracy"] > 0.2  # chance is 0.1
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10", "20", "30"]
  assert os.listdir(os.path.join(workdir, "tensorboard"))
  assert json.load(open(os.path.join(workdir, "config.json")))["train"]["total_steps"] == 30


def test_eval_mode_matches_final_eval(tiny_config, tmp_path):
  workdir = str(tmp_path / "run")
  trained = loop.train_and_evaluate(tiny_config(total_steps=10), workdir)
  evaluated = loop.evaluate(tiny_config(total_steps=10), workdir)
  assert evaluated["accuracy"] == pytest.approx(trained["accuracy"], abs=1e-6)


def test_resume_continues_exactly(tiny_config, tmp_path):
  unbroken, resumed = str(tmp_path / "unbroken"), str(tmp_path / "resumed")
  loop.train_and_evaluate(tiny_config(total_steps=30), unbroken)
  loop.train_and_evaluate(tiny_config(total_steps=20), resumed)
  loop.train_and_evaluate(tiny_config(total_steps=30), resumed)
  assert_trees_equal(final_params(unbroken, 30), final_params(resumed, 30))


def test_corrupt_newest_checkpoint_is_set_aside(tiny_config, tmp_path):
  unbroken, workdir = str(tmp_path / "unbroken"), str(tmp_path / "run")
  loop.train_and_evaluate(tiny_config(total_steps=30), unbroken)
  loop.train_and_evaluate(tiny_config(total_steps=20), workdir)
  # Corrupt every data file of the newest checkpoint (as a torn write would).
  newest = os.path.join(workdir, "checkpoints", "20", "state")
  for root, _, files in os.walk(newest):
    for name in files:
      with open(os.path.join(root, name), "wb") as f:
        f.write(b"\x00garbage")
  loop.train_and_evaluate(tiny_config(total_steps=30), workdir)
  set_aside = os.listdir(os.path.join(workdir, "checkpoints_corrupt"))
  assert len(set_aside) == 1 and set_aside[0].startswith("20-")
  # It resumed from step 10, so it still matches the unbroken run exactly.
  assert_trees_equal(final_params(unbroken, 30), final_params(workdir, 30))


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_config, tmp_path):
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(tiny_config(total_steps=10), workdir)
  before = final_params(workdir, 10)
  config = tiny_config(total_steps=30, checkpoint_every=5)
  # Same optimizer (so the checkpoint fits), infinite step size: params blow up at once.
  config.optim.update(dict(learning_rate=float("inf"), schedule="constant"))
  config.train.allow_config_change = True   # the changed learning rate is the point
  with pytest.raises(NonFiniteLossError, match=r"NaN or Inf at step 1[1-9]\b.*step 10"):
    loop.train_and_evaluate(config, workdir)
  assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["10"]
  assert_trees_equal(before, final_params(workdir, 10))


def test_checkpoint_of_another_shape_is_refused_untouched(tiny_config, tmp_path):
  workdir = str(tmp_path / "run")
  loop.train_and_evaluate(tiny_config(total_steps=10), workdir)
  checkpoints = os.path.join(workdir, "checkpoints")
  before = files_snapshot(checkpoints)
  wider = tiny_config(total_steps=20)
  wider.model.name = "preact_resnet18"
  with pytest.raises(CheckpointError, match=r"does not fit the configured model.*new --workdir"):
    loop.train_and_evaluate(wider, workdir)
  assert files_snapshot(checkpoints) == before


def test_train_step_compiles_once(tiny_config, tmp_path):
  exp = loop.build_experiment(tiny_config(), str(tmp_path / "run"))
  train_step, _ = loop.compile_steps(exp)
  state = exp.init_state()
  new_acc = loop.accumulator_factory(exp)
  acc = new_acc()
  batch = parallel.to_global_batch(exp.example_batch, exp.mesh)
  for i in range(4):
    state, acc = train_step(state, batch, acc if i != 2 else new_acc())
  jax.block_until_ready(acc)
  assert train_step._cache_size() == 1  # no recompilation after the first step
  exp.checkpointer.close()
