"""Pure loss math, independent of models and configs.

Every function here works on plain arrays; per-example functions return one value per
example so that callers can weight padding out with `weighted_mean`. All reductions are
done in float32, whatever the dtype of the inputs (bf16 logits lose too much in a
log-sum-exp over a large vocabulary).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

# A finite stand-in for -inf on masked logits: exp() of it is exactly 0 in float32, and
# unlike -inf it never produces NaN gradients (0 * inf) in the softmax backward pass.
NEG_INF = -1e9


def weighted_mean(values: jax.Array, weights: jax.Array | None = None) -> jax.Array:
  """Σ w·v / Σ w over all elements, as a float32 scalar (0 when Σ w = 0).

  Args:
    values: any shape.
    weights: broadcastable to `values` (e.g. [B] example mask against [B] losses), or
      None for a plain mean. Entries with weight 0 are ignored even if NaN or inf.
  """
  values = jnp.asarray(values, jnp.float32)
  if weights is None:
    return jnp.mean(values)
  weights = jnp.broadcast_to(jnp.asarray(weights, jnp.float32), values.shape)
  total = jnp.sum(weights)
  # Padding may hold garbage (NaN/inf losses, e.g. out-of-range labels): select rather
  # than multiply, since 0 * NaN = NaN.
  values = jnp.where(weights > 0, values, 0.0)
  # Guard the all-padding batch (e.g. a final eval batch): 0, not NaN.
  return jnp.sum(values * weights) / jnp.where(total > 0, total, 1.0)


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array, *,
                          label_smoothing: float = 0.0) -> jax.Array:
  """Cross-entropy of integer labels under softmax(logits).

  Args:
    logits: [..., K].
    labels: [...] int class ids in [0, K).
    label_smoothing: α; the target is (1-α)·onehot + α/K (Szegedy et al. 2016).
  Returns:
    [...] float32 per-element loss.
  """
  logits = jnp.asarray(logits, jnp.float32)
  if not label_smoothing:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]), label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def top1_correct(logits: jax.Array, labels: jax.Array) -> jax.Array:
  """logits [..., K], labels [...] int -> [...] float32: 1 where the label's logit is the
  row's maximum, else 0 (also 0 for a constant row, i.e. a collapsed model, and for
  labels outside [0, K)).

  This equals argmax(logits) == labels except for exact ties at the maximum. It uses two
  plain reductions, and the max is shared with the softmax's. argmax's variadic reduction
  is 4x slower on CPU, where over a 50,257-word vocabulary it cost 2% of a GPT-2 step.
  """
  k = logits.shape[-1]
  labels = jnp.asarray(labels, jnp.int32)
  valid = (labels >= 0) & (labels < k)
  label_logit = jnp.take_along_axis(logits, jnp.clip(labels, 0, k - 1)[..., None],
                                    axis=-1)[..., 0]
  correct = (label_logit >= logits.max(axis=-1)) & (label_logit > logits.min(axis=-1))
  return (correct & valid).astype(jnp.float32)


def soft_target_kl(teacher_logits: jax.Array, student_logits: jax.Array,
                   temperature: float = 1.0) -> jax.Array:
  """KL(softmax(t/T) ‖ softmax(s/T)) per example: [..., K], [..., K] -> [...] float32.

  The soft-target term of knowledge distillation (Hinton et al. 2015), before its T²
  factor; with T = 1 the divergence ARD's attack maximises (Goldblum et al. 2020).
  """
  log_p = jax.nn.log_softmax(jnp.asarray(teacher_logits, jnp.float32) / temperature)
  log_q = jax.nn.log_softmax(jnp.asarray(student_logits, jnp.float32) / temperature)
  return jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1)


def next_token_targets(lm_logits: jax.Array, tokens: jax.Array,
                       text_mask: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Aligns causal-LM logits with the tokens they predict.

  Position t predicts token t+1, so the last logit and the first token have no partner.

  Args:
    lm_logits: [B, T, V].
    tokens: [B, T] int.
    text_mask: [B, T], 1 for real tokens.
  Returns:
    (logits [B, T-1, V], targets [B, T-1], weights [B, T-1] float32); a prediction counts
    when its *target* is a real token.
  """
  return (lm_logits[:, :-1], tokens[:, 1:],
          jnp.asarray(text_mask[:, 1:], jnp.float32))


def next_token_loss(lm_logits: jax.Array, tokens: jax.Array, text_mask: jax.Array,
                    example_weights: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Causal LM cross-entropy: lm_logits [B,T,V], tokens [B,T], text_mask [B,T] and
  example_weights [B] -> (mean NLL per real target token, {'loss', 'perplexity',
  'token_accuracy'})."""
  logits, targets, weights = next_token_targets(lm_logits, tokens, text_mask)
  weights = weights * jnp.asarray(example_weights, jnp.float32)[:, None]
  loss = weighted_mean(softmax_cross_entropy(logits, targets), weights)
  return loss, {"loss": loss, "perplexity": jnp.exp(loss),
                "token_accuracy": weighted_mean(top1_correct(logits, targets), weights)}


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / max(‖x‖₂, eps) along `axis` (float32)."""
  x = jnp.asarray(x, jnp.float32)
  norm = jnp.sqrt(jnp.sum(x * x, axis=axis, keepdims=True))
  return x / jnp.maximum(norm, eps)


def contrastive_logits(z1: jax.Array, z2: jax.Array, temperature: float,
                       mask: jax.Array | None = None) -> tuple[jax.Array, jax.Array]:
  """The 2N×2N similarity logits of NT-Xent and the index of each row's positive.

  Rows/columns 0..B-1 are view 1, B..2B-1 view 2; the positive of i is i±B. Self
  similarities, and columns of padded examples (mask = 0), are excluded from the softmax.

  Args:
    z1, z2: [B, D] representations of the two views (normalised here: cosine similarity).
    temperature: τ > 0.
    mask: optional [B], 1 for real examples.
  Returns:
    (logits [2B, 2B] float32, positives [2B] int32).
  """
  b = z1.shape[0]
  z = l2_normalize(jnp.concatenate([z1, z2], axis=0))
  logits = (z @ z.T) / temperature
  exclude = jnp.eye(2 * b, dtype=bool)
  if mask is not None:
    padded = jnp.tile(jnp.asarray(mask) <= 0, 2)
    exclude = exclude | padded[None, :]
  logits = jnp.where(exclude, NEG_INF, logits)
  positives = jnp.concatenate([jnp.arange(b, 2 * b), jnp.arange(b)]).astype(jnp.int32)
  return logits, positives


def nt_xent(z1: jax.Array, z2: jax.Array, temperature: float,
            mask: jax.Array | None = None) -> jax.Array:
  """NT-Xent (SimCLR, Chen et al. 2020), per example, averaged over both directions.

  ℓ(i, j) = -log exp(s_ij/τ) / Σ_{k≠i} exp(s_ik/τ) over the 2B views, s = cosine
  similarity; example i's loss is (ℓ(i, i+B) + ℓ(i+B, i)) / 2.

  Args:
    z1, z2: [B, D] representations of two views of the same B examples.
    temperature: τ.
    mask: optional [B]; padded examples (0) are not used as negatives.
  Returns:
    [B] float32 per-example loss.
  """
  logits, positives = contrastive_logits(z1, z2, temperature, mask)
  per_view = softmax_cross_entropy(logits, positives)
  b = z1.shape[0]
  return 0.5 * (per_view[:b] + per_view[b:])


def mae_patch_loss(pred: jax.Array, target: jax.Array, mask: jax.Array, *,
                   norm_pix: bool = True, eps: float = 1e-6) -> jax.Array:
  """MAE reconstruction loss (He et al. 2021): per-patch pixel MSE, mean over hidden patches.

  With `norm_pix`, each target patch is standardised by its own mean and variance,
  (t - mean) / sqrt(var + eps), with the unbiased variance as in the reference code
  (`torch.var`).

  Args:
    pred: [B, N, P] predicted pixels per patch.
    target: [B, N, P] true pixels per patch.
    mask: [B, N], 1 for hidden (reconstructed) patches.
  Returns:
    [B] float32: per example, the mean over its hidden patches of the per-patch MSE
    (0 for an example with no hidden patch).
  """
  pred = jnp.asarray(pred, jnp.float32)
  target = jnp.asarray(target, jnp.float32)
  if norm_pix:
    mean = jnp.mean(target, axis=-1, keepdims=True)
    var = jnp.var(target, axis=-1, keepdims=True, ddof=1)
    target = (target - mean) / jnp.sqrt(var + eps)
  per_patch = jnp.mean(jnp.square(pred - target), axis=-1)  # [B, N]
  mask = jnp.asarray(mask, jnp.float32)
  hidden = jnp.sum(mask, axis=-1)
  return jnp.sum(per_patch * mask, axis=-1) / jnp.where(hidden > 0, hidden, 1.0)
