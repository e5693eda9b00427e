"""Quantization-aware training: `config.quantization.qat=True` trains the model through
qwix's fake quantization of `quantization.method` (int8_weight_only: Dense/Conv kernels;
int8_dynamic: kernels and their inputs), with straight-through gradients: the forward
pass sees int8-rounded values, the backward pass the float ones (zero outside the
quantization range). The params tree is unchanged (float32), so checkpoints, LoRA and
--mode=quantize work as for any run, and a QAT model loses less in post-training int8.

Which layers: the Dense, DenseGeneral and Conv layers (`layers.QUANTIZED_LAYERS`) not
matched by quantization.keep_float; LoRA adapters stay float32.

QLoRA in the trainer: `config.quantization.qlora=True` with `finetune.mode='lora'` runs
the same fake quantization, int8 weight-only, on the frozen base only (LoRA adapters and
the task heads stay float32): every step's forward pass multiplies by the int8
per-channel quantization of each base kernel, exactly the int8 model that
`qlora.split` stores, while only the adapters and heads train.

A fake-quantized model takes host (numpy) params too: qwix recognises a weight only as a
jax array among its layer's params, so they are put on device first (else an eager apply
on `jax.device_get` params would run the float model). And the trainer refuses, at build
time, a QAT/QLoRA model whose forward pass quantizes no weight (`check_quantizes`).
"""
from __future__ import annotations

import re

from absl import logging
import flax.linen as nn
import jax
import ml_collections
import numpy as np

from mmjax.errors import ConfigError
from mmjax.quant import layers as quant_layers, ptq


def check_config(config: ml_collections.ConfigDict) -> None:
  """ConfigError for a QAT or QLoRA setting that cannot train (before any compute)."""
  if config.quantization.qlora:
    _check_qlora(config)
  if not config.quantization.qat:
    return
  ptq.check_installed()
  ptq.check_config(config.quantization)
  if config.quantization.method == "int8_static":
    raise ConfigError("quantization.qat trains with int8_weight_only or int8_dynamic fake "
                      "quantization; int8_static's fixed activation scales are calibrated "
                      "after training (--mode=quantize). Set --config.quantization.method="
                      "int8_dynamic for QAT.")
  if config.privacy.enabled:
    raise ConfigError("quantization.qat with privacy.enabled: per-example gradients of "
                      "qwix's fake quantization are untested here; train DP without QAT "
                      "and quantize afterwards (--mode=quantize).")


def _check_qlora(config: ml_collections.ConfigDict) -> None:
  ptq.check_installed()
  ptq.check_config(config.quantization)
  if config.finetune.mode != "lora":
    raise ConfigError(f"quantization.qlora trains LoRA adapters on the int8 base, but "
                      f"finetune.mode={config.finetune.mode!r}: set "
                      "--config.finetune.mode=lora (and model.lora_rank > 0).")
  if config.quantization.qat:
    raise ConfigError("quantization.qlora and quantization.qat together: QLoRA already "
                      "trains on the int8 (weight-only) base and keeps its adapters in "
                      "float32; set only one of them.")


def _layer_filtered(provider_cls, keep_float):
  """`provider_cls` whose rules apply only inside the layers QAT quantizes, and which
  counts the weights it fake-quantizes (`quantized_weights`, at trace time) for
  `check_quantizes`."""
  from qwix._src.utils import flax_util   # pylint: disable=import-outside-toplevel
  patterns = [re.compile(p) for p in keep_float]
  adapters = quant_layers.float_by_design()

  class Provider(provider_cls):
    quantized_weights = 0

    def _get_current_rule_and_op_id(self, op_name, **kwargs):
      rule, op_id = super()._get_current_rule_and_op_id(op_name, **kwargs)
      module = flax_util.get_current_module()
      path = "/".join(getattr(module, "path", ()))
      if (not isinstance(module, quant_layers.QUANTIZED_LAYERS)
          or isinstance(module, adapters) or any(p.fullmatch(path) for p in patterns)):
        rule = None
      return rule, op_id

    def _create_dot_general_qt_config(self, rule, op_id, lhs, rhs):
      config = super()._create_dot_general_qt_config(rule, op_id, lhs, rhs)
      # qwix quantizes an operand as a weight only where find_param finds it among
      # the layer's params; where it does not, a weight-only rule quantizes nothing.
      if ((config.lhs_qtype is not None and flax_util.find_param(lhs) is not None)
          or (config.rhs_qtype is not None and flax_util.find_param(rhs) is not None)):
        self.quantized_weights += 1
      return config

    def _create_conv_general_qt_config(self, rule, op_id, lhs, rhs):
      self.quantized_weights += 1   # qwix asserts that rhs is a param here
      return super()._create_conv_general_qt_config(rule, op_id, lhs, rhs)

  return Provider


def _device_arrays(variables):
  """`variables` with host (numpy) leaves put on device as jax arrays: qwix's find_param
  takes only jax arrays (and tracers) for params, so an eager apply on host params (e.g.
  `jax.device_get(state).params`) would silently run the float model."""
  return jax.tree.map(
      lambda x: jax.numpy.asarray(x) if isinstance(x, (np.ndarray, np.generic)) else x,
      variables)


def fake_quantized(model: nn.Module, method: str, keep_float=()) -> nn.Module:
  """`model` with qwix's fake quantization of `method` in its Dense/Conv layers. Its
  `apply` takes host (numpy) variables too, quantizing them as device ones."""
  import qwix   # pylint: disable=import-outside-toplevel
  rule = ptq.rule(method, ".*", training=True)
  provider_cls = _layer_filtered(ptq.with_plain_conv(qwix.QtProvider), tuple(keep_float))
  provider = provider_cls([rule])
  qmodel = ptq.quantized_model(model, provider)
  cls = type(qmodel)

  def apply(self, variables, *args, **kwargs):
    return cls.apply(self, _device_arrays(variables), *args, **kwargs)

  # Like qwix's own rewrite: a subclass (it keeps qwix's `_unquantized_type`).
  qmodel.__class__ = type(cls.__name__, (cls,), {"apply": apply,
                                                  "_mmjax_qat_provider": provider})
  return qmodel


def quantized_weights(model: nn.Module) -> int | None:
  """How many weights `model` (from `fake_quantized`) fake-quantized in the forward
  passes traced so far; None for a model without fake quantization."""
  provider = getattr(type(model), "_mmjax_qat_provider", None)
  return None if provider is None else provider.quantized_weights


def check_quantizes(model: nn.Module, trace):
  """`trace()` (which traces `model`'s forward pass, e.g. the trainer's abstract init),
  checking that the trace fake-quantized at least one weight: RuntimeError if not, so a
  QAT or QLoRA run never trains the float model silently. No check for a float model."""
  before = quantized_weights(model)
  result = trace()
  if before is not None:
    count = quantized_weights(model) - before
    if count == 0:
      raise RuntimeError(
          "quantization.qat/qlora: qwix's fake quantization quantized no Dense/Conv "
          "weight of the model, so it would train in float32. Is every quantized layer "
          "matched by quantization.keep_float (or a head or adapter), or does the model "
          "compute its matmuls outside mmjax.quant.layers.QUANTIZED_LAYERS?")
    logging.info("Fake quantization: %d weight matmuls/convs per forward pass.", count)
  return result


def training_model(quantization: ml_collections.ConfigDict, model: nn.Module) -> nn.Module:
  """The model the trainer runs: fake-quantized when quantization.qat (its method) or
  quantization.qlora (int8 weight-only on the base; heads and adapters float), else
  `model`."""
  keep_float = tuple(quantization.keep_float)
  if quantization.qlora:
    from mmjax.quant import qlora   # pylint: disable=import-outside-toplevel
    return fake_quantized(model, "int8_weight_only", (*qlora.HEAD_LAYERS, *keep_float))
  if not quantization.qat:
    return model
  return fake_quantized(model, quantization.method, keep_float)
