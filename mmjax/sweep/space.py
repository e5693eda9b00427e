"""The search space of `config.sweep`: checked before any compute, turned into Optuna
suggestions, and applied to a config as overrides.

`config.sweep.parameters` is a tuple of (config key, distribution) pairs (see
`mmjax.config.sweep_space`); a distribution is a dict:

    dict(type="uniform", low=0.0, high=0.5)           float in [low, high]
    dict(type="log_uniform", low=1e-4, high=1e-1)     float, log-uniform; 0 < low < high
    dict(type="int", low=32, high=128, step=32)       int in [low, high] by step (log=True)
    dict(type="categorical", choices=(0.1, 0.2))      one of the choices

This module imports no Optuna at import time: `import mmjax.sweep.space` stays light.
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Mapping

import ml_collections

from mmjax.errors import ConfigError

TYPES = ("uniform", "log_uniform", "int", "categorical")
_REQUIRED = object()
# Each type's keys besides `type`, with their defaults.
_KEYS = {"uniform": dict(low=_REQUIRED, high=_REQUIRED, step=None),
         "log_uniform": dict(low=_REQUIRED, high=_REQUIRED),
         "int": dict(low=_REQUIRED, high=_REQUIRED, step=1, log=False),
         "categorical": dict(choices=_REQUIRED)}
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "hyperband", "none")
DIRECTIONS = ("maximize", "minimize")


@dataclasses.dataclass(frozen=True)
class Param:
  """One searched config key (`key`, e.g. 'optim.learning_rate') and its distribution."""
  key: str
  type: str
  low: Any = None
  high: Any = None
  step: Any = None
  log: bool = False
  choices: tuple = ()

  def extremes(self) -> tuple:
    """The values that bound the range (low and high, or every choice): each is checked
    as an override before any compute."""
    return self.choices if self.type == "categorical" else (self.low, self.high)

  def grid(self) -> list:
    """Every value, for the grid sampler (categorical and int parameters only)."""
    if self.type == "categorical":
      return list(self.choices)
    if self.type == "int":
      return list(range(self.low, self.high + 1, self.step))
    raise ConfigError(f"sweep.sampler='grid' needs categorical or int parameters; "
                      f"{self.key} is {self.type}. Give it choices "
                      f"(dict(type='categorical', choices=(...))) or use sampler 'tpe'.")


def _did_you_mean(word: str, known) -> str:
  close = difflib.get_close_matches(word, sorted(known), n=1)
  return f" Did you mean {close[0]!r}?" if close else ""


def check_key(config: ml_collections.ConfigDict, key: str) -> None:
  """ConfigError unless `key` ('a.b.c') names a value (not a section) of `config`, with
  did-you-mean and the valid keys at the level where the walk stopped."""
  node, walked = config, []
  for part in key.split("."):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      keys = set(node.keys()) if isinstance(node, ml_collections.ConfigDict) else set()
      where = ".".join(walked) or "the config"
      raise ConfigError(
          f"sweep.parameters names {key!r}, which is not a config key: {where} has no "
          f"key {part!r}.{_did_you_mean(part, keys)} Valid keys there: "
          f"{', '.join(sorted(keys)) or '(none: it is a value)'}. A method's own option "
          "(e.g. adversarial.beta) must be set in the config file first to be searched.")
    node, walked = node[part], walked + [part]
  if isinstance(node, ml_collections.ConfigDict):
    raise ConfigError(f"sweep.parameters names {key!r}, a whole section; search one of "
                      f"its values instead: {', '.join(f'{key}.{k}' for k in node)}.")


def _number(key: str, name: str, value: Any, integer: bool) -> Any:
  ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  if integer:
    ok = ok and float(value).is_integer()
  if not ok:
    kind = "an integer" if integer else "a number"
    raise ConfigError(f"sweep.parameters[{key!r}].{name}={value!r} must be {kind}.")
  return int(value) if integer else float(value)


def parse_param(key: str, spec: Any) -> Param:
  """A checked Param from one (key, distribution dict) pair."""
  if not isinstance(spec, Mapping) and not hasattr(spec, "items"):
    raise ConfigError(f"sweep.parameters[{key!r}]={spec!r} is not a distribution; write "
                      "e.g. dict(type='log_uniform', low=1e-4, high=1e-1).")
  spec = dict(spec.items())
  kind = spec.pop("type", None)
  if kind not in TYPES:
    raise ConfigError(f"sweep.parameters[{key!r}] has type={kind!r}; choose one of "
                      f"{', '.join(TYPES)}.{_did_you_mean(str(kind), TYPES)}")
  allowed = _KEYS[kind]
  unknown = sorted(set(spec) - set(allowed))
  if unknown:
    raise ConfigError(f"sweep.parameters[{key!r}] ({kind}) has unknown keys {unknown}; "
                      f"it takes {', '.join(['type', *allowed])}."
                      f"{_did_you_mean(unknown[0], allowed)}")
  values = {k: spec.get(k, default) for k, default in allowed.items()}
  missing = [k for k, v in values.items() if v is _REQUIRED]
  if missing:
    raise ConfigError(f"sweep.parameters[{key!r}] ({kind}) needs {', '.join(missing)}.")
  if kind == "categorical":
    given = values["choices"]
    choices = tuple(given) if isinstance(given, (tuple, list)) else ()
    if not choices:
      raise ConfigError(f"sweep.parameters[{key!r}] (categorical) needs a non-empty tuple "
                        f"of choices, got {values['choices']!r}.")
    return Param(key, kind, choices=choices)
  integer = kind == "int"
  low = _number(key, "low", values["low"], integer)
  high = _number(key, "high", values["high"], integer)
  if low >= high:
    raise ConfigError(f"sweep.parameters[{key!r}] has low={low} >= high={high}; the "
                      "range must be non-empty (low < high).")
  log = kind == "log_uniform" or bool(values.get("log"))
  if log and low <= 0:
    raise ConfigError(f"sweep.parameters[{key!r}] is log-scaled but low={low} <= 0; a "
                      "log range needs 0 < low < high (e.g. low=1e-5).")
  step = values.get("step")
  if step is not None:
    step = _number(key, "step", step, integer)
    if step <= 0 or (log and step != 1):
      raise ConfigError(f"sweep.parameters[{key!r}].step={step} must be > 0 (and 1 for a "
                        "log-scaled int).")
  return Param(key, kind, low=low, high=high, step=step, log=log)


def pairs(parameters: Any) -> list[tuple[str, Any]]:
  """The (key, distribution) pairs of `config.sweep.parameters`."""
  if isinstance(parameters, Mapping) or hasattr(parameters, "items"):
    raise ConfigError(
        "sweep.parameters is a dict; a ConfigDict cannot keep dotted keys when the config "
        "is copied. Write c.sweep.parameters = sweep_space({...}) (from mmjax.config "
        "import sweep_space), which keeps them as (key, distribution) pairs.")
  try:
    return [(str(k), v) for k, v in parameters]
  except (TypeError, ValueError):
    raise ConfigError(f"sweep.parameters={parameters!r} must be (key, distribution) "
                      "pairs; write c.sweep.parameters = sweep_space({...}).") from None


def parse(config: ml_collections.ConfigDict) -> list[Param]:
  """The checked Params of config.sweep (keys, bounds, values as overrides), or a
  ConfigError naming the cause and the fix. Also checks direction, sampler, pruner and
  num_trials."""
  s = config.sweep
  found = pairs(s.parameters)
  if not found:
    raise ConfigError("config.sweep.parameters is empty: nothing to search. Set e.g. "
                      "c.sweep.parameters = sweep_space({'optim.learning_rate': "
                      "dict(type='log_uniform', low=1e-4, high=1e-1)}) in the config file.")
  for name, allowed in (("direction", DIRECTIONS), ("sampler", SAMPLERS),
                        ("pruner", PRUNERS)):
    if s[name] not in allowed:
      raise ConfigError(f"Unknown sweep.{name}={s[name]!r}; choose one of "
                        f"{', '.join(allowed)}.{_did_you_mean(str(s[name]), allowed)}")
  if not isinstance(s.num_trials, int) or s.num_trials < 1:
    raise ConfigError(f"sweep.num_trials={s.num_trials!r} must be an integer >= 1, e.g. "
                      "--config.sweep.num_trials=20 (or --trials=20).")
  params = []
  for key, spec in found:
    check_key(config, key)
    params.append(parse_param(key, spec))
  if s.sampler == "grid":
    for p in params:
      p.grid()
  from mmjax.train import checks   # the trainer's own checks, on each extreme value
  for p in params:
    for value in p.extremes():
      checks.check_config(apply(config, {p.key: value}))
  for values in s.enqueue:
    unknown = sorted(set(values) - {p.key for p in params})
    if unknown:
      raise ConfigError(f"sweep.enqueue has {unknown}, which sweep.parameters does not "
                        f"search ({', '.join(p.key for p in params)}).")
  return params


def apply(config: ml_collections.ConfigDict, values: Mapping[str, Any]
          ) -> ml_collections.ConfigDict:
  """A locked copy of `config` with each {key: value} of `values` set, as
  --config.KEY=VALUE would; a value of the wrong type for its key is a ConfigError."""
  out = config.copy_and_resolve_references()
  with out.unlocked():
    for key, value in values.items():
      *path, leaf = key.split(".")
      node = out
      for part in path:
        node = node[part]
      try:
        node[leaf] = value
      except TypeError as e:
        raise ConfigError(f"sweep.parameters[{key!r}]: {value!r} cannot be the value of "
                          f"{key} ({e}); use a distribution of its type (an int key "
                          "takes type='int' or integer choices).") from None
  out.lock()
  return out


def suggest(trial, params: list[Param]) -> dict[str, Any]:
  """{key: value} drawn for an optuna.Trial (an enqueued or resumed trial gets its fixed
  values back)."""
  values = {}
  for p in params:
    if p.type == "categorical":
      values[p.key] = trial.suggest_categorical(p.key, list(p.choices))
    elif p.type == "int":
      values[p.key] = trial.suggest_int(p.key, p.low, p.high, step=p.step or 1, log=p.log)
    else:
      values[p.key] = trial.suggest_float(p.key, p.low, p.high, log=p.log,
                                          step=None if p.log else p.step)
  return values


def check_metric(config: ml_collections.ConfigDict, metric: str) -> None:
  """ConfigError unless some evaluator of config.evals can write `metric`: its name must
  start with an evaluator's prefix ('NAME/' by default; an empty prefix, the eval loss's,
  takes the objective's metric names). The run itself checks the full name at the first
  eval (mmjax/sweep/pruning.py)."""
  from mmjax.evals import base, evaluators  # noqa: F401  (registers the built-in types)
  entries = base.resolve_all(config)
  bare_names = "without a prefix, e.g. loss, accuracy"
  described = ", ".join(
      f"{name} (type {cls.type_name}, metrics "
      f"{repr(opts.prefix + '...') if opts.prefix else bare_names})"
      for name, (cls, opts) in entries.items()) or "none"
  if not metric:
    raise ConfigError(f"sweep.metric is empty; name an eval metric as written to "
                      f"metrics.jsonl, e.g. --config.sweep.metric=accuracy. Evaluators: "
                      f"{described}.")
  prefixed = [o.prefix for _, o in entries.values() if o.prefix]
  if any(metric.startswith(p) for p in prefixed):
    return
  # A bare name goes to the evaluators without a prefix (the eval loss: the objective's
  # metrics, some with slashes, e.g. clean/loss), unless it starts like the metrics of
  # an evaluator type that is not configured (report/accuracy without a report).
  head = metric.split("/")[0]
  other_type = "/" in metric and head in base.EVALUATORS.names()
  bare = any(not o.prefix for _, o in entries.values())
  if bare and not other_type:
    return
  raise ConfigError(f"sweep.metric={metric!r} is produced by no configured evaluator. "
                    f"config.evals has: {described}. Choose one of their metrics (see a "
                    "run's metrics.jsonl) or add the evaluator that writes it.")
