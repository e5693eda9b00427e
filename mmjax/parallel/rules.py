"""Logical-axis rules: from the axis names that parameters and activations carry to mesh
axes, and from there to the shardings of the whole train state.

Parameters are annotated in `mmjax.models.layers` ('embed', 'mlp', 'heads', 'kv', 'vocab',
'layers'); activations are constrained with the 'act_*' names and 'batch' through
`constrain`. A rule table, `mesh.rules` in the config, maps each logical name to a mesh
axis, a tuple of mesh axes, or None (replicated). The default gives every strategy by mesh
shape alone:

  mesh.shape {'data': N}                 data parallelism (parameters replicated)
  mesh.shape {'fsdp': N}                 FSDP: parameters and optimizer state sharded
                                         along 'embed', the batch along 'fsdp'
  mesh.shape {'model': N}                tensor parallelism (Megatron): attention heads,
                                         MLP hidden units and the vocabulary split
  mesh.shape {'data': A, 'fsdp': B, 'model': C}   any combination.

Parameters and activations use separate names ('embed' vs 'act_embed') because FSDP
shards the width of the weights but not of the activations, whose batch is already split
over 'fsdp'.
"""
from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any, Iterator, Mapping, Sequence

import jax
import optax
from absl import logging
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from mmjax.errors import ConfigError
from mmjax.parallel.mesh import MESH_AXES
from mmjax.tree import path_str

Rules = tuple[tuple[str, Any], ...]

DEFAULT_RULES: Rules = (
    # Parameters. A name may have several rules: the first whose mesh axes are free in
    # that array's spec, larger than 1 and divide the dimension wins. So FSDP shards
    # 'embed', or 'mlp' / 'heads' / 'vocab' where the width does not divide (GPT-2 XL's
    # 1600 on 256 devices), and tensor parallelism takes 'model' first.
    ("embed", "fsdp"),
    ("mlp", "model"),
    ("mlp", "fsdp"),
    ("heads", "model"),
    ("heads", "fsdp"),
    ("vocab", "model"),
    ("vocab", "fsdp"),
    ("kv", None),
    ("layers", None),
    # Activations.
    ("batch", ("data", "fsdp")),
    ("act_length", None),
    ("act_embed", None),
    ("act_mlp", "model"),
    ("act_heads", "model"),
    ("act_kv", None),
    ("act_vocab", "model"),
)


def _axes(target: Any) -> tuple[str, ...]:
  """A rule's target (mesh axis, tuple of them, or None) as a tuple of mesh axes."""
  return (target,) if isinstance(target, str) else tuple(target or ())


def rules_from_config(mesh_config: Mapping[str, Any]) -> Rules:
  """mesh.rules (pairs of logical name -> mesh axis | tuple | None), checked."""
  raw = mesh_config.get("rules", DEFAULT_RULES) or DEFAULT_RULES
  rules = []
  for pair in raw:
    if len(pair) != 2:
      raise ConfigError(f"mesh.rules entry {pair!r} must be a pair (logical name, mesh axis "
                        "or tuple of mesh axes or None), e.g. ('mlp', 'model').")
    name, target = pair[0], pair[1]
    bad = [a for a in _axes(target) if a not in MESH_AXES]
    if bad:
      raise ConfigError(f"mesh.rules maps {name!r} to unknown mesh axes {bad}; the mesh "
                        f"axes are {', '.join(MESH_AXES)}.")
    rules.append((str(name), target if isinstance(target, str) or target is None
                  else tuple(target)))
  return tuple(rules)


def batch_axes(rules: Rules) -> tuple[str, ...]:
  """The mesh axes the batch dimension is split over (the rule for 'batch')."""
  for name, target in rules:
    if name == "batch":
      return _axes(target)
  return ()


def mesh_spec(logical: Sequence[str | None], shape: Sequence[int], mesh: Mesh,
              rules: Rules) -> tuple[P, list[int]]:
  """(PartitionSpec over mesh axes, dims left replicated because no rule's mesh axes
  divide them) for an array of `shape` with `logical` axis names.

  Dims are resolved in order; for each, the rules of its name are tried in order and the
  first whose axes are all unused in this spec, larger than 1 (size-1 axes shard
  nothing) and whose size product divides the dim is taken.
  """
  used: set[str] = set()
  spec: list[Any] = []
  blocked: dict[int, set[str]] = {}   # dim -> mesh axes that did not divide it
  names = tuple(logical) + (None,) * (len(shape) - len(logical))
  for d, name in enumerate(names):
    choice = None
    for rule_name, target in rules:
      if name is None or rule_name != name:
        continue
      axes = tuple(a for a in _axes(target) if mesh.shape[a] > 1)
      if not axes or used & set(axes):
        continue
      if shape[d] % math.prod(mesh.shape[a] for a in axes):
        blocked.setdefault(d, set()).update(axes)
        continue
      choice = axes[0] if len(axes) == 1 else axes
      used.update(axes)
      break
    spec.append(choice)
  # Reported only where the axis that did not divide shards no other dim of the array.
  uneven = [d for d, axes in blocked.items() if spec[d] is None and not axes & used]
  return P(*spec), uneven


def param_shardings(logical_specs: Any, abstract: Any, mesh: Mesh, rules: Rules) -> Any:
  """NamedShardings for a tree of arrays `abstract` whose logical PartitionSpecs are
  `logical_specs` (same tree). Dims that no rule divides are replicated (logged once)."""
  replicated_dims = []

  def one(path, logical, leaf):
    spec, uneven = mesh_spec(tuple(logical), leaf.shape, mesh, rules)
    replicated_dims.extend(f"{path_str(path)}[{logical[d]}={leaf.shape[d]}]" for d in uneven)
    return NamedSharding(mesh, spec)

  shardings = jax.tree_util.tree_map_with_path(
      one, logical_specs, abstract, is_leaf=lambda x: isinstance(x, P))
  if replicated_dims:
    logging.info("Replicated because no mesh axis of their rules divides them: %s.",
                 ", ".join(replicated_dims))
  return shardings


def opt_state_shardings(tx: optax.GradientTransformation, abstract_opt_state: Any,
                        abstract_params: Any, shardings: Any, mesh: Mesh) -> Any:
  """Each parameter-shaped optimizer-state leaf (Adam's mu and nu, momentum, ...) is
  placed like its parameter, so FSDP shards the optimizer state too; everything else
  (step counts, Adafactor's factored moments) is replicated. Frozen parameters
  (fine-tuning's `optax.multi_transform`) have no state: their MaskedNodes stay."""
  rep = NamedSharding(mesh, P())
  masked = lambda x: isinstance(x, optax.MaskedNode)

  def place(leaf, sharding, param):
    if masked(leaf):
      return leaf
    return sharding if getattr(leaf, "shape", None) == param.shape else rep

  return optax.tree_map_params(tx, place, abstract_opt_state, shardings, abstract_params,
                               transform_non_params=lambda _: rep, is_leaf=masked)


# ---- activation constraints, active while a step is traced under `activation_rules` ----
_CONTEXT: contextvars.ContextVar = contextvars.ContextVar("mmjax_sharding", default=None)


@contextlib.contextmanager
def activation_rules(mesh: Mesh, rules: Rules) -> Iterator[None]:
  """Within this context `constrain` pins activations to `mesh` by `rules`; outside it
  `constrain` does nothing (single-device code, tests of modules)."""
  token = _CONTEXT.set((mesh, rules))
  try:
    yield
  finally:
    _CONTEXT.reset(token)


def constrain(x: jax.Array, logical: Sequence[str | None]) -> jax.Array:
  """x with a sharding constraint from its logical axis names (e.g. ('batch',
  'act_length', 'act_embed')), when traced under `activation_rules`; else x unchanged."""
  context = _CONTEXT.get()
  if context is None or x.ndim != len(logical):  # e.g. inside a per-example vmap
    return x
  mesh, rules = context
  spec, _ = mesh_spec(logical, x.shape, mesh, rules)
  return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def with_activation_rules(fn, mesh: Mesh, rules: Rules):
  """fn wrapped so that its tracing happens under `activation_rules(mesh, rules)`."""
  def wrapped(*args, **kwargs):
    with activation_rules(mesh, rules):
      return fn(*args, **kwargs)
  return wrapped
