"""The pytree plumbing every attack shares (`Problem`, `make_problem`, `keep_best`).

An attack sees `inputs` (the model's embed/encode seam: a pytree of arrays with leading batch
dim B) as a list of float leaves, each with its own eps, step size, norm and bounds. Non-float
leaves (token ids, masks) ride along untouched.
"""
import dataclasses
from typing import Any, Optional, Tuple

import jax
import jax.numpy as jnp

from mmjax.attacks import norms as N
from mmjax.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class LeafSpec:
  eps: Any                 # python float or traced scalar
  step: Any                # python float or traced scalar
  norm: str
  bounds: Optional[Tuple[float, float]]


def _is_float(x):
  return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _lookup(spec, path, name):
  """Resolves a per-modality spec (a possibly nested dict keyed like inputs) for one leaf."""
  for k in path:
    if not isinstance(spec, dict):
      return spec
    key = getattr(k, "key", getattr(k, "idx", getattr(k, "name", None)))
    if key not in spec:
      raise ConfigError(f"`{name}` is a dict without an entry for input "
                        f"{jax.tree_util.keystr(path)}; give one value per float input.")
    spec = spec[key]
  if isinstance(spec, dict):
    raise ConfigError(f"`{name}` is nested deeper than the inputs at "
                      f"{jax.tree_util.keystr(path)}.")
  return spec


def _check_bounds(b):
  if b is None:
    return None
  try:
    lo, hi = b
    lo, hi = float(lo), float(hi)
  except (TypeError, ValueError):
    raise ConfigError(f"bounds must be None or a (lo, hi) pair, got {b!r}.") from None
  if not lo < hi:
    raise ConfigError(f"bounds must have lo < hi, got {b!r}.")
  return (lo, hi)


def refuse_step_size(step_size, given_for, fix="Leave step_size unset for this attack."):
  """ConfigError for a step size given to attacks that set their own: APGD's is only its
  initial step (2 eps, adapted per example), so a PGD user's habitual 0.01 silently
  weakened it (86.4% instead of 83.2% robust on an MNIST model)."""
  if jax.tree_util.tree_leaves(step_size):   # a value anywhere (None leaves are unset)
    raise ConfigError(
        f"step_size={step_size!r} was given for {given_for}, which sets its own step "
        "sizes (APGD starts at 2 eps and adapts it per example; a PGD step such as 0.01 "
        f"would silently weaken it). {fix}")


def check_positive_int(name, value):
  if not isinstance(value, int) or value < 1:
    raise ConfigError(f"{name} must be a positive int, got {value!r}.")


def default_step(attack, eps, steps):
  """Default step size: FGSM eps; Fast-AT 1.25 eps; PGD 2.5 eps/steps (Madry); APGD 2 eps
  (its initial step); Square and FAB take none (eps, for the shared geometry)."""
  return {"fgsm": 1.0, "fgsm_rs": 1.25, "pgd": 2.5 / steps, "apgd": 2.0, "square": 1.0,
          "fab": 1.0}[attack] * eps


class Problem:
  """The float leaves of `inputs`, their specs, and the loss over them."""

  def __init__(self, loss_fn, specs, float_idx, leaves, treedef, noise_key=None, eot=1):
    self.loss_fn, self.treedef, self.leaves = loss_fn, treedef, leaves
    # A random model: loss_fn(inputs, key), its gradients averaged over `eot` draws.
    self.noise_key, self.eot = noise_key, eot
    self.float_idx = float_idx
    self.x0 = [leaves[i] for i in float_idx]
    self.specs = specs
    self.batch = self.x0[0].shape[0]

  def merge(self, xs):
    leaves = list(self.leaves)
    for i, x in zip(self.float_idx, xs):
      leaves[i] = x
    return jax.tree_util.tree_unflatten(self.treedef, leaves)

  def loss(self, xs, draw=0):
    """Per-example loss [B]; a random model's at its `draw`-th noise key."""
    if self.noise_key is None:
      return self.loss_fn(self.merge(xs)).astype(jnp.float32)
    key = jax.random.fold_in(self.noise_key, draw)
    return self.loss_fn(self.merge(xs), key).astype(jnp.float32)

  def value_and_grad(self, xs, draw=0):
    """-> (loss [B], grads like xs). Per-example losses are independent, so grad(sum).

    A random model's loss and gradient are the means over `eot` noise draws of step
    `draw` (Expectation over Transformation, Athalye et al. 2018; AutoAttack's 'rand')."""
    def total(xs, d):
      l = self.loss(xs, d)
      return jnp.sum(l), l
    if self.noise_key is None or self.eot == 1:
      (_, l), g = jax.value_and_grad(total, has_aux=True)(xs, draw)
      return l, g
    draws = draw * self.eot + jnp.arange(self.eot)
    ls, gs = jax.lax.map(
        lambda d: (lambda r: (r[0][1], r[1]))(
            jax.value_and_grad(total, has_aux=True)(xs, d)), draws)
    return jnp.mean(ls, 0), [jnp.mean(g, 0).astype(x.dtype) for g, x in zip(gs, xs)]

  def project(self, xs):
    """Back into the eps-ball around the clean point, then into bounds.

    For a clean point inside the box, clipping moves each coordinate toward the clean value,
    so it never leaves the ball (linf or l2).
    """
    return [N.clip_to_bounds(x0 + N.project_delta(x - x0, s.eps, s.norm), s.bounds)
            for x, x0, s in zip(xs, self.x0, self.specs)]

  def ascend(self, xs, grads, scale=None):
    """One projected ascent step x + scale * step * dir(g); scale: None or per-example [B]."""
    out = []
    for x, g, s in zip(xs, grads, self.specs):
      step = jnp.asarray(s.step, jnp.float32)
      if scale is not None:
        step = N.per_example(step * scale, x)
      out.append(x + (step * N.ascent_direction(g, s.norm)).astype(x.dtype))
    return self.project(out)

  def random_start(self, key, clip=True):
    """A uniform random point of the eps-ball, clipped into bounds when `clip`.

    `clip=False` leaves the start outside the bounds where the ball reaches past them, as
    Wong et al.'s MNIST code does: on pixels that sit at 0 or 1, clipping would cancel half
    the random start and make FGSM-RS nearly plain FGSM. Later steps project as usual.
    """
    xs = [x0 + N.random_delta(N.fold_in(key, i), x0, s.eps, s.norm)
          for i, (x0, s) in enumerate(zip(self.x0, self.specs))]
    return self.project(xs) if clip else xs

  def start(self, key, random_start, clip=True):
    return self.random_start(key, clip) if random_start else self.project(self.x0)


def keep_best(best_x, best_loss, x, loss):
  """Per example, keeps (x, loss) where loss beats best_loss (NaN never wins)."""
  better = loss > best_loss
  best_x = [jnp.where(N.per_example(better, b), xi, b) for b, xi in zip(best_x, x)]
  return best_x, jnp.where(better, loss, best_loss)


def make_problem(loss_fn, inputs, *, attack, eps, step_size, steps, norm, bounds,
                 noise_key=None, eot=1):
  leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(inputs)
  leaves = [jnp.asarray(v) for _, v in leaves_with_path]
  float_idx = [i for i, v in enumerate(leaves) if _is_float(v)]
  specs = []
  for i in float_idx:
    path = leaves_with_path[i][0]
    e = _lookup(eps, path, "eps")
    n = _lookup(norm, path, "norm")
    if n not in N.NORMS:
      raise ConfigError(f"norm must be one of {N.NORMS}, got {n!r}.")
    if isinstance(e, (int, float)) and e < 0:
      raise ConfigError(f"eps must be >= 0, got {e}.")
    st = _lookup(step_size, path, "step_size") if step_size is not None else None
    st = default_step(attack, e, steps) if st is None else st
    b = bounds if bounds is None or not isinstance(bounds, dict) else _lookup(
        bounds, path, "bounds")
    specs.append(LeafSpec(e, st, n, _check_bounds(b)))
  if not float_idx:
    return None
  return Problem(loss_fn, specs, float_idx, leaves, treedef, noise_key, eot)
