"""Unmerged LoRA adapters in Hugging Face PEFT's format, for PyTorch users.

    save_peft_adapter(dir, model_config, params, base_model_name_or_path=HF_FOLDER)

writes what `peft.PeftModel.save_pretrained` writes for a LoRA on the same transformers
model: `adapter_config.json` (peft_type 'LORA', r, lora_alpha, target_modules,
modules_to_save, task_type) and `adapter_model.safetensors` with PEFT's key names,

    base_model.model.<module path>.lora_A.weight   [r, in]    (mmjax A [*in, r], transposed)
    base_model.model.<module path>.lora_B.weight   [out, r]   (mmjax B [r, *out], transposed)
    base_model.model.classifier.{weight,bias}      the task head (modules_to_save)

where <module path> is the transformers module the adapted projection is (e.g.
'bert.encoder.layer.0.attention.self.query'), from the same family rules as
`save_pretrained`. PEFT scales by lora_alpha / r, as mmjax does, so `PeftModel.
from_pretrained(AutoModelForSequenceClassification.from_pretrained(HF_FOLDER), dir)`
computes what the mmjax model computes. `read_peft_adapter` is the inverse.
Supported: BERT-family encoders (MiniLM); AdaLoRA adapters are refused (merge them:
`save_pretrained` folds them into the weights).
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Mapping

import jax
import numpy as np
from flax import traverse_util

from mmjax import models
from mmjax.errors import CheckpointError, ConfigError
from mmjax.interop import families, weights
from mmjax.interop.files import read_json, safetensors_lib

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
PREFIX = "base_model.model."
# mmjax LoRA target -> the module name PEFT's target_modules matches (a suffix of the
# module path); fc2's 'output.dense' would also match attention.output.dense, so a model
# adapting fc2 gets an exact regex instead.
_TARGET_MODULES = {"query": "query", "key": "key", "value": "value",
                   "out": "attention.output.dense", "fc1": "intermediate.dense"}
_HEAD_MODULE = "classifier"


def _bert_family(model_cfg: Mapping[str, Any]) -> families.Family:
  if model_cfg.get("name") != "text_transformer" or model_cfg.get("norm_position") != "post":
    raise ConfigError("PEFT adapter export covers BERT-family encoders (a post-LN "
                      f"text_transformer, e.g. an imported MiniLM), not this "
                      f"{model_cfg.get('name')!r} model; use save_pretrained to export "
                      "it with the adapters merged.")
  if not model_cfg.get("lora_rank"):
    raise ConfigError("The model has no LoRA adapters to export (model.lora_rank = 0).")
  if model_cfg.get("adalora"):
    raise ConfigError("AdaLoRA adapters are exported merged: use "
                      "interop.save_pretrained (it folds P diag(Λ) Q into the weights).")
  return families.FAMILIES["bert"]


def _adapted_modules(model_cfg: Mapping[str, Any]) -> dict[str, str]:
  """{mmjax projection path (unscanned, e.g. 'encoder/block_0/attn/query'): transformers
  module path (e.g. 'bert.encoder.layer.0.attention.self.query')} of every adapter."""
  family = _bert_family(model_cfg)
  targets = set(model_cfg["lora_targets"])
  out = {}
  for rule in family.rules(dict(model_cfg)):
    path = rule.paths[0]
    if rule.layout == "linear" and path.endswith("/kernel"):
      projection = path[:-len("/kernel")]
      if projection.rsplit("/", 1)[-1] in targets:
        out[projection] = family.prefixes[0] + rule.hf[:-len(".weight")]
  return out


def _target_modules(model_cfg: Mapping[str, Any], modules: dict[str, str]):
  targets = list(model_cfg["lora_targets"])
  if "fc2" not in targets:
    return [_TARGET_MODULES[t] for t in targets]
  return "^(" + "|".join(re.escape(m) for m in sorted(modules.values())) + ")$"


def adapter_config(model_cfg: Mapping[str, Any], base_model_name_or_path: str = "") -> dict:
  """adapter_config.json for the LoRA of `model_cfg` (PEFT's LoraConfig fields)."""
  modules = _adapted_modules(model_cfg)
  return {
      "peft_type": "LORA", "task_type": "SEQ_CLS" if model_cfg.get("num_classes") else None,
      "base_model_name_or_path": base_model_name_or_path or None,
      "r": int(model_cfg["lora_rank"]), "lora_alpha": float(model_cfg["lora_alpha"]),
      "lora_dropout": 0.0, "bias": "none", "fan_in_fan_out": False,
      "target_modules": _target_modules(model_cfg, modules),
      "modules_to_save": [_HEAD_MODULE] if model_cfg.get("num_classes") else None,
      "init_lora_weights": True, "use_rslora": False, "use_dora": False,
      "inference_mode": True, "rank_pattern": {}, "alpha_pattern": {},
  }


def adapter_tensors(model_config: Mapping[str, Any], params: Mapping[str, Any]
                    ) -> dict[str, np.ndarray]:
  """{PEFT key: float32 array} of the adapters (and task head) in `params`."""
  model_cfg = models.config_with_defaults(model_config)
  modules = _adapted_modules(model_cfg)
  flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
  if model_cfg.get("scan_layers"):
    flat = weights.unscan_blocks(flat)
  tensors = {}
  for projection, module in modules.items():
    a, b = flat.get(f"{projection}_lora/a"), flat.get(f"{projection}_lora/b")
    if a is None or b is None:
      raise CheckpointError(f"The parameters lack the LoRA of {projection} "
                            f"({projection}_lora/{{a,b}}); export the params of the model "
                            "config given.")
    rank = a.shape[-1]
    tensors[f"{PREFIX}{module}.lora_A.weight"] = np.asarray(a, np.float32).reshape(-1, rank).T
    tensors[f"{PREFIX}{module}.lora_B.weight"] = np.asarray(b, np.float32).reshape(rank, -1).T
  if model_cfg.get("num_classes"):
    tensors[f"{PREFIX}{_HEAD_MODULE}.weight"] = np.asarray(flat["head/kernel"], np.float32).T
    tensors[f"{PREFIX}{_HEAD_MODULE}.bias"] = np.asarray(flat["head/bias"], np.float32)
  return {k: np.ascontiguousarray(v) for k, v in tensors.items()}


def save_peft_adapter(path: str, model_config: Mapping[str, Any], params: Mapping[str, Any],
                      *, base_model_name_or_path: str = "") -> str:
  """Writes adapter_config.json + adapter_model.safetensors under `path` (created) for
  the LoRA adapters of `params`; nothing is written when the model is refused. -> path."""
  model_cfg = models.config_with_defaults(model_config)
  config = adapter_config(model_cfg, base_model_name_or_path)   # refuses first
  tensors = adapter_tensors(model_cfg, params)
  os.makedirs(path, exist_ok=True)
  safetensors_lib().save_file(tensors, os.path.join(path, WEIGHTS_FILE),
                              metadata={"format": "pt"})
  with open(os.path.join(path, CONFIG_FILE), "w") as f:
    json.dump(config, f, indent=2)
  return path


def read_peft_adapter(path: str, model_config: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """The inverse of `save_peft_adapter`: {flat unscanned mmjax path: array} of the
  adapters ('.../<target>_lora/{a,b}') and head in folder `path`, shaped for
  `model_config`."""
  model_cfg = models.config_with_defaults(model_config)
  config = read_json(os.path.join(path, CONFIG_FILE), CheckpointError)
  if config.get("peft_type") != "LORA" or config.get("r") != model_cfg["lora_rank"]:
    raise CheckpointError(f"{path}/{CONFIG_FILE} holds a {config.get('peft_type')} adapter "
                          f"of r={config.get('r')}; the model config has LoRA rank "
                          f"{model_cfg['lora_rank']}.")
  tensors = safetensors_lib().load_file(os.path.join(path, WEIGHTS_FILE))
  shapes = {k: v.shape for k, v in traverse_util.flatten_dict(
      models.abstract_variables(models.build_model({**model_cfg, "scan_layers": False}),
                                {"text": np.zeros((1, 8), np.int32),
                                 "text_mask": np.ones((1, 8), np.int32)})["params"],
      sep="/").items()}
  out = {}
  for projection, module in _adapted_modules(model_cfg).items():
    for part, name in (("a", "lora_A"), ("b", "lora_B")):
      key = f"{PREFIX}{module}.{name}.weight"
      if key not in tensors:
        raise CheckpointError(f"{path}/{WEIGHTS_FILE} has no tensor {key!r}.")
      want = shapes[f"{projection}_lora/{part}"]
      out[f"{projection}_lora/{part}"] = tensors[key].T.reshape(want)
  if model_cfg.get("num_classes"):
    out["head/kernel"] = tensors[f"{PREFIX}{_HEAD_MODULE}.weight"].T
    out["head/bias"] = tensors[f"{PREFIX}{_HEAD_MODULE}.bias"]
  return out
