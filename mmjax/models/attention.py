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
[B, 1, 1, S] is broadcast over the queries first. On CPUs, XLA's causal self-attention
runs in query chunks (`causal_in_chunks`), which skips most of the masked scores.
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
    chunks = causal_chunks(q.shape[1], k.shape[1]) if causal else 1
    if chunks > 1:
      return causal_in_chunks(q, k, v, mask, chunks)
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


# Causal self-attention on the CPU in query chunks (`causal_in_chunks`): from this many
# positions, in this many chunks. Measured on 2 cores (jax 0.10.2, docs/benchmarks.md):
# one layer of GPT-2 shape ([4, 256, 12, 64]) forward + backward 67 ms whole, 57 ms in 2
# chunks, 48 ms in 4, 51 ms in 8; PyTorch's fused causal kernel takes 38 ms.
CAUSAL_CHUNK_MIN_LENGTH = 128
CAUSAL_CHUNKS = 4


def causal_chunks(t: int, s: int) -> int:
  """How many query chunks `attend` splits causal self-attention of length `t` (= `s`)
  into: CAUSAL_CHUNKS on the CPU from CAUSAL_CHUNK_MIN_LENGTH positions when they divide
  `t`, else 1. Other backends are left whole: the saving is measured only on CPUs."""
  if (jax.default_backend() != "cpu" or t != s or t < CAUSAL_CHUNK_MIN_LENGTH
      or t % CAUSAL_CHUNKS):
    return 1
  return CAUSAL_CHUNKS


def causal_in_chunks(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
                     chunks: int) -> jax.Array:
  """Causal self-attention, q/k/v [B,T,N,H] -> [B,T,N,H], equal to
  `dot_product_attention(..., is_causal=True)`: query chunk i of `chunks` attends only to
  the keys up to its own end, so the scores right of the diagonal that the whole-matrix
  kernel computes and masks away are skipped (10/16 of the score FLOPs in 4 chunks).
  `mask` broadcastable to [B,N,T,T] (True = may attend) or None."""
  t = q.shape[1]
  size = t // chunks
  out = []
  for i in range(chunks):
    lo, hi = i * size, (i + 1) * size
    # Query lo + a may see keys 0 .. lo + a.
    allowed = jnp.tril(jnp.ones((size, hi), bool), k=lo)[None, None]
    if mask is not None:
      rows = mask[..., lo:hi, :] if mask.shape[-2] != 1 else mask
      allowed = allowed & (rows[..., :hi] if rows.shape[-1] != 1 else rows)
    out.append(jax.nn.dot_product_attention(q[:, lo:hi], k[:, :hi], v[:, :hi],
                                            mask=allowed, implementation="xla"))
  return jnp.concatenate(out, axis=1)
