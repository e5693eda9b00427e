"""A stack of pre-LN transformer blocks with optional layer scan and rematerialisation."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.models import layers

# remat name -> jax checkpoint policy (what is *saved* for the backward pass).
_POLICIES = {
    "full": None,  # save nothing inside a block; recompute it all
    "dots": jax.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


class Encoder(nn.Module):
  """`depth` TransformerBlocks followed by a final LayerNorm (pre-LN; a post-LN stack,
  BERT's, ends with its last block's LayerNorm and has none of its own).

  scan_layers=True runs the blocks with `nn.scan`: parameters are stacked on a leading
  'layers' axis (one compiled block instead of `depth`, so compile time stays flat in
  depth). scan_layers=False names the blocks block_0..block_{depth-1}. Both layouts hold
  the same parameters. remat: 'none' | 'full' | 'dots' | 'dots_no_batch'.
  norm_position, layer_norm_eps, activation and tuning go to every block.
  """
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  causal: bool = False
  scan_layers: bool = False
  remat: str = "none"
  dtype: layers.Dtype = jnp.float32
  norm_position: str = "pre"
  layer_norm_eps: float = 1e-6
  activation: str = "gelu_tanh"
  tuning: layers.Tuning = layers.Tuning()

  @nn.compact
  def __call__(self, x: jax.Array, mask: jax.Array | None = None, *,
               train: bool = False) -> jax.Array:
    """x [B,T,D], mask [B,T] (1 = real token) or None -> [B,T,D] (after final LN)."""
    layers.check_choice(self.remat, layers.REMAT_POLICIES, "remat")
    block_cls = layers.TransformerBlock
    if self.remat != "none":
      # prevent_cse is only needed outside scan (scan already blocks CSE across layers).
      block_cls = nn.remat(block_cls, policy=_POLICIES[self.remat],
                           prevent_cse=not self.scan_layers)
    kwargs = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim, dropout=self.dropout,
                  causal=self.causal, deterministic=not train, dtype=self.dtype,
                  norm_position=self.norm_position, layer_norm_eps=self.layer_norm_eps,
                  activation=self.activation, tuning=self.tuning)
    if self.scan_layers:
      stack = nn.scan(block_cls,
                      # Sown attention probabilities stack on the layer axis too.
                      variable_axes={"params": 0, "intermediates": 0},
                      split_rngs={"params": True, "dropout": True},
                      in_axes=nn.broadcast,  # the same mask for every layer
                      length=self.depth,
                      metadata_params={nn.PARTITION_NAME: "layers"})
      x, _ = stack(**kwargs, name="blocks")(x, mask)
    else:
      for i in range(self.depth):
        x, _ = block_cls(**kwargs, name=f"block_{i}")(x, mask)
    if self.norm_position == "post":
      return x
    return layers.layer_norm(self.dtype, "ln_final", self.layer_norm_eps)(x)


class Decoder(nn.Module):
  """`depth` DecoderBlocks (causal self-attention + cross-attention to a memory),
  then a final LayerNorm: a text decoder for captioning."""
  depth: int
  num_heads: int
  mlp_dim: int
  dropout: float = 0.0
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, memory: jax.Array, memory_mask: jax.Array | None = None,
               mask: jax.Array | None = None, *, train: bool = False) -> jax.Array:
    """x [B,T,D] (mask [B,T] or [B,T,T]), memory [B,S,D] (memory_mask [B,S]) ->
    [B,T,D]."""
    for i in range(self.depth):
      x = layers.DecoderBlock(self.num_heads, self.mlp_dim, self.dropout,
                              deterministic=not train, dtype=self.dtype,
                              name=f"block_{i}")(x, memory, memory_mask, mask)
    return layers.layer_norm(self.dtype, name="ln_final")(x)
