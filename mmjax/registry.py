"""Name -> factory registries used to build models, objectives and ops from config, and
what those builders share: config -> plain values, unknown-key errors."""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, Iterable, Mapping, Sequence

from mmjax.errors import ConfigError


class Registry:
  """A named table of factories; lookups of unknown names raise a ConfigError.

  >>> MODELS = Registry('model')
  >>> @MODELS.register('vit')
  ... class ViT: ...

  `attributes` names the facts an entry may declare when it registers, with their
  defaults; callers ask them through `names(...)` rather than keeping lists of names:

  >>> OPS = Registry('op', attributes={'random': False})
  >>> @OPS.register('flip', random=True)
  ... def flip(): ...
  >>> OPS.names(random=True)
  ['flip']
  """

  def __init__(self, kind: str, *, attributes: Mapping[str, Any] | None = None):
    self.kind = kind
    self._entries: dict[str, Any] = {}
    self._defaults = dict(attributes or {})
    self._attributes: dict[str, dict[str, Any]] = {}

  def _check_attributes(self, attributes: Mapping[str, Any]) -> None:
    # A misspelt attribute would silently keep its default or match no entry.
    unknown = sorted(set(attributes) - set(self._defaults))
    if unknown:
      raise ValueError(f"Unknown {self.kind} attribute(s) {unknown}; a {self.kind} has "
                       f"{sorted(self._defaults)}")

  def register(self, name: str, **attributes: Any) -> Callable[[Any], Any]:
    self._check_attributes(attributes)

    def decorate(obj):
      if name in self._entries:
        raise ValueError(f"{self.kind} {name!r} registered twice")
      self._entries[name] = obj
      self._attributes[name] = {**self._defaults, **attributes}
      return obj
    return decorate

  def register_class(self, name: str, name_attribute: str,
                     **attributes: Any) -> Callable[[type], type]:
    """`register` for a class that also keeps the name it is registered under as the
    class attribute `name_attribute` (an evaluator's `type_name`, a sink's `name`)."""
    register = self.register(name, **attributes)

    def decorate(cls):
      setattr(cls, name_attribute, name)
      return register(cls)
    return decorate

  def names(self, **attributes: Any) -> list[str]:
    """Sorted names; with `attributes`, only the entries that have those values."""
    self._check_attributes(attributes)
    return sorted(name for name, has in self._attributes.items()
                  if all(has[k] == v for k, v in attributes.items()))

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def get(self, name: str, *, config_key: str | None = None) -> Any:
    if name not in self._entries:
      where = f" (config key {config_key})" if config_key else ""
      close = difflib.get_close_matches(str(name), self.names(), n=1)
      hint = f" Did you mean {close[0]!r}?" if close else ""
      raise ConfigError(
          f"Unknown {self.kind} {name!r}{where}. Choose one of: "
          f"{', '.join(self.names())}.{hint}")
    return self._entries[name]


def check_known_keys(keys: Iterable[str], valid: Iterable[str], *, where: str,
                     shown: Sequence[str] | None = None) -> None:
  """ConfigError naming the `keys` that are not `valid`, e.g. "Unknown key(s) ['epsilon']
  in config.adversarial. Valid keys: eps, norm.". `where` follows "in"; `shown` lists the
  valid keys for the message (default: `valid`, sorted)."""
  valid = list(valid)
  unknown = sorted(set(keys) - set(valid))
  if unknown:
    shown = sorted(valid) if shown is None else shown
    raise ConfigError(f"Unknown key(s) {unknown} in {where}. Valid keys: {', '.join(shown)}.")


def checked_kwargs(cls: type, kwargs: Mapping[str, Any], *, config_key: str) -> dict[str, Any]:
  """Returns kwargs for dataclass `cls`, raising a ConfigError naming any unknown key."""
  fields = {f.name for f in dataclasses.fields(cls) if f.init}
  fields -= {"parent", "name"}  # flax.linen bookkeeping fields
  check_known_keys(kwargs, fields, where=f"{config_key} for {cls.__name__}")
  return dict(kwargs)


def to_plain(value: Any) -> Any:
  """ConfigDict / Mapping (nested) -> plain dicts; lists and tuples -> tuples, recursively,
  so the values can be hashable dataclass fields (models, objectives, attack options)."""
  # ConfigDict is not a collections.abc.Mapping, but has items()/keys().
  if isinstance(value, Mapping) or (hasattr(value, "items") and hasattr(value, "keys")):
    return {k: to_plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return tuple(to_plain(v) for v in value)
  return value
