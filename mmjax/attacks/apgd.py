"""Auto-PGD (Croce & Hein 2020, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks"), written for `jax.lax.fori_loop`.

The step size starts at 2 eps (per leaf) and is halved per example at checkpoints
w_j = ceil(p_j N), p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), when
  (1) fewer than rho = 0.75 of the steps since the last checkpoint increased the loss, or
  (2) the step size was not halved at the last checkpoint and the best loss has not improved
      since then.
A halving example restarts from its best point (with its momentum reset). Updates use
momentum alpha = 0.75 (the first step is a plain projected step).
"""
import math

import jax
import jax.numpy as jnp

from mmjax.attacks import norms as N
from mmjax.attacks.core import keep_best

MOMENTUM = 0.75
RHO = 0.75


def checkpoints(steps):
  """Iteration counts w_1 < w_2 < ... <= steps at which the step size may be halved."""
  ps = [0.0, 0.22]
  while True:
    nxt = ps[-1] + max(ps[-1] - ps[-2] - 0.03, 0.06)
    if nxt > 1.0:
      break
    ps.append(nxt)
  # Round before ceil: 0.22 * 100 is 22.000000000000004 in floating point.
  ws = sorted({max(1, math.ceil(round(p * steps, 9))) for p in ps[1:]})
  return [w for w in ws if w <= steps]


def apgd_run(prob, key, *, steps, random_start):
  """APGD from a (random) start; returns the per-example best point and its loss [B]."""
  ws = checkpoints(steps)
  is_ck, window, prev = [False] * steps, [1] * steps, 0
  for w in ws:   # iteration i produces x^{(i+1)}; checkpoint w_j is reached at i = w_j - 1
    is_ck[w - 1], window[w - 1], prev = True, w - prev, w
  is_ck, window = jnp.asarray(is_ck), jnp.asarray(window, jnp.float32)

  b = prob.batch
  x0 = prob.start(key, random_start)
  loss0, g0 = prob.value_and_grad(x0)
  neg_inf = jnp.full((b,), -jnp.inf, jnp.float32)
  best_x, best_loss = keep_best(x0, neg_inf, x0, loss0)
  best_g = g0
  init = dict(x=x0, x_prev=x0, g=g0, loss=loss0, scale=jnp.ones((b,), jnp.float32),
              best_x=best_x, best_g=best_g, best_loss=best_loss,
              count=jnp.zeros((b,), jnp.float32), best_at_ck=best_loss,
              halved_at_ck=jnp.zeros((b,), bool))

  def where(mask, a, c):
    return [jnp.where(N.per_example(mask, ai), ai, ci) for ai, ci in zip(a, c)]

  def body(i, s):
    x, x_prev = s["x"], s["x_prev"]
    alpha = jnp.where(i == 0, 1.0, MOMENTUM)
    z = prob.ascend(x, s["g"], scale=s["scale"])
    x_new = prob.project([xi + (alpha * (zi - xi) + (1 - alpha) * (xi - pi)).astype(xi.dtype)
                          for xi, zi, pi in zip(x, z, x_prev)])
    loss, g = prob.value_and_grad(x_new, i + 1)   # a random model's fresh draws per step
    count = s["count"] + (loss > s["loss"])
    improved = loss > s["best_loss"]
    best_x = where(improved, x_new, s["best_x"])
    best_g = where(improved, g, s["best_g"])
    best_loss = jnp.where(improved, loss, s["best_loss"])

    ck = is_ck[i]
    cond1 = count < RHO * window[i]
    cond2 = (~s["halved_at_ck"]) & (best_loss <= s["best_at_ck"])
    halve = ck & (cond1 | cond2)
    return dict(
        x=where(halve, best_x, x_new),
        x_prev=where(halve, best_x, x),
        g=where(halve, best_g, g),
        loss=jnp.where(halve, best_loss, loss),
        scale=jnp.where(halve, 0.5 * s["scale"], s["scale"]),
        best_x=best_x, best_g=best_g, best_loss=best_loss,
        count=jnp.where(ck, 0.0, count),
        best_at_ck=jnp.where(ck, best_loss, s["best_at_ck"]),
        halved_at_ck=jnp.where(ck, halve, s["halved_at_ck"]))

  s = jax.lax.fori_loop(0, steps, body, init)
  return s["best_x"], s["best_loss"]
