"""The eval loss: the objective's loss and metrics, averaged over the eval split."""
from __future__ import annotations

import jax
import jax.numpy as jnp

from mmjax import parallel
from mmjax.errors import ConfigError
from mmjax.evals.base import Evaluator, register_evaluator


@register_evaluator("loss")
class LossEvaluator(Evaluator):
  """The train objective's metrics (loss, accuracy, ...) as means over the examples of the
  split, plus 'num_examples'; `max_batches` > 0 reads only that many batches. Runs the
  experiment's jitted eval step, sharded like training."""
  options = dict(max_batches=0)

  @classmethod
  def check_options(cls, options, key, config):
    if options.max_batches < 0:
      raise ConfigError(f"{key}.max_batches={options.max_batches} must be >= 0 (0: all).")

  def __call__(self, params, model_state, step: int) -> dict[str, float]:
    del step
    from mmjax import data
    exp = self.exp
    sums = None
    for i, batch in enumerate(data.make_eval_iterator(self.data_config,
                                                      batch_size=self.batch_size)):
      if self.cfg.max_batches and i >= self.cfg.max_batches:
        break
      out = exp.eval_step(params, model_state,
                          parallel.to_global_batch(batch, exp.mesh, exp.batch_sharding))
      sums = out if sums is None else jax.tree.map(jnp.add, sums, out)
    if sums is None:
      return {}
    sums = jax.device_get(sums)
    n = max(float(sums.pop("num_examples")), 1.0)
    return {k: float(v) / n for k, v in sums.items()} | {"num_examples": n}
