r"""int8 post-training quantization of three trained mmjax models: accuracy f32 vs int8,
parameter bytes and CPU latency of one eval batch, in one run (docs/efficiency.md).

Each model is trained briefly with the trainer, then `--mode=quantize` (loop.quantize)
runs once per method on the same checkpoint:
  cnn     configs/digits_cnn.py (400 steps)
  vit     configs/digits_vit_mae.py's ViT trained supervised only (300 steps)
  minilm  configs/finetune/minilm_lora_classification.py (LoRA merged in the base is
          not needed: qwix quantizes the base, the adapters stay float32; 150 steps)

  python benchmarks/quantize_digits.py --workdir=/tmp/quant_bench [--models=cnn,vit]
      [--methods=int8_static:mean,int8_static:p99.9,int8_static:max,int8_static:mean:head]
"""
from __future__ import annotations

import json
import os
import sys
import time

from absl import app, flags, logging

_WORKDIR = flags.DEFINE_string("workdir", "/tmp/mmjax_quant_bench", "Where to train.")
_MODELS = flags.DEFINE_list("models", ["cnn", "vit", "minilm"], "Which models.")
_METHODS = flags.DEFINE_list(
    "methods", ["int8_weight_only", "int8_dynamic", "int8_static"],
    "Which PTQ methods; int8_static:STATISTIC picks quantization.calibration_statistic "
    "(mean, max, p99.9, ...), int8_static:STATISTIC:REGEX also keeps the modules that "
    "REGEX matches in float32.")


def _config(name):
  sys.path.insert(0, os.getcwd())
  from mmjax import config as config_lib
  if name == "cnn":
    c = config_lib.load_config_file("configs/digits_cnn.py")
  elif name == "vit":
    c = config_lib.load_config_file("configs/digits_vit_mae.py")
    c.objective = dict(name="supervised")
    c.model = {k: v for k, v in c.model.items() if not k.startswith("decoder")}
    c.train.total_steps = 300
    c.optim.warmup_steps = 30
  else:
    c = config_lib.load_config_file("configs/finetune/minilm_lora_classification.py")
    c.train.total_steps = 150
    c.evals = {"loss": {"type": "loss", "prefix": ""}}
  c.train.update(dict(eval_every=0, checkpoint_every=0, plots=False))
  c.quantization.latency_batches = 20
  return c


def main(argv):
  del argv
  from mmjax.train import loop
  results = {}
  for name in _MODELS.value:
    config = _config(name)
    workdir = os.path.join(_WORKDIR.value, name)
    start = time.time()
    loop.train_and_evaluate(config, workdir)
    results[name] = {"train_s": round(time.time() - start, 1)}
    for variant in _METHODS.value:
      parts = variant.split(":")
      method, statistic, keep = parts + ["mean", ""][len(parts) - 1:]
      config.quantization.update(dict(method=method, calibration_statistic=statistic,
                                      keep_float=(keep,) if keep else ()))
      start = time.time()
      metrics = loop.quantize(config, workdir)
      results[name][variant] = {k.split("/")[-1]: round(v, 4) for k, v in metrics.items()
                                if k.startswith("quantization/")}
      results[name][variant]["quantize_s"] = round(time.time() - start, 1)
      logging.info("%s %s: %s", name, variant, results[name][variant])
  print(json.dumps(results, indent=1))
  with open(os.path.join(_WORKDIR.value, f"results_{'_'.join(_MODELS.value)}.json"),
            "w") as f:
    json.dump(results, f, indent=1)


if __name__ == "__main__":
  app.run(main)
