"""QLoRA-style fine-tuning (Dettmers et al. 2023, with int8 in place of NF4): LoRA
adapters (model.lora_rank > 0, mmjax/models/layers.py) trained in float32 on a frozen
base whose Dense/Conv kernels are stored in int8 (per-channel scales, dequantized inside
each matmul). Only the adapters and the task heads train: the gradient is taken with
respect to them alone, so the int8 base needs no gradient and no optimizer state.

  qmodel, frozen, trainable = qlora.split(model, variables, example_batch)
  step = qlora.make_train_step(qmodel, loss_of_outputs, optax.adamw(1e-3))
  trainable, opt_state, loss = step(trainable, opt_state, frozen, batch)
  params = qlora.merge(frozen, trainable)   # the int8 model's params for qmodel.apply
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import flax
import flax.linen as nn
import jax
import optax

from mmjax.errors import ConfigError
from mmjax.quant import layers as quant_layers, ptq

# Trained in float32 on the int8 base: LoRA's A and B and the task heads (a fresh head
# must learn; mmjax's finetune.mode='lora' trains the same set).
TRAINABLE = re.compile(r"(_lora/|(^|/)(token_)?head/)")
HEAD_LAYERS = (r"(.*/)?head", r"(.*/)?token_head")


def split(model: nn.Module, variables: Mapping[str, Any], batch: Mapping[str, Any],
          keep_float=()) -> tuple[nn.Module, dict, dict]:
  """(int8-base model, frozen params (int8 kernels, float norms/embeddings), trainable
  params (LoRA adapters, heads; float32)), from the float model's `variables`. `batch`:
  an example batch (shapes). ConfigError when the model has no LoRA parameters."""
  flat = flax.traverse_util.flatten_dict(dict(variables["params"]), sep="/")
  if not any("_lora/" in k for k in flat):
    raise ConfigError("QLoRA trains LoRA adapters on the int8 base, and this model has "
                      "none: set model.lora_rank > 0 (e.g. 8).")
  example = quant_layers.example_batch(batch)
  plan = quant_layers.plan_layers(model, example, (*HEAD_LAYERS, *keep_float))
  qmodel, qvariables = ptq.quantize(model, variables, "int8_weight_only", plan, example)
  qflat = flax.traverse_util.flatten_dict(dict(qvariables["params"]), sep="/")
  frozen = {k: v for k, v in qflat.items() if not TRAINABLE.search(k)}
  trainable = {k: v for k, v in qflat.items() if TRAINABLE.search(k)}
  unflat = lambda d: flax.traverse_util.unflatten_dict(d, sep="/")
  return qmodel, unflat(frozen), unflat(trainable)


def merge(frozen: Mapping[str, Any], trainable: Mapping[str, Any]) -> dict:
  """The full params tree of the int8-base model from its two parts."""
  flat = {**flax.traverse_util.flatten_dict(dict(frozen), sep="/"),
          **flax.traverse_util.flatten_dict(dict(trainable), sep="/")}
  return flax.traverse_util.unflatten_dict(flat, sep="/")


def make_train_step(qmodel: nn.Module, loss_of_outputs: Callable[[dict, dict], Any],
                    tx: optax.GradientTransformation):
  """step(trainable, opt_state, frozen, batch) -> (trainable, opt_state, loss), jitted:
  one optimizer update of the trainable params; `loss_of_outputs(outputs, batch)` is a
  scalar from the model's output dict (e.g. cross-entropy of 'logits' and 'label')."""
  def loss(trainable, frozen, batch):
    inputs = {k: v for k, v in batch.items() if k != "label"}
    return loss_of_outputs(qmodel.apply({"params": merge(frozen, trainable)}, inputs),
                           batch)

  @jax.jit
  def step(trainable, opt_state, frozen, batch):
    value, grads = jax.value_and_grad(loss)(trainable, frozen, batch)
    updates, opt_state = tx.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, value

  return step
