"""`perturb`, the public entry point: checks the arguments, builds the `Problem` and runs
the chosen attack with restarts, keeping each example's worst case.

The attacks (pgd, apgd, square, fab) build on `core`, and this module on them all, so
`core` imports none of them.
"""
import jax
import jax.numpy as jnp

from mmjax.attacks import (apgd as apgd_lib, fab as fab_lib, norms as N, pgd as pgd_lib,
                           square as square_lib)
from mmjax.attacks.core import (check_positive_int, keep_best, make_problem,
                               refuse_step_size)
from mmjax.errors import ConfigError

ATTACKS = ("fgsm", "fgsm_rs", "pgd", "apgd", "square", "fab")
# Attacks that set their own step sizes: a PGD-style `step_size` would silently change them
# (APGD's is only its *initial* step, 2 eps, adapted per example), so it is refused.
OWN_STEP_ATTACKS = ("apgd", "square", "fab")


def _fab_score(prob, xs):
  """FAB's per-example score for keeping the best restart: its largest logit difference
  (> 0 iff the point is adversarial)."""
  d = prob.loss(xs)
  return d if d.ndim == 1 else jnp.max(d, axis=-1)


def perturb(loss_fn, inputs, key, *, attack, eps, step_size=None, steps=10, norm="linf",
            restarts=1, bounds=None, random_start=True, best_iterate=True, clip_start=True,
            queries=5000, noise_key=None, eot=1):
  """Adversarial inputs maximising `loss_fn` within an eps-ball; pure and jit-able.

  Args:
    loss_fn: adv_inputs -> per-example loss [B] to MAXIMISE (targeted attacks express the
      target through the loss, e.g. `targeted_dlr_loss` or minus the CE to the target).
    inputs: an array or pytree (e.g. `{'image': [B,H,W,C], 'text': [B,T,D], 'text_mask':
      [B,T] int}`), leading batch dim B. Only float leaves are perturbed.
    key: a PRNG key, or per-example keys ([B,2] raw / [B] typed) so that an example's
      randomness does not depend on its batch. Restart r uses `fold_in(key, r)`.
    attack: 'fgsm' (one step from the clean point), 'fgsm_rs' (uniform random start,
      Fast-AT), 'pgd' (Madry; best iterate returned), 'apgd' (Croce & Hein 2020),
      'square' (Andriushchenko et al. 2020: random search, no gradients; `loss_fn` a
      margin, > 0 when fooled) or 'fab' (Croce & Hein 2020: minimal-norm; `loss_fn` the
      logit differences z_t - z_y, [B] targeted or [B,M] untargeted, > 0 when fooled;
      returns the clean point where nothing is found inside the ball).
    eps, step_size, norm, bounds: one value for every float leaf, or a dict keyed like
      `inputs` (per modality). norm in {'linf','l2'} (l2: per example over a leaf's non-batch
      dims). bounds: (lo, hi) clip range, or None for no clipping (embeddings).
      step_size None -> FGSM eps, Fast-AT 1.25 eps, PGD 2.5 eps/steps. APGD, Square and FAB
      set their own steps and refuse a step_size (ConfigError).
    steps: iterations (PGD/APGD; static). restarts: independent starts (static); per example
      the highest-loss result is kept. random_start: for 'pgd'/'apgd' ('fgsm' never, 'fgsm_rs'
      always).
    best_iterate: 'pgd' returns each example's highest-loss iterate (the strongest, for
      evaluation); False returns the last iterate, as Madry et al.'s training does, and
      saves a forward pass. APGD always keeps the best.
    clip_start: clip the random start into `bounds` (Wong et al.'s CIFAR and Madry et al.'s
      code) or not (Wong et al.'s MNIST code: only each step's result is clipped).
    queries: Square's query budget per restart (AutoAttack: 5,000).
    noise_key, eot: for a random model, `loss_fn(adv_inputs, key)` and a key for its
      noise; APGD then averages each step's gradient over `eot` draws (EOT), the other
      attacks use one fixed draw. None: `loss_fn(adv_inputs)`, deterministic.
  Returns:
    adv_inputs, same structure/shapes/dtypes as `inputs`, within the eps-ball and bounds.
  """
  if attack not in ATTACKS:
    raise ConfigError(f"attack must be one of {ATTACKS}, got {attack!r}.")
  if attack in OWN_STEP_ATTACKS:
    refuse_step_size(step_size, f"attack={attack!r}")
  check_positive_int("steps", steps)
  check_positive_int("restarts", restarts)
  prob = make_problem(loss_fn, inputs, attack=attack, eps=eps, step_size=step_size,
                      steps=steps, norm=norm, bounds=bounds, noise_key=noise_key, eot=eot)
  if prob is None:
    return inputs

  need_loss = restarts > 1   # to keep each example's worst case over the restarts

  def run(k):
    if attack in ("fgsm", "fgsm_rs"):
      return pgd_lib.fgsm_run(prob, k, random_start=attack == "fgsm_rs", need_loss=need_loss,
                              clip_start=clip_start)
    if attack == "pgd":
      return pgd_lib.pgd_run(prob, k, steps=steps, random_start=random_start,
                             best_iterate=best_iterate, need_loss=need_loss,
                             clip_start=clip_start)
    if attack == "square":
      return square_lib.square_run(prob, k, queries=queries)
    if attack == "fab":
      xs, _ = fab_lib.fab_run(prob, k, steps=steps, random_start=random_start)
      return xs, _fab_score(prob, xs)
    return apgd_lib.apgd_run(prob, k, steps=steps, random_start=random_start)

  # Restart 0 outside the loop, so restarts=1 is exactly the first restart of restarts=R.
  best_x, best_loss = run(N.fold_in(key, 0))
  if restarts > 1:
    def body(r, carry):
      x, l = run(N.fold_in(key, r))
      return keep_best(carry[0], carry[1], x, l)
    best_x, best_loss = jax.lax.fori_loop(1, restarts, body, (best_x, best_loss))
  return prob.merge(best_x)
