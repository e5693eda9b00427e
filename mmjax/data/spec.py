"""Op spec strings, shared by the host (TensorFlow) and device (JAX) preprocessing ops.

A spec is a `|`-separated chain of op calls whose arguments are Python literals:

    "to_float|random_crop(28, pad=2)|flip_lr|keep('image', 'label')"

This module needs neither TensorFlow nor JAX, so device-only runs (benchmarks on an
accelerator image without TensorFlow) can parse and check specs too.
"""
from __future__ import annotations

import ast
import inspect
from typing import Any, Sequence

from mmjax.errors import ConfigError
from mmjax.registry import Registry


def _split_top_level(spec: str) -> list[str]:
  """Splits on '|' outside brackets and string literals."""
  parts, depth, quote, start = [], 0, None, 0
  for i, ch in enumerate(spec):
    if quote:
      if ch == quote and spec[i - 1] != "\\":
        quote = None
    elif ch in "'\"":
      quote = ch
    elif ch in "([{":
      depth += 1
    elif ch in ")]}":
      depth -= 1
    elif ch == "|" and depth == 0:
      parts.append(spec[start:i])
      start = i + 1
  parts.append(spec[start:])
  return [p.strip() for p in parts if p.strip()]


def parse_spec(spec: str | Sequence[str] | None) -> list[tuple[str, tuple, dict]]:
  """"a|b(1, k=2)" -> [('a', (), {}), ('b', (1,), {'k': 2})]; raises ConfigError."""
  if not spec:
    return []
  items = _split_top_level(spec) if isinstance(spec, str) else [
      p for s in spec for p in _split_top_level(s)]
  parsed = []
  for item in items:
    try:
      node = ast.parse(item, mode="eval").body
    except SyntaxError as e:
      raise ConfigError(f"Cannot parse preprocessing op {item!r}: {e.msg}.") from None
    if isinstance(node, ast.Name):
      parsed.append((node.id, (), {}))
      continue
    if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
      raise ConfigError(f"Preprocessing op {item!r} must look like name or name(args).")
    name = node.func.id
    try:
      args = tuple(ast.literal_eval(a) for a in node.args)
      kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except ValueError:
      raise ConfigError(f"Arguments of preprocessing op {name!r} in {item!r} must be "
                        "Python literals (numbers, strings, tuples, lists, None).") from None
    if None in kwargs:
      raise ConfigError(f"Preprocessing op {name!r}: **kwargs are not allowed in a spec.")
    parsed.append((name, args, kwargs))
  return parsed


def build_op(registry: Registry, name: str, args: tuple = (), kwargs: dict | None = None,
             *, config_key: str = "data.preprocess_*") -> Any:
  """Looks up op `name` in `registry` and builds it from its spec arguments (ConfigError
  naming `config_key` if the name or the arguments are bad)."""
  kwargs = kwargs or {}
  factory = registry.get(name, config_key=config_key)
  call = f"{name}({', '.join([*map(repr, args), *(f'{k}={v!r}' for k, v in kwargs.items())])})"
  try:
    inspect.signature(factory).bind(*args, **kwargs)
  except TypeError as e:
    raise ConfigError(f"Bad arguments for {registry.kind} {name!r} in {call} ({config_key}): "
                      f"{e}. Signature: {name}{inspect.signature(factory)}.") from None
  try:
    return factory(*args, **kwargs)
  except ConfigError:
    raise
  except (TypeError, ValueError) as e:
    raise ConfigError(f"Bad arguments for {registry.kind} {name!r} in {call} "
                      f"({config_key}): {e}") from None


__all__ = ["parse_spec", "build_op"]
