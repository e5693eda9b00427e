"""Hugging Face-format folders (config.json + safetensors) <-> mmjax models and params.

Nothing here touches the network: a folder on disk is read (or written) as it is.
`load_pretrained(path)` builds the mmjax model its config.json describes and fills its
parameters; `overrides` change the model for fine-tuning (a new head, LoRA, adapters,
scanned layers): what the checkpoint does not hold is freshly initialised, and each such
parameter is logged. `save_pretrained` writes the inverse (LoRA merged first). Reading
the files is `mmjax.interop.files`; the name and layout mappings `families` and
`weights`.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Any, Mapping

import jax
import numpy as np
from absl import logging
from flax import traverse_util

from mmjax import models
from mmjax.errors import ConfigError
from mmjax.interop import families, weights
from mmjax.interop.files import (SAFETENSORS, read_config, read_json, read_tensors,
                                 safetensors_lib, tensor_shapes)

TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json",
                   "special_tokens_map.json", "merges.txt", "vocab.json",
                   "preprocessor_config.json")
def _family(cfg: dict) -> families.Family:
  kind = cfg.get("model_type")
  if kind not in families.FAMILIES:
    raise ConfigError(f"config.json has model_type={kind!r}; mmjax imports "
                      f"{', '.join(families.FAMILIES)} (and the BERT family: MiniLM, "
                      "sentence-transformers encoders).")
  return families.FAMILIES[kind]


def _strip_prefix(tensors: Mapping[str, Any], family: families.Family) -> dict:
  out = {}
  for name, x in tensors.items():
    if any(name.endswith(s) for s in family.ignored):
      continue
    for prefix in family.prefixes:
      if name.startswith(prefix):
        name = name[len(prefix):]
        break
    out[name] = x
  return out


def _extra(path: str, shapes: Mapping[str, tuple[int, ...]]) -> dict:
  """Facts beyond config.json: a pooler, a classifier (and its size), preprocessing.
  `shapes`: {tensor name (prefix stripped): shape}."""
  extra = {"has_pooler": "pooler.dense.weight" in shapes,
           "has_mlm_head": "cls.predictions.transform.dense.weight" in shapes}
  if "classifier.weight" in shapes:
    extra["num_labels"] = int(shapes["classifier.weight"][0])
  proc = os.path.join(path, "preprocessor_config.json")
  if os.path.isfile(proc):
    extra["preprocessor"] = read_json(proc)
  return extra


def _source(path: str, tensors: Mapping[str, np.ndarray] | None = None
            ) -> tuple[families.Family, dict]:
  """(family, config.model of the checkpoint as it is) of folder `path`. `tensors`: its
  tensors when already read; else only the safetensors headers are read."""
  cfg = read_config(path)
  family = _family(cfg)
  shapes = (tensor_shapes(path) if tensors is None
            else {k: np.shape(v) for k, v in tensors.items()})
  shapes = _strip_prefix(shapes, family)
  try:
    return family, family.model_config(cfg, _extra(path, shapes))
  except KeyError as e:
    raise ConfigError(f"{os.path.join(path, 'config.json')!r} lacks {e.args[0]!r}, which a "
                      f"{family.model_type} model needs; the file is incomplete.") from None


def _example_batch(model_cfg: Mapping[str, Any]) -> dict:
  if model_cfg["name"] == "vit":
    size = model_cfg["image_size"]
    return {"image": np.zeros((1, size, size, model_cfg.get("channels", 3)), np.float32)}
  length = min(8, model_cfg["max_len"])
  return {"text": np.zeros((1, length), np.int32),
          "text_mask": np.ones((1, length), np.int32)}


def model_config_from_pretrained(path: str, **overrides) -> dict:
  """The `config.model` dict of the folder's model, with `overrides` applied (e.g.
  num_classes=5, lora_rank=8, scan_layers=True). Reads config.json and tensor names."""
  _, model_cfg = _source(path)
  unknown = sorted(set(overrides) - {f for f in _model_fields(model_cfg["name"])})
  if unknown:
    raise ConfigError(f"Unknown model override(s) {unknown} for a {model_cfg['name']} model.")
  return {**model_cfg, **overrides}


def _model_fields(name: str) -> list[str]:
  import dataclasses   # pylint: disable=import-outside-toplevel
  return [f.name for f in dataclasses.fields(models.MODELS.get(name)) if f.init]


def import_into(path: str, model_cfg: Mapping[str, Any], params: Mapping[str, Any]
                ) -> tuple[dict, dict[str, list[str]]]:
  """Fills `params` (a model's freshly initialised tree for `model_cfg`) with the
  folder's weights. Returns (params, report) where report lists 'imported' (parameter
  paths, unscanned layout, filled from the folder), 'fresh' (parameters
  the checkpoint does not provide: new heads, LoRA, adapters), 'replaced' (checkpoint
  heads of another size) and 'unused' (checkpoint tensors nothing read)."""
  raw = read_tensors(path)
  family, source_cfg = _source(path, raw)
  tensors = _strip_prefix(raw, family)
  flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
  scanned = bool(model_cfg.get("scan_layers", False))
  flat_unscanned = weights.unscan_blocks(flat) if scanned else flat
  shapes = {k: np.shape(v) for k, v in flat_unscanned.items()}
  imported, replaced, unused = weights.import_tensors(
      tensors, family.rules(source_cfg), shapes)
  merged = {**flat_unscanned, **imported}
  if scanned:
    merged = weights.scan_blocks(merged)
  fresh = sorted(k for k in flat_unscanned if k not in imported)
  report = {"imported": sorted(imported), "fresh": fresh, "replaced": replaced,
            "unused": unused}
  return traverse_util.unflatten_dict(merged, sep="/"), report


def log_import_report(path: str, report: dict[str, list[str]]) -> None:
  """Logs `import_into`'s report: what came from `path`, what starts fresh, which heads
  were replaced (a warning) and which checkpoint tensors nothing read."""
  logging.info("Initialised from %s: %d parameter arrays imported.", path,
               len(report["imported"]))
  if report["fresh"]:
    logging.info("Initialised fresh (not in %s): %s", path, ", ".join(report["fresh"]))
  if report["replaced"]:
    logging.warning("Checkpoint heads of another size replaced by fresh ones: %s",
                    ", ".join(report["replaced"]))
  if report["unused"]:
    logging.info("Checkpoint tensors not used: %s", ", ".join(report["unused"]))


def load_pretrained(path: str, *, seed: int = 0, **overrides) -> tuple[Any, dict]:
  """A Hugging Face folder -> (model, params), float32 numpy-backed jax arrays.

  For an encoder, `model.apply({'params': params}, {'text': ids, 'text_mask': mask})`
  returns a dict whose 'hidden' entry is the last hidden state [batch, tokens, width]
  (ViT: {'image': [B,H,W,C] in [0,1]}). `overrides` are config.model fields; parameters
  they add are initialised from `seed`.
  """
  model_cfg = model_config_from_pretrained(path, **overrides)
  model = models.build_model(model_cfg)
  variables = models.init_variables(model, _example_batch(model_cfg),
                                    jax.random.PRNGKey(seed))
  params, report = import_into(path, model_cfg, variables["params"])
  log_import_report(path, report)
  return model, jax.tree.map(jax.numpy.asarray, params)


def _export_family(model_cfg: Mapping[str, Any]) -> families.Family:
  name = model_cfg["name"]
  if name == "vit":
    return families.FAMILIES["vit"]
  if name == "text_transformer":
    if model_cfg.get("causal"):
      return families.FAMILIES["gpt2"]
    if model_cfg.get("norm_position") == "post":
      return families.FAMILIES["bert"]
  raise ConfigError(f"save_pretrained exports GPT-2 (causal text_transformer), BERT "
                    f"(post-LN text_transformer) and ViT models, not this {name!r} one.")


def _preprocessor(family: families.Family, model_cfg: Mapping[str, Any],
                  source: str | None) -> dict | None:
  """preprocessor_config.json for the export: the family's, or folder `source`'s with the
  model's own normalisation (the values the mmjax model applies inside win, so that a
  reload, by mmjax or transformers, normalises as the exported model did)."""
  if family.preprocessor is None:
    return None
  ours = family.preprocessor(dict(model_cfg))
  src = os.path.join(source, "preprocessor_config.json") if source else ""
  if not os.path.isfile(src):
    return ours
  norm = ("do_normalize", "image_mean", "image_std")
  return {**ours, **read_json(src), **{k: ours[k] for k in norm}}


def save_pretrained(path: str, model_config: Mapping[str, Any], params: Mapping[str, Any],
                    *, tokenizer_from: str | None = None) -> str:
  """Writes config.json + model.safetensors for `params` of the model `model_config`
  (LoRA updates merged in; adapters have no Hugging Face form and are refused), and
  copies the tokenizer/preprocessor files of folder `tokenizer_from`. Returns `path`.

  A ViT also gets a preprocessor_config.json (ViTImageProcessor) holding its
  pixel_mean/pixel_std, so a reload normalises pixels as the model did. Parameters the
  Hugging Face architecture has no place for (projection or MAE-decoder heads) are left
  out with a warning; a GPT-2 classification head (num_classes > 0) is a ConfigError:
  export `{**model_config, 'num_classes': 0}` to write the language model alone.
  Documented gap: an exported ViTModel has no pooler (mmjax's ViT has none), so
  transformers reports pooler.dense.{weight,bias} missing and initialises them; its
  last_hidden_state is unaffected. Nothing is written when the export is refused.
  """
  from mmjax.models import peft   # pylint: disable=import-outside-toplevel
  model_cfg = models.config_with_defaults(model_config)
  if model_cfg.get("adapter_dim"):
    raise ConfigError("Adapters have no Hugging Face equivalent; export the model without "
                      "them (adapter_dim=0) or save an mmjax checkpoint instead.")
  family = _export_family(model_cfg)
  hf_cfg = family.hf_config(model_cfg)   # refuses what the family cannot hold, first
  if model_cfg.get("lora_rank"):
    params = peft.merge_lora(params, model_cfg["lora_alpha"])
    model_cfg["lora_rank"] = 0
  flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
  if model_cfg.get("scan_layers"):
    flat = weights.unscan_blocks(flat)
  rules = family.rules(model_cfg)
  tensors = weights.export_tensors(flat, rules)
  exported = {p for rule in rules for p in rule.paths}
  left_out = sorted(k for k in flat if k not in exported)
  if left_out:
    logging.warning("Not exported (a %s checkpoint has no place for them): %s",
                    family.model_type, ", ".join(left_out))
  if hf_cfg["architectures"][0] != family.base_arch:
    # A task model (LM / classifier wrapper) keeps its base model under the prefix.
    prefix = family.prefixes[0]
    tensors = {(k if k.startswith(family.head_keys) else prefix + k): v
               for k, v in tensors.items()}
  preprocessor = _preprocessor(family, model_cfg, tokenizer_from)
  os.makedirs(path, exist_ok=True)
  safetensors_lib().save_file(tensors, os.path.join(path, SAFETENSORS),
                           metadata={"format": "pt"})
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(hf_cfg, f, indent=2)
  if tokenizer_from:
    for name in TOKENIZER_FILES:
      src = os.path.join(tokenizer_from, name)
      if os.path.isfile(src) and not (preprocessor and name == "preprocessor_config.json"):
        shutil.copy2(src, os.path.join(path, name))
  if preprocessor:
    with open(os.path.join(path, "preprocessor_config.json"), "w") as f:
      json.dump(preprocessor, f, indent=2)
  return path
