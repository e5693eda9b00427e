"""Post-training int8 quantization measured (`type: quantization`; --mode=quantize).

The model at the evaluated step is quantized with qwix (mmjax/quant/ptq.py) by `method`
('' = config.quantization.method) and compared with itself in float32 on the eval
split: accuracy of each, the share of examples where both predict the same class,
parameter bytes as stored, and CPU/accelerator latency of one eval batch (median over
quantization.latency_batches timed calls of each, interleaved, after a warm-up).
int8_static's activation scales come from quantization.calibration_batches batches of
the train split (eval preprocessing, so the same pixels/tokens the model serves on).

Files: WORKDIR/quantization/<method>.json (one entry per evaluated step). Metrics (after
the prefix): accuracy_f32, accuracy_int8, accuracy_drop (points), agreement,
bytes_f32, bytes_int8, bytes_ratio, latency_ms_f32, latency_ms_int8.
"""
from __future__ import annotations

import json
import os
import time

import jax
import numpy as np
from absl import logging

from mmjax import models
from mmjax.errors import ConfigError
from mmjax.evals.base import Evaluator, register_evaluator
from mmjax.evals.batched import eval_examples, in_chunks, model_variables
from mmjax.quant import layers as quant_layers, ptq

_ALL = 1 << 30


def _median_ms(fn, *args, rounds: int) -> float:
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * float(np.median(times))


@register_evaluator("quantization")
class QuantizationEvaluator(Evaluator):
  """Quantizes the evaluated parameters and measures the int8 model against them; see
  the module doc. `num_examples` 0 reads the whole split."""
  options = dict(method="", num_examples=0)
  choices = {"method": ("",) + ptq.METHODS}

  @classmethod
  def check_options(cls, options, key, config):
    ptq.check_installed()
    ptq.check_config(config.quantization)
    if options.num_examples < 0:
      raise ConfigError(f"{key}.num_examples={options.num_examples} must be >= 0 (0: all).")

  def __init__(self, exp, name, options):
    super().__init__(exp, name, options)
    q = exp.config.quantization
    self.method = options.method or q.method
    self.latency_batches = q.latency_batches
    # The float model: a QAT or QLoRA run trains a fake-quantized one (exp.model), whose
    # float32 params are what post-training quantization rounds.
    model = self.model = models.build_model(exp.config.model)
    # The layer plan (and its refusal of an unsupported layer) before any compute.
    self.example = quant_layers.example_batch(exp.example_batch)
    self.plan = quant_layers.plan_layers(model, self.example, tuple(q.keep_float))
    self.examples = eval_examples(self.data_config, options.num_examples or _ALL,
                                  self.batch_size, require_label=True)
    self.calibration = []
    if self.method == "int8_static":
      train = self.data_config.copy_and_resolve_references()
      train.eval_split = exp.config.data.train_split
      rows = eval_examples(train, q.calibration_batches * self.batch_size,
                           self.batch_size, require_label=False)
      n = len(next(iter(rows.values())))
      self.calibration = [{k: v[i:i + self.batch_size] for k, v in rows.items()}
                          for i in range(0, n, self.batch_size)]
    self._f32 = jax.jit(lambda v, b: model.apply(v, b)["logits"])

  def _inputs(self, batch):
    return {k: v for k, v in batch.items() if k != "label"}

  def __call__(self, params, model_state, step):
    variables = model_variables(params, model_state)
    calibration = [self._inputs(b) for b in self.calibration]
    qmodel, qvariables = ptq.quantize(self.model, variables, self.method, self.plan,
                                      self.example, calibration,
                                      self.exp.config.quantization.calibration_statistic)
    int8 = jax.jit(lambda v, b: qmodel.apply(v, b)["logits"])
    inputs, labels = self._inputs(self.examples), self.examples["label"]
    logits_f32 = in_chunks(lambda b: self._f32(variables, b), inputs, self.batch_size)
    logits_int8 = in_chunks(lambda b: int8(qvariables, b), inputs, self.batch_size)
    pred_f32, pred_int8 = logits_f32.argmax(-1), logits_int8.argmax(-1)
    batch = jax.tree.map(lambda x: x[:self.batch_size], inputs)
    latency = {"f32": [], "int8": []}
    for _ in range(2):   # interleaved rounds: both see the same machine load
      latency["f32"].append(_median_ms(self._f32, variables, batch,
                                       rounds=self.latency_batches))
      latency["int8"].append(_median_ms(int8, qvariables, batch,
                                        rounds=self.latency_batches))
    bytes_f32 = ptq.parameter_bytes(params)["total"]
    bytes_int8 = ptq.parameter_bytes(qvariables["params"])
    acc_f32 = float((pred_f32 == labels).mean())
    acc_int8 = float((pred_int8 == labels).mean())
    metrics = {
        "accuracy_f32": acc_f32, "accuracy_int8": acc_int8,
        "accuracy_drop": 100.0 * (acc_f32 - acc_int8),
        "agreement": float((pred_f32 == pred_int8).mean()),
        "bytes_f32": float(bytes_f32), "bytes_int8": float(bytes_int8["total"]),
        "bytes_ratio": bytes_f32 / bytes_int8["total"],
        "latency_ms_f32": min(latency["f32"]), "latency_ms_int8": min(latency["int8"]),
    }
    record = {"step": int(step), "method": self.method, **metrics,
              "num_examples": int(len(labels)), "latency_batch_size": self.batch_size,
              "device": jax.devices()[0].device_kind,
              "kernel_bytes_f32": ptq.kernel_bytes_float(params, qvariables["params"]),
              "kernel_bytes_int8": bytes_int8["quantized_layers"],
              "quantized_layers": list(self.plan.quantized),
              "kept_float": list(self.plan.kept_float)}
    if jax.process_index() == 0:
      out = self.output_dir("quantization")
      os.makedirs(out, exist_ok=True)
      path = os.path.join(out, f"{self.method}.json")
      history = json.load(open(path)) if os.path.exists(path) else []
      with open(path, "w") as f:
        json.dump(history + [record], f, indent=1)
      logging.info("quantization %s at step %d: %s", self.method, step,
                   json.dumps(metrics))
    return metrics
