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
"""
from __future__ import annotations

import re

import flax.linen as nn
import ml_collections

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
  """`provider_cls` whose rules apply only inside the layers QAT quantizes."""
  from qwix._src.utils import flax_util   # pylint: disable=import-outside-toplevel
  patterns = [re.compile(p) for p in keep_float]
  adapters = quant_layers.float_by_design()

  class Provider(provider_cls):
    def _get_current_rule_and_op_id(self, op_name, **kwargs):
      rule, op_id = super()._get_current_rule_and_op_id(op_name, **kwargs)
      module = flax_util.get_current_module()
      path = "/".join(getattr(module, "path", ()))
      if (not isinstance(module, quant_layers.QUANTIZED_LAYERS)
          or isinstance(module, adapters) or any(p.fullmatch(path) for p in patterns)):
        rule = None
      return rule, op_id

  return Provider


def fake_quantized(model: nn.Module, method: str, keep_float=()) -> nn.Module:
  """`model` with qwix's fake quantization of `method` in its Dense/Conv layers."""
  import qwix   # pylint: disable=import-outside-toplevel
  rule = ptq.rule(method, ".*", training=True)
  provider_cls = _layer_filtered(ptq.with_plain_conv(qwix.QtProvider), tuple(keep_float))
  return ptq.quantized_model(model, provider_cls([rule]))


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
