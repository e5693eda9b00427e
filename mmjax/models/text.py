"""Text transformer: GPT-style decoder (causal=True) or BERT-style encoder (causal=False).

With vocab 50257, max_len 1024, width 768, depth 12, heads 12, mlp 3072 and tied embeddings
it has exactly GPT-2 small's 124,439,808 parameters (token + position embeddings, 12 pre-LN
blocks with biased dense layers and LayerNorms, final LayerNorm, tied read-out).
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.models import layers
from mmjax.models.registry import MODELS
from mmjax.models.transformer import Encoder


@MODELS.register("text_transformer")
class TextTransformer(nn.Module):
  """Token + learned position embeddings -> Encoder -> heads (lm, classifier, projection)."""
  vocab_size: int = 260
  max_len: int = 64
  width: int = 64
  depth: int = 2
  num_heads: int = 4
  mlp_dim: int = 128
  dropout: float = 0.0
  causal: bool = False
  num_classes: int = 0
  pool: str = "first"
  lm_head: bool = True
  tie_embeddings: bool = True
  projection_dim: int = 0
  scan_layers: bool = False
  remat: str = "none"
  dtype: str = "float32"

  def setup(self):
    layers.check_choice(self.pool, ("first", "mean", "last"), "pool")
    dt = layers.compute_dtype(self.dtype)
    self.cdtype = dt
    self.token_embed = layers.TokenEmbed(self.vocab_size, self.width, dt)
    self.pos_embed = layers.PositionEmbedding(self.max_len, self.width)
    self.drop = nn.Dropout(self.dropout)
    self.encoder = Encoder(self.depth, self.num_heads, self.mlp_dim, self.dropout,
                           causal=self.causal, scan_layers=self.scan_layers,
                           remat=self.remat, dtype=dt)
    if self.lm_head and not self.tie_embeddings:
      self.lm_out = layers.dense(self.vocab_size, ("embed", "vocab"), dt, use_bias=False)
    if self.num_classes > 0:
      self.head = layers.dense(self.num_classes, ("embed", None), dt)
    if self.projection_dim > 0:
      self.projection = layers.ProjectionHead(self.width, self.projection_dim, dt)

  def embed(self, batch: dict, *, train: bool = False) -> dict:
    """batch {'text': [B,T] int, 'text_mask'?: [B,T]} -> {'text': [B,T,D] float32 token
    embeddings (no positions), 'text_mask': [B,T] int32 (all ones if absent)}."""
    del train
    ids = batch["text"]
    mask = batch.get("text_mask")
    mask = jnp.ones(ids.shape, jnp.int32) if mask is None else mask.astype(jnp.int32)
    return {"text": self.token_embed(ids), "text_mask": mask}

  def _pool(self, hidden: jax.Array, mask: jax.Array) -> jax.Array:
    """hidden [B,T,D], mask [B,T] -> [B,D]; 'mean' and 'last' ignore padding."""
    if self.pool == "first":
      return hidden[:, 0]
    if self.pool == "mean":
      return layers.masked_mean(hidden, mask)
    # 'last': the highest position holding a real token (any padding layout).
    last = jnp.max(jnp.arange(mask.shape[1])[None] * (mask > 0), axis=1)
    return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]

  def encode(self, inputs: dict, *, train: bool = False) -> dict:
    """{'text': [B,T,D], 'text_mask': [B,T]} -> {'hidden': [B,T,D], 'pooled': [B,D],
    'lm_logits': [B,T,V]?, 'logits': [B,K]?, 'projection': [B,P]?}, all float32."""
    x, mask = inputs["text"], inputs["text_mask"]
    t = x.shape[1]
    if t > self.max_len:
      raise ConfigError(f"Text of length {t} exceeds config.model.max_len={self.max_len}; "
                        "raise max_len or truncate the data.")
    x = (x + self.pos_embed()[:t]).astype(self.cdtype)
    x = self.drop(x, deterministic=not train)
    hidden = self.encoder(x, mask, train=train)
    pooled = self._pool(hidden, mask)
    out = {"hidden": hidden.astype(jnp.float32), "pooled": pooled.astype(jnp.float32)}
    if self.lm_head:
      out["lm_logits"] = (self.token_embed.attend(hidden) if self.tie_embeddings
                          else self.lm_out(hidden).astype(jnp.float32))
    if self.num_classes > 0:
      out["logits"] = self.head(pooled.astype(self.cdtype)).astype(jnp.float32)
    if self.projection_dim > 0:
      out["projection"] = self.projection(pooled.astype(self.cdtype)).astype(jnp.float32)
    return out

  def __call__(self, batch: dict, *, train: bool = False) -> dict:
    """batch -> encode(embed(batch)); see `encode` for the output keys."""
    return self.encode(self.embed(batch, train=train), train=train)

  def initialize(self, batch: dict) -> dict:
    """Runs every head once so that `init` creates all parameters."""
    return self(batch, train=False)
