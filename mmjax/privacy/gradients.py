"""The DP-SGD gradient (Abadi et al. 2016): per-example gradients clipped to an L2 norm,
summed, Gaussian noise of std noise_multiplier * clip_norm added once per logical batch,
divided by the expected batch size.

Per-example gradients are `jax.vmap` of `jax.grad`, in chunks of `microbatch_size`
examples to bound their memory; each is clipped by a factor folded into one contraction
over the batch, so the clipped gradients are never materialised, and padding examples
contribute exactly zero. It equals jax-privacy's `clipped_grad` (tested live) and is
faster (docs/privacy.md): jax-privacy's version makes NaN-safety passes over every
per-example gradient and accumulates through optax's micro_vmap. Only the trainable parameters are differentiated and
noised: under LoRA or a linear probe the frozen weights get neither per-example
gradients (which would cost B copies of the model) nor noise. The noise is drawn from the
step's key, replicated on every process, so under data-parallel or FSDP meshes each
device draws its shard of the same noise (jax's partitionable threefry).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp

# Folded into the step key for the noise, so it never equals a key the loss draws.
NOISE_STREAM = 0x5EC12E7


@dataclasses.dataclass(frozen=True)
class DPSettings:
  """What the private gradient needs. `expected_batch_size`: the divisor of the noised
  sum (q * N under Poisson sampling: dividing by the realised count would leak it);
  `per_layer`: clip each trainable tensor to clip_norm / sqrt(L) (L tensors), so the
  whole gradient still has norm <= clip_norm; `microbatch_size`: examples per vmapped
  chunk (None: all at once)."""
  clip_norm: float
  noise_multiplier: float
  expected_batch_size: float
  per_layer: bool = False
  microbatch_size: int | None = None


@dataclasses.dataclass
class ClippedSums:
  """Sums over one (micro)batch's real examples: `grads` the clipped per-example
  gradients of the trainable leaves (a list, like `TrainableSplit.trainable`), `loss` and
  `metrics` of the per-example values, `count` the real examples, `clipped` those whose
  gradient norm exceeded clip_norm."""
  grads: list
  loss: jax.Array
  metrics: dict
  count: jax.Array
  clipped: jax.Array

  def __add__(self, other: "ClippedSums") -> "ClippedSums":
    return jax.tree.map(jnp.add, self, other)


jax.tree_util.register_dataclass(ClippedSums, data_fields=["grads", "loss", "metrics",
                                                           "count", "clipped"],
                                 meta_fields=[])


class TrainableSplit:
  """The parameter leaves that train (`trainable`, a list) and a way back to the full
  tree with the frozen leaves as they are (`params_with`) or as zeros (`grads_with`)."""

  def __init__(self, params: Any, mask: Any | None):
    self.leaves, self.treedef = jax.tree.flatten(params)
    flags = [True] * len(self.leaves) if mask is None else jax.tree.leaves(mask)
    self.index = [i for i, f in enumerate(flags) if f]
    self.trainable = [self.leaves[i] for i in self.index]

  def params_with(self, trainable: list) -> Any:
    leaves = list(self.leaves)
    for i, leaf in zip(self.index, trainable):
      leaves[i] = leaf
    return self.treedef.unflatten(leaves)

  def grads_with(self, trainable_grads: list) -> Any:
    leaves = [jnp.zeros_like(leaf) for leaf in self.leaves]
    for i, grad in zip(self.index, trainable_grads):
      leaves[i] = grad
    return self.treedef.unflatten(leaves)


def clip_factors(norms: jax.Array, clip_norm: float) -> jax.Array:
  """min(1, clip_norm / norm) per example ([B] -> [B]); 1 for a zero gradient."""
  return jnp.minimum(1.0, clip_norm / jnp.maximum(norms, 1e-30))


def _clipped_sum(per_example: list, mask: jax.Array, settings: DPSettings
                 ) -> tuple[list, jax.Array]:
  """(Σ_i mask_i · clip(g_i), [B] norms before clipping) of per-example gradients
  `per_example` (a list of [B, ...] arrays). With `per_layer` each tensor of g_i is
  clipped to clip_norm / sqrt(L) on its own; the norms are then the whole g_i's."""
  b = mask.shape[0]
  squares = [jnp.sum(jnp.square(g.reshape(b, -1).astype(jnp.float32)), axis=1)
             for g in per_example]
  norms = jnp.sqrt(sum(squares))
  if settings.per_layer:
    bound = settings.clip_norm / len(per_example) ** 0.5
    factors = [clip_factors(jnp.sqrt(sq), bound) * mask for sq in squares]
  else:
    factors = [clip_factors(norms, settings.clip_norm) * mask] * len(per_example)
  # One contraction over the batch per tensor: the clipped per-example gradients are
  # never formed.
  sums = [jnp.tensordot(f.astype(g.dtype), g, axes=1) for f, g in zip(factors, per_example)]
  return sums, norms


def clipped_sums_fn(loss_fn, settings: DPSettings
                    ) -> Callable[..., ClippedSums]:
  """fn(split, model_state, batch, rng) -> ClippedSums of `batch` [B, ...] (its 'mask',
  when present, marks the real examples).

  `loss_fn(params, batch, rng, *, model_state, train)` is mmjax's loss contract; each
  example's loss is the loss of a batch of that one example, with its own key (the
  batch key folded with the example's index). Per-example gradients are `jax.vmap`
  of `jax.grad`, over chunks of `microbatch_size` examples scanned in sequence.
  """
  def sums(split: TrainableSplit, model_state, batch: dict, rng) -> ClippedSums:
    def example_grad(trainable, example, index):
      def example_loss(trainable):
        # The frozen leaves enter by closure, unmapped; only `trainable` is
        # differentiated.
        params = split.params_with(trainable)
        one = jax.tree.map(lambda x: x[None], example)
        loss, (metrics, _) = loss_fn(params, one, jax.random.fold_in(rng, index),
                                     model_state=model_state, train=True)
        return loss, metrics
      (loss, metrics), grads = jax.value_and_grad(example_loss, has_aux=True)(trainable)
      return grads, loss, metrics

    def chunk_sums(chunk: dict, mask: jax.Array, index: jax.Array) -> ClippedSums:
      grads, losses, metrics = jax.vmap(example_grad, (None, 0, 0))(
          split.trainable, chunk, index)
      summed, norms = _clipped_sum(grads, mask, settings)
      weigh = lambda v: jnp.sum(v.astype(jnp.float32) * mask)
      return ClippedSums(grads=summed, loss=weigh(losses),
                         metrics=jax.tree.map(weigh, metrics), count=jnp.sum(mask),
                         clipped=weigh(norms > settings.clip_norm))

    batch = dict(batch)
    size = jax.tree.leaves(batch)[0].shape[0]
    mask = batch.pop("mask", jnp.ones((size,), jnp.float32)).astype(jnp.float32)
    index = jnp.arange(size)
    chunk = settings.microbatch_size or size
    if chunk >= size:
      return chunk_sums(batch, mask, index)
    split_chunks = lambda x: x.reshape((size // chunk, chunk) + x.shape[1:])
    chunks = jax.tree.map(split_chunks, (batch, mask, index))
    first = jax.tree.map(lambda x: x[0], chunks)
    zero = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype),
                        jax.eval_shape(lambda c: chunk_sums(*c), first))
    total, _ = jax.lax.scan(lambda acc, c: (acc + chunk_sums(*c), None), zero, chunks)
    return total

  return sums


def privatize(grad_sums: list, key: jax.Array, settings: DPSettings) -> list:
  """(Σ clipped gradients + N(0, (noise_multiplier * clip_norm)²)) / expected batch size,
  per trainable tensor, with independent noise per tensor from `key`."""
  # No noise is no noise, also with an unbounded clip norm (0 * inf would be NaN).
  std = settings.noise_multiplier * settings.clip_norm if settings.noise_multiplier else 0.0
  keys = jax.random.split(key, len(grad_sums))
  return [(g + std * jax.random.normal(k, g.shape, jnp.float32).astype(g.dtype))
          / settings.expected_batch_size for g, k in zip(grad_sums, keys)]


def noise_key(step_rng: jax.Array) -> jax.Array:
  """The step's noise key: the same on every process (the step key is replicated)."""
  return jax.random.fold_in(step_rng, NOISE_STREAM)
