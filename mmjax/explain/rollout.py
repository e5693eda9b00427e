"""Attention rollout (Abnar & Zuidema 2020): how much each input token flows into each
output token through a Transformer's stacked self-attention.

Each layer's attention, averaged over heads, is mixed with the identity for the residual
connection, Â_l = (1 - residual)·A_l + residual·I, rows renormalised; the rollout is
the product Â_L ··· Â_1 (rows: output tokens, columns: input tokens, each row sums to 1).
`attentions` reads the probabilities the model's attention layers sow when asked
(mmjax.models.layers.MultiHeadAttention), so any mmjax Transformer can be rolled out.
"""
from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.errors import ConfigError


def rollout(attentions: Sequence[jax.Array], residual: float = 0.5) -> jax.Array:
  """Per-layer attention probabilities, first layer first, each [B,N,T,T] (or [B,T,T]
  already averaged over heads) -> the rollout [B,T,T]."""
  if not attentions:
    raise ConfigError("Attention rollout needs at least one self-attention layer.")
  out = None
  for a in attentions:
    a = jnp.asarray(a, jnp.float32)
    a = a.mean(axis=1) if a.ndim == 4 else a
    if a.shape[-1] != a.shape[-2]:
      raise ConfigError(f"Attention rollout needs self-attention [.., T, T], got {a.shape} "
                        "(cross-attention has no rollout; see caption grounding).")
    mixed = (1.0 - residual) * a + residual * jnp.eye(a.shape[-1], dtype=a.dtype)
    mixed = mixed / mixed.sum(-1, keepdims=True)
    out = mixed if out is None else jnp.einsum("bij,bjk->bik", mixed, out)
  return out


def sown_attentions(intermediates: Any, scope: str | None = None) -> list[jax.Array]:
  """The attention probabilities a model sowed, in the order its layers ran, each
  [B,N,T,S]: layers stacked by `nn.scan` ([L,B,N,T,S]) are split into L entries.
  `scope` keeps only those whose module path holds that name (e.g. 'cross_attn')."""
  found = []

  def visit(path, leaf):
    names = [getattr(p, "key", getattr(p, "name", str(p))) for p in path]
    if "attention" not in names or (scope is not None and scope not in names):
      return
    leaf = jnp.asarray(leaf)
    found.extend(list(leaf) if leaf.ndim == 5 else [leaf])

  jax.tree_util.tree_map_with_path(visit, intermediates)
  return found


def model_attentions(model, variables, inputs: dict, *, method: str = "encode",
                     scope: str | None = None, **kwargs) -> tuple[Any, list[jax.Array]]:
  """Runs `model.<method>(inputs)` in eval mode with the attention probabilities sown
  -> (its outputs, [each self-attention layer's probabilities [B,N,T,S]]).

  Raises ConfigError for a model with no attention layers (a CNN), naming the fix."""
  out, state = model.apply(variables, inputs, method=method, train=False,
                           mutable=["intermediates"], **kwargs)
  found = sown_attentions(state.get("intermediates", {}), scope)
  if not found:
    raise ConfigError(f"{type(model).__name__} has no attention layers to roll out; "
                      "attention rollout is for Transformers (vit, text_transformer, "
                      "multimodal): use a gradient method for this model.")
  return out, found


def token_relevance(rolled: jax.Array, pool: str, mask: jax.Array | None = None
                    ) -> jax.Array:
  """How much each input token reaches the pooled representation [B,T]: the [CLS] row
  of the rollout (pool 'cls' / 'first') or the mean of the real tokens' rows (pool
  'mean'), normalised to sum to 1 over the tokens."""
  if pool in ("cls", "first"):
    rel = rolled[:, 0]
  else:
    weights = (jnp.ones(rolled.shape[:2]) if mask is None
               else jnp.asarray(mask, jnp.float32))
    rel = jnp.einsum("bi,bij->bj", weights, rolled) / jnp.maximum(
        weights.sum(-1, keepdims=True), 1e-12)
  if mask is not None:
    rel = rel * jnp.asarray(mask, rel.dtype)
  return rel / jnp.maximum(rel.sum(-1, keepdims=True), 1e-12)


def patches_to_pixels(relevance: np.ndarray, grid: tuple[int, int],
                      patch: tuple[int, int], channels: int) -> np.ndarray:
  """Patch relevance [B, gh*gw] (row-major, the order of PatchEmbed) -> a pixel map
  [B, gh*ph, gw*pw, channels] in which each pixel carries its patch's relevance shared
  evenly among the patch's pixels and channels (the map sums to the relevance's sum)."""
  b = relevance.shape[0]
  gh, gw = grid
  ph, pw = patch
  per_pixel = np.asarray(relevance).reshape(b, gh, gw) / (ph * pw * channels)
  up = np.repeat(np.repeat(per_pixel, ph, axis=1), pw, axis=2)
  return np.repeat(up[..., None], channels, axis=-1)
