"""Small pytree helpers shared across packages."""
from __future__ import annotations

from typing import Sequence


def path_str(path: Sequence) -> str:
  """A jax key path -> 'a/b/0/c' (dict keys, attribute names and sequence indices)."""
  return "/".join(str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))
                  for k in path)
