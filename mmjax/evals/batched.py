"""The model and the eval examples as evaluators use them: host numpy arrays, run through
the model's embed / encode seam in fixed-shape chunks (one compile per shape)."""
from __future__ import annotations

from typing import Any

import jax
import numpy as np

from mmjax.errors import ConfigError


class ModelLogits:
  """(variables, inputs) -> class logits [B,K] of `model.encode`, in eval mode.

  One instance per run (`Experiment.model_logits`): the robustness module caches
  compiled attacks per callable, so robust evals and the overfitting guard share them.
  """

  def __init__(self, model):
    self.model = model
    self.embed = jax.jit(
        lambda variables, batch: model.apply(variables, batch, method="embed", train=False))
    self.encode = jax.jit(
        lambda variables, inputs: model.apply(variables, inputs, method="encode",
                                              train=False))

  def __call__(self, variables, inputs):
    outputs = self.model.apply(variables, inputs, method="encode", train=False)
    if "logits" not in outputs:
      raise ConfigError("Robust evaluation needs class logits, but the model returns only "
                        f"{sorted(outputs)}. Set model.num_classes > 0, or remove the "
                        "robust evaluator and adversarial.guard_every.")
    return outputs["logits"]

  def inputs(self, variables, batch: dict, batch_size: int) -> Any:
    """The embedded inputs (numpy pytree [N,...]) of a host batch, in chunks."""
    model_batch = {k: v for k, v in batch.items() if k not in ("label", "mask")}
    return in_chunks(lambda b: self.embed(variables, b), model_batch, batch_size)

  def outputs(self, variables, inputs, batch_size: int) -> dict:
    """`encode`'s outputs (numpy [N,...]; scalars dropped) for embedded inputs [N,...]."""
    return in_chunks(lambda x: {k: v for k, v in self.encode(variables, x).items()
                                if v.ndim}, inputs, batch_size)


def in_chunks(fn, tree, batch_size: int):
  """fn over a numpy pytree [N,...] in chunks of `batch_size` (the last one padded by
  repeating its final row, so every call has one shape and compiles once) -> numpy
  pytree [N,...]."""
  n = len(jax.tree.leaves(tree)[0])
  chunks = []
  for i in range(0, n, batch_size):
    size = min(batch_size, n - i)
    pad = lambda x: np.concatenate([x[i:i + size], np.repeat(x[i + size - 1:i + size],
                                                             batch_size - size, axis=0)])
    out = jax.device_get(fn(jax.tree.map(pad, tree)))
    chunks.append(jax.tree.map(lambda x: x[:size], out))
  return jax.tree.map(lambda *xs: np.concatenate(xs), *chunks)


def model_variables(params, model_state) -> dict:
  """The variables dict `model.apply` takes: params plus the other collections."""
  return {"params": params, **model_state}


def eval_examples(data_config, num_examples: int, batch_size: int, *,
                  require_label: bool = True) -> dict:
  """The first `num_examples` real examples of `data_config.eval_split`, as one numpy
  batch {key: [N, ...]}."""
  from mmjax import data
  rows, have = [], 0
  for batch in data.make_eval_iterator(data_config, batch_size=batch_size):
    real = np.asarray(batch["mask"]) > 0
    rows.append({k: np.asarray(v)[real] for k, v in batch.items() if k != "mask"})
    have += int(real.sum())
    if have >= num_examples:
      break
  if require_label and (not rows or "label" not in rows[0]):
    raise ConfigError("This eval needs labelled eval examples: keep 'label' in "
                      "config.data.preprocess_eval.")
  return jax.tree.map(lambda *xs: np.concatenate(xs)[:num_examples], *rows)
