"""Evaluators as plug-ins: the registry, the options every evaluator shares, and how an
entry of `config.evals` becomes checked options.

`config.evals` is a dict of named evaluators, each `{type: ..., every: ..., <options>}`:

    c.evals.robust = dict(type="robust", attack="autoattack", eps=0.3)
    c.evals.robust_small = dict(type="robust", attack="pgd", eps=0.1, steps=20)

An evaluator type is an `Evaluator` subclass registered with `register_evaluator(type)`.
Its `options` (with their defaults) are the keys it takes besides `COMMON_OPTIONS`; the
entry is checked against them (unknown keys with "did you mean", values against the
defaults' types) and then by the class's own `check_options`, all before any compute.
The trainer builds each evaluator once per run, calls it as
`evaluator(params, model_state, step) -> {metric: float}` and prefixes each metric with
the entry's `prefix` (default '<name>/'). docs/evaluators.md has a worked example.
"""
from __future__ import annotations

import difflib
import os
from typing import Any, ClassVar, Mapping

import jax
import ml_collections

from mmjax import config as config_lib
from mmjax.errors import ConfigError
from mmjax.registry import Registry, to_plain

EVALUATORS = Registry("evaluator type")

# Options every evaluator takes. every: run every N train steps (0: with each
# train.eval_every) and always at the end; prefix: of its metric names (None: '<name>/');
# use_ema: evaluate the EMA parameters when optim.ema_decay > 0; batch_size: global
# batch of its forward passes (0: train.eval_batch_size); split: the data split it
# reads ('': data.eval_split).
COMMON_OPTIONS: dict[str, Any] = dict(type="", every=0, prefix=None, use_ema=True,
                                      batch_size=0, split="")


def register_evaluator(type_name: str):
  """Class decorator: registers an Evaluator subclass as `evals.NAME.type=type_name`."""
  return EVALUATORS.register_class(type_name, "type_name")


class Evaluator:
  """Base class. A subclass sets `options` (its own keys and defaults), may name
  `per_modality_options` (one value or {modality: value}), `required` ones (whose
  default means "unset") and `choices` (an option's allowed values), checks other values
  in `check_options`, reads its examples in `__init__` and measures in `__call__`."""
  type_name: ClassVar[str] = ""    # set by register_evaluator
  options: ClassVar[dict[str, Any]] = {}
  per_modality_options: ClassVar[tuple[str, ...]] = ()
  required: ClassVar[dict[str, str]] = {}   # option -> an example value for the error
  choices: ClassVar[dict[str, tuple]] = {}   # option -> the values it may take

  def __init__(self, exp, name: str, options: ml_collections.ConfigDict):
    self.exp, self.name, self.cfg = exp, name, options
    self._pictures: list[tuple[str, str]] = []
    self.key = f"evals.{name}"
    self.workdir = exp.workdir
    self.batch_size = options.batch_size // jax.process_count()
    # The data config with this evaluator's split as the eval split.
    self.data_config = exp.config.data
    if options.split:
      self.data_config = exp.config.data.copy_and_resolve_references()
      self.data_config.eval_split = options.split

  def output_dir(self, base: str) -> str:
    """Where this evaluator writes files: workdir/`base` (e.g. 'robustness') when its
    name is its type's, else workdir/`base`_<name>, so two of one type never collide."""
    return os.path.join(self.workdir, base if self.name == self.type_name
                        else f"{base}_{self.name}")

  def add_picture(self, tag: str, png_path: str) -> None:
    """Shows the PNG at `png_path` (written by this evaluator) in TensorBoard as the
    image `<name>/<tag>` at the step being evaluated."""
    self._pictures.append((f"{self.name}/{tag}", png_path))

  def take_pictures(self) -> list[tuple[str, str]]:
    """The (tag, path) pairs added since the last call."""
    pictures, self._pictures = self._pictures, []
    return pictures

  @classmethod
  def check_options(cls, options: ml_collections.ConfigDict, key: str,
                    config: ml_collections.ConfigDict) -> None:
    """ConfigError for a bad value or combination (`key` is 'evals.NAME'); called before
    any compute, after names and types were checked."""

  def __call__(self, params, model_state, step: int) -> dict[str, float]:
    """The metrics at train step `step` of the model with `params` (the parameter
    pytree, EMA or live per `use_ema`) and `model_state` (other collections, e.g.
    batch_stats); names without the prefix, which the trainer adds."""
    raise NotImplementedError


def _type_error(key: str, value: Any, default: Any) -> ConfigError:
  kind = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
          tuple: "a tuple"}[type(default)]
  return ConfigError(f"{key}={value!r} must be {kind} (like its default {default!r}).")


def _checked_value(key: str, value: Any, default: Any, per_modality: bool) -> Any:
  """`value` as the type of `default` (ints become floats where a float is expected)."""
  if per_modality and (isinstance(value, Mapping) or hasattr(value, "items")):
    return {m: _checked_value(f"{key}.{m}", v, default, False) for m, v in value.items()}
  if default is None:
    return to_plain(value)
  if isinstance(default, bool):
    ok = isinstance(value, bool)
  elif isinstance(default, int):
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif isinstance(default, float):
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    value = float(value) if ok else value
  elif isinstance(default, tuple):
    ok = isinstance(value, (tuple, list))
    value = to_plain(value) if ok else value
  else:
    ok = isinstance(value, type(default))
  if not ok:
    raise _type_error(key, value, default)
  return value


def legacy_entry_error(name: str, entry: Any) -> ConfigError:
  """The error for a config still in the old shape: fixed sections with on/off keys and
  shared batch_size / max_batches / use_ema."""
  if not isinstance(entry, Mapping) and not hasattr(entry, "items"):
    if name in config_lib.LEGACY_EVAL_SHARED:
      return config_lib.legacy_eval_key_error(f"evals.{name}")
    return ConfigError(f"evals.{name}={entry!r} is not an evaluator: config.evals holds "
                       "named entries {type, every, ...}. See docs/evaluators.md.")
  return ConfigError(
      f"evals.{name} has no 'type': evaluators are named entries now, e.g. "
      f"c.evals.{name} = dict(type={name!r}, ...) in a config file or "
      f"--config.evals.{name}.type={name} on the command line; an evaluator runs when it "
      "is listed (the old off-switches such as evals.robust.attack='' are gone). See "
      "docs/evaluators.md.")


def resolve(name: str, config: ml_collections.ConfigDict
            ) -> tuple[type[Evaluator], ml_collections.ConfigDict]:
  """(class, options with defaults filled) of the entry `config.evals[name]`; a
  ConfigError for an unknown type or option, or a value of the wrong type."""
  entry = config.evals[name]
  if not hasattr(entry, "items") or "type" not in entry:
    raise legacy_entry_error(name, entry)
  cls = EVALUATORS.get(entry["type"], config_key=f"evals.{name}.type")
  defaults = {**COMMON_OPTIONS, **cls.options}
  given = dict(entry.items())
  unknown = sorted(set(given) - set(defaults))
  if unknown:
    hints = [f"{k!r} -> {c[0]!r}" for k in unknown
             if (c := difflib.get_close_matches(k, list(defaults), n=1))]
    hint = f" Did you mean {', '.join(hints)}?" if hints else ""
    raise ConfigError(
        f"Unknown option(s) {unknown} of evals.{name} (type {cls.type_name!r}).{hint} "
        f"Its options: {', '.join(sorted(set(cls.options)))}; every evaluator also takes "
        f"{', '.join(sorted(COMMON_OPTIONS))}.")
  options = {}
  for key, default in defaults.items():
    value = given.get(key, default)
    options[key] = _checked_value(f"evals.{name}.{key}", value, default,
                                  key in cls.per_modality_options)
  for key, example in cls.required.items():
    if options[key] == defaults[key]:
      raise ConfigError(f"evals.{name} (type {cls.type_name!r}) needs {key}, e.g. "
                        f"--config.evals.{name}.{key}={example}.")
  for key, allowed in cls.choices.items():
    if options[key] not in allowed:
      close = difflib.get_close_matches(str(options[key]), [str(a) for a in allowed], n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise ConfigError(f"Unknown evals.{name}.{key}={options[key]!r}; choose one of "
                        f"{', '.join(repr(a) if a == '' else str(a) for a in allowed)}."
                        f"{hint}")
  if options["every"] < 0:
    raise ConfigError(f"evals.{name}.every={options['every']} must be >= 0 (0: with each "
                      "train.eval_every).")
  options["batch_size"] = options["batch_size"] or config.train.eval_batch_size
  if options["batch_size"] < 1:
    raise ConfigError(f"evals.{name}.batch_size={options['batch_size']} must be positive "
                      "(or 0: train.eval_batch_size, itself positive).")
  if options["prefix"] is None:
    options["prefix"] = f"{name}/"
  return cls, ml_collections.ConfigDict(options)


def resolve_all(config: ml_collections.ConfigDict
                ) -> dict[str, tuple[type[Evaluator], ml_collections.ConfigDict]]:
  """{name: (class, options)} of every entry of config.evals, each checked."""
  return {name: resolve(name, config) for name in config.evals}
