"""Name -> factory registries used to build models, objectives and ops from config."""
from __future__ import annotations

import dataclasses
import difflib
from typing import Any, Callable, Mapping

from mmjax.errors import ConfigError


class Registry:
  """A named table of factories; lookups of unknown names raise a ConfigError.

  >>> MODELS = Registry('model')
  >>> @MODELS.register('vit')
  ... class ViT: ...
  """

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, Any] = {}

  def register(self, name: str) -> Callable[[Any], Any]:
    def decorate(obj):
      if name in self._entries:
        raise ValueError(f"{self.kind} {name!r} registered twice")
      self._entries[name] = obj
      return obj
    return decorate

  def names(self) -> list[str]:
    return sorted(self._entries)

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


def checked_kwargs(cls: type, kwargs: Mapping[str, Any], *, config_key: str) -> dict[str, Any]:
  """Returns kwargs for dataclass `cls`, raising a ConfigError naming any unknown key."""
  fields = {f.name for f in dataclasses.fields(cls) if f.init}
  fields -= {"parent", "name"}  # flax.linen bookkeeping fields
  unknown = sorted(set(kwargs) - fields)
  if unknown:
    raise ConfigError(
        f"Unknown key(s) {unknown} in {config_key} for {cls.__name__}. "
        f"Valid keys: {', '.join(sorted(fields))}.")
  return dict(kwargs)
