"""Single-step (FGSM, Fast-AT) and iterated (PGD, Madry et al. 2018) attack runs.

A run takes a `core.Problem` and a key and returns (best float leaves, their loss [B]).
"""
import jax
import jax.numpy as jnp

from mmjax.attacks.core import keep_best


def fgsm_run(prob, key, *, random_start):
  """x_adv = P(x + alpha * dir(grad L(x))), from the clean point or a uniform random start."""
  x = prob.start(key, random_start)
  _, g = prob.value_and_grad(x)
  x = prob.ascend(x, g)
  return x, prob.loss(x)


def pgd_run(prob, key, *, steps, random_start):
  """`steps` projected ascent steps; returns the per-example highest-loss iterate."""
  x = prob.start(key, random_start)
  best_loss = jnp.full((prob.batch,), -jnp.inf, jnp.float32)

  def body(_, carry):
    x, best_x, best_loss = carry
    loss, g = prob.value_and_grad(x)   # the loss at x comes for free with its gradient
    best_x, best_loss = keep_best(best_x, best_loss, x, loss)
    return prob.ascend(x, g), best_x, best_loss

  x, best_x, best_loss = jax.lax.fori_loop(0, steps, body, (x, x, best_loss))
  return keep_best(best_x, best_loss, x, prob.loss(x))
