"""The tiny CNN config of tests/conftest.py with a sweep over train.seed, for the worker
subprocesses: --config=THIS:DATA_DIR. The seed changes no compiled computation, so
every trial after the first reuses the persistent compilation cache."""
from mmjax.config import sweep_space
from tests.conftest import tiny_vit_config


def get_config(data_dir):
  c = tiny_vit_config(data_dir, total_steps=20, checkpoint_every=10, eval_every=10,
                      log_every=10)
  c.evals.loss.max_batches = 1
  c.sweep.parameters = sweep_space({"train.seed": dict(type="int", low=0, high=10**6)})
  c.sweep.metric = "accuracy"
  c.sweep.pruner = "none"
  c.sweep.num_trials = 3
  return c
