"""Single-step (FGSM, Fast-AT) and iterated (PGD, Madry et al. 2018) attack runs.

A run takes a `core.Problem` and a key and returns (best float leaves, their loss [B]);
with `need_loss=False` (one restart: nothing to compare) the loss is None, which saves a
forward pass.
"""
import jax
import jax.numpy as jnp

from mmjax.attacks.core import keep_best


def fgsm_run(prob, key, *, random_start, need_loss=True, clip_start=True):
  """x_adv = P(x + alpha * dir(grad L(x))), from the clean point or a uniform random start
  (clipped into the bounds or not: `clip_start`)."""
  x = prob.start(key, random_start, clip_start)
  _, g = prob.value_and_grad(x)
  x = prob.ascend(x, g)
  return x, prob.loss(x) if need_loss else None


def pgd_run(prob, key, *, steps, random_start, best_iterate=True, need_loss=True,
            clip_start=True):
  """`steps` projected ascent steps; returns the per-example highest-loss iterate, or the
  last iterate with `best_iterate=False` (Madry et al.'s training recipe; one forward
  pass cheaper, as the last iterate's loss is never needed)."""
  x = prob.start(key, random_start, clip_start)
  if not best_iterate:
    x = jax.lax.fori_loop(0, steps, lambda _, x: prob.ascend(x, prob.value_and_grad(x)[1]),
                          x)
    return x, prob.loss(x) if need_loss else None
  best_loss = jnp.full((prob.batch,), -jnp.inf, jnp.float32)

  def body(i, carry):
    x, best_x, best_loss = carry
    loss, g = prob.value_and_grad(x)   # the loss at x comes for free with its gradient
    if not clip_start:   # an unclipped start may lie outside the bounds: never return it
      loss = jnp.where(i == 0, -jnp.inf, loss)
    best_x, best_loss = keep_best(best_x, best_loss, x, loss)
    return prob.ascend(x, g), best_x, best_loss

  x, best_x, best_loss = jax.lax.fori_loop(0, steps, body, (x, x, best_loss))
  return keep_best(best_x, best_loss, x, prob.loss(x))
