"""Robust accuracy under FGSM, PGD, APGD-CE, APGD-T and their AutoAttack-style ensemble,
with an eps sweep (`accuracy_vs_eps`) and the trustworthy-evaluation checks of Carlini et
al. (`sanity_checks`).

A point is robust iff it is classified correctly clean AND after every attack run (each
restart and, for APGD-T, each target is a separate run). Runs go in order, each only on the
points still robust (AutoAttack's order). Randomness is per example (`fold_in(run_key,
index)`), so the result does not depend on `batch_size` or on which points a run sees.

Every function takes `logits_fn(x) -> logits`, or, with `params=...`, `logits_fn(params, x)`:
then the parameters are an argument of the compiled attack rather than constants baked into
it, so one compilation serves every parameter value (a trainer evaluating each checkpoint
passes one stable `logits_fn` and new params each time).
"""
import dataclasses
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.attacks import (cross_entropy, dlr_loss, margin, perturb, targeted_dlr_loss,
                           top_other_classes)
from mmjax.attacks.core import make_problem
from mmjax.attacks.fab import fab_run
from mmjax.errors import ConfigError

# Single attacks, named as in AutoAttack; each runs only on the points still robust.
STAGES = ("fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square")
# 'ensemble' is APGD-CE then APGD-T; 'autoattack' runs a version of mmjax.evals.autoattack.
EVAL_ATTACKS = STAGES + ("ensemble", "autoattack")
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


def _take(x, idx):
  return jax.tree_util.tree_map(lambda a: np.asarray(a)[idx], x)


def _batches(indices, size):
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


def _with_params(logits_fn, params):
  """(apply(params, x) -> logits, params) for either calling convention."""
  if params is None:
    return _IgnoreParams(logits_fn), ()
  return logits_fn, params


# Small caches keyed on the callable: a closure over parameters stays alive while cached,
# so callers evaluating many parameter values should pass `params` instead.
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


def _cached(fn, *args):
  try:
    return fn(*args)
  except TypeError:   # unhashable logits_fn: build uncached
    return fn.__wrapped__(*args)


def clean_correct(logits_fn, x, y, batch_size=256, *, params=None, noise_key=None):
  """Per-example clean correctness. x: array/pytree [N,...], y [N] -> bool numpy [N].
  noise_key: a random model's key (`logits_fn(..., x, key)`), one draw."""
  apply, params = _with_params(logits_fn, params)
  y = np.asarray(y)
  n = len(y)
  out = np.zeros(n, bool)
  predict = _cached(_predict, apply)
  for pos, real in _batches(np.arange(n), min(batch_size, n)):
    key = () if noise_key is None else (noise_key,)
    pred = np.asarray(predict(params, _take(x, pos), *key))
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


def check_step_size(attack, step_size, config_key):
  """ConfigError when a step size is set for an attack that sets its own (APGD's 2 eps
  start, FAB, Square): the silent weakening this prevents cost 3 points on MNIST."""
  if attack in OWN_STEP_STAGES + ("ensemble", "autoattack") and step_size:
    raise ConfigError(
        f"{config_key} sets a step size ({step_size!r}) for attack={attack!r}, which sets "
        "its own step sizes (APGD starts at 2 eps and adapts it per example; a PGD step such "
        "as 0.01 would silently weaken it). Unset the step size, or use attack='pgd'.")


def attack_label(attack, *, eps, norm, steps, restarts, version="standard"):
  """What produced a robust number, for metric names and reports: e.g.
  'pgd-50x10_linf_eps0.3', 'autoattack-standard_linf_eps0.3'."""
  fmt = lambda v: (",".join(f"{k}:{fmt(x)}" for k, x in sorted(v.items()))
                   if isinstance(v, dict) else f"{v:g}" if isinstance(v, float) else str(v))
  if attack == "autoattack":
    what = f"autoattack-{version}"
  elif attack == "fgsm":
    what = "fgsm"
  elif attack == "square":
    what = f"square-x{restarts}"
  else:
    what = f"{attack}-{steps}x{restarts}"
  return f"{what}_{fmt(norm)}_eps{fmt(eps)}"


def check_attack_args(stages, step_size, restarts, batch_size, eps):
  """ConfigErrors for arguments that would silently weaken or break `stages`."""
  own = [st for st in stages if st in OWN_STEP_STAGES]
  if step_size is not None and own:
    raise ConfigError(
        f"step_size={step_size!r} was given for {', '.join(own)}, which set their own step "
        "sizes (APGD starts at 2 eps and adapts it per example; a PGD step such as 0.01 "
        "would silently weaken it, e.g. 86.4% instead of 83.2% robust on an MNIST model). "
        "Leave step_size unset (evals.robust.step_size=None) for these attacks.")
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ConfigError(f"batch_size must be a positive int, got {batch_size!r}.")
  if not isinstance(restarts, int) or restarts < 1:
    raise ConfigError(f"restarts must be a positive int, got {restarts!r}.")
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
  apply, params = _with_params(logits_fn, params)
  num_classes = int(jax.eval_shape(apply, params, _take(x, np.arange(1)),
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
      fn = _cached(_runner, apply, run.attack, run.loss, _freeze(norm), steps,
                   _freeze(bounds), step_size is not None, run.random_start, queries,
                   random_logits, eot)
      run_key = jax.random.fold_in(jax.random.fold_in(jax.random.fold_in(
          key, _CODES[stage]), run.target), run.restart)
      for idx, real in _batches(alive, padded_size(len(alive), min(batch_size, n))):
        ok = np.asarray(fn(params, _take(x, idx), y[idx], jnp.asarray(idx, jnp.uint32),
                           run_key, eps_arg, step_arg, jnp.asarray(run.target, jnp.int32)))
        robust[idx[:real]] &= ok[:real]
    if on_stage is not None:
      on_stage(stage, robust.copy(), time.perf_counter() - started)
  return robust


def robust_correct(logits_fn, x, y, key, *, attack, eps, norm="linf", steps=10,
                   step_size=None, restarts=1, bounds=(0., 1.), batch_size=256,
                   params=None, queries=5000, version="standard"):
  """Per-example robustness (bool numpy [N]); see `robust_accuracy` for the arguments."""
  if attack not in EVAL_ATTACKS:
    raise ConfigError(f"attack must be one of {EVAL_ATTACKS}, got {attack!r}.")
  if attack == "autoattack":
    from mmjax.evals import autoattack   # it builds on this module
    return autoattack.autoattack(logits_fn, x, y, key, eps=eps, norm=norm, version=version,
                                 bounds=bounds, batch_size=batch_size, params=params,
                                 step_size=step_size)["robust"]
  stages = ("apgd-ce", "apgd-t") if attack == "ensemble" else (attack,)
  return run_stages(logits_fn, x, y, key, stages=[(s, restarts) for s in stages], eps=eps,
                    norm=norm, steps=steps, step_size=step_size, bounds=bounds,
                    batch_size=batch_size, params=params, queries=queries)


def robust_accuracy(logits_fn, x, y, key, *, attack, eps, norm="linf", steps=10,
                    step_size=None, restarts=1, bounds=(0., 1.), batch_size=256,
                    params=None, queries=5000, version="standard"):
  """Fraction of examples classified correctly clean and under every run of `attack`.

  Args:
    logits_fn: x -> logits [B,K] (x an array or a pytree with leading batch dim).
    x: [N,...] array or pytree; y: [N] int labels; key: PRNG key.
    attack: 'fgsm' (alpha = eps), 'pgd' (CE, random start, alpha = 2.5 eps/steps),
      'apgd-ce', 'apgd-dlr', 'apgd-t' (targeted DLR against each of the top min(9, K-1)
      other classes; targeted margin when K < 4), 'fab' (untargeted), 'fab-t' (targeted,
      9 classes), 'square' (`queries` per restart), 'ensemble' (APGD-CE then APGD-T on
      the survivors) or 'autoattack' (AutoAttack `version`, with its own steps and
      restarts: mmjax.evals.autoattack).
    eps, norm, step_size, bounds: as in `mmjax.attacks.perturb` (scalar or per-modality
      dict); step_size only for 'fgsm' and 'pgd' (the others set their own: refused).
      steps: iterations (PGD, APGD, FAB); restarts: independent runs, each must be
      survived.
    batch_size: examples per jitted call; the last batch is padded, padding not counted.
    params: if given, `logits_fn` is called as logits_fn(params, x) (see module docstring).
  Returns:
    robust accuracy in [0, 1] (float).
  """
  return float(np.mean(robust_correct(
      logits_fn, x, y, key, attack=attack, eps=eps, norm=norm, steps=steps,
      step_size=step_size, restarts=restarts, bounds=bounds, batch_size=batch_size,
      params=params, queries=queries, version=version)))


def accuracy_vs_eps(logits_fn, x, y, key, *, eps_list, attack, norm="linf", steps=10,
                    step_size=None, restarts=1, bounds=(0., 1.), batch_size=256,
                    out_dir=None, params=None):
  """Robust accuracy over an eps sweep (same key for every eps).

  Returns {'eps': [...], 'accuracy': [...]}; with `out_dir`, also writes
  `robustness_curve.json` (the same plus the attack settings) and `robustness_curve.png`.
  """
  eps_list = [float(e) for e in eps_list]
  accs = [robust_accuracy(logits_fn, x, y, key, attack=attack, eps=e, norm=norm,
                          steps=steps, step_size=step_size, restarts=restarts,
                          bounds=bounds, batch_size=batch_size, params=params)
          for e in eps_list]
  result = {"eps": eps_list, "accuracy": accs}
  if out_dir is not None:
    save_curve(result, out_dir, attack=attack, norm=norm, steps=steps, restarts=restarts)
  return result


def save_curve(result, out_dir, *, attack, norm, steps, restarts, **extra):
  """Writes {'eps': [...], 'accuracy': [...]} with its attack settings to
  `out_dir/robustness_curve.json` and plots it to `out_dir/robustness_curve.png`."""
  os.makedirs(out_dir, exist_ok=True)
  meta = dict(result, attack=attack, norm=norm, steps=steps, restarts=restarts, **extra)
  with open(os.path.join(out_dir, "robustness_curve.json"), "w") as f:
    json.dump(meta, f, indent=2)
  _plot(result, os.path.join(out_dir, "robustness_curve.png"),
        title=f"{attack} ({norm}, {steps} steps, {restarts} restarts)")


def _plot(result, path, title):
  import matplotlib   # lazily: plotting is optional and slow to import
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 3.5))
  ax.plot(result["eps"], result["accuracy"], marker="o")
  ax.set_xlabel("eps")
  ax.set_ylabel("robust accuracy")
  ax.set_ylim(-0.02, 1.02)
  ax.set_title(title)
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)


def _noise_margin(n):
  """Accuracy differences below max(1 example, 1%) are attack noise, not a failure."""
  return max(1.0 / n, 0.01)


@functools.lru_cache(maxsize=4)
def _grad_stats(apply):
  """jitted fn(params, x, y) -> (zero [B], nonfinite [B]) for the input gradients of CE
  and margin."""
  def grads(params, x, y, loss):
    g = jax.grad(lambda a: jnp.sum(loss(apply(params, a), y)))(x)
    leaves = [l for l, xl in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(x))
              if jnp.issubdtype(xl.dtype, jnp.floating)]
    flat = jnp.concatenate([l.reshape(l.shape[0], -1).astype(jnp.float32) for l in leaves], 1)
    return jnp.all(flat == 0, axis=1), ~jnp.all(jnp.isfinite(flat), axis=1)

  def run(params, x, y):
    z_ce, n_ce = grads(params, x, y, cross_entropy)
    z_m, n_m = grads(params, x, y, margin)
    # Saturated CE alone can underflow to 0; a zero margin gradient too means masking.
    return z_ce & z_m, n_ce | n_m
  return jax.jit(run)


def sanity_checks(logits_fn, x, y, key, *, eps, norm="linf", bounds=(0., 1.), steps=10,
                  attack="pgd", restarts=1, batch_size=256, eps_sweep=(0.25, 0.5, 1., 2.),
                  max_masked_fraction=0.1, params=None, clean=None, robust=None):
  """The trustworthy-evaluation checks (Carlini et al. 2019) for one model and data set.

  Checks: 'eps0_equals_clean' (eps = 0 attack accuracy == clean accuracy), 'robust_le_clean',
  'monotone_in_eps' (accuracy non-increasing over eps * `eps_sweep`), 'pgd_beats_fgsm',
  'more_steps_restarts' (2x steps and restarts + 2 never raise accuracy), 'nonzero_gradients'
  (at most `max_masked_fraction` of examples with an all-zero or NaN input gradient: the
  gradient-masking flag). Tolerance for 3-5: max(1 example, 1%). `params`: as in
  `robust_accuracy`. `clean`, `robust`: the clean accuracy and the `attack` accuracy at
  `eps` (default step size) when the caller has already measured them; computed if None.
  Returns {name: {'passed': bool, 'detail': str}, 'all_passed': bool, 'failed': [names]}.
  """
  y = np.asarray(y).astype(np.int32)
  n = len(y)
  tol = _noise_margin(n)
  common = dict(norm=norm, bounds=bounds, batch_size=batch_size, params=params)
  acc = lambda atk, e, **kw: robust_accuracy(
      logits_fn, x, y, key, attack=atk, eps=e, **{**common, "steps": steps,
                                                  "restarts": restarts, **kw})
  scale = lambda f: jax.tree_util.tree_map(lambda e: f * e, eps)
  if clean is None:
    clean = clean_accuracy(logits_fn, x, y, batch_size, params=params)
  if robust is None:
    robust = acc(attack, eps)
  # AutoAttack as a whole is too costly to repeat over an eps sweep and with more steps:
  # those checks probe its first member, APGD-CE (robust <= clean still checks the whole).
  probe, probe_robust = attack, robust
  if attack == "autoattack":
    probe = "apgd-ce"
    probe_robust = acc(probe, eps)
  checks = {}

  def put(name, passed, detail):
    checks[name] = {"passed": bool(passed), "detail": detail}

  a0 = acc(probe, scale(0.0))
  put("eps0_equals_clean", a0 == clean, f"eps=0 {probe}: {a0:.4f}, clean: {clean:.4f}")
  put("robust_le_clean", robust <= clean, f"robust {robust:.4f} <= clean {clean:.4f}")
  sweep = [acc(probe, scale(f)) for f in eps_sweep]
  worst = max([b - a for a, b in zip(sweep, sweep[1:])], default=0.0)
  put("monotone_in_eps", worst <= tol,
      f"eps x {list(eps_sweep)}: {[round(a, 4) for a in sweep]}; largest rise {worst:.4f} "
      f"(tolerance {tol:.4f})")
  pgd, fgsm = acc("pgd", eps), acc("fgsm", eps)
  put("pgd_beats_fgsm", pgd <= fgsm + tol, f"pgd {pgd:.4f} vs fgsm {fgsm:.4f}")
  more_steps = acc(probe, eps, steps=2 * steps)
  more_restarts = acc(probe, eps, restarts=restarts + 2)
  put("more_steps_restarts",
      more_steps <= probe_robust + tol and more_restarts <= probe_robust + tol,
      f"{probe}: {probe_robust:.4f}; 2x steps: {more_steps:.4f}; {restarts + 2} restarts: "
      f"{more_restarts:.4f}")
  zero = nonfinite = 0
  apply, params = _with_params(logits_fn, params)
  stats = _cached(_grad_stats, apply)
  for pos, real in _batches(np.arange(n), min(batch_size, n)):
    z, nf = (np.asarray(v)[:real] for v in stats(params, _take(x, pos), y[pos]))
    zero, nonfinite = zero + int(z.sum()), nonfinite + int(nf.sum())
  frac = (zero + nonfinite) / n
  put("nonzero_gradients", frac <= max_masked_fraction,
      f"{frac:.3f} of examples have a zero ({zero}) or NaN/Inf ({nonfinite}) input "
      f"gradient (allowed {max_masked_fraction}); high values mean gradient masking")
  failed = [k for k, v in checks.items() if not v["passed"]]
  return {**checks, "all_passed": not failed, "failed": failed}
