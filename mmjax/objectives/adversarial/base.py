"""The base of every adversarial method: its registry, the common attack options and the
attack machinery they share.

An adversarial method wraps an objective L and is itself the loss_fn of
docs/interfaces.md. It finds δ* = argmax over the ε-ball (per modality,
`mmjax.attacks.perturb`) of an attack loss on the objective's embedded inputs (the
`prepare` / `embed` / `loss_from_inputs` seam of `mmjax/objectives/base.py`) and combines
losses at x and x + δ* in its own way. The attack maximises the wrapped objective's own
loss (`attack_loss='objective'`) or the per-example cross-entropy of the class logits
('ce'); for a `sum` objective `attack_loss` may also name one of its terms (e.g. 'mae'):
the attack maximises that term alone and its δ is applied to every term's inputs, which
must then be alike. The attack runs with train=False (BatchNorm on running statistics, no
dropout) and δ* is a constant for the update; it is added back onto the embedded inputs,
so embedding parameters (text) still get gradients.

With `attack_loss='objective'` the attack sees one batch loss, so a restart is kept or
dropped for the whole batch; 'ce' keeps the per-example worst case.

A method is a frozen dataclass registered under its `kind` (`register_method`). Its
fields are its config options: the common ones below, plus its own, which it validates
in `__post_init__` (at construction, before any compute).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from mmjax import attacks
from mmjax.errors import ConfigError
from mmjax.objectives import losses
from mmjax.objectives.base import Objective, StepContract, require_output
from mmjax.registry import to_plain
from mmjax.registry import Registry

ADVERSARIAL_METHODS = Registry("adversarial method")
ATTACK_LOSSES = ("objective", "ce")
TRAIN_ATTACKS = ("fgsm", "fgsm_rs", "pgd", "apgd")
# Inputs with a natural valid range; every other input (embeddings) is unbounded.
DEFAULT_BOUNDS = {"image": (0.0, 1.0)}


def register_method(kind: str):
  """Class decorator: registers an AdversarialMethod subclass as `adversarial.kind=kind`."""
  return ADVERSARIAL_METHODS.register_class(kind, "kind")


def method_options(cls: type) -> list[str]:
  """The config options of method class `cls` (its init fields, less `objective`)."""
  return sorted(f.name for f in dataclasses.fields(cls) if f.init and f.name != "objective")


def common_options() -> list[str]:
  """The options every method takes (the fields of AdversarialMethod)."""
  return method_options(AdversarialMethod)


def require_non_negative(kind: str, name: str, value: Any, meaning: str) -> None:
  """Raises a ConfigError unless `value` is a finite real number >= 0 (not a bool)."""
  if (isinstance(value, bool) or not isinstance(value, numbers.Real)
      or not math.isfinite(value) or value < 0):
    raise ConfigError(f"adversarial.{name}={value!r} must be a number >= 0 for "
                      f"adversarial.kind={kind!r} ({meaning}).")


# eq=False: hashed by identity, as objectives are (an option may be a dict).
@dataclasses.dataclass(frozen=True, eq=False)
class AdversarialMethod(StepContract):
  """Base class: the common options, their checks and the attack. A subclass adds its own
  option fields (checked in its `__post_init__`, after `super().__post_init__()`) and
  implements `__call__`, the loss_fn of docs/interfaces.md."""
  kind: ClassVar[str] = ""   # set by register_method
  objective: Objective
  modalities: tuple = ("image",)
  attack: str = "pgd"
  # One value or a {modality: value} dict; unset (None) is an error: no silent no-op.
  eps: Any = None
  step_size: Any = None
  steps: int = 10
  restarts: int = 1
  norm: Any = "linf"
  attack_loss: str = "objective"
  # PGD's best iterate (strongest) or its last (the published training recipes; cheaper).
  best_iterate: bool = False
  # Clip the random start into the bounds (Wong et al.'s CIFAR code, Madry et al.) or only
  # each step's result (Wong et al.'s MNIST code); see attacks.core.Problem.random_start.
  clip_start: bool = True

  def __post_init__(self):
    if isinstance(self.modalities, str):   # --config.adversarial.modalities=text
      object.__setattr__(self, "modalities", (self.modalities,))
    if not self.modalities:
      raise ConfigError("adversarial.modalities is empty: name the inputs to perturb, "
                        "e.g. ('image',) or ('text',).")
    terms = tuple(getattr(self.objective, "objectives", {}))
    if self.attack_loss not in ATTACK_LOSSES + terms:
      raise ConfigError(f"Unknown adversarial.attack_loss {self.attack_loss!r}. Choose "
                        f"one of: {', '.join(ATTACK_LOSSES + terms)} (a term name only for "
                        "a 'sum' objective).")
    if self.attack not in TRAIN_ATTACKS:
      raise ConfigError(f"adversarial.attack={self.attack!r} cannot train: choose one of "
                        f"{', '.join(TRAIN_ATTACKS)} (Square and FAB are evaluation attacks: "
                        "evals.robust.attack).")
    if self.attack == "apgd" and to_plain(self.step_size):
      raise ConfigError(f"adversarial.step_size={to_plain(self.step_size)!r} with "
                        "adversarial.attack='apgd': APGD sets its own step (2 eps, adapted "
                        "per example); unset adversarial.step_size.")
    self._check_eps()
    for name in ("steps", "restarts"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"adversarial.{name}={value!r} must be a positive int.")

  @property
  def per_example_loss(self) -> bool:
    """The wrapped objective's (the attack itself is per example)."""
    return self.objective.per_example_loss

  def initial_state(self) -> dict:
    """The wrapped objective's state across steps (e.g. Group DRO's weights)."""
    return self.objective.initial_state()

  def _check_eps(self):
    eps = to_plain(self.eps)
    if eps is None:
      raise ConfigError(f"adversarial.kind={self.kind!r} needs a positive adversarial.eps, "
                        "e.g. --config.adversarial.eps=0.3 (MNIST) or 0.031 (CIFAR-10).")
    for value in (eps.values() if isinstance(eps, dict) else (eps,)):
      if (isinstance(value, bool) or not isinstance(value, numbers.Real)
          or not math.isfinite(value) or value < 0):
        raise ConfigError(f"adversarial.eps={eps!r} must be a number >= 0, or a {{modality: "
                          "number}} dict (0 leaves the inputs where they are).")

  # ---- the attack ----
  def _attack_specs(self, inputs: dict) -> dict:
    """perturb's eps / step_size / bounds trees for `inputs` (see `attack_specs`)."""
    return attack_specs(inputs, self.modalities, self.eps, self.step_size,
                        config_key="adversarial", norm=self.norm)

  def attack_inputs(self, inputs: dict, rng, attack_loss_fn) -> dict:
    """Perturbed copy of `inputs` (δ* held constant).

    `attack_loss_fn(inputs) -> [B]` is maximised per example; the returned tree is shaped
    like `inputs`.
    """
    clean = jax.lax.stop_gradient(inputs)
    adv = attacks.perturb(
        attack_loss_fn, clean, jax.random.fold_in(rng, 101), attack=self.attack,
        steps=self.steps, restarts=self.restarts, best_iterate=self.best_iterate,
        clip_start=self.clip_start, **self._attack_specs(inputs))
    # inputs + constant δ: gradients still reach the parameters that made `inputs`.
    return jax.tree.map(lambda x, a, c: x + jax.lax.stop_gradient(a - c), inputs, adv, clean)

  def prepare_and_embed(self, params, batch, rng, model_state, train):
    """(prepared batch, embedded inputs) of the wrapped objective."""
    prepared = self.objective.prepare(batch, rng)
    inputs = self.objective.embed(params, prepared, rng, model_state=model_state,
                                  train=train)
    return prepared, inputs

  def adversarial_inputs(self, params, inputs, prepared, rng, model_state):
    """`inputs` + δ*, δ* maximising `attack_loss` (the objective, 'ce' or a sum term)."""
    if self.attack_loss in ATTACK_LOSSES:
      return self.attack_inputs(
          inputs, rng, self._objective_attack_loss(params, prepared, rng, model_state))
    return self._attack_one_term(params, inputs, prepared, rng, model_state)

  def _objective_attack_loss(self, params, prepared, rng, model_state):
    obj = self.objective

    def loss_of(inputs):
      if self.attack_loss == "ce":
        outputs, _ = obj.encode(params, inputs, rng, model_state=model_state, train=False)
        logits = require_output(outputs, "logits", "adversarial attack_loss='ce'",
                                "Set model.num_classes > 0 or attack_loss='objective'.")
        labels = jnp.asarray(prepared["label"]).reshape(logits.shape[0])
        return losses.softmax_cross_entropy(logits, labels)
      loss, _ = obj.loss_from_inputs(params, inputs, prepared, rng,
                                     model_state=model_state, train=False)
      batch_size = jax.tree.leaves(inputs)[0].shape[0]
      return jnp.full((batch_size,), loss)
    return loss_of

  def _attack_one_term(self, params, inputs, prepared, rng, model_state):
    """δ maximising one term of a `sum` objective, applied to every term's inputs."""
    obj, term = self.objective, self.attack_loss
    sub, term_rng = obj.objectives[term], obj.term_rngs(rng)[term]

    def loss_of(term_inputs):
      loss, _ = sub.loss_from_inputs(params, term_inputs, prepared[term], term_rng,
                                     model_state=model_state, train=False)
      return jnp.full((jax.tree.leaves(term_inputs)[0].shape[0],), loss)

    adv = self.attack_inputs(inputs[term], rng, loss_of)
    # δ lives on the attacked modalities only; every term must hold them, alike.
    delta = {k: jax.lax.stop_gradient(adv[k] - v) for k, v in inputs[term].items()
             if k in self.modalities}
    for other, other_inputs in inputs.items():
      for k, d in delta.items():
        if k not in other_inputs or other_inputs[k].shape != d.shape:
          raise ConfigError(
              f"adversarial.attack_loss={term!r} applies its δ on {k!r} to every term, "
              f"but term {other!r} embeds no {k!r} of shape {d.shape}. Use "
              "attack_loss='objective'.")
    return {t: {**x, **{k: x[k] + d for k, d in delta.items()}} for t, x in inputs.items()}

  # ---- the loss_fn ----
  def __call__(self, params, batch, rng, *, model_state, train):
    """The loss_fn of docs/interfaces.md: -> (loss, (metrics, new_model_state))."""
    raise NotImplementedError


def attack_specs(inputs: dict, modalities, eps, step_size, *, config_key: str,
                 norm="linf") -> dict:
  """perturb's per-leaf `eps`, `step_size`, `norm` and `bounds` trees for `inputs`.

  A leaf is attacked when its own key is one of `modalities`, at any depth, so ('image',)
  also reaches into a `sum` objective's per-term inputs ({'mae': {'image': ...}, ...}).
  Other leaves get eps 0 (perturb leaves them exactly where they are). eps, step_size and
  norm are one value or a {modality: value} dict; bounds are DEFAULT_BOUNDS (pixels
  [0, 1], embeddings unbounded). Each returned tree is shaped like `inputs`.

  Raises ConfigError when a modality is not an input leaf (naming `config_key`).
  """
  leaf_keys = {getattr(p[-1], "key", None)
               for p, _ in jax.tree_util.tree_flatten_with_path(inputs)[0]}
  missing = [m for m in modalities if m not in leaf_keys]
  if missing:
    raise ConfigError(f"{config_key}.modalities {missing} are not model inputs; the model's "
                      f"embed() gives {sorted(k for k in leaf_keys if k is not None)}.")

  def tree(value, fixed):
    def spec(path, _):
      key = getattr(path[-1], "key", None)
      return value(key) if key in modalities else fixed
    return jax.tree_util.tree_map_with_path(spec, inputs)

  eps, step_size, norm = to_plain(eps), to_plain(step_size), to_plain(norm)
  for name, value in (("eps", eps), ("step_size", step_size), ("norm", norm)):
    if isinstance(value, dict) and set(value) - set(modalities):
      raise ConfigError(f"{config_key}.{name} names {sorted(set(value) - set(modalities))}, "
                        f"which are not among {config_key}.modalities {tuple(modalities)}.")
  if isinstance(eps, dict) and set(modalities) - set(eps):
    raise ConfigError(f"{config_key}.eps has no value for {sorted(set(modalities) - set(eps))}"
                      f"; give one per attacked modality.")
  per_modality = lambda v, default: (lambda m: v.get(m, default) if isinstance(v, dict)
                                     else v)
  return {"eps": tree(per_modality(eps, 0.0), 0.0),
          "step_size": tree(per_modality(step_size, None), None),
          "norm": tree(per_modality(norm, "linf"), "linf"),
          "bounds": tree(DEFAULT_BOUNDS.get, None)}
