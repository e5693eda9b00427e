"""Robust correctness under named attack stages, run in order on the points still robust:
the engine under `robustness` (single attacks) and `autoattack` (AutoAttack's versions).

A point is robust iff it is classified correctly clean AND after every attack run (each
restart and, for the targeted stages, each target is a separate run). Randomness is per
example (`fold_in(run_key, index)`), so the result does not depend on `batch_size` or on
which points a run sees. `logits_fn` and `params` follow `robustness`'s two calling
conventions (see its module docstring).
"""
import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.attacks import (cross_entropy, dlr_loss, margin, perturb, targeted_dlr_loss,
                           top_other_classes)
from mmjax.attacks.core import check_positive_int, make_problem, refuse_step_size
from mmjax.attacks.fab import fab_run
from mmjax.errors import ConfigError

# Single attacks, named as in AutoAttack; each runs only on the points still robust.
STAGES = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
# Stages whose attack sets its own step sizes: a PGD `step_size` is refused for them.
OWN_STEP_STAGES = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
N_TARGETS = 9   # AutoAttack's target count for APGD-T and FAB-T
_NOISE = 2**20   # fold_in constant of a random model's noise keys
# Stable codes for the per-run keys (fold_in), so adding a stage changes no other's draws.
_CODES = {"fgsm": 0, "pgd": 1, "apgd-ce": 2, "apgd-t": 3, "apgd-dlr": 4, "fab": 5,
          "fab-t": 6, "square": 7}


def _freeze(v):
  if isinstance(v, dict):
    return tuple(sorted((k, _freeze(x)) for k, x in v.items()))
  if isinstance(v, list):
    return tuple(_freeze(x) for x in v)
  return v


def _thaw(v):
  if isinstance(v, tuple) and v and all(isinstance(t, tuple) and len(t) == 2
                                        and isinstance(t[0], str) for t in v):
    return {k: _thaw(x) for k, x in v}
  return v


def _batch_size(x):
  return int(jax.tree_util.tree_leaves(x)[0].shape[0])


def take_rows(x, idx):
  """Rows `idx` of every leaf of x (an array or pytree of [N, ...]), as numpy."""
  return jax.tree_util.tree_map(lambda a: np.asarray(a)[idx], x)


def padded_batches(indices, size):
  """Yields (indices padded to `size`, number of real ones) covering `indices` in order."""
  for start in range(0, len(indices), size):
    idx = indices[start:start + size]
    real = len(idx)
    # Pad by repeating the last real row: valid data, results discarded.
    yield np.concatenate([idx, np.full(size - real, idx[-1])]), real


def padded_size(alive, batch_size, smallest=16):
  """The batch shape a run's calls use: `batch_size` halved while the points still alive
  fit in half, down to `smallest`. Late stages (APGD-T, FAB-T, Square's 5,000 queries) see
  few survivors, and padding them to a full batch multiplied their cost; halving keeps the
  compiled shapes to a few per runner."""
  size = batch_size
  while size // 2 >= max(alive, smallest):
    size //= 2
  return size


class _IgnoreParams:
  """logits_fn(x) seen as fn(params, x); hashes and compares like logits_fn itself."""

  def __init__(self, fn):
    self.fn = fn

  def __call__(self, params, *args):
    del params
    return self.fn(*args)

  def __hash__(self):
    return hash(self.fn)

  def __eq__(self, other):
    return isinstance(other, _IgnoreParams) and other.fn is self.fn


def with_params(logits_fn, params):
  """(apply(params, x) -> logits, params) for either calling convention."""
  if params is None:
    return _IgnoreParams(logits_fn), ()
  return logits_fn, params


def _attack_loss(kind, logits_fn, clean, y, target_rank):
  """The per-example loss a run maximises. kind: 'ce', 'dlr' (untargeted DLR), 'dlr-t'
  (targeted DLR against the clean point's `target_rank`-th other class), 'margin'
  (Square), 'diff-t' (FAB-T: z_t - z_y, [B]) or 'diffs' (FAB: z_j - z_y for every other
  class, [B,K-1]). With too few classes for DLR's denominator the margin stands in.
  `clean`: the clean logits [B,K], which rank the target classes."""
  if kind == "ce":
    return lambda a: cross_entropy(logits_fn(a), y)
  k = clean.shape[-1]
  if kind == "margin" or (kind == "dlr" and k < 3):
    return lambda a: margin(logits_fn(a), y)
  if kind == "dlr":
    return lambda a: dlr_loss(logits_fn(a), y)
  others = top_other_classes(clean, y, k - 1)   # ranked at the clean point, best first
  def diffs_to(classes):   # z_c - z_y for classes [B,M] -> [B,M]
    def diffs(a):
      z = logits_fn(a).astype(jnp.float32)
      return (jnp.take_along_axis(z, classes, axis=1)
              - jnp.take_along_axis(z, y[:, None], axis=1))
    return diffs
  if kind == "diffs":
    return diffs_to(others)
  target = jnp.take(others, target_rank, axis=1)
  if kind == "diff-t":
    return lambda a: diffs_to(target[:, None])(a)[:, 0]
  if k >= 4:
    return lambda a: targeted_dlr_loss(logits_fn(a), y, target)
  return lambda a: -margin(logits_fn(a), target)   # targeted margin z_t - z_y


# Small caches keyed on the callable: a closure over parameters stays alive while cached,
# so callers evaluating many parameter values should pass `params` instead.
@functools.lru_cache(maxsize=32)
def _runner(apply, attack, loss_kind, norm, steps, bounds, has_step, random_start, queries,
            random_logits=False, eot=1):
  """jitted fn(params, x, y, idx, run_key, eps, step, target_rank) -> adv-correct [B].

  random_logits: `apply(params, x, key)` is a random model; its noise key is one per run
  (a random model's batch shares its noise), APGD averages `eot` draws per step, and the
  final prediction is one more draw."""
  norm, bounds = _thaw(norm), _thaw(bounds)

  def run(params, x, y, idx, run_key, eps, step, target_rank):
    keys = jax.vmap(lambda i: jax.random.fold_in(run_key, i))(idx)
    if random_logits:
      noise = jax.random.fold_in(run_key, _NOISE)
      logits_at = lambda a, k: apply(params, a, k)
      clean = logits_at(x, noise)
      loss_fn = lambda a, k: _attack_loss(loss_kind, lambda b: logits_at(b, k), clean, y,
                                          target_rank)(a)
      final_logits = lambda a: logits_at(a, jax.random.fold_in(noise, _NOISE))
    else:
      noise = None
      final_logits = logits_fn = functools.partial(apply, params)
      loss_fn = _attack_loss(loss_kind, logits_fn, logits_fn(x), y, target_rank)
    if attack == "fab":
      # As the reference's FAB-T: any misclassification is a success, not only crossing the
      # target's boundary.
      prob = make_problem(loss_fn, x, attack="fab", eps=eps, step_size=None, steps=steps,
                          norm=norm, bounds=bounds)
      xs, _ = fab_run(prob, keys, steps=steps, random_start=random_start,
                      adversarial_fn=lambda a: jnp.argmax(logits_fn(a), axis=-1) != y)
      adv = prob.merge(xs)
    else:
      adv = perturb(loss_fn, x, keys, attack=attack, eps=eps,
                    step_size=step if has_step else None, steps=steps, norm=norm,
                    restarts=1, bounds=bounds, random_start=random_start, queries=queries,
                    noise_key=noise, eot=eot)
    return jnp.argmax(final_logits(adv), axis=-1) == y

  return jax.jit(run)


@functools.lru_cache(maxsize=4)
def _predict(apply):
  """jitted fn(params, x, *key) -> argmax labels [B]; a random model takes its key."""
  return jax.jit(lambda params, x, *key: jnp.argmax(apply(params, x, *key), axis=-1))


def cached(fn, *args):
  """fn(*args) through fn's lru_cache, or built uncached for an unhashable argument."""
  try:
    return fn(*args)
  except TypeError:   # unhashable logits_fn: build uncached
    return fn.__wrapped__(*args)


def clean_correct(logits_fn, x, y, batch_size=256, *, params=None, noise_key=None):
  """Per-example clean correctness. x: array/pytree [N,...], y [N] -> bool numpy [N].
  noise_key: a random model's key (`logits_fn(..., x, key)`), one draw."""
  apply, params = with_params(logits_fn, params)
  y = np.asarray(y)
  n = len(y)
  out = np.zeros(n, bool)
  predict = cached(_predict, apply)
  for pos, real in padded_batches(np.arange(n), min(batch_size, n)):
    key = () if noise_key is None else (noise_key,)
    pred = np.asarray(predict(params, take_rows(x, pos), *key))
    out[pos[:real]] = pred[:real] == y[pos[:real]]
  return out


def clean_accuracy(logits_fn, x, y, batch_size=256, *, params=None):
  """Accuracy of argmax logits_fn(x) [N,K] against y [N], in batches. -> float."""
  return float(np.mean(clean_correct(logits_fn, x, y, batch_size, params=params)))


@dataclasses.dataclass(frozen=True)
class Run:
  """One attack run of a stage: `perturb`'s attack, the loss it maximises (see
  `_attack_loss`), its target rank (targeted stages), restart index and random start."""
  attack: str
  loss: str
  stage: str
  target: int = 0
  restart: int = 0
  random_start: bool = True


def stage_runs(stage, restarts, num_classes, n_targets=N_TARGETS):
  """The runs of one stage in AutoAttack's order: each restart, and for the targeted
  stages each of the top min(n_targets, K-1) other classes (restarts inside targets)."""
  n_t = min(n_targets, num_classes - 1)
  rs = range(restarts)
  if stage == "fgsm":   # deterministic: restarts would repeat the same point
    return [Run("fgsm", "ce", stage, random_start=False)]
  if stage in ("pgd", "apgd-ce", "apgd-dlr"):
    attack, loss = {"pgd": ("pgd", "ce"), "apgd-ce": ("apgd", "ce"),
                    "apgd-dlr": ("apgd", "dlr")}[stage]
    return [Run(attack, loss, stage, restart=r) for r in rs]
  if stage == "apgd-t":
    return [Run("apgd", "dlr-t", stage, t, r) for t in range(n_t) for r in rs]
  if stage == "fab":   # the reference starts its first restart at the clean point
    return [Run("fab", "diffs", stage, restart=r, random_start=r > 0) for r in rs]
  if stage == "fab-t":
    return [Run("fab", "diff-t", stage, t, r, r > 0) for t in range(n_t) for r in rs]
  if stage == "square":
    return [Run("square", "margin", stage, restart=r) for r in rs]
  raise ConfigError(f"Unknown attack stage {stage!r}; choose from {STAGES}.")


def check_attack_args(stages, step_size, restarts, batch_size, eps):
  """ConfigErrors for arguments that would silently weaken or break `stages`."""
  own = [st for st in stages if st in OWN_STEP_STAGES]
  if own:
    refuse_step_size(step_size, ", ".join(own),
                     "Leave step_size unset (evals.robust.step_size=None) for it.")
  check_positive_int("batch_size", batch_size)
  check_positive_int("restarts", restarts)
  if any(isinstance(e, (int, float)) and e < 0 for e in jax.tree_util.tree_leaves(eps)):
    raise ConfigError(f"eps must be >= 0, got {eps!r}.")


def run_stages(logits_fn, x, y, key, *, stages, eps, norm="linf", steps=10,
               step_size=None, bounds=(0., 1.), batch_size=256, params=None, queries=5000,
               n_targets=N_TARGETS, on_stage=None, random_logits=False, eot=1):
  """Clean correctness, then each stage in order on the points still robust.

  stages: [(stage name, restarts)] from STAGES. on_stage(stage, robust [N] bool, seconds):
  called with 'clean' first and then after each stage (AutoAttack's per-stage table).
  random_logits: `logits_fn` takes a PRNG key last (a randomised defence); APGD averages
  its gradients over `eot` draws per step (EOT) and every prediction is one draw.
  -> robust bool numpy [N].
  """
  if random_logits and any(s.startswith("fab") for s, _ in stages):
    raise ConfigError("FAB needs a deterministic model (its linearised boundary steps); "
                      "evaluate a random model with version='rand' or APGD and Square.")
  for stage, restarts in stages:
    check_attack_args([stage], step_size, restarts, batch_size, eps)
  y = np.asarray(y).astype(np.int32)
  n = len(y)
  if _batch_size(x) != n:
    raise ConfigError(f"x has {_batch_size(x)} examples but y has {n}.")
  noise = (jax.random.fold_in(key, _NOISE),) if random_logits else ()
  robust = clean_correct(logits_fn, x, y, batch_size, params=params,
                         noise_key=noise[0] if noise else None)
  apply, params = with_params(logits_fn, params)
  num_classes = int(jax.eval_shape(apply, params, take_rows(x, np.arange(1)),
                                   *noise).shape[-1])
  eps_arg = jax.tree_util.tree_map(lambda e: jnp.asarray(e, jnp.float32), eps)
  step_arg = (jax.tree_util.tree_map(lambda e: jnp.asarray(e, jnp.float32), step_size)
              if step_size is not None else jnp.zeros(()))
  if on_stage is not None:
    on_stage("clean", robust.copy(), 0.0)
  for stage, restarts in stages:
    started = time.perf_counter()
    for run in stage_runs(stage, restarts, num_classes, n_targets):
      alive = np.flatnonzero(robust)
      if not len(alive):
        break
      fn = cached(_runner, apply, run.attack, run.loss, _freeze(norm), steps,
                   _freeze(bounds), step_size is not None, run.random_start, queries,
                   random_logits, eot)
      run_key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(
          key, _CODES[stage]), run.target), run.restart)
      for idx, real in padded_batches(alive, padded_size(len(alive), min(batch_size, n))):
        ok = np.asarray(fn(params, take_rows(x, idx), y[idx], jnp.asarray(idx, jnp.uint32),
                           run_key, eps_arg, step_arg, jnp.asarray(run.target, jnp.int32)))
        robust[idx[:real]] &= ok[:real]
    if on_stage is not None:
      on_stage(stage, robust.copy(), time.perf_counter() - started)
  return robust
