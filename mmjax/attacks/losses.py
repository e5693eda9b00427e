"""Per-example attack losses over logits [B,K]. Every helper is a loss an attack MAXIMISES.

`dlr_loss` / `targeted_dlr_loss` are the shift- and scale-invariant Difference of Logits
Ratio losses of Croce & Hein (2020), which, unlike cross-entropy, do not saturate when the
softmax is confident.
"""
import jax
import jax.numpy as jnp

from mmjax.errors import ConfigError

_TINY = 1e-12


def _num_classes(logits, minimum, name):
  k = logits.shape[-1]
  if k < minimum:
    raise ConfigError(f"{name} needs at least {minimum} classes, got logits with {k}; use "
                      "`margin` (or `cross_entropy`) for fewer classes.")
  return k


def _true_logit(logits, labels):
  return jnp.take_along_axis(logits, labels[:, None].astype(jnp.int32), axis=-1)[:, 0]


def _max_other(logits, labels):
  """max_{j != y} z_j, [B]."""
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  return jnp.max(jnp.where(onehot, -jnp.inf, logits), axis=-1)


def cross_entropy(logits, labels):
  """Softmax cross-entropy per example. logits [B,K] float, labels [B] int -> [B]."""
  logits = logits.astype(jnp.float32)
  return -_true_logit(jax.nn.log_softmax(logits, axis=-1), labels)


def margin(logits, labels):
  """Margin (Carlini-Wagner) loss: max_{j!=y} z_j - z_y. [B,K], [B] -> [B].

  Positive iff the example is misclassified; maximising it attacks the true class.
  (The classification margin is its negative.)
  """
  logits = logits.astype(jnp.float32)
  return _max_other(logits, labels) - _true_logit(logits, labels)


def dlr_loss(logits, labels):
  """Untargeted DLR: -(z_y - max_{j!=y} z_j) / (z_pi1 - z_pi3 + 1e-12). [B,K], [B] -> [B].

  pi sorts the logits in decreasing order. Needs K >= 3.
  """
  _num_classes(logits, 3, "dlr_loss")
  logits = logits.astype(jnp.float32)
  top = jax.lax.top_k(logits, 3)[0]
  return margin(logits, labels) / (top[:, 0] - top[:, 2] + _TINY)


def targeted_dlr_loss(logits, labels, targets):
  """Targeted DLR: -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2 + 1e-12). -> [B]. Needs K >= 4.

  logits [B,K], labels [B] (true class), targets [B] (target class).
  """
  _num_classes(logits, 4, "targeted_dlr_loss")
  logits = logits.astype(jnp.float32)
  top = jax.lax.top_k(logits, 4)[0]
  num = _true_logit(logits, targets) - _true_logit(logits, labels)
  return num / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _TINY)


def top_other_classes(logits, labels, n):
  """The n highest-scoring classes other than the true one, best first. -> [B,n] int32."""
  onehot = jax.nn.one_hot(labels, logits.shape[-1], dtype=bool)
  return jax.lax.top_k(jnp.where(onehot, -jnp.inf, logits), n)[1].astype(jnp.int32)
