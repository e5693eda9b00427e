"""Parameter-efficient fine-tuning: which parameters train, and merging LoRA into the base.

Fine-tuning modes (config `finetune.mode`), as regexes over '/'-joined parameter paths:
  full          every parameter
  linear_probe  the task heads only (a frozen encoder)
  lora          LoRA's A and B (model.lora_rank > 0) and the task heads
  adapter       Houlsby adapters, LayerNorms (as Houlsby et al. train them) and the heads
`finetune.trainable` adds patterns to any mode. Frozen parameters get no optimizer state
(`mmjax.train.optim` wraps the optimizer in `optax.multi_transform`) and no gradient
computation (the train step stops their gradients).
"""
from __future__ import annotations

import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.tree import path_str

HEAD_PATTERNS = (r"(^|/)head/", r"(^|/)token_head/")
# The parameters a mode exists to train: the model must have some.
_OWN_PARAMETERS = {"lora": r"_lora/", "adapter": r"(^|/)adapter_"}
MODE_PATTERNS = {
    "full": (r".*",),
    "linear_probe": HEAD_PATTERNS,
    "lora": (_OWN_PARAMETERS["lora"],) + HEAD_PATTERNS,
    "adapter": (_OWN_PARAMETERS["adapter"], r"(^|/)ln_", r"(^|/)embed_ln/") + HEAD_PATTERNS,
}
_LORA = "_lora"


def check_mode(mode: str) -> None:
  """ConfigError unless `mode` is a fine-tuning mode."""
  if mode not in MODE_PATTERNS:
    raise ConfigError(f"Unknown finetune.mode={mode!r}; choose one of: "
                      f"{', '.join(MODE_PATTERNS)}.")


def trainable_mask(params: Any, mode: str, extra: Sequence[str] = ()) -> Any:
  """A pytree of bools like `params`: True where the parameter trains in `mode`.

  Raises a ConfigError for an unknown mode, a bad regex, or a selection that trains
  nothing (e.g. mode 'lora' with model.lora_rank = 0).
  """
  check_mode(mode)
  try:
    patterns = [re.compile(p) for p in (*MODE_PATTERNS[mode], *extra)]
  except re.error as e:
    raise ConfigError(f"finetune.trainable has an invalid regex ({e}).") from None
  mask = jax.tree_util.tree_map_with_path(
      lambda path, _: any(p.search(path_str(path)) for p in patterns), params)
  hint = {"lora": " Set model.lora_rank > 0.", "adapter": " Set model.adapter_dim > 0.",
          "linear_probe": " Set model.num_classes (or token_classes) > 0."}.get(mode, "")
  if not any(jax.tree.leaves(mask)):
    raise ConfigError(f"finetune.mode={mode!r} selects no parameter to train.{hint}")
  own = _OWN_PARAMETERS.get(mode)
  if own and not any(re.search(own, path_str(p)) for p, _ in
                     jax.tree_util.tree_leaves_with_path(params)):
    # Else 'lora' with lora_rank 0 would quietly train the head alone.
    raise ConfigError(f"finetune.mode={mode!r} but the model has no {mode} parameters."
                      f"{hint}")
  return mask


def count(params: Any, mask: Any | None = None) -> int:
  """Number of scalars in `params` (where `mask` is True, if given)."""
  leaves = jax.tree.leaves(params)
  keep = jax.tree.leaves(mask) if mask is not None else [True] * len(leaves)
  return sum(int(x.size) for x, k in zip(leaves, keep) if k)


def stop_frozen_gradients(params: Any, mask: Any) -> Any:
  """params with `jax.lax.stop_gradient` on the frozen leaves, so the backward pass does
  not compute their (discarded) weight gradients."""
  return jax.tree.map(lambda p, t: p if t else jax.lax.stop_gradient(p), params, mask)


def _merged_kernel(kernel: jax.Array, a: jax.Array, b: jax.Array, scale: float):
  """kernel [L?, *in, *out] + scale * A [L?, *in, r] B [L?, r, *out]."""
  layered = kernel.ndim - (a.ndim - 1) - (b.ndim - 1) == -1   # scanned: leading L on all
  contract = (lambda a_, b_: jnp.tensordot(a_, b_, axes=1))
  delta = jax.vmap(contract)(a, b) if layered else contract(a, b)
  return (kernel + scale * delta).astype(kernel.dtype)


def adapter_a(lora: Any) -> jax.Array:
  """The effective A [L?, *in, r] of one adapter's parameters {a, b} (LoRA) or {a, e, b}
  (AdaLoRA: P diag(Λ), Λ = e [L?, r] broadcast over P's input dims)."""
  a = lora["a"]
  if "e" not in lora:
    return a
  e = lora["e"]
  lead = e.ndim - 1
  return a * e.reshape(e.shape[:lead] + (1,) * (a.ndim - lead - 1) + e.shape[lead:])


def merge_lora(params: Any, alpha: float) -> dict:
  """The params with every '<name>_lora/{a,b}' folded into '<name>/kernel' (W + (alpha /
  rank) A B) and removed: the tree of the same model with lora_rank = 0, giving the same
  outputs. AdaLoRA's '<name>_lora/{a,e,b}' fold as A diag(e) B (pruned singular values
  are zeros of e)."""
  if not isinstance(params, dict):
    params = dict(params)
  out = {}
  for key, value in params.items():
    if key.endswith(_LORA):
      continue
    if isinstance(value, dict) or hasattr(value, "items"):
      value = merge_lora(dict(value), alpha)
      lora = params.get(key + _LORA)
      if lora is not None:
        rank = lora["a"].shape[-1]
        a = lora["a"] if "e" not in lora else adapter_a(lora)
        value = {**value, "kernel": _merged_kernel(value["kernel"], a, lora["b"],
                                                   alpha / rank)}
    out[key] = value
  orphans = [k for k in params if k.endswith(_LORA) and k[:-len(_LORA)] not in params]
  if orphans:
    raise ConfigError(f"LoRA parameters {orphans} have no base projection to merge into.")
  return out
