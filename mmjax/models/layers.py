"""Transformer building blocks: attention, MLP, pre-LN block, patch/token/position embeddings.

Every parameter carries logical axis names (`nn.with_logical_partitioning`) so that
`mmjax.parallel` can map them to mesh axes with a rule table:

  'embed'  model width D          'mlp'    MLP hidden width
  'heads'  attention heads N      'kv'     per-head width H
  'vocab'  vocabulary V           'layers' stacked layer axis (scan_layers=True)

Axes that are never sharded are named None. Parameters are stored in float32; `dtype` is
the compute dtype. Blocks are pre-LN (GPT-2, ViT) or post-LN (BERT), and take a `Tuning`
that adds LoRA updates (Hu et al. 2021) to chosen projections and Houlsby et al. (2019)
bottleneck adapters after each sub-layer, for parameter-efficient fine-tuning. Key
activations are constrained with `constrain` by the names 'batch', 'act_length',
'act_embed', 'act_heads', 'act_kv', 'act_mlp' and 'act_vocab' (a no-op unless a step is
traced under `mmjax.parallel.activation_rules`).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.models import attention as attention_lib
from mmjax.parallel.rules import constrain

Dtype = Any

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
REMAT_POLICIES = ("none", "full", "dots", "dots_no_batch")
NORM_POSITIONS = ("pre", "post")
# 'gelu_tanh' is GPT-2's and BERT-TF's approximation; 'gelu' is the exact erf form of
# Hugging Face's BERT and ViT (they differ by up to ~1e-3, too much for a faithful import).
ACTIVATIONS = {"gelu_tanh": functools.partial(nn.gelu, approximate=True),
               "gelu": functools.partial(nn.gelu, approximate=False),
               "relu": nn.relu}
# Projections LoRA may adapt: attention query/key/value/out and the MLP's fc1/fc2.
LORA_TARGETS = ("query", "key", "value", "out", "fc1", "fc2")

KERNEL_INIT = nn.initializers.xavier_uniform()
EMBED_INIT = nn.initializers.normal(stddev=0.02)  # GPT-2 / BERT / ViT position init
zeros = nn.initializers.zeros
ones = nn.initializers.ones


def partitioned(init, names: Sequence[str | None]):
  """Wraps initializer `init` so its parameter carries logical axis `names`."""
  return nn.with_logical_partitioning(init, tuple(names))


def compute_dtype(name: str | Dtype) -> Dtype:
  """'float32' | 'bfloat16' -> jnp dtype; anything else is a ConfigError."""
  if not isinstance(name, str):
    return name
  if name not in DTYPES:
    raise ConfigError(f"Unknown dtype {name!r} in config.model.dtype. "
                      f"Choose one of: {', '.join(DTYPES)}.")
  return DTYPES[name]


def check_choice(value: Any, choices: Sequence[Any], key: str) -> None:
  """Raises a ConfigError naming `key` when `value` is not one of `choices`."""
  if value not in choices:
    raise ConfigError(f"Invalid value {value!r} for config.model.{key}. "
                      f"Choose one of: {', '.join(map(repr, choices))}.")


def pair(size: int | Sequence[int]) -> tuple[int, int]:
  """p -> (p, p); (h, w) -> (h, w): a square or rectangular size (patches, grids)."""
  return tuple(size) if isinstance(size, (tuple, list)) else (size, size)


def masked_mean(x: jax.Array, mask: jax.Array) -> jax.Array:
  """Mean of x [B,T,D] over the tokens where mask [B,T] is nonzero -> [B,D] float32
  (0 for an example with no such token)."""
  m = mask.astype(jnp.float32)
  total = jnp.einsum("btd,bt->bd", x.astype(jnp.float32), m)
  return total / jnp.maximum(m.sum(axis=1, keepdims=True), 1.0)


def normalize_pixels(images: jax.Array, mean: Any, std: Any) -> jax.Array:
  """[B,H,W,C] pixels in [0,1] -> (x - mean) / std; mean/std are floats or per-channel."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images.astype(jnp.float32) - mean) / std


def layer_norm(dtype: Dtype, name: str | None = None, eps: float = 1e-6) -> nn.LayerNorm:
  """LayerNorm with bias (GPT-2 / ViT style); scale and bias are 'embed'-partitioned.
  `eps`: 1e-6 (ViT, big_vision), 1e-5 (GPT-2), 1e-12 (BERT, HF ViT)."""
  return nn.LayerNorm(epsilon=eps, dtype=dtype, name=name,
                      scale_init=partitioned(ones, ("embed",)),
                      bias_init=partitioned(zeros, ("embed",)))


def dense(features: int, names: tuple[str | None, str | None], dtype: Dtype,
          name: str | None = None, use_bias: bool = True,
          kernel_init=KERNEL_INIT) -> nn.Dense:
  """nn.Dense whose kernel is partitioned by `names` (in, out) and bias by (out,)."""
  return nn.Dense(features, dtype=dtype, name=name, use_bias=use_bias,
                  kernel_init=partitioned(kernel_init, names),
                  bias_init=partitioned(zeros, names[1:]))


@dataclasses.dataclass(frozen=True)
class Tuning:
  """What a model sets in every transformer block (hashable: a module field): its
  attention kernel (`attention`: 'auto' | 'cudnn' | 'xla', mmjax/models/attention.py) and
  its parameter-efficient fine-tuning hooks.

  lora_rank > 0 adds a LoRA update (alpha / rank) * x A B to each projection named in
  `lora_targets` (A [in, rank] Kaiming-uniform as in Hugging Face PEFT, B [rank, out]
  zero, so training starts from the base model); its parameters sit next to the base
  projection as '<target>_lora/{a,b}'. `adalora` makes each update AdaLoRA's SVD form
  (alpha / rank) x P diag(Λ) Q (Zhang et al. 2023) in '<target>_lora/{a,e,b}' (P, Λ, Q),
  whose singular values the trainer prunes to a rank budget (mmjax/models/adalora.py).
  adapter_dim > 0 adds a Houlsby adapter after the attention and after the MLP
  ('adapter_attn', 'adapter_mlp').
  """
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_targets: tuple[str, ...] = ("query", "value")
  adapter_dim: int = 0
  attention: str = "auto"
  adalora: bool = False

  def __post_init__(self):
    check_choice(self.attention, attention_lib.CHOICES, "attention")
    if self.lora_rank < 0 or self.adapter_dim < 0:
      raise ConfigError(f"config.model.lora_rank={self.lora_rank} and adapter_dim="
                        f"{self.adapter_dim} must be >= 0 (0 = off).")
    if self.adalora and self.lora_rank < 1:
      raise ConfigError("config.model.adalora needs config.model.lora_rank > 0: the "
                        "initial rank of each AdaLoRA adapter (its budget's start).")
    unknown = sorted(set(self.lora_targets) - set(LORA_TARGETS))
    if unknown:
      raise ConfigError(f"Unknown config.model.lora_targets {unknown}; choose from "
                        f"{', '.join(LORA_TARGETS)}.")

  def lora(self, target: str) -> bool:
    return self.lora_rank > 0 and target in self.lora_targets


def tuning_of(module: nn.Module) -> Tuning:
  """The `Tuning` of a model with the fields lora_rank, lora_alpha, lora_targets,
  adapter_dim, attention and adalora (config.model keys of every transformer model)."""
  return Tuning(module.lora_rank, float(module.lora_alpha), tuple(module.lora_targets),
                module.adapter_dim, module.attention, bool(module.adalora))


class LoRA(nn.Module):
  """The low-rank update of a projection: x [..., *in] -> (alpha/rank) x A B [..., *features].

  `in_dims` trailing dims of x are contracted (2 for the attention output's heads x kv).
  `in_names` / `out_names` are the logical axes of those dims, so A and B shard like the
  kernel they adapt.

  With `svd` (AdaLoRA) the update is (alpha/rank) x P diag(Λ) Q with P = 'a' [*in, rank],
  Λ = 'e' [rank], Q = 'b' [rank, *features]; as in Hugging Face PEFT's AdaLoRA, P and Q
  start N(0, 0.02) and Λ at zero, so training starts from the base model.
  """
  features: tuple[int, ...]
  rank: int
  alpha: float
  in_names: tuple[str | None, ...]
  out_names: tuple[str | None, ...]
  dtype: Dtype = jnp.float32
  svd: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    n_in = len(self.in_names)
    in_shape = x.shape[-n_in:]
    a_init = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform",
                                              in_axis=tuple(range(n_in)), out_axis=-1)
    b_init = zeros
    if self.svd:
      a_init = b_init = nn.initializers.normal(0.02)
    a = self.param("a", partitioned(a_init, (*self.in_names, None)), (*in_shape, self.rank))
    if self.svd:
      a = a * self.param("e", partitioned(zeros, (None,)), (self.rank,))
    b = self.param("b", partitioned(b_init, (None, *self.out_names)),
                   (self.rank, *self.features))
    h = jnp.tensordot(x.astype(self.dtype), a.astype(self.dtype),
                      axes=(tuple(range(x.ndim - n_in, x.ndim)), tuple(range(n_in))))
    return jnp.tensordot(h, b.astype(self.dtype), axes=1) * (self.alpha / self.rank)


def add_lora(tuning: Tuning, target: str, y: jax.Array, x: jax.Array,
             in_names: tuple[str | None, ...], out_names: tuple[str | None, ...],
             dtype: Dtype) -> jax.Array:
  """y (projection `target`'s output [..., *features] of x) plus its LoRA update, a
  submodule '<target>_lora', when `tuning` adapts `target`; else y. Call inside a
  compact method."""
  if not tuning.lora(target):
    return y
  lora = LoRA(y.shape[x.ndim - len(in_names):], tuning.lora_rank, tuning.lora_alpha,
              in_names, out_names, dtype, svd=tuning.adalora, name=f"{target}_lora")
  return y + lora(x).astype(y.dtype)


class Adapter(nn.Module):
  """Houlsby bottleneck adapter: x + up(gelu(down(x))) on [..., D]. `up` starts at zero,
  so an inserted adapter leaves a pretrained model's outputs unchanged."""
  dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = dense(self.dim, ("embed", None), self.dtype, name="down",
              kernel_init=nn.initializers.normal(1e-3))(x)
    return x + dense(x.shape[-1], (None, "embed"), self.dtype, name="up",
                     kernel_init=zeros)(nn.gelu(h))


class MultiHeadAttention(nn.Module):
  """Self-attention through `jax.nn.dot_product_attention` ([B,T,N,H] layout), by the
  implementation `tuning.attention` selects (cuDNN flash attention on GPUs under 'auto').

  Dropout is applied by the block on the residual branch; attention probabilities are not
  dropped because `dot_product_attention` (whose implementations include cuDNN flash
  attention) has no dropout. The causal mask is its `is_causal` flag; padding is a boolean
  key mask, so the two combine. With the 'intermediates' collection mutable, it sows its
  attention probabilities [B,N,T,S] as 'attention' (`mmjax.explain.rollout`).
  """
  num_heads: int
  causal: bool = False
  dtype: Dtype = jnp.float32
  tuning: Tuning = Tuning()

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None,
               context: jax.Array | None = None) -> jax.Array:
    """x [B,T,D] -> [B,T,D]. Keys and values come from x (self-attention) or from
    `context` [B,S,D] (cross-attention); mask [B,T] (or [B,S] with context) marks the
    keys that may be attended (1 = real token) or is None; a [B,T,S] mask says per
    query which keys it may attend (e.g. a dialogue's turns, `objectives/dialogue.py`)."""
    width = x.shape[-1]
    if width % self.num_heads:
      raise ConfigError(f"Model width {width} is not divisible by num_heads "
                        f"{self.num_heads}; change config.model.width or num_heads.")
    head_dim = width // self.num_heads
    proj = functools.partial(
        nn.DenseGeneral, features=(self.num_heads, head_dim), dtype=self.dtype,
        kernel_init=partitioned(KERNEL_INIT, ("embed", "heads", "kv")),
        bias_init=partitioned(zeros, ("heads", "kv")))
    source = x if context is None else context
    heads = ("batch", "act_length", "act_heads", "act_kv")
    qkv = []
    for name, src in (("query", x), ("key", source), ("value", source)):
      y = add_lora(self.tuning, name, proj(name=name)(src), src, ("embed",),
                   ("heads", "kv"), self.dtype)
      qkv.append(constrain(y, heads))
    q, k, v = qkv
    # Boolean mask broadcastable to [B,N,T,S]: True = may attend to that key.
    if mask is None:
      attn_mask = None
    elif mask.ndim == 3:
      attn_mask = mask[:, None].astype(bool)
    else:
      attn_mask = mask[:, None, None, :].astype(bool)
    out = attention_lib.attend(q, k, v, attn_mask, causal=self.causal,
                               choice=self.tuning.attention)
    if self.is_mutable_collection("intermediates"):
      # Only when a caller asks (mmjax.explain): the probabilities [B,N,T,S], which the
      # fused kernel above never materialises, recomputed for attention rollout and
      # caption grounding. Training never makes the collection mutable, so costs nothing.
      self.sow("intermediates", "attention",
               attention_lib.probabilities(q, k, attn_mask, causal=self.causal))
    out = constrain(out, heads)
    y = nn.DenseGeneral(
        features=width, axis=(-2, -1), dtype=self.dtype, name="out",
        kernel_init=partitioned(KERNEL_INIT, ("heads", "kv", "embed")),
        bias_init=partitioned(zeros, ("embed",)))(out)
    return add_lora(self.tuning, "out", y, out, ("heads", "kv"), ("embed",), self.dtype)


class MLP(nn.Module):
  """Dense(mlp_dim) -> activation -> Dense(D): [B,T,D] -> [B,T,D]."""
  mlp_dim: int
  dtype: Dtype = jnp.float32
  activation: str = "gelu_tanh"
  tuning: Tuning = Tuning()

  def _dense(self, x, features, names, name):
    y = dense(features, names, self.dtype, name=name)(x)
    return add_lora(self.tuning, name, y, x, names[:1], names[1:], self.dtype)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    check_choice(self.activation, tuple(ACTIVATIONS), "activation")
    h = self._dense(x, self.mlp_dim, ("embed", "mlp"), "fc1")
    h = ACTIVATIONS[self.activation](constrain(h, ("batch", "act_length", "act_mlp")))
    return self._dense(h, x.shape[-1], ("mlp", "embed"), "fc2")


class TransformerBlock(nn.Module):
  """Pre-LN block: x + drop(attn(LN(x))), then x + drop(mlp(LN(x))); or post-LN (BERT):
  LN(x + drop(attn(x))), then LN(x + drop(mlp(x))). Adapters (tuning.adapter_dim > 0)
  act on each branch before the residual add, as in Houlsby et al.

  `deterministic` is a field rather than a call argument so that the block can be wrapped
  by `nn.scan` / `nn.remat` without static arguments. Returns `(x, None)`, the carry/output
  pair that `nn.scan` wants.
  """
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  causal: bool = False
  deterministic: bool = True
  dtype: Dtype = jnp.float32
  norm_position: str = "pre"
  layer_norm_eps: float = 1e-6
  activation: str = "gelu_tanh"
  tuning: Tuning = Tuning()

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None):
    """x [B,T,D], mask [B,T] or None -> ([B,T,D], None)."""
    check_choice(self.norm_position, NORM_POSITIONS, "norm_position")
    drop = nn.Dropout(self.dropout, deterministic=self.deterministic)
    pre = self.norm_position == "pre"
    ln_attn = layer_norm(self.dtype, "ln_attn", self.layer_norm_eps)
    ln_mlp = layer_norm(self.dtype, "ln_mlp", self.layer_norm_eps)
    attn = MultiHeadAttention(self.num_heads, self.causal, self.dtype, self.tuning,
                              name="attn")
    mlp = MLP(self.mlp_dim, self.dtype, self.activation, self.tuning, name="mlp")

    def branch(h, fn, name):
      h = fn(h)
      if self.tuning.adapter_dim:
        h = Adapter(self.tuning.adapter_dim, self.dtype, name=f"adapter_{name}")(h)
      return drop(h)

    if pre:
      x = x + branch(ln_attn(x), lambda h: attn(h, mask), "attn")
      x = x + branch(ln_mlp(x), mlp, "mlp")
    else:
      x = ln_attn(x + branch(x, lambda h: attn(h, mask), "attn"))
      x = ln_mlp(x + branch(x, mlp, "mlp"))
    return constrain(x, ("batch", "act_length", "act_embed")), None


class DecoderBlock(nn.Module):
  """Pre-LN decoder block (Vaswani et al. 2017): causal self-attention, cross-attention
  to an encoder's memory, MLP; each residual, with dropout on the branch."""
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  deterministic: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, memory: jax.Array, memory_mask: jax.Array | None = None,
               mask: jax.Array | None = None) -> jax.Array:
    """x [B,T,D] (mask [B,T] keys, or [B,T,T] per query) attends causally to itself
    and to memory [B,S,D] (memory_mask [B,S]) -> [B,T,D]."""
    drop = nn.Dropout(self.dropout, deterministic=self.deterministic)
    h = layer_norm(self.dtype, name="ln_self")(x)
    x = x + drop(MultiHeadAttention(self.num_heads, True, self.dtype, name="self_attn")(
        h, mask))
    h = layer_norm(self.dtype, name="ln_cross")(x)
    x = x + drop(MultiHeadAttention(self.num_heads, False, self.dtype, name="cross_attn")(
        h, memory_mask, context=memory.astype(h.dtype)))
    h = layer_norm(self.dtype, name="ln_mlp")(x)
    return x + drop(MLP(self.mlp_dim, self.dtype, name="mlp")(h))


def patchify(x: jax.Array, patch_size: int | Sequence[int]) -> jax.Array:
  """[B,H,W,C] -> [B,N,P], N = (H/ph)*(W/pw) in row-major order, P = ph*pw*C ordered
  (ph,pw,C): the token order of `PatchEmbed`, so MAE predictions line up with tokens."""
  b, h, w, c = x.shape
  ph, pw = pair(patch_size)
  x = x.reshape(b, h // ph, ph, w // pw, pw, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(b, (h // ph) * (w // pw), ph * pw * c)


class PatchEmbed(nn.Module):
  """Patch projection: [B,H,W,C] -> [B,N,D], row-major; N = (H/ph)*(W/pw) for the default
  non-overlapping patches, ((H-ph)//sh + 1) * ((W-pw)//sw + 1) with a `stride` (AST's
  overlapping spectrogram patches).

  `patch_size`: p (square p x p patches) or (ph, pw), e.g. frequency x time patches of a
  spectrogram; `stride`: s or (sh, sw), None = the patch size.
  """
  patch_size: int | tuple[int, int]
  width: int
  dtype: Dtype = jnp.float32
  stride: int | tuple[int, int] | None = None

  @nn.compact
  def __call__(self, images: jax.Array) -> jax.Array:
    p = pair(self.patch_size)
    stride = p if self.stride is None else pair(self.stride)
    x = nn.Conv(self.width, p, strides=stride, padding="VALID", dtype=self.dtype,
                kernel_init=partitioned(nn.initializers.lecun_normal(),
                                        (None, None, None, "embed")),
                bias_init=partitioned(zeros, ("embed",)), name="proj")(images)
    b, h, w, d = x.shape
    return x.reshape(b, h * w, d)


class PositionEmbedding(nn.Module):
  """A learned table of `length` positions; `__call__()` returns it, [length, D] float32,
  initialised N(0, stddev^2)."""
  length: int
  width: int
  stddev: float = 0.02

  @nn.compact
  def __call__(self) -> jax.Array:
    return self.param("embedding",
                      partitioned(nn.initializers.normal(self.stddev), (None, "embed")),
                      (self.length, self.width))


class TokenEmbed(nn.Module):
  """Token ids -> embeddings, and the tied read-out `attend` (embeddings transposed)."""
  vocab_size: int
  width: int
  dtype: Dtype = jnp.float32

  def setup(self):
    self.embedding = self.param("embedding", partitioned(EMBED_INIT, ("vocab", "embed")),
                                (self.vocab_size, self.width))

  def __call__(self, ids: jax.Array) -> jax.Array:
    """ids [B,T] int -> [B,T,D] float32 (kept float32: attacks perturb these)."""
    # Constrained at once: else the lookup inherits the table's (FSDP/TP) sharding and
    # the partitioner must re-shard it to the batch layout the blocks want.
    return constrain(jnp.take(self.embedding, ids, axis=0),
                     ("batch", "act_length", "act_embed"))

  def attend(self, x: jax.Array) -> jax.Array:
    """x [B,T,D] -> logits [B,T,V] float32, computed in the compute dtype."""
    logits = jnp.einsum("btd,vd->btv", x.astype(self.dtype),
                        self.embedding.astype(self.dtype),
                        preferred_element_type=jnp.float32)
    return constrain(logits, ("batch", "act_length", "act_vocab"))


class ProjectionHead(nn.Module):
  """SimCLR-style projection: Dense(hidden) -> ReLU -> Dense(out): [B,D] -> [B,out]."""
  hidden_dim: int
  out_dim: int
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = nn.relu(dense(self.hidden_dim, ("embed", "mlp"), self.dtype, name="fc1")(x))
    return dense(self.out_dim, ("mlp", None), self.dtype, name="fc2")(h)
