"""AutoAttack (Croce & Hein 2020): the reference's versions as stage lists, run in order
on the points still robust, with the robust accuracy after each stage.

    result = autoattack(logits_fn, x, y, key, eps=8/255, norm='linf', version='standard')
    result['stages']   # [{'attack': 'apgd-ce', 'robust_accuracy': 0.52, 'seconds': 3.1}, ...]

Versions (the reference's `set_version`, Linf and L2):
  standard  APGD-CE (1 restart), APGD-T (9 targets), FAB-T (9 targets), Square (5,000
            queries); APGD and FAB 100 iterations, Square p_init 0.8.
  plus      APGD-CE (5 restarts), APGD-DLR (5), FAB (5), Square (1), APGD-T (1), FAB-T (1).
  rand      APGD-CE and APGD-DLR with EOT over 20 draws, for randomised defences: with
            `random_logits=True`, `logits_fn` takes a PRNG key last and each APGD step
            averages the gradients of 20 fresh draws. A deterministic `logits_fn` has one
            gradient, which 20 draws would only repeat: it runs one.
  custom    `attacks`: any sequence of stage names (mmjax.evals.attack_stages.STAGES).

Each stage sees only the points no earlier stage broke, so the per-stage accuracies are
non-increasing and the last one is the reported robust accuracy.
"""
from __future__ import annotations

import numpy as np

from mmjax.errors import ConfigError
from mmjax.evals import attack_stages

VERSIONS = ("standard", "plus", "rand", "custom")
ITERATIONS = 100       # APGD and FAB iterations in every version
QUERIES = 5000         # Square's query budget
EOT_ITERATIONS = 20    # the reference's EOT draws in 'rand' (see the module docstring)

# (stage, restarts) in the reference's order.
_VERSION_STAGES = {
    "standard": (("apgd-ce", 1), ("apgd-t", 1), ("fab-t", 1), ("square", 1)),
    "plus": (("apgd-ce", 5), ("apgd-dlr", 5), ("fab", 5), ("square", 1), ("apgd-t", 1),
             ("fab-t", 1)),
    "rand": (("apgd-ce", 1), ("apgd-dlr", 1)),
}


def version_stages(version: str, attacks=None) -> tuple:
  """((stage, restarts), ...) of an AutoAttack version; `attacks` only with 'custom'."""
  if version not in VERSIONS:
    raise ConfigError(f"Unknown AutoAttack version {version!r}; choose one of {VERSIONS}.")
  if version != "custom":
    if attacks:
      raise ConfigError(f"attacks={tuple(attacks)} is only read with version='custom' "
                        f"(the {version!r} version fixes its own list); set version='custom'.")
    return _VERSION_STAGES[version]
  if not attacks:
    raise ConfigError("version='custom' needs `attacks`, e.g. ('apgd-ce', 'square').")
  unknown = [a for a in attacks if a not in attack_stages.STAGES]
  if unknown:
    raise ConfigError(f"Unknown attack(s) {unknown} in attacks; choose from "
                      f"{attack_stages.STAGES}.")
  return tuple((a, 1) for a in attacks)


def describe(version: str, attacks=None) -> str:
  """A one-line description of a version's stages, e.g. for logs and reports."""
  parts = []
  for stage, restarts in version_stages(version, attacks):
    what = {"square": f"{QUERIES} queries", "fgsm": "1 step"}.get(stage, f"{ITERATIONS} it")
    if stage in ("apgd-t", "fab-t"):
      what += f", {attack_stages.N_TARGETS} targets"
    parts.append(f"{stage.upper()} ({what}, {restarts} restart{'s' * (restarts > 1)})")
  return f"AutoAttack {version}: " + ", ".join(parts)


def autoattack(logits_fn, x, y, key, *, eps, norm="linf", version="standard", attacks=None,
               bounds=(0., 1.), batch_size=256, params=None, step_size=None,
               random_logits=False) -> dict:
  """Robust accuracy under an AutoAttack version, stage by stage.

  Args:
    logits_fn, x, y, key, eps, norm, bounds, batch_size, params: as in
      `mmjax.evals.robustness.robust_accuracy` (x [N,...] array or per-modality pytree,
      eps/norm scalars or per-modality dicts).
    version: 'standard' | 'plus' | 'rand' | 'custom'; attacks: stage names for 'custom'.
    random_logits: `logits_fn` takes a PRNG key as its last argument (a randomised
      defence, e.g. noise or random transforms in eval mode); with version='rand' APGD then
      averages each step's gradient over 20 draws (EOT).
    step_size: must stay None (every AutoAttack member sets its own steps); given only so
      that a caller passing a PGD step size gets a clear error instead of a weaker attack.
  Returns:
    {'version', 'description', 'norm', 'eps', 'num_examples', 'clean_accuracy',
     'stages': [{'attack', 'restarts', 'robust_accuracy', 'seconds'}], 'robust_accuracy',
     'robust': bool numpy [N], 'warnings': [str] (Square beating the gradient attacks)}.
  """
  stages = version_stages(version, attacks)
  result = {"version": version, "description": describe(version, attacks), "norm": norm,
            "eps": eps, "num_examples": int(len(np.asarray(y)))}
  table, clean = [], []

  def on_stage(stage, robust, seconds):
    if stage == "clean":
      clean.append(float(np.mean(robust)))
      return
    restarts = dict(stages)[stage]
    table.append({"attack": stage, "restarts": restarts,
                  "robust_accuracy": float(np.mean(robust)), "seconds": float(seconds)})

  robust = attack_stages.run_stages(
      logits_fn, x, y, key, stages=list(stages), eps=eps, norm=norm, steps=ITERATIONS,
      step_size=step_size, bounds=bounds, batch_size=batch_size, params=params,
      queries=QUERIES, on_stage=on_stage, random_logits=random_logits,
      eot=EOT_ITERATIONS if version == "rand" and random_logits else 1)
  return dict(result, clean_accuracy=clean[0], stages=table,
              robust_accuracy=float(np.mean(robust)), robust=robust,
              warnings=square_warnings(table))


def square_warnings(table, alpha=0.002) -> list[str]:
  """The reference's check on Square: a gradient-free attack that breaks more than
  `alpha` of the points the gradient attacks before it left means those were masked."""
  out = []
  for prev, row in zip(table, table[1:]):
    if row["attack"] == "square" and row["robust_accuracy"] < prev["robust_accuracy"] - alpha:
      out.append(f"Square lowered robust accuracy from {prev['robust_accuracy']:.4f} to "
                 f"{row['robust_accuracy']:.4f} after the gradient attacks: the gradients "
                 "are likely masked, so gradient-based robust numbers overstate robustness.")
  return out
