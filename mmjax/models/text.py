"""Text transformer: GPT-style decoder (causal=True) or BERT-style encoder (causal=False).

With vocab 50257, max_len 1024, width 768, depth 12, heads 12, mlp 3072 and tied embeddings
it has exactly GPT-2 small's 124,439,808 parameters (token + position embeddings, 12 pre-LN
blocks with biased dense layers and LayerNorms, final LayerNorm, tied read-out).
With norm_position='post', layer_norm_eps=1e-12, activation='gelu', type_vocab_size=2,
embed_norm=True and pooler=True it is BERT (Devlin et al. 2019), the layout that
`mmjax.interop` imports Hugging Face BERT/MiniLM checkpoints into.
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
  """Token (+ type) + learned position embeddings -> Encoder -> heads: LM read-out,
  sequence classifier (num_classes), token classifier (token_classes), projection.

  BERT options: type_vocab_size (segment embeddings; ids from batch['text_type'], else
  0), embed_norm (LayerNorm after the embeddings), pooler (tanh(Dense) on the pooled
  token, read by the classifier), lm_transform (BERT's MLM head: Dense -> activation ->
  LayerNorm before the tied read-out, plus an output bias per token). Fine-tuning hooks:
  lora_rank, lora_alpha, lora_targets, adapter_dim (`layers.Tuning`).
  """
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
  norm_position: str = "pre"
  layer_norm_eps: float = 1e-6
  activation: str = "gelu_tanh"
  type_vocab_size: int = 0
  embed_norm: bool = False
  pooler: bool = False
  lm_transform: bool = False
  token_classes: int = 0
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_targets: tuple[str, ...] = ("query", "value")
  adapter_dim: int = 0
  adalora: bool = False   # SVD-form LoRA (AdaLoRA; layers.Tuning)
  attention: str = "auto"   # the attention kernel: 'auto' | 'cudnn' | 'xla' (attention.py)

  def setup(self):
    layers.check_choice(self.pool, ("first", "mean", "last"), "pool")
    dt = layers.compute_dtype(self.dtype)
    self.cdtype = dt
    self.token_embed = layers.TokenEmbed(self.vocab_size, self.width, dt)
    self.pos_embed = layers.PositionEmbedding(self.max_len, self.width)
    if self.type_vocab_size > 0:
      self.type_embed = layers.TokenEmbed(self.type_vocab_size, self.width, dt)
    if self.embed_norm:
      self.embed_ln = layers.layer_norm(dt, eps=self.layer_norm_eps)
    self.drop = nn.Dropout(self.dropout)
    self.encoder = Encoder(self.depth, self.num_heads, self.mlp_dim, self.dropout,
                           causal=self.causal, scan_layers=self.scan_layers,
                           remat=self.remat, dtype=dt, norm_position=self.norm_position,
                           layer_norm_eps=self.layer_norm_eps, activation=self.activation,
                           tuning=layers.tuning_of(self))
    if self.pooler:
      self.pooler_dense = layers.dense(self.width, ("embed", "mlp"), dt)
    if self.lm_head and not self.tie_embeddings:
      self.lm_out = layers.dense(self.vocab_size, ("embed", "vocab"), dt, use_bias=False)
    if self.lm_head and self.lm_transform:
      self.lm_dense = layers.dense(self.width, ("embed", "mlp"), dt)
      self.lm_ln = layers.layer_norm(dt, eps=self.layer_norm_eps)
      self.lm_bias = self.param("lm_bias", layers.partitioned(layers.zeros, ("vocab",)),
                                (self.vocab_size,))
    if self.num_classes > 0:
      self.head = layers.dense(self.num_classes, ("embed", None), dt)
    if self.token_classes > 0:
      self.token_head = layers.dense(self.token_classes, ("embed", None), dt)
    if self.projection_dim > 0:
      self.projection = layers.ProjectionHead(self.width, self.projection_dim, dt)

  def embed(self, batch: dict, *, train: bool = False) -> dict:
    """batch {'text': [B,T] int, 'text_mask'?: [B,T], 'text_type'?: [B,T]} -> {'text':
    [B,T,D] float32 token embeddings (no positions), 'text_mask': [B,T] int32 (all ones
    if absent), 'text_type': [B,T] int32 if given}."""
    del train
    ids = batch["text"]
    mask = batch.get("text_mask")
    mask = jnp.ones(ids.shape, jnp.int32) if mask is None else mask.astype(jnp.int32)
    out = {"text": self.token_embed(ids), "text_mask": mask}
    if "text_type" in batch:
      out["text_type"] = jnp.asarray(batch["text_type"], jnp.int32)
    return out

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
    'lm_logits': [B,T,V]?, 'logits': [B,K]?, 'token_logits': [B,T,K]?, 'projection':
    [B,P]?}, all float32."""
    x, mask = inputs["text"], inputs["text_mask"]
    t = x.shape[1]
    if t > self.max_len:
      raise ConfigError(f"Text of length {t} exceeds config.model.max_len={self.max_len}; "
                        "raise max_len or truncate the data.")
    x = x + self.pos_embed()[:t]
    if self.type_vocab_size > 0:
      types = inputs.get("text_type")
      types = jnp.zeros(mask.shape, jnp.int32) if types is None else types
      x = x + self.type_embed(types)
    if self.embed_norm:
      x = self.embed_ln(x)
    x = self.drop(x.astype(self.cdtype), deterministic=not train)
    hidden = self.encoder(x, mask, train=train)
    pooled = self._pool(hidden, mask)
    if self.pooler:
      pooled = jnp.tanh(self.pooler_dense(pooled))
    out = {"hidden": hidden.astype(jnp.float32), "pooled": pooled.astype(jnp.float32)}
    if self.lm_head:
      lm_in = hidden
      if self.lm_transform:
        act = layers.ACTIVATIONS[self.activation]
        lm_in = self.lm_ln(act(self.lm_dense(hidden)))
      out["lm_logits"] = (self.token_embed.attend(lm_in) if self.tie_embeddings
                          else self.lm_out(lm_in).astype(jnp.float32))
      if self.lm_transform:
        out["lm_logits"] = out["lm_logits"] + self.lm_bias
    if self.num_classes > 0:
      # Dropout before the task heads, as Hugging Face's *ForSequenceClassification.
      head_in = self.drop(pooled.astype(self.cdtype), deterministic=not train)
      out["logits"] = self.head(head_in).astype(jnp.float32)
    if self.token_classes > 0:
      head_in = self.drop(hidden.astype(self.cdtype), deterministic=not train)
      out["token_logits"] = self.token_head(head_in).astype(jnp.float32)
    if self.projection_dim > 0:
      out["projection"] = self.projection(pooled.astype(self.cdtype)).astype(jnp.float32)
    return out

  def __call__(self, batch: dict, *, train: bool = False) -> dict:
    """batch -> encode(embed(batch)); see `encode` for the output keys."""
    return self.encode(self.embed(batch, train=train), train=train)

  def initialize(self, batch: dict) -> dict:
    """Runs every head once so that `init` creates all parameters."""
    return self(batch, train=False)
