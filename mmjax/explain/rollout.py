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


def patches_to_pixels(relevance: jax.Array, grid: tuple[int, int],
                      patch: tuple[int, int], channels: int) -> jax.Array:
  """Patch relevance [B, gh*gw] (row-major, the order of PatchEmbed) -> a pixel map
  [B, gh*ph, gw*pw, channels] in which each pixel carries its patch's relevance shared
  evenly among the patch's pixels and channels (the map sums to the relevance's sum)."""
  b = relevance.shape[0]
  gh, gw = grid
  ph, pw = patch
  per_pixel = jnp.reshape(relevance, (b, gh, gw)) / (ph * pw * channels)
  up = jnp.repeat(jnp.repeat(per_pixel, ph, axis=1), pw, axis=2)
  return jnp.repeat(up[..., None], channels, axis=-1)


def _spread(rel: jax.Array, width: int) -> jax.Array:
  """Token relevance [B,T] -> [B,T,width], each token's relevance shared over its
  embedding."""
  return jnp.repeat(rel[..., None] / width, width, axis=-1)


def rollout_map(model, variables, inputs: dict, modality: str, *, residual: float = 0.5
                ) -> jax.Array:
  """Attention rollout of `model` as a map shaped like `inputs[modality]`: how much each
  input element reaches the pooled representation the class head reads. Jit-able with
  `model`, `modality` and `residual` static.

  ViT: the [CLS] row (pool 'cls') or the mean row (pool 'gap') over the image patches.
  TextTransformer: the row its pool reads ('first', 'last' real token, or the mean of
  the real tokens) over the tokens. MultimodalTransformer: the mean of the real tokens'
  rows, in the modality's tower ('towers' fusion) or in the joint encoder over all the
  present modalities' tokens ('concat'). A patch's or token's relevance is spread evenly
  over its pixels or embedding dimensions, so each map sums to the modality's share."""
  from mmjax.models.multimodal import INPUT_KEY, MultimodalTransformer
  from mmjax.models.text import TextTransformer
  from mmjax.models.vit import ViT
  check_supported(model, modality)
  x = inputs[modality]
  b = x.shape[0]
  if isinstance(model, ViT):
    _, found = model_attentions(model, variables, inputs)
    rel = token_relevance(rollout(found, residual),
                          "cls" if model.pool == "cls" else "mean")
    rel = rel[:, 1:] if model.pool == "cls" else rel
    p = model.patch_size
    return patches_to_pixels(rel, (x.shape[1] // p, x.shape[2] // p), (p, p), x.shape[3])
  if isinstance(model, TextTransformer):
    _, found = model_attentions(model, variables, inputs)
    rolled = rollout(found, residual)
    mask = jnp.asarray(inputs["text_mask"], jnp.float32)
    if model.pool == "last":
      last = jnp.max(jnp.arange(mask.shape[1])[None] * (mask > 0), axis=1)
      rel = rolled[jnp.arange(b), last] * mask
      rel = rel / jnp.maximum(rel.sum(-1, keepdims=True), 1e-12)
    else:
      rel = token_relevance(rolled, model.pool, mask)
    return _spread(rel, x.shape[-1])
  assert isinstance(model, MultimodalTransformer)   # check_supported refused the rest
  name = {v: k for k, v in INPUT_KEY.items()}[modality]
  present = [m for m in model.modalities if INPUT_KEY[m] in inputs]
  scope = f"towers_{name}" if model.fusion == "towers" else "encoder"
  _, found = model_attentions(model, variables, inputs, scope=scope)
  rolled = rollout(found, residual)
  order = [name] if model.fusion == "towers" else present
  # Text has a token per position; image and audio their patch grids.
  sizes = [inputs["text"].shape[1] if m == "text"
           else model._num_patches(m)   # pylint: disable=protected-access
           for m in order]
  mask = jnp.concatenate([
      (jnp.asarray(inputs["text_mask"], jnp.float32) if m == "text"
       else jnp.ones((b, n), jnp.float32))
      * jnp.asarray(inputs[f"{m}_present"], jnp.float32).reshape(b, 1)
      for m, n in zip(order, sizes)], axis=1)
  rel = token_relevance(rolled, "mean", mask)
  start = sum(sizes[:order.index(name)])
  rel = rel[:, start:start + sizes[order.index(name)]]
  if name == "text":
    return _spread(rel, x.shape[-1])
  ph, pw = model._patch(name)   # pylint: disable=protected-access
  grid = (x.shape[1] // ph, x.shape[2] // pw)
  if name == "image":
    return patches_to_pixels(rel, grid, (ph, pw), x.shape[3])
  return patches_to_pixels(rel, grid, (ph, pw), 1)[..., 0]


def check_supported(model, modality: str) -> None:
  """Refuses (ConfigError, before any compute) a model or modality `rollout_map` cannot
  roll out, naming what would work."""
  from mmjax.models.multimodal import MultimodalTransformer
  from mmjax.models.text import TextTransformer
  from mmjax.models.vit import ViT
  use = "use a gradient method (gradient, integrated_gradients, occlusion) instead."
  expected = {ViT: ("image",), TextTransformer: ("text",),
              MultimodalTransformer: ("image", "text", "spectrogram")}
  kind = next((k for k in expected if isinstance(model, k)), None)
  if kind is None:
    raise ConfigError(f"Attention rollout is for Transformers (vit, text_transformer, "
                      f"multimodal); {type(model).__name__} has no attention to roll "
                      f"out: {use}")
  if modality not in expected[kind]:
    raise ConfigError(f"Attention rollout of {type(model).__name__} covers "
                      f"{expected[kind]}, not {modality!r}: {use}")
  if kind is MultimodalTransformer:
    if model.fusion == "bottleneck":
      raise ConfigError("Attention rollout is defined for 'towers' and 'concat' fusion; "
                        "bottleneck fusion routes modalities through shared tokens that "
                        f"rollout does not follow: {use}")
    if modality == "spectrogram" and model.spec_stride not in (None, model.spec_patch):
      raise ConfigError("Attention rollout maps non-overlapping audio patches onto the "
                        f"spectrogram; this model's spec_stride overlaps them: {use}")
