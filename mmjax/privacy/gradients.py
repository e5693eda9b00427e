"""The DP-SGD gradient (Abadi et al. 2016): per-example gradients clipped to an L2 norm,
summed, Gaussian noise of std noise_multiplier * clip_norm added once per logical batch,
divided by the expected batch size.

Per-example clipping is jax-privacy's `clipped_grad` (vmapped per example, chunked by
`microbatch_size` to bound the memory of per-example gradients, padding examples
contributing exactly zero). Only the trainable parameters are differentiated and
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


def _per_layer_clip(clip_norm: float) -> Callable[[list], list]:
  """Clips each tensor of a per-example gradient list to clip_norm / sqrt(len)."""
  def transform(grads: list) -> list:
    bound = clip_norm / len(grads) ** 0.5
    def clip(g):
      norm = jnp.sqrt(jnp.sum(jnp.square(g.astype(jnp.float32))))
      return g * jnp.minimum(1.0, bound / jnp.maximum(norm, 1e-30)).astype(g.dtype)
    return [clip(g) for g in grads]
  return transform


def clipped_sums_fn(loss_fn, settings: DPSettings
                    ) -> Callable[..., ClippedSums]:
  """fn(split, model_state, batch, rng) -> ClippedSums of `batch` [B, ...] (its 'mask',
  when present, marks the real examples).

  `loss_fn(params, batch, rng, *, model_state, train)` is mmjax's loss contract; each
  example's loss is the loss of a batch of that one example, with its own key.
  """
  from jax_privacy import clipping   # the optional privacy extra

  pre_clipping = _per_layer_clip(settings.clip_norm) if settings.per_layer else None

  def sums(split: TrainableSplit, model_state, batch: dict, rng) -> ClippedSums:
    def example_loss(trainable, example, rng):
      # The frozen leaves enter by closure, unmapped; only `trainable` is differentiated.
      params = split.params_with(trainable)
      loss, (metrics, _) = loss_fn(params, example, rng, model_state=model_state,
                                   train=True)
      return loss, (loss, metrics)

    grad_fn = clipping.clipped_grad(
        example_loss, argnums=0, has_aux=True, l2_clip_norm=settings.clip_norm,
        batch_argnums=1, prng_argnum=2, return_grad_norms=True,
        microbatch_size=settings.microbatch_size,
        **({"pre_clipping_transform": pre_clipping} if pre_clipping else {}))
    batch = dict(batch)
    size = jax.tree.leaves(batch)[0].shape[0]
    mask = batch.pop("mask", jnp.ones((size,), jnp.float32)).astype(jnp.float32)
    grads, aux = grad_fn(split.trainable, batch, rng, is_padding_example=mask == 0)
    losses, metrics = aux.aux
    weigh = lambda v: jnp.sum(v.astype(jnp.float32) * mask)
    return ClippedSums(grads=grads, loss=weigh(losses),
                       metrics=jax.tree.map(weigh, metrics), count=jnp.sum(mask),
                       clipped=weigh(aux.grad_norms > settings.clip_norm))

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
