"""The attention kernel: `jax.nn.dot_product_attention` with its implementation chosen.

`jax.nn.dot_product_attention(implementation=None)` runs the XLA implementation on every
backend (jax 0.10/0.11: "defaults to XLA for now"), so cuDNN's fused flash attention is
used only when asked for by name. `config.model.attention` chooses:

  'auto'   cuDNN where it applies (a CUDA GPU, bfloat16/float16 compute, head width a
           multiple of 8 and at most 128), else XLA; if jax refuses the cuDNN call for
           these inputs, XLA, with a warning. The default.
  'cudnn'  cuDNN or a ConfigError saying why not (to make sure a benchmark measures it).
  'xla'    XLA everywhere (the reference; what CPUs and TPUs run under 'auto' too).

cuDNN takes the padding mask as an additive bias of shape [B, 1, T, S], so a key mask
[B, 1, 1, S] is broadcast over the queries first. On CPUs, 'xla' runs `cpu_attention`:
XLA's arithmetic with heads in front of positions, and causal self-attention in query
chunks, which skips most of the masked scores.
"""
from __future__ import annotations

import functools

import jax
import jax.extend as jax_extend
import jax.numpy as jnp
from absl import logging

from mmjax.errors import ConfigError

CHOICES = ("auto", "cudnn", "xla")
CUDNN_DTYPES = (jnp.bfloat16, jnp.float16)
CUDNN_MAX_HEAD_DIM = 128


@functools.cache
def cuda_available() -> bool:
  """Whether the default backend is a CUDA GPU (ROCm GPUs have no cuDNN)."""
  if jax.default_backend() != "gpu":
    return False
  return "cuda" in jax_extend.backend.get_backend().platform_version.lower()


def cudnn_unsupported(dtype, head_dim: int) -> str | None:
  """Why cuDNN flash attention cannot run here for this dtype and head width, or None."""
  if not cuda_available():
    return f"the default backend is {jax.default_backend()!r}, not a CUDA GPU"
  if jnp.dtype(dtype) not in map(jnp.dtype, CUDNN_DTYPES):
    return (f"it needs bfloat16 or float16 compute, not {jnp.dtype(dtype).name} "
            "(set config.model.dtype='bfloat16')")
  if head_dim % 8 or head_dim > CUDNN_MAX_HEAD_DIM:
    return (f"it needs a head width that is a multiple of 8 and at most "
            f"{CUDNN_MAX_HEAD_DIM}, not {head_dim}")
  return None


def implementation(choice: str, dtype, head_dim: int) -> str:
  """'cudnn' or 'xla' for config.model.attention=`choice` (ConfigError if impossible)."""
  if choice not in CHOICES:
    raise ConfigError(f"Invalid value {choice!r} for config.model.attention. Choose one "
                      f"of: {', '.join(map(repr, CHOICES))}.")
  if choice == "xla":
    return "xla"
  why_not = cudnn_unsupported(dtype, head_dim)
  if choice == "cudnn" and why_not:
    raise ConfigError(f"config.model.attention='cudnn' cannot run: {why_not}. Use 'auto' "
                      "(cuDNN where it applies, XLA elsewhere) or 'xla'.")
  return "xla" if why_not else "cudnn"


def attend(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *,
           causal: bool, choice: str = "auto") -> jax.Array:
  """q [B,T,N,H], k and v [B,S,N,H], mask broadcastable to [B,N,T,S] (True = may attend)
  or None -> [B,T,N,H], through the implementation `choice` selects."""
  impl = implementation(choice, q.dtype, q.shape[-1])
  if impl == "xla":
    if jax.default_backend() == "cpu":
      return cpu_attention(q, k, v, mask, causal=causal)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                        implementation="xla")
  if mask is not None:
    b, t, _, _ = q.shape
    mask = jnp.broadcast_to(mask, (b, mask.shape[1], t, k.shape[1]))
  try:
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                        implementation="cudnn")
  except (ValueError, NotImplementedError, RuntimeError) as e:
    if choice == "cudnn":
      raise ConfigError(f"config.model.attention='cudnn' was refused for q {q.shape}, "
                        f"k {k.shape}, mask {None if mask is None else mask.shape}: {e}. "
                        "Use 'auto' to fall back to XLA.") from None
    logging.warning("cuDNN attention refused q %s k %s (%s); using XLA's.", q.shape,
                    k.shape, e)
    return jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=causal,
                                        implementation="xla")


# On the CPU, XLA's attention runs in mmjax's own kernel (`cpu_attention`): heads moved in
# front of positions ([B,N,T,H], so that every score matmul is a plain batched GEMM) and
# causal self-attention in query chunks from CAUSAL_CHUNK_MIN_LENGTH positions (chunks
# skip the masked half of the scores). The chunk sizes and the gains per model are
# measurements: docs/benchmarks.md, "CPU attention with heads first".
CAUSAL_CHUNK_MIN_LENGTH = 128
CAUSAL_CHUNKS = 4


def causal_chunks(t: int, s: int) -> int:
  """How many query chunks `cpu_attention` splits causal self-attention of length `t`
  (= `s`) into: CAUSAL_CHUNKS from CAUSAL_CHUNK_MIN_LENGTH positions when they divide
  `t`, else 1. Other backends never get here (`attend`): the saving is measured only on
  CPUs."""
  if t != s or t < CAUSAL_CHUNK_MIN_LENGTH or t % CAUSAL_CHUNKS:
    return 1
  return CAUSAL_CHUNKS


def _attend_heads_first(q: jax.Array, k: jax.Array, v: jax.Array,
                        allowed: jax.Array | None) -> jax.Array:
  """Softmax attention of q [B,N,T,H] over k, v [B,N,S,H] -> [B,N,T,H], `allowed`
  broadcastable to [B,N,T,S] or None: jax.nn.dot_product_attention's arithmetic (logits
  in at least float32, scaled by 1/sqrt(H), masked with -0.7 x the float32 maximum,
  softmax in float32, probabilities in v's dtype) in the heads-first layout."""
  logits_dtype = jnp.promote_types(q.dtype, jnp.float32)
  logits = jnp.einsum("bnth,bnsh->bnts", q, k, preferred_element_type=logits_dtype)
  logits = logits * jnp.asarray(q.shape[-1] ** -0.5, logits_dtype)
  if allowed is not None:
    large_negative = -0.7 * float(jnp.finfo(jnp.float32).max)
    logits = jnp.where(allowed, logits, jnp.asarray(large_negative, logits_dtype))
  probs = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)
  return jnp.einsum("bnts,bnsh->bnth", probs, v)


def cpu_attention(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None, *,
                  causal: bool) -> jax.Array:
  """q [B,T,N,H], k and v [B,S,N,H], mask broadcastable to [B,N,T,S] (True = may attend)
  or None -> [B,T,N,H], equal to `dot_product_attention(..., is_causal=causal,
  implementation='xla')` (its causal mask is top-left aligned: query i sees keys 0..i).
  Causal self-attention splits into `causal_chunks` query chunks, each attending only to
  the keys up to its own end, so the scores right of the diagonal that the whole matrix
  would compute and mask away are skipped (10/16 of the score FLOPs in 4 chunks)."""
  t, s = q.shape[1], k.shape[1]
  q, k, v = (x.transpose(0, 2, 1, 3) for x in (q, k, v))
  chunks = causal_chunks(t, s) if causal else 1
  size = t // chunks
  out = []
  for i in range(chunks):
    lo, hi = i * size, (i + 1) * size
    keys = hi if chunks > 1 else s   # a chunk sees no key right of its last query
    allowed = jnp.tril(jnp.ones((size, keys), bool), k=lo)[None, None] if causal else None
    if mask is not None:
      rows = mask[..., lo:hi, :] if mask.shape[-2] != 1 else mask
      rows = rows[..., :keys] if rows.shape[-1] != 1 else rows
      allowed = rows if allowed is None else allowed & rows
    out.append(_attend_heads_first(q[:, :, lo:hi], k[:, :, :keys], v[:, :, :keys], allowed))
  return jnp.concatenate(out, axis=2).transpose(0, 2, 1, 3)


def probabilities(q: jax.Array, k: jax.Array, mask: jax.Array | None, *,
                  causal: bool) -> jax.Array:
  """The attention probabilities that `attend` applies to v: q [B,T,N,H], k [B,S,N,H],
  mask broadcastable to [B,N,T,S] (True = may attend) or None -> [B,N,T,S] float32, each
  row summing to 1 over the allowed keys. The fused kernels never materialise them;
  explanations (attention rollout, caption grounding) recompute them with this."""
  t, s = q.shape[1], k.shape[1]
  logits = jnp.einsum("btnh,bsnh->bnts", q.astype(jnp.float32), k.astype(jnp.float32))
  logits = logits * q.shape[-1] ** -0.5
  allowed = jnp.ones((1, 1, t, s), bool)
  if causal:
    allowed = allowed & jnp.tril(jnp.ones((t, s), bool))[None, None]
  if mask is not None:
    allowed = allowed & mask
  large_negative = -0.7 * float(jnp.finfo(jnp.float32).max)
  return jax.nn.softmax(jnp.where(allowed, logits, large_negative), axis=-1)
