"""`configs/papers/fast_at_mnist.py:digits` is Wong et al.'s MNIST recipe at the paper's
eps, and runs through the trainer with its overfitting guard.

That the recipe reaches real robustness on the digits (clean > 0.9, PGD-20 > 0.5 after
2,000 steps, the guard every epoch) is a study, not a test: benchmarks/fast_at_mnist_digits.py
reproduces it (docs/reproductions.md, "Fast-AT on the real MNIST digits").
"""
import json
import os

from mmjax.config import load_config_file
from mmjax.train import loop
from tests.test_configs import shrink_evals

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_digits_recipe_has_the_papers_values_and_its_guard_checks_every_epoch(
    digits_data_dir, tmp_path):
  config = load_config_file(os.path.join(REPO, "configs/papers/fast_at_mnist.py"), "digits")
  adv = config.adversarial
  assert (adv.kind, adv.attack, adv.eps, adv.step_size) == ("madry", "fgsm_rs", 0.3, 0.375)
  assert not adv.clip_start                       # the paper's MNIST code: start unclipped
  assert adv.guard_every == config.train.log_every == 40   # once per epoch of 40 steps
  assert config.train.total_steps == 2000 and config.train.batch_size == 100
  robust = config.evals.robust
  assert (robust.attack, robust.eps, robust.steps, robust.restarts, robust.num_examples) == (
      "pgd", 0.3, 50, 10, 1000)                   # the paper's PGD-50 x 10, all test digits
  # Four steps of it, a guard check every two: the recipe trains and the guard records.
  config.data.data_dir = digits_data_dir
  config.train.update(dict(total_steps=4, batch_size=16, log_every=2, checkpoint_every=0))
  config.optim.warmup_steps = 2
  adv.guard_every = 2
  shrink_evals(config)
  result = loop.train_and_evaluate(config, str(tmp_path))
  history = json.load(open(tmp_path / "guard.json"))["history"]
  assert [h["step"] for h in history] == [2, 4]
  assert 0 <= result["robust/accuracy"] <= result["robust/clean_accuracy"] <= 1
