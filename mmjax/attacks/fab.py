"""FAB, the Fast Adaptive Boundary attack (Croce & Hein 2020, "Minimally distorted adversarial
examples with a fast adaptive boundary attack"), targeted (FAB-T) and untargeted, linf / l2.

FAB looks for the smallest perturbation that crosses a decision boundary, then reports it if
it lies within eps. `prob.loss_fn` gives the logit differences to the boundaries: [B]
(targeted, z_t - z_y) or [B,M] (untargeted, z_j - z_y for the M other classes); a point is
adversarial iff some difference is > 0.

Geometry. All float leaves are flattened per example and concatenated, in units of each
leaf's eps: u = (x - x0) / eps_leaf, u: [B,D]. The box becomes [(lo - x0)/eps, (hi - x0)/eps]
per coordinate and "within eps" is ||u|| <= 1 (linf: the product of the per-leaf balls; l2:
sum_l ||delta_l||^2 / eps_l^2 <= 1). With one leaf this is the reference algorithm, rescaled.

One iteration, from the current point u [B,D] (u = 0 or a random start of radius 1/2):
  1. differences f [B,M] and their gradients G [B,M,D]; pick per example the boundary j with
     the smallest linearised distance |f_j| / ||G_j||_q (q the dual norm: l1 for linf, l2);
  2. project onto that linearised boundary {v : G_j . (v - u) + f_j = 0} inside the box, once
     from u (step d1) and once from the clean point 0 (step d2) (`fab_projections`);
  3. u <- clip((u + eta d1)(1 - a) + eta d2 a) with a = min(|d1| / (|d1| + |d2|), alpha_max):
     biased toward the clean point, extrapolated by eta to land past the boundary;
  4. if u is adversarial, keep it when its norm is the smallest so far, and step back toward
     the clean point: u <- beta u.
Finally the smallest adversarial u with ||u|| <= 1 is mapped back to x = x0 + eps u,
projected onto the eps-balls and bounds, and re-evaluated: `found` only if still adversarial.
A clean point that is already adversarial is its own answer (size 0); eps = 0 finds nothing.
Cost per iteration: one forward and M backward passes (the Jacobian; one for a targeted
[B] loss), plus one forward. The projections solve without sorting (`fab_projections`).
"""
from typing import Callable, Optional

import jax
import jax.numpy as jnp

from mmjax.attacks import norms as N
from mmjax.attacks.fab_projections import BIG, hyperplane_step
from mmjax.errors import ConfigError

_TINY = 1e-12
_MIN_STEP = 1e-8        # the reference's floor on |d1|, |d2| in the bias alpha
_BALL_TOL = 1e-5        # relative slack on ||u|| <= 1 before the final projection
RANDOM_START_RADIUS = 0.5   # in units of eps: the reference starts at eps / 2


def _shared_norm(prob):
  norms = {s.norm for s in prob.specs}
  if len(norms) != 1:
    raise ConfigError(f"FAB minimises one norm over all perturbed inputs, but the float inputs "
                      f"have norms {sorted(norms)}; give every input the same norm.")
  norm = norms.pop()
  if norm not in ("linf", "l2"):
    raise ConfigError(f"FAB supports norm 'linf' or 'l2', got {norm!r}.")
  return norm


def vector_norm(u, norm):
  """Per-row norm of u [B,D] -> [B]."""
  return jnp.max(jnp.abs(u), axis=-1) if norm == "linf" else jnp.linalg.norm(u, axis=-1)


def _dual_norm(g, norm):
  return jnp.sum(jnp.abs(g), axis=-1) if norm == "linf" else jnp.linalg.norm(g, axis=-1)


def _differences(prob, xs):
  d = prob.loss_fn(prob.merge(xs)).astype(jnp.float32)
  return d.reshape(d.shape[0], -1)


class _Flat:
  """The float leaves as one vector per example, u = (x - x0) / eps_leaf: u [B,D]."""

  def __init__(self, prob):
    self.prob = prob
    self.shapes = [x.shape for x in prob.x0]
    b = prob.batch
    # Each leaf's eps as a column [B,1] (a scalar, or per example [B]).
    eps = [jnp.broadcast_to(jnp.reshape(jnp.asarray(s.eps, jnp.float32), (-1, 1)), (b, 1))
           for s in prob.specs]
    self.eps_ok = jnp.all(jnp.concatenate([e > 0 for e in eps], -1), -1)        # [B]
    # eps = 0 would make u-space singular; compute with 1 and report nothing found instead.
    self.eps = [jnp.where(e > 0, e, 1.0) for e in eps]
    self.x0 = [x.reshape(b, -1).astype(jnp.float32) for x in prob.x0]
    lo, hi = [], []
    for x0, e, s in zip(self.x0, self.eps, prob.specs):
      if s.bounds is None:
        lo.append(jnp.full_like(x0, -BIG))
        hi.append(jnp.full_like(x0, BIG))
      else:   # kept around 0 even for a clean point a hair outside the box
        lo.append(jnp.minimum((s.bounds[0] - x0) / e, 0.0))
        hi.append(jnp.maximum((s.bounds[1] - x0) / e, 0.0))
    self.lo, self.hi = jnp.concatenate(lo, -1), jnp.concatenate(hi, -1)
    self.dim = self.lo.shape[-1]

  def to_x(self, u):
    """u [B,D] -> leaves like prob.x0 (x0 + eps u, in each leaf's dtype)."""
    out, start = [], 0
    for x0, e, shape, leaf in zip(self.x0, self.eps, self.shapes, self.prob.x0):
      n = x0.shape[-1]
      out.append((x0 + e * u[:, start:start + n]).reshape(shape).astype(leaf.dtype))
      start += n
    return out

  def differences(self, u):
    """Logit differences at u: [B,M] float32 (a targeted [B] becomes [B,1])."""
    return _differences(self.prob, self.to_x(u))

  def differences_and_jacobian(self, u):
    """-> (f [B,M], G [B,M,D]): M vector-Jacobian products, one per boundary."""
    f, vjp = jax.vjp(self.differences, u)
    m = f.shape[-1]
    if m == 1:        # targeted: one backward pass, no batch of cotangents
      return f, vjp(jnp.ones_like(f))[0][:, None]
    cotangents = jnp.broadcast_to(jnp.eye(m, dtype=f.dtype)[:, None, :], (m,) + f.shape)
    g = jax.vmap(lambda c: vjp(c)[0])(cotangents)      # [M,B,D]
    return f, jnp.swapaxes(g, 0, 1)


def _random_start(key, b, dim, norm):
  """A point on the sphere of radius 1/2 (units of eps), as the reference's restarts."""
  def draw(k, shape):
    if norm == "linf":
      return jax.random.uniform(k, shape, jnp.float32, -1.0, 1.0)
    return jax.random.normal(k, shape, jnp.float32)
  t = jax.vmap(lambda k: draw(k, (dim,)))(key) if N.is_batched_key(key) else draw(key, (b, dim))
  return RANDOM_START_RADIUS * t / jnp.maximum(vector_norm(t, norm), _TINY)[:, None]


def fab_run(prob, key, *, steps: int = 100, random_start: bool = False,
            alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9,
            adversarial_fn: Optional[Callable] = None):
  """One FAB run (one restart): the minimal-norm adversarial found, if it lies within eps.

  Args:
    prob: a `core.Problem` whose `loss_fn` returns logit differences, [B] or [B,M]; its
      eps may be traced, a scalar or per example [B].
    key: PRNG key (one, or per example), used only for the random start.
    steps: iterations (static). random_start: start on the sphere of radius eps/2 (the
      reference uses it for every restart but the first).
    alpha_max, eta, beta: bias toward the clean point, extrapolation past the boundary,
      backward step after a success (AutoAttack: 0.1, 1.05, 0.9).
    adversarial_fn: optional, merged inputs -> [B] bool, what counts as a success (for the
      best point, the backward step and the final check); default: some difference > 0.
      The reference FAB-T counts any misclassification, argmax(logits) != y, not only the
      target's boundary.
  Returns:
    (xs, found): xs a list of arrays like `prob.x0`, each example's smallest adversarial
    point within the eps-balls and bounds, or its clean point where none was found;
    found [B] bool.
  """
  if not isinstance(steps, int) or steps < 0:
    raise ConfigError(f"FAB steps must be a non-negative int, got {steps!r}.")
  norm = _shared_norm(prob)
  flat = _Flat(prob)
  b, dim = prob.batch, flat.dim
  origin = jnp.zeros((b, dim), jnp.float32)

  def is_adversarial(xs):
    if adversarial_fn is None:
      return jnp.max(_differences(prob, xs), axis=-1) > 0
    return jnp.reshape(adversarial_fn(prob.merge(xs)), (b,)).astype(bool)

  # The clean point itself counts (norm 0) when it is already adversarial.
  clean_adv = is_adversarial(prob.x0)
  best_norm = jnp.where(clean_adv, 0.0, jnp.inf)
  u = origin
  if random_start:
    u = jnp.clip(_random_start(key, b, dim, norm), flat.lo, flat.hi)

  def body(_, carry):
    u, best_u, best_norm = carry
    f, g = flat.differences_and_jacobian(u)
    if f.shape[-1] == 1:    # targeted: the one boundary
      f_j, w = f[:, 0], g[:, 0]
    else:                   # the boundary that looks closest under the linear model
      closest = jnp.argmin(jnp.abs(f) / (_dual_norm(g, norm) + _TINY), axis=-1)
      f_j = jnp.take_along_axis(f, closest[:, None], axis=-1)[:, 0]
      w = jnp.take_along_axis(g, closest[:, None, None], axis=1)[:, 0]        # [B,D]
    # Same hyperplane seen from u (value f_j) and from the clean point (f_j - w.u).
    steps_uv = hyperplane_step(
        jnp.concatenate([w, w]), jnp.concatenate([f_j, f_j - jnp.sum(w * u, -1)]),
        jnp.concatenate([flat.lo - u, flat.lo]), jnp.concatenate([flat.hi - u, flat.hi]),
        norm)
    d_here, d_clean = steps_uv[:b], steps_uv[b:]
    a_here = jnp.maximum(vector_norm(d_here, norm), _MIN_STEP)
    a_clean = jnp.maximum(vector_norm(d_clean, norm), _MIN_STEP)
    alpha = jnp.clip(a_here / (a_here + a_clean), 0.0, alpha_max)[:, None]
    u = jnp.clip((u + eta * d_here) * (1 - alpha) + eta * d_clean * alpha, flat.lo, flat.hi)

    adv = is_adversarial(flat.to_x(u))
    size = vector_norm(u, norm)
    better = adv & (size < best_norm)
    best_u = jnp.where(better[:, None], u, best_u)
    best_norm = jnp.where(better, size, best_norm)
    # After a success, restart the search closer to the clean point (the box is convex and
    # holds both, so this stays inside it).
    u = jnp.where(adv[:, None], beta * u, u)
    return u, best_u, best_norm

  _, best_u, best_norm = jax.lax.fori_loop(0, steps, body, (u, origin, best_norm))

  # Back to input space, exactly inside the balls and bounds, then check it still fools.
  within = best_norm <= 1.0 + _BALL_TOL
  if norm == "linf":
    best_u = jnp.clip(best_u, -1.0, 1.0)
  else:
    best_u = best_u / jnp.maximum(vector_norm(best_u, norm), 1.0)[:, None]
  xs = [N.clip_to_bounds(x0 + N.project_delta(x - x0, e[:, 0], s.norm), s.bounds)
        for x, x0, e, s in zip(flat.to_x(best_u), prob.x0, flat.eps, prob.specs)]
  still_adv = is_adversarial(xs)
  found = within & still_adv & flat.eps_ok
  xs = [jnp.where(N.per_example(found, x), x, x0) for x, x0 in zip(xs, prob.x0)]
  return xs, found
