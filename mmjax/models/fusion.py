"""Modality tokenisation and cross-modal fusion blocks of the multimodal model."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.models import layers


class PatchTokens(nn.Module):
  """[B,H,W,C] (or a spectrogram [B,F,T], given a channel axis) -> normalised patch
  tokens with learned positions, [B,N,D]; with a `stride` below the patch size the
  patches overlap (AST), N from `spec_token_grid`."""
  grid: tuple[int, int]         # input height, width (F, T for a spectrogram)
  patch_size: Any
  channels: int
  width: int
  mean: Any
  std: Any
  name_in_errors: str
  dtype: Any = jnp.float32
  stride: Any = None            # None: non-overlapping patches
  pos_std: float = 0.02         # init scale of the learned positions

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if x.ndim == 3:
      x = x[..., None]
    expected = (*self.grid, self.channels)
    if tuple(x.shape[1:]) != expected:
      raise ConfigError(f"The multimodal model got {self.name_in_errors} of shape "
                        f"{tuple(x.shape[1:])} but config.model expects {expected}.")
    ph, pw = layers.pair(self.patch_size)
    if self.stride is None and (self.grid[0] % ph or self.grid[1] % pw):
      raise ConfigError(f"config.model: {self.name_in_errors} size {self.grid} is not "
                        f"divisible by its patch size {(ph, pw)}.")
    x = layers.normalize_pixels(x, self.mean, self.std)
    tokens = layers.PatchEmbed((ph, pw), self.width, self.dtype, self.stride,
                               name="patch")(x.astype(self.dtype))
    pos = layers.PositionEmbedding(tokens.shape[1], self.width, self.pos_std, name="pos")()
    return tokens + pos.astype(tokens.dtype)


class BottleneckFusion(nn.Module):
  """MBT (Nagrani et al. 2021): per-modality pre-LN blocks; from `fusion_layer` on each
  modality also attends to shared bottleneck tokens, whose per-modality updates are
  averaged (over the modalities present in each example) after every layer."""
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float
  bottleneck_tokens: int
  fusion_layer: int
  dtype: Any = jnp.float32
  tuning: layers.Tuning = layers.Tuning()

  @nn.compact
  def __call__(self, tokens: dict, *, train: bool) -> dict:
    """tokens {m: (x [B,N_m,D], mask [B,N_m])} -> {m: hidden [B,N_m,D]} (final LN)."""
    b, _, width = next(iter(tokens.values()))[0].shape
    nb = self.bottleneck_tokens
    shared = self.param("bottleneck", layers.partitioned(
        layers.EMBED_INIT, (None, None, "embed")), (1, nb, width))
    btl = jnp.broadcast_to(shared, (b, nb, width)).astype(jnp.float32)
    xs = {m: x for m, (x, _) in tokens.items()}
    # Per example, a modality updates the shared tokens only where it is present.
    weight = {m: mask.max(axis=1).astype(jnp.float32) for m, (_, mask) in tokens.items()}
    total = sum(weight.values())
    for i in range(self.depth):
      updates = {}
      for m, (_, mask) in tokens.items():
        block = layers.TransformerBlock(self.num_heads, self.mlp_dim, self.dropout,
                                        deterministic=not train, dtype=self.dtype,
                                        tuning=self.tuning, name=f"{m}_block_{i}")
        if i < self.fusion_layer:
          xs[m], _ = block(xs[m], mask)
          continue
        y, _ = block(jnp.concatenate([xs[m], btl.astype(xs[m].dtype)], axis=1),
                     jnp.concatenate([mask, jnp.ones((b, nb), mask.dtype)], axis=1))
        xs[m], updates[m] = y[:, :-nb], y[:, -nb:]
      if updates:
        mean = sum(weight[m][:, None, None] * u.astype(jnp.float32)
                   for m, u in updates.items()) / jnp.maximum(total, 1.0)[:, None, None]
        # Where no modality is present the shared tokens keep their value.
        btl = jnp.where((total > 0)[:, None, None], mean, btl)
    return {m: layers.layer_norm(self.dtype, name=f"{m}_ln_final")(x) for m, x in xs.items()}
