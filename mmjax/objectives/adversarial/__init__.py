"""Adversarial methods: any objective, trained at attacked inputs, one registered class
per method, chosen by `config.adversarial.kind`.

    madry, combined   (attacked.py)     the objective at x + δ* (and at x)
    trades, alum      (consistency.py)  a clean loss + a clean-vs-attacked divergence
    freelb, free      (ascent.py)       ascent steps whose gradients also train
    ard               (robust_distillation.py)  a teacher's clean outputs at x + δ*

`make_adversarial(config.adversarial, objective)` builds the chosen method; each method
takes the common options of `AdversarialMethod` (the attack) plus its own, and checks them
at construction. A method from outside this package registers itself with
`@register_method('name')` on an `AdversarialMethod` subclass (docs/interfaces.md).
"""
from __future__ import annotations

import difflib
from typing import Any

from mmjax.errors import ConfigError
from mmjax.objectives.adversarial.ascent import AscentMethod, Free, FreeLB
from mmjax.objectives.adversarial.attacked import Combined, Madry
from mmjax.objectives.adversarial.base import (ADVERSARIAL_METHODS, ATTACK_LOSSES,
                                               DEFAULT_BOUNDS, TRAIN_ATTACKS,
                                               AdversarialMethod, attack_specs,
                                               common_options, method_options,
                                               register_method, require_non_negative)
from mmjax.objectives.adversarial.consistency import Alum, Trades
from mmjax.objectives.adversarial.robust_distillation import RobustDistillation
from mmjax.objectives.base import Objective
from mmjax.registry import to_plain

__all__ = [
    "ADVERSARIAL_METHODS", "ATTACK_LOSSES", "DEFAULT_BOUNDS", "TRAIN_ATTACKS",
    "AdversarialMethod", "AscentMethod", "Madry", "Combined", "Trades", "Alum", "FreeLB",
    "Free", "RobustDistillation", "attack_specs", "common_options", "make_adversarial",
    "method_options",
    "register_method", "require_non_negative",
]


def make_adversarial(adversarial_config: Any, objective: Objective):
  """`objective` itself when adversarial.kind is 'none', else the chosen method around it.

  Args:
    adversarial_config: ConfigDict or dict: `kind`, the common options, the method's own
      options and the trainer's `guard_*` keys (ignored here).
    objective: the wrapped Objective (`mmjax.objectives.make_objective`).
  Returns:
    A loss_fn(params, batch, rng, *, model_state, train) -> (loss, (metrics, state)).
  Raises:
    ConfigError: an unknown kind (with a did-you-mean), a key no method takes, an option
      of another method (naming it), or an option value the method refuses.
  """
  options = to_plain(adversarial_config)
  kind = options.pop("kind", "none")
  # The guard's options belong to the trainer (mmjax/train/overfitting_guard.py).
  options = {k: v for k, v in options.items() if not k.startswith("guard_")}
  if kind == "none":
    # Like eps, a method's options are inert without a method; a key no method takes is
    # still a typo.
    _check_keys(options, kind, known=set().union(*map(method_options, _methods())))
    return objective
  try:
    cls = ADVERSARIAL_METHODS.get(kind, config_key="adversarial.kind")
  except ConfigError as e:
    raise ConfigError(f"{e} ('none' turns adversarial training off.)") from None
  _check_keys(options, kind, known=set(method_options(cls)))
  return cls(objective=objective, **options)


def _methods() -> list[type]:
  return [ADVERSARIAL_METHODS.get(name) for name in ADVERSARIAL_METHODS.names()]


def _check_keys(options: dict, kind: str, *, known: set[str]) -> None:
  """Raises a ConfigError for a key of `options` outside `known`: naming the method that
  owns it, else with a did-you-mean and the valid keys."""
  unknown = sorted(set(options) - known)
  if not unknown:
    return
  own = {n: sorted(set(method_options(ADVERSARIAL_METHODS.get(n))) - set(common_options()))
         for n in ADVERSARIAL_METHODS.names()}
  for key in unknown:
    owners = [n for n, names in own.items() if key in names]
    if owners:
      raise ConfigError(
          f"adversarial.{key} is an option of adversarial.kind="
          f"{' or '.join(repr(n) for n in owners)}, not of {kind!r} (whose own options "
          f"are: {', '.join(own[kind]) or 'none'}). Remove adversarial.{key} or set "
          f"adversarial.kind={owners[0]!r}.")
  close = [m for key in unknown for m in difflib.get_close_matches(key, sorted(known), n=1)]
  hint = f" Did you mean {' / '.join(repr(c) for c in close)}?" if close else ""
  common = f"the common kind, {', '.join(common_options())}; the trainer's guard_*."
  if kind == "none":
    methods = "; ".join(f"{n}: {', '.join(o)}" for n, o in own.items() if o)
    raise ConfigError(f"Unknown key(s) {unknown} in config.adversarial: no adversarial "
                      f"method takes them.{hint} Methods' own options: {methods}. And "
                      f"{common}")
  raise ConfigError(
      f"Unknown key(s) {unknown} in config.adversarial for kind={kind!r}.{hint} Valid "
      f"keys: its own {', '.join(own[kind]) or '(none)'}; {common}")
