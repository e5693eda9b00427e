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
import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from mmjax.attacks import cross_entropy, margin
from mmjax.attacks.core import refuse_step_size
from mmjax.errors import ConfigError
from mmjax.evals import autoattack
from mmjax.evals.attack_stages import (OWN_STEP_STAGES, STAGES, cached, clean_accuracy,
                                       padded_batches, run_stages, take_rows, with_params)
# Public here before the stage engine had a module of its own; callers use them from here.
from mmjax.evals.attack_stages import N_TARGETS, clean_correct  # noqa: F401

# 'ensemble' is APGD-CE then APGD-T; 'autoattack' runs a version of mmjax.evals.autoattack.
EVAL_ATTACKS = STAGES + ("ensemble", "autoattack")


def check_step_size(attack, step_size, config_key):
  """ConfigError when a step size is set for an attack that sets its own (APGD's 2 eps
  start, FAB, Square): the silent weakening this prevents cost 3 points on MNIST.
  A falsy step size (the probe's 0) means the attack's default."""
  if attack in OWN_STEP_STAGES + ("ensemble", "autoattack"):
    refuse_step_size(step_size or None, f"attack={attack!r} ({config_key})",
                     f"Unset {config_key}, or use attack='pgd'.")


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



def robust_correct(logits_fn, x, y, key, *, attack, eps, norm="linf", steps=10,
                   step_size=None, restarts=1, bounds=(0., 1.), batch_size=256,
                   params=None, queries=5000, version="standard"):
  """Per-example robustness (bool numpy [N]); see `robust_accuracy` for the arguments."""
  if attack not in EVAL_ATTACKS:
    raise ConfigError(f"attack must be one of {EVAL_ATTACKS}, got {attack!r}.")
  if attack == "autoattack":
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
  apply, params = with_params(logits_fn, params)
  stats = cached(_grad_stats, apply)
  for pos, real in padded_batches(np.arange(n), min(batch_size, n)):
    z, nf = (np.asarray(v)[:real] for v in stats(params, take_rows(x, pos), y[pos]))
    zero, nonfinite = zero + int(z.sum()), nonfinite + int(nf.sum())
  frac = (zero + nonfinite) / n
  put("nonzero_gradients", frac <= max_masked_fraction,
      f"{frac:.3f} of examples have a zero ({zero}) or NaN/Inf ({nonfinite}) input "
      f"gradient (allowed {max_masked_fraction}); high values mean gradient masking")
  failed = [k for k, v in checks.items() if not v["passed"]]
  return {**checks, "all_passed": not failed, "failed": failed}
