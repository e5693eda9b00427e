"""One transformer over any subset of image, text and audio, with three kinds of fusion.

Each modality becomes tokens at the embed/encode seam, as in the single-modality models
(so attacks perturb pixels, token embeddings and spectrograms alike):

  image        [B,H,W,C] pixels in [0,1] -> patch tokens (ViT)
  text         [B,T] ids + text_mask     -> token embeddings [B,T,D] (no positions)
  spectrogram  [B,F,T] log-mel           -> F x T patch tokens (AST, Gong et al. 2021;
                                            overlapping with `spec_stride` < `spec_patch`)

`fusion` chooses how the modalities meet:
  'towers'      one Encoder per modality; each is mean-pooled and projected
                (CLIP-style, Radford et al. 2021); the fused `pooled` is their mean.
  'concat'      every modality's tokens plus a learned modality embedding, concatenated,
                through one shared Encoder (single-stream fusion).
  'bottleneck'  one Encoder stack per modality; from layer `fusion_layer` on, each also
                attends to `bottleneck_tokens` shared tokens, which are averaged over the
                modalities after every layer (MBT, Nagrani et al. 2021).

Heads beyond encoding, each its own method so objectives and evals call what they need:
  `mae`      masked autoencoding of image or spectrogram patches (MAE, He et al. 2021;
             on spectrograms, Audio-MAE, Huang et al. 2022): the visible patches of one
             modality go through its encoder (alone), a light decoder predicts them all.
  `caption`  a text decoder (causal self-attention + cross-attention, Vaswani et al.
             2017) reads the encoded tokens of `caption_source` and predicts a caption;
             `caption_memory` / `caption_logits` split it for autoregressive decoding.
  MLM needs no method: `text_lm_head` adds tied `lm_logits` to `encode`'s outputs.

Missing modalities. A modality absent from the batch is skipped (static: the compiled
step sees only what the batch holds). A modality absent for some examples is flagged by
`batch['{m}_present']` [B] (1 = present, default all ones): its tokens are masked from
attention, pooling and the bottleneck average, the fused `pooled` averages only present
modalities, and `outputs['{m}_present']` lets losses drop the example instead of
training on zero-filled inputs. The model's own modality list is what it builds; a batch
may hold any subset of it.
"""
from __future__ import annotations

import itertools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.models import layers
from mmjax.models import mae as mae_lib
from mmjax.models.registry import MODELS
from mmjax.models.fusion import BottleneckFusion, PatchTokens
from mmjax.models.transformer import Decoder, Encoder

MODALITIES = ("image", "text", "audio")
FUSIONS = ("towers", "concat", "bottleneck")
# The input key of each modality at the seam.
INPUT_KEY = {"image": "image", "text": "text", "audio": "spectrogram"}


def spec_token_grid(grid: tuple[int, int], patch: Any, stride: Any) -> tuple[int, int, int]:
  """(F, T) spectrogram, patch (ph, pw), stride (sf, st) -> (rows, cols, rows * cols)
  tokens of a VALID strided patching: rows = (F - ph) // sf + 1 (AST: (128 - 16) // 10 + 1
  = 12); the last F - ph - (rows - 1) * sf bins are not covered, as in AST."""
  (f, t), (ph, pw), (sf, st) = grid, layers.pair(patch), layers.pair(stride)
  if not (1 <= sf <= ph and 1 <= st <= pw):
    raise ConfigError(f"config.model.spec_stride={(sf, st)} must be in [1, spec_patch] per "
                      f"axis (spec_patch={(ph, pw)}); a larger stride skips spectrogram "
                      "bins.")
  if f < ph or t < pw:
    raise ConfigError(f"config.model: spectrograms of {(f, t)} are smaller than their "
                      f"patch size {(ph, pw)}.")
  rows, cols = (f - ph) // sf + 1, (t - pw) // st + 1
  return rows, cols, rows * cols


@MODELS.register("multimodal")
class MultimodalTransformer(nn.Module):
  """Image + text + audio transformer; see the module docstring.

  Outputs of `encode`: 'pooled' [B,D] (fused), for each modality m in the batch
  '{m}_pooled' [B,D], '{m}_present' [B] float32 and, with projection_dim > 0,
  '{m}_projection' [B,P]; 'logits' [B,K] (num_classes > 0, on the fused pooled);
  'lm_logits' [B,T,V] (text_lm_head, tied embeddings: MLM); 'logit_scale' and
  'logit_bias' (scalars: the learnable contrastive temperature log(1/tau) and bias).
  `mae` and `caption` are described in the module docstring.
  """
  modalities: tuple = MODALITIES
  fusion: str = "towers"
  width: int = 64
  depth: int = 2
  num_heads: int = 4
  mlp_dim: int = 128
  dropout: float = 0.0
  # image
  image_size: int = 28
  patch_size: int = 4
  channels: int = 1
  pixel_mean: Any = 0.5
  pixel_std: Any = 0.5
  # Init std of the learned image and spectrogram patch positions. 0.02 (ViT's) leaves
  # them ~1% of a patch token's norm, too little for a decoder to tell where a patch is
  # (scene questions: configs/visdial_digits.py uses 1.0; docs/multimodal.md).
  patch_pos_std: float = 0.02
  # text
  vocab_size: int = 260
  max_len: int = 32
  text_lm_head: bool = False
  # audio: log-mel spectrogram [mel_bins, frames]
  mel_bins: int = 64
  frames: int = 28
  spec_patch: Any = (8, 4)
  # Patch stride (f, t) or s; None = `spec_patch` (non-overlapping). AST uses 16x16
  # patches with stride 10: overlapping patches, (F - 16) // 10 + 1 per axis.
  spec_stride: Any = None
  spec_mean: float = 0.0
  spec_std: float = 1.0
  # fusion
  bottleneck_tokens: int = 4
  fusion_layer: int = 0   # bottleneck: first fusion layer; information crosses from the
                          # second fusion layer on (each reads the previous one's average)
  # heads
  projection_dim: int = 0
  num_classes: int = 0
  logit_scale_init: float = math.log(1 / 0.07)   # CLIP; SigLIP: log(10)
  logit_bias_init: float = 0.0                   # SigLIP: -10
  # masked autoencoding of image and spectrogram patches (a decoder each when width > 0)
  mae_decoder_width: int = 0
  mae_decoder_depth: int = 1
  mae_decoder_heads: int = 4
  # captioning: a text decoder of `caption_depth` layers reading `caption_source`
  caption_depth: int = 0
  caption_source: str = "image"
  scan_layers: bool = False
  remat: str = "none"
  dtype: str = "float32"
  # fine-tuning hooks (layers.Tuning) of the encoder blocks
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_targets: tuple[str, ...] = ("query", "value")
  adapter_dim: int = 0
  adalora: bool = False   # SVD-form LoRA (AdaLoRA; layers.Tuning)
  attention: str = "auto"   # the attention kernel: 'auto' | 'cudnn' | 'xla' (attention.py)

  def setup(self):
    layers.check_choice(self.fusion, FUSIONS, "fusion")
    for m in self.modalities:
      layers.check_choice(m, MODALITIES, "modalities")
    if not self.modalities:
      raise ConfigError("config.model.modalities is empty; name at least one of "
                        f"{MODALITIES}.")
    if not self.patch_pos_std > 0:
      raise ConfigError(f"config.model.patch_pos_std={self.patch_pos_std!r} must be > 0 "
                        "(the init std of the learned patch positions; 0.02 is ViT's).")
    if self.fusion == "bottleneck" and not 0 <= self.fusion_layer <= self.depth - 2:
      raise ConfigError(
          f"config.model.fusion_layer={self.fusion_layer} must be in [0, depth - 2 = "
          f"{self.depth - 2}] for bottleneck fusion: a layer reads the shared tokens the "
          "previous fusion layer averaged, so modalities mix only from the second fusion "
          "layer on.")
    dt = layers.compute_dtype(self.dtype)
    self.cdtype = dt
    if "image" in self.modalities:
      self.image_tokens = PatchTokens((self.image_size, self.image_size), self.patch_size,
                                      self.channels, self.width, self.pixel_mean,
                                      self.pixel_std, "images", dt,
                                      pos_std=self.patch_pos_std)
    if "text" in self.modalities or self.caption_depth > 0:
      # One table: text tokens in and out (MLM, captions) share it.
      self.token_embed = layers.TokenEmbed(self.vocab_size, self.width, dt)
    if "text" in self.modalities:
      self.text_pos = layers.PositionEmbedding(self.max_len, self.width)
    if "audio" in self.modalities:
      if self._audio_overlaps:   # checks the stride against the patch and the grid
        spec_token_grid((self.mel_bins, self.frames), self.spec_patch, self._spec_stride)
      self.audio_tokens = PatchTokens((self.mel_bins, self.frames), self.spec_patch, 1,
                                      self.width, self.spec_mean, self.spec_std,
                                      "spectrograms", dt,
                                      self._spec_stride if self._audio_overlaps else None,
                                      self.patch_pos_std)
    self.drop = nn.Dropout(self.dropout)
    encoder = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim, dropout=self.dropout,
                   scan_layers=self.scan_layers, remat=self.remat, dtype=dt,
                   tuning=layers.tuning_of(self))
    if self.fusion == "towers":
      self.towers = {m: Encoder(self.depth, **encoder) for m in self.modalities}
    elif self.fusion == "concat":
      self.encoder = Encoder(self.depth, **encoder)
      self.modality_embed = self.param(
          "modality_embed", layers.partitioned(layers.EMBED_INIT, (None, "embed")),
          (len(self.modalities), self.width))
    else:
      self.bottleneck = BottleneckFusion(
          self.depth, self.num_heads, self.mlp_dim, self.dropout, self.bottleneck_tokens,
          self.fusion_layer, dt, layers.tuning_of(self))
    if self.projection_dim > 0:
      self.projections = {m: layers.dense(self.projection_dim, ("embed", None), dt,
                                          use_bias=False) for m in self.modalities}
    if self.num_classes > 0:
      self.head = layers.dense(self.num_classes, ("embed", None), dt)
    if self.mae_decoder_width > 0:
      self.mae_decoders = {
          m: mae_lib.MAEDecoder(self._num_patches(m), self.mae_decoder_width,
                                self.mae_decoder_depth, self.mae_decoder_heads,
                                math.prod(self._patch(m)) * (self.channels if m == "image"
                                                             else 1), dt)
          for m in self.modalities if m != "text" and not (m == "audio" and
                                                            self._audio_overlaps)}
    if self.caption_depth > 0:
      if self.caption_source not in self.modalities or self.caption_source == "text":
        raise ConfigError(
            f"config.model.caption_source={self.caption_source!r} must be an image or "
            f"audio modality of the model, one of "
            f"{[m for m in self.modalities if m != 'text']}.")
      self.caption_pos = layers.PositionEmbedding(self.max_len, self.width)
      self.caption_decoder = Decoder(self.caption_depth, self.num_heads, self.mlp_dim,
                                     self.dropout, dt)
    self.logit_scale = self.param("logit_scale", nn.initializers.constant(
        self.logit_scale_init), ())
    self.logit_bias = self.param("logit_bias", nn.initializers.constant(
        self.logit_bias_init), ())

  def _patch(self, m: str) -> tuple[int, int]:
    return layers.pair(self.patch_size if m == "image" else self.spec_patch)

  @property
  def _spec_stride(self) -> tuple[int, int]:
    return layers.pair(self.spec_patch if self.spec_stride is None else self.spec_stride)

  @property
  def _audio_overlaps(self) -> bool:
    """Whether audio patches are strided differently from their size (AST's overlap)."""
    return self._spec_stride != self._patch("audio")

  def _num_patches(self, m: str) -> int:
    """How many tokens modality m's patching makes (audio: also with overlapping
    patches, AST's strided grid)."""
    if m == "audio":
      return spec_token_grid((self.mel_bins, self.frames), self._patch("audio"),
                             self._spec_stride)[2]
    ph, pw = self._patch(m)
    return (self.image_size // ph) * (self.image_size // pw)

  # ---- the seam ----
  def present(self, batch: dict) -> tuple[str, ...]:
    """The model's modalities that `batch` (raw or embedded) holds, in model order."""
    return tuple(m for m in self.modalities if INPUT_KEY[m] in batch)

  def embed(self, batch: dict, *, train: bool = False) -> dict:
    """batch -> inputs: 'image' [B,H,W,C] pixels, 'text' [B,T,D] float32 token
    embeddings + 'text_mask' [B,T] int32, 'spectrogram' [B,F,T] float32, and
    '{m}_present' [B] int32 for each of them (ints: attacks never move them)."""
    del train
    present = self.present(batch)
    if not present:
      raise ConfigError(f"The batch holds none of the model's modalities "
                        f"{self.modalities} (input keys "
                        f"{[INPUT_KEY[m] for m in self.modalities]}); it has "
                        f"{sorted(batch)}.")
    b = batch[INPUT_KEY[present[0]]].shape[0]
    inputs = {}
    for m in present:
      key = INPUT_KEY[m]
      if m == "text":
        ids = batch["text"]
        mask = batch.get("text_mask")
        inputs["text"] = self.token_embed(ids)
        inputs["text_mask"] = (jnp.ones(ids.shape, jnp.int32) if mask is None
                               else mask.astype(jnp.int32))
      else:
        inputs[key] = jnp.asarray(batch[key], jnp.float32)
      flag = batch.get(f"{m}_present")
      inputs[f"{m}_present"] = (jnp.ones((b,), jnp.int32) if flag is None
                                else jnp.asarray(flag).astype(jnp.int32).reshape(b))
    return inputs

  def _tokens(self, m: str, inputs: dict) -> tuple[jax.Array, jax.Array]:
    """Modality m's tokens [B,N,D] (with positions) and token mask [B,N] (0 = ignore)."""
    present = inputs[f"{m}_present"].astype(jnp.int32)
    if m == "image":
      x = self.image_tokens(inputs["image"])
    elif m == "audio":
      x = self.audio_tokens(inputs["spectrogram"])
    else:
      x = inputs["text"]
      t = x.shape[1]
      if t > self.max_len:
        raise ConfigError(f"Text of length {t} exceeds config.model.max_len="
                          f"{self.max_len}; raise max_len or truncate the data.")
      x = (x + self.text_pos()[:t]).astype(self.cdtype)
      return x, inputs["text_mask"].astype(jnp.int32) * present[:, None]
    return x, jnp.broadcast_to(present[:, None], x.shape[:2])

  # ---- fusion ----
  def _towers(self, tokens, train):
    return {m: self.towers[m](self.drop(x, deterministic=not train), mask, train=train)
            for m, (x, mask) in tokens.items()}

  def _concat(self, tokens, train):
    order = list(tokens)
    xs = [x + self.modality_embed[self.modalities.index(m)].astype(x.dtype)
          for m, (x, _) in tokens.items()]
    lengths = [x.shape[1] for x in xs]
    x = self.drop(jnp.concatenate(xs, axis=1), deterministic=not train)
    mask = jnp.concatenate([mask for _, mask in tokens.values()], axis=1)
    hidden = self.encoder(x, mask, train=train)
    return dict(zip(order, jnp.split(hidden, list(itertools.accumulate(lengths))[:-1],
                                     axis=1)))

  def _bottleneck(self, tokens, train):
    tokens = {m: (self.drop(x, deterministic=not train), mask)
              for m, (x, mask) in tokens.items()}
    return self.bottleneck(tokens, train=train)

  def _fuse(self, tokens: dict, train: bool) -> dict:
    """{m: (tokens [B,N_m,D], mask [B,N_m])} -> {m: hidden [B,N_m,D]}."""
    return {"towers": self._towers, "concat": self._concat,
            "bottleneck": self._bottleneck}[self.fusion](tokens, train)

  def _require(self, m: str, inputs: dict, what: str) -> None:
    if m not in self.present(inputs):
      raise ConfigError(f"{what} needs the {m} input {INPUT_KEY[m]!r}, but the batch holds "
                        f"only {sorted(inputs)}; keep it in config.data.preprocess_*.")

  def encode(self, inputs: dict, *, train: bool = False) -> dict:
    """inputs (from `embed`) -> outputs; see the class docstring."""
    present = self.present(inputs)
    tokens = {m: self._tokens(m, inputs) for m in present}
    hidden = self._fuse(tokens, train)
    out: dict[str, jax.Array] = {}
    flags = {m: inputs[f"{m}_present"].astype(jnp.float32) for m in present}
    pooled = {m: layers.masked_mean(hidden[m], tokens[m][1]) for m in present}
    for m in present:
      out[f"{m}_pooled"] = pooled[m]
      out[f"{m}_present"] = flags[m]
      if self.projection_dim > 0:
        out[f"{m}_projection"] = self.projections[m](
            pooled[m].astype(self.cdtype)).astype(jnp.float32)
    if self.fusion == "concat":
      fused = layers.masked_mean(jnp.concatenate([hidden[m] for m in present], axis=1),
                                 jnp.concatenate([tokens[m][1] for m in present], axis=1))
    else:
      count = jnp.maximum(sum(flags.values()), 1.0)
      fused = sum(flags[m][:, None] * pooled[m] for m in present) / count[:, None]
    out["pooled"] = fused
    if self.num_classes > 0:
      out["logits"] = self.head(fused.astype(self.cdtype)).astype(jnp.float32)
    if self.text_lm_head and "text" in present:
      out["lm_logits"] = self.token_embed.attend(hidden["text"])
    out["logit_scale"] = self.logit_scale
    out["logit_bias"] = self.logit_bias
    return out

  # ---- masked autoencoding ----
  def mae(self, inputs: dict, *, train: bool = False, mask_ratio: float = 0.75,
          modality: str = "image") -> dict:
    """Masked autoencoding of one modality's patches.

    inputs (from `embed`) -> {'pred': [B,N,P], 'target': [B,N,P] (the raw patches:
    pixels in [0,1] or log-mel values), 'mask': [B,N] float (1 = hidden patch),
    'present': [B] float (0 where the example lacks the modality)}. Each example hides
    N - int(N*(1-mask_ratio)) patches drawn with the 'mask' RNG stream; the visible ones
    are encoded with this modality alone. `mask_ratio` is a Python float (static shape).
    """
    if self.mae_decoder_width <= 0:
      raise ConfigError("The multimodal model's `mae` needs a decoder: set "
                        "config.model.mae_decoder_width > 0.")
    if modality == "audio" and self._audio_overlaps:
      raise ConfigError("MAE on audio needs non-overlapping spectrogram patches (its "
                        "targets are the patches): unset config.model.spec_stride or set "
                        "it equal to spec_patch.")
    if modality not in self.mae_decoders:
      raise ConfigError(f"MAE modality {modality!r} must be one of the model's patch "
                        f"modalities {sorted(self.mae_decoders)}.")
    self._require(modality, inputs, "MAE")
    x, mask = self._tokens(modality, inputs)
    b, n, _ = x.shape
    keep = mae_lib.num_visible(n, mask_ratio)
    shuffle, restore = mae_lib.random_patch_order(self.make_rng("mask"), b, n)
    visible = shuffle[:, :keep]
    x = jnp.take_along_axis(x, visible[..., None], axis=1)
    mask = jnp.take_along_axis(mask, visible, axis=1)
    hidden = self._fuse({modality: (x, mask)}, train)[modality]
    pred = self.mae_decoders[modality](hidden, restore, train=train)
    source = inputs[INPUT_KEY[modality]].astype(jnp.float32)
    if source.ndim == 3:  # spectrogram [B,F,T]
      source = source[..., None]
    return {"pred": pred, "target": layers.patchify(source, self._patch(modality)),
            "mask": (restore >= keep).astype(jnp.float32),
            "present": inputs[f"{modality}_present"].astype(jnp.float32)}

  # ---- captioning ----
  def caption_memory(self, inputs: dict, *, train: bool = False
                     ) -> tuple[jax.Array, jax.Array]:
    """inputs -> (memory [B,S,D], memory_mask [B,S]): `caption_source` encoded alone
    (a caption must not be read from the other modalities, which may hold it)."""
    if self.caption_depth <= 0:
      raise ConfigError("Captioning needs a text decoder: set config.model.caption_depth "
                        "> 0.")
    m = self.caption_source
    self._require(m, inputs, "Captioning")
    tokens = {m: self._tokens(m, inputs)}
    return self._fuse(tokens, train)[m], tokens[m][1]

  def caption_logits(self, memory: jax.Array, memory_mask: jax.Array, tokens: jax.Array,
                     *, train: bool = False, self_mask: jax.Array | None = None
                     ) -> jax.Array:
    """tokens [B,T] ids (BOS first) + memory -> next-token logits [B,T,V] float32:
    logits[:, t] predicts tokens[:, t+1]. `self_mask` [B,T,T] (True = query t may read
    key s; on top of causality) restricts the decoder's self-attention further, e.g. to
    a dialogue's own turn (`objectives/dialogue.py`)."""
    t = tokens.shape[1]
    if t > self.max_len:
      raise ConfigError(f"Captions of length {t} exceed config.model.max_len="
                        f"{self.max_len}; raise max_len or truncate the data.")
    x = self.token_embed(tokens) + self.caption_pos()[:t]
    x = self.drop(x.astype(self.cdtype), deterministic=not train)
    hidden = self.caption_decoder(x, memory, memory_mask, self_mask, train=train)
    return self.token_embed.attend(hidden)

  def caption(self, inputs: dict, tokens: jax.Array, *, train: bool = False) -> jax.Array:
    """inputs + caption tokens [B,T] -> next-token logits [B,T,V] (teacher forcing)."""
    memory, memory_mask = self.caption_memory(inputs, train=train)
    return self.caption_logits(memory, memory_mask, tokens, train=train)

  def __call__(self, batch: dict, *, train: bool = False) -> dict:
    """batch -> encode(embed(batch))."""
    return self.encode(self.embed(batch, train=train), train=train)

  def initialize(self, batch: dict) -> dict:
    """`init` needs every modality's parameters: missing ones get zero inputs."""
    b = next(iter(v for v in batch.values() if hasattr(v, "shape"))).shape[0]
    full = dict(batch)
    zeros = {"image": (self.image_size, self.image_size, self.channels),
             "spectrogram": (self.mel_bins, self.frames)}
    for m in self.modalities:
      key = INPUT_KEY[m]
      if key not in full:
        full[key] = (jnp.zeros((b, 1), jnp.int32) if m == "text"
                     else jnp.zeros((b, *zeros[key]), jnp.float32))
    out = self(full, train=False)
    inputs = self.embed(full)
    for m in (self.mae_decoders if self.mae_decoder_width > 0 else ()):
      self.mae(inputs, modality=m)
    if self.caption_depth > 0:
      self.caption(inputs, jnp.zeros((b, 1), jnp.int32))
    return out
