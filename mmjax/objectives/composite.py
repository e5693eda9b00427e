"""`sum`: a weighted sum of other objectives on the same model and batch."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax

from mmjax.errors import ConfigError
from mmjax.objectives.base import OBJECTIVES, Objective, build_objective
from mmjax.registry import to_plain


@OBJECTIVES.register("sum")
@dataclasses.dataclass(frozen=True, eq=False)
class WeightedSum(Objective):
  """loss = Σ_term weight · loss_term.

  `terms` maps a term name to that term's options plus `weight` (default 1.0) and an
  optional `name` (the objective; defaults to the term name, so two terms of the same
  kind can coexist), e.g. {'mae': {'weight': 1.0, 'mask_ratio': 0.75},
  'cls': {'name': 'supervised', 'weight': 0.5}}.

  Each term gets its own key (split from the step key by the term's position) and sees
  the model state left by the previous term, so BatchNorm statistics update once per term
  when training. Metrics are '{term}/{metric}' for every term's metric, plus `loss`.

  prepare / embed / loss_from_inputs work on dicts keyed by term: each term prepares
  and embeds the batch its own way (MLM masks tokens, SimCLR makes views), so an attack
  on a sum perturbs every term's inputs.
  """
  terms: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
  objectives: dict[str, Objective] = dataclasses.field(init=False)
  weights: dict[str, float] = dataclasses.field(init=False)

  @property
  def per_example_loss(self) -> bool:
    return all(o.per_example_loss for o in self.objectives.values())

  def __post_init__(self):
    if not self.terms:
      raise ConfigError("Objective 'sum' needs objective.terms, e.g. "
                        "{'mae': {'weight': 1.0}, 'supervised': {'weight': 0.5}}.")
    objectives, weights = {}, {}
    for term, options in self.terms.items():
      key = f"objective.terms.{term}"
      options = to_plain(options)
      if not isinstance(options, dict):
        raise ConfigError(f"{key} must be a dict of options, got {options!r}.")
      name = options.pop("name", term)
      if name == "sum":
        raise ConfigError(f"{key}: a 'sum' cannot contain another 'sum'; list its terms "
                          "directly.")
      weights[term] = float(options.pop("weight", 1.0))
      objectives[term] = build_objective(name, options, self.model, config_key=key,
                                        also_valid=("weight",))
    object.__setattr__(self, "objectives", objectives)
    object.__setattr__(self, "weights", weights)

  def term_rngs(self, rng: jax.Array) -> dict[str, jax.Array]:
    """A distinct key per term."""
    return dict(zip(self.objectives, jax.random.split(rng, len(self.objectives))))

  def prepare(self, batch, rng):
    rngs = self.term_rngs(rng)
    return {t: obj.prepare(batch, rngs[t]) for t, obj in self.objectives.items()}

  def embed(self, params, batch, rng, *, model_state, train):
    rngs = self.term_rngs(rng)
    return {t: obj.embed(params, batch[t], rngs[t], model_state=model_state, train=train)
            for t, obj in self.objectives.items()}

  def loss_from_inputs(self, params, inputs, batch, rng, *, model_state, train):
    rngs = self.term_rngs(rng)
    total, metrics = 0.0, {}
    for term, obj in self.objectives.items():
      loss, (term_metrics, model_state) = obj.loss_from_inputs(
          params, inputs[term], batch[term], rngs[term], model_state=model_state,
          train=train)
      total = total + self.weights[term] * loss
      metrics.update({f"{term}/{k}": v for k, v in term_metrics.items()})
    metrics["loss"] = total
    return total, (metrics, model_state)
