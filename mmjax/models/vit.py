"""Vision Transformer (Dosovitskiy et al. 2021) with an optional MAE decoder (He et al. 2021)."""
from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.models import layers
from mmjax.models import mae as mae_lib
from mmjax.models.registry import MODELS
from mmjax.models.transformer import Encoder


def unpatchify(patches: jax.Array, patch_size: int, height: int, width: int) -> jax.Array:
  """Inverse of `layers.patchify`: [B,N,P] -> [B,H,W,C]."""
  b, _, pp = patches.shape
  p = patch_size
  c = pp // (p * p)
  x = patches.reshape(b, height // p, width // p, p, p, c)
  x = x.transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, height, width, c)


@MODELS.register("vit")
class ViT(nn.Module):
  """ViT encoder; heads: classifier (num_classes>0), projection (projection_dim>0), MAE
  decoder (decoder_width>0 and decoder_depth>0). Pixels are normalised inside `encode`.

  layer_norm_eps=1e-12 and activation='gelu' match Hugging Face's ViT (what
  `mmjax.interop` imports); lora_rank, lora_alpha, lora_targets and adapter_dim are the
  fine-tuning hooks of `layers.Tuning` (encoder only).
  """
  image_size: int = 28
  patch_size: int = 4
  channels: int = 1
  width: int = 64
  depth: int = 2
  num_heads: int = 4
  mlp_dim: int = 128
  dropout: float = 0.0
  num_classes: int = 10
  pool: str = "cls"
  projection_dim: int = 0
  decoder_width: int = 0
  decoder_depth: int = 0
  decoder_heads: int = 4
  pixel_mean: Any = 0.5
  pixel_std: Any = 0.5
  scan_layers: bool = False
  remat: str = "none"
  dtype: str = "float32"
  layer_norm_eps: float = 1e-6
  activation: str = "gelu_tanh"
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_targets: tuple[str, ...] = ("query", "value")
  adapter_dim: int = 0
  adalora: bool = False   # SVD-form LoRA (AdaLoRA; layers.Tuning)
  attention: str = "auto"   # the attention kernel: 'auto' | 'cudnn' | 'xla' (attention.py)

  @property
  def has_decoder(self) -> bool:
    return self.decoder_width > 0 and self.decoder_depth > 0

  @property
  def num_patches(self) -> int:
    return (self.image_size // self.patch_size) ** 2

  def setup(self):
    layers.check_choice(self.pool, ("cls", "gap"), "pool")
    if self.image_size % self.patch_size:
      raise ConfigError(f"config.model.image_size={self.image_size} is not divisible by "
                        f"patch_size={self.patch_size}.")
    dt = layers.compute_dtype(self.dtype)
    self.cdtype = dt
    # The cls token (if any) gets its own position, index 0, as in ViT and MAE.
    n_tokens = self.num_patches + (self.pool == "cls")
    common = dict(scan_layers=self.scan_layers, remat=self.remat, dtype=dt,
                  layer_norm_eps=self.layer_norm_eps, activation=self.activation)
    self.patch_embed = layers.PatchEmbed(self.patch_size, self.width, dt)
    if self.pool == "cls":
      self.cls_token = self.param("cls_token", layers.partitioned(
          layers.zeros, (None, None, "embed")), (1, 1, self.width))
    self.pos_embed = layers.PositionEmbedding(n_tokens, self.width)
    self.drop = nn.Dropout(self.dropout)
    self.encoder = Encoder(self.depth, self.num_heads, self.mlp_dim, self.dropout,
                           tuning=layers.tuning_of(self), **common)
    if self.num_classes > 0:
      self.head = layers.dense(self.num_classes, ("embed", None), dt)
    if self.projection_dim > 0:
      self.projection = layers.ProjectionHead(self.width, self.projection_dim, dt)
    if self.has_decoder:
      dw = self.decoder_width
      self.decoder_embed = layers.dense(dw, ("embed", None), dt)
      self.mask_token = self.param("mask_token", layers.partitioned(
          nn.initializers.normal(0.02), (None, None, "embed")), (1, 1, dw))
      self.decoder_pos_embed = layers.PositionEmbedding(n_tokens, dw)
      self.decoder = Encoder(self.decoder_depth, self.decoder_heads, 4 * dw, 0.0, **common)
      pixels = self.patch_size * self.patch_size * self.channels
      self.decoder_pred = layers.dense(pixels, ("embed", None), dt)

  def _patch_tokens(self, images: jax.Array) -> jax.Array:
    """[B,H,W,C] pixels in [0,1] -> normalised patch tokens [B,N,D] (no positions)."""
    expected = (self.image_size, self.image_size, self.channels)
    if tuple(images.shape[1:]) != expected:
      raise ConfigError(f"ViT got images of shape {tuple(images.shape[1:])} but "
                        f"config.model expects {expected} (image_size, channels).")
    x = layers.normalize_pixels(images, self.pixel_mean, self.pixel_std)
    return self.patch_embed(x.astype(self.cdtype))

  def _prepend_cls(self, x: jax.Array, cls_pos: Any) -> jax.Array:
    """[B,N,D] -> [B,1+N,D] with cls_token + cls_pos first."""
    cls = (self.cls_token + cls_pos).astype(x.dtype)
    return jnp.concatenate([jnp.broadcast_to(cls, (x.shape[0], 1, x.shape[2])), x], axis=1)

  def embed(self, batch: dict, *, train: bool = False) -> dict:
    """batch -> {'image': [B,H,W,C]} (pixels stay pixels, in [0,1])."""
    del train
    return {"image": batch["image"]}

  def encode(self, inputs: dict, *, train: bool = False) -> dict:
    """{'image': [B,H,W,C]} -> {'hidden': [B,T,D], 'pooled': [B,D], 'logits': [B,K]?,
    'projection': [B,P]?}; T = N+1 with pool='cls' (cls token first), else N."""
    x = self._patch_tokens(inputs["image"])
    pos = self.pos_embed()
    if self.pool == "cls":
      x = self._prepend_cls(x, 0.0)  # the full position table is added next
    x = x + pos.astype(x.dtype)
    x = self.drop(x, deterministic=not train)
    hidden = self.encoder(x, train=train)
    pooled = hidden[:, 0] if self.pool == "cls" else hidden.mean(axis=1)
    out = {"hidden": hidden.astype(jnp.float32), "pooled": pooled.astype(jnp.float32)}
    if self.num_classes > 0:
      out["logits"] = self.head(pooled).astype(jnp.float32)
    if self.projection_dim > 0:
      out["projection"] = self.projection(pooled).astype(jnp.float32)
    return out

  def mae(self, inputs: dict, *, train: bool = False, mask_ratio: float = 0.75) -> dict:
    """Masked autoencoding. {'image': [B,H,W,C]} -> {'pred': [B,N,P], 'target': [B,N,P]
    (raw patchified pixels in [0,1]), 'mask': [B,N] float (1 = hidden patch)}.

    Each example hides exactly N - int(N*(1-mask_ratio)) patches chosen with the 'mask'
    RNG stream; only visible patches go through the encoder. `mask_ratio` must be a
    Python float (the number of visible patches is a static shape).
    """
    if not self.has_decoder:
      raise ConfigError("ViT.mae needs an MAE decoder: set config.model.decoder_width "
                        "and config.model.decoder_depth > 0.")
    images = inputs["image"]
    n = self.num_patches
    keep = mae_lib.num_visible(n, mask_ratio)
    has_cls = self.pool == "cls"
    pos = self.pos_embed()
    x = self._patch_tokens(images)
    b = x.shape[0]
    x = x + (pos[1:] if has_cls else pos).astype(x.dtype)
    # Per-example random permutation; the first `keep` of the shuffle stay visible.
    shuffle, restore = mae_lib.random_patch_order(self.make_rng("mask"), b, n)
    x = jnp.take_along_axis(x, shuffle[:, :keep, None], axis=1)
    if has_cls:
      x = self._prepend_cls(x, pos[:1])
    x = self.drop(x, deterministic=not train)
    d = self.decoder_embed(self.encoder(x, train=train))
    cls_part, d = (d[:, :1], d[:, 1:]) if has_cls else (None, d)
    masked = jnp.broadcast_to(self.mask_token.astype(d.dtype), (b, n - keep, d.shape[-1]))
    d = jnp.take_along_axis(jnp.concatenate([d, masked], axis=1), restore[..., None], axis=1)
    if has_cls:
      d = jnp.concatenate([cls_part, d], axis=1)
    d = d + self.decoder_pos_embed().astype(d.dtype)
    pred = self.decoder_pred(self.decoder(d, train=train))
    if has_cls:
      pred = pred[:, 1:]
    return {"pred": pred.astype(jnp.float32),
            "target": layers.patchify(images.astype(jnp.float32), self.patch_size),
            "mask": (restore >= keep).astype(jnp.float32)}

  def __call__(self, batch: dict, *, train: bool = False) -> dict:
    """batch -> encode(embed(batch)); see `encode` for the output keys."""
    return self.encode(self.embed(batch, train=train), train=train)

  def initialize(self, batch: dict) -> dict:
    """Touches every submodule (heads and MAE decoder) so that `init` creates them all."""
    out = self(batch, train=False)
    if self.has_decoder:
      self.mae(self.embed(batch), train=False)
    return out
