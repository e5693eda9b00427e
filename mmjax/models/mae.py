"""Masked-autoencoder pieces shared by models (He et al. 2021): random patch masking and
a light decoder that predicts every patch from the visible ones."""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError
from mmjax.models import layers
from mmjax.models.transformer import Encoder


def num_visible(num_patches: int, mask_ratio: float) -> int:
  """Patches each example keeps: int(N * (1 - mask_ratio)), which must be in [1, N]."""
  keep = int(num_patches * (1 - mask_ratio))
  if not 1 <= keep <= num_patches:
    raise ConfigError(f"mask_ratio={mask_ratio} keeps {keep} of {num_patches} patches; "
                      "it must keep at least one.")
  return keep


def random_patch_order(rng: jax.Array, batch: int, num_patches: int
                       ) -> tuple[jax.Array, jax.Array]:
  """A uniform random permutation per example: (shuffle [B,N], restore [B,N]).

  shuffle[b, :keep] are the visible patches; restore[b, i] is patch i's rank in the
  shuffle, so a patch is hidden where restore >= keep.
  """
  noise = jax.random.uniform(rng, (batch, num_patches))
  shuffle = jnp.argsort(noise, axis=1)
  return shuffle, jnp.argsort(shuffle, axis=1)


class MAEDecoder(nn.Module):
  """Encoded visible tokens [B,K,D] + restore [B,N] -> per-patch predictions [B,N,P].

  Projects to the decoder width, appends a learned mask token for each hidden patch,
  unshuffles, adds decoder positions and runs `depth` transformer blocks.
  """
  num_patches: int
  width: int
  depth: int
  num_heads: int
  patch_dim: int
  dtype: layers.Dtype = jnp.float32

  @nn.compact
  def __call__(self, visible: jax.Array, restore: jax.Array, *, train: bool = False
               ) -> jax.Array:
    b, k, _ = visible.shape
    n = self.num_patches
    d = layers.dense(self.width, ("embed", None), self.dtype, name="embed")(visible)
    mask_token = self.param("mask_token", layers.partitioned(
        nn.initializers.normal(0.02), (None, None, "embed")), (1, 1, self.width))
    hidden = jnp.broadcast_to(mask_token.astype(d.dtype), (b, n - k, self.width))
    d = jnp.take_along_axis(jnp.concatenate([d, hidden], axis=1), restore[..., None],
                            axis=1)
    d = d + layers.PositionEmbedding(n, self.width, name="pos")().astype(d.dtype)
    d = Encoder(self.depth, self.num_heads, 4 * self.width, 0.0, dtype=self.dtype,
                name="blocks")(d, train=train)
    pred = layers.dense(self.patch_dim, ("embed", None), self.dtype, name="pred")(d)
    return pred.astype(jnp.float32)
