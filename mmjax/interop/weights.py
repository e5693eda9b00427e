"""Safetensors tensors <-> mmjax parameter trees, by a family's `Rule`s.

Parameters are handled as flat {'a/b/kernel': array} dicts. Hugging Face checkpoints hold
per-layer tensors; `scan_blocks` / `unscan_blocks` convert between that layout and a
scanned encoder's stacked `encoder/blocks/...` parameters.
"""
from __future__ import annotations

import re
from typing import Mapping

import numpy as np

from mmjax.errors import CheckpointError
from mmjax.interop.families import Rule

_BLOCK = re.compile(r"^(?P<stack>.*?)block_(?P<i>\d+)/(?P<rest>.*)$")
# Heads are task-specific: a checkpoint's head of another shape is replaced, not an error.
HEAD_PREFIXES = ("head/", "token_head/")


def _to_canonical(x: np.ndarray, rule: Rule) -> np.ndarray:
  """A safetensors tensor -> mmjax layout, before the reshape to the parameter's shape."""
  if rule.layout == "linear":
    return x.T
  if rule.layout == "conv":
    return x.transpose(2, 3, 1, 0)
  if rule.layout == "unbatch":
    return x[0]
  return x   # 'copy', 'conv1d'


def _from_canonical(x: np.ndarray, rule: Rule) -> np.ndarray:
  if rule.layout == "linear":
    return x.T
  if rule.layout == "conv":
    return x.transpose(3, 2, 0, 1)
  if rule.layout == "unbatch":
    return x[None]
  return x


def _hf_layout(x: np.ndarray, rule: Rule) -> np.ndarray:
  """An mmjax parameter -> the canonical layout of its rule's tensor: kernels [*in, *out]
  -> [prod(in), prod(out)]; biases [*out] -> [prod(out)] (Hugging Face biases are 1-D)."""
  if rule.layout in ("linear", "conv1d"):
    return x.reshape(int(np.prod(x.shape[:rule.in_dims])), -1)
  if rule.hf.endswith(".bias"):
    return x.reshape(-1)
  return x


def import_tensors(tensors: Mapping[str, np.ndarray], rules: list[Rule],
                   shapes: Mapping[str, tuple[int, ...]]
                   ) -> tuple[dict[str, np.ndarray], list[str], list[str]]:
  """Applies `rules` to safetensors `tensors` for a model whose flat parameter shapes are
  `shapes` ({path: shape}, unscanned layout).

  Returns (params {path: float32 array}, heads_replaced [paths whose checkpoint shape
  differs from a task head's], unused [tensor names that filled no parameter: no rule
  reads them, or the configured model lacks their parameters]). A rule's tensor that is
  missing, or a non-head shape mismatch, is a CheckpointError naming the tensor.
  """
  params, replaced, used = {}, [], set()
  for rule in rules:
    if rule.hf not in tensors:
      raise CheckpointError(
          f"The checkpoint has no tensor {rule.hf!r}, which {', '.join(rule.paths)} needs; "
          "the safetensors file does not match its config.json (a truncated or different "
          "model?). Re-export it with the model's own save_pretrained.")
    x = _to_canonical(np.asarray(tensors[rule.hf]), rule)
    parts = np.split(x, len(rule.paths), axis=-1) if len(rule.paths) > 1 else [x]
    for path, part in zip(rule.paths, parts):
      if path not in shapes:
        continue   # e.g. a classifier the configured model does not have: 'unused'
      used.add(rule.hf)
      want = tuple(shapes[path])
      if part.size != int(np.prod(want)):
        if path.startswith(HEAD_PREFIXES):
          replaced.append(path)
          continue
        raise CheckpointError(
            f"Tensor {rule.hf!r} of shape {tuple(tensors[rule.hf].shape)} cannot fill "
            f"parameter {path} of shape {want}; the model config differs from the "
            "checkpoint's config.json (do not override width/depth/heads/vocab sizes).")
      params[path] = part.reshape(want).astype(np.float32)
  unused = sorted(set(tensors) - used)
  return params, sorted(set(replaced)), unused


def export_tensors(params: Mapping[str, np.ndarray], rules: list[Rule]
                   ) -> dict[str, np.ndarray]:
  """Flat unscanned mmjax params -> {safetensors name: float32 array} (inverse of
  `import_tensors`)."""
  out = {}
  for rule in rules:
    missing = [p for p in rule.paths if p not in params]
    if missing:
      raise CheckpointError(f"Cannot export {rule.hf!r}: the parameters lack "
                            f"{', '.join(missing)}.")
    parts = [_hf_layout(np.asarray(params[p], np.float32), rule) for p in rule.paths]
    x = np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
    out[rule.hf] = np.ascontiguousarray(_from_canonical(x, rule))
  return out


def scan_blocks(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """'.../block_{i}/rest' for i = 0..L-1 -> '.../blocks/rest' stacked on a leading [L]
  axis (the layout of `Encoder(scan_layers=True)`)."""
  out, groups = {}, {}
  for path, x in flat.items():
    m = _BLOCK.match(path)
    if m is None:
      out[path] = x
    else:
      groups.setdefault((m["stack"], m["rest"]), {})[int(m["i"])] = x
  for (stack, rest), layers in groups.items():
    out[f"{stack}blocks/{rest}"] = np.stack([layers[i] for i in range(len(layers))])
  return out


def unscan_blocks(flat: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Inverse of `scan_blocks`: '.../blocks/rest' [L, ...] -> '.../block_{i}/rest'."""
  out = {}
  for path, x in flat.items():
    m = re.match(r"^(?P<stack>.*?)blocks/(?P<rest>.*)$", path)
    if m is None:
      out[path] = x
      continue
    for i in range(x.shape[0]):
      out[f"{m['stack']}block_{i}/{m['rest']}"] = x[i]
  return out
