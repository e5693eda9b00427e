"""FLOP counts from jaxprs, and this machine's dense-matmul FLOP/s (the MFU denominator).

Why not XLA's `compiled.cost_analysis()`: it counts a `while` body once rather than times its
trip count, so a `scan` over layers (scan_layers=True) is undercounted by a factor of depth.
This walks the jaxpr instead and multiplies loop bodies by their trip counts.

Buckets (all float, FLOPs; a multiply-add is 2):
  dot          dot_general: 2 * prod(batch dims) * M * N * K.
  conv         conv_general_dilated: 2 * output elements * kernel window size * kernel input
               features (= in_features / feature_group_count). Zeros inserted by lhs/rhs
               dilation or padding are counted, as XLA does (so the input gradient of a
               strided conv counts more than the forward).
  matmul       dot + conv: what runs on matrix units; use this for MFU.
  elementwise  1 per output element of ELEMENTWISE_PRIMITIVES and 1 per input element of
               REDUCTION_PRIMITIVES, only where that output (input) is floating point, so
               that loop counters and index arithmetic are not counted. exp, tanh, erf, ...
               count 1 like add, although they cost more on any hardware.
  total        matmul + elementwise.
And `unknown_trip_count_loops` (int): how many `while` loops (sites in the jaxpr, not dynamic
executions) had a trip count that could not be read off the jaxpr; their bodies are counted
once, so the counts are then lower bounds.

Everything else (gathers, scatters, layout ops, comparisons, selects, RNG, sorts, custom
kernels) counts 0. Sub-jaxprs are found generically (any jaxpr-valued param, or a tuple of
them, of any primitive: jit, custom_jvp_call, custom_vjp_call, remat/checkpoint, closed_call,
...) and summed; the exceptions are `scan` (x length), `while` (x trip count when it can be
determined), `cond` (the most expensive branch) and `shard_map` (x the number of shards, since
its body sees per-shard shapes and these counts are global).
"""
from __future__ import annotations

import math
import statistics
import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np

try:
  from jax.extend.core import Literal as _Literal
except ImportError:  # older jax
  _Literal = getattr(jax.core, "Literal", None)

# 1 FLOP per output element (see the module docstring).
ELEMENTWISE_PRIMITIVES = frozenset({
    "add", "add_any", "sub", "mul", "div", "rem", "neg", "abs", "sign", "max", "min",
    "square", "sqrt", "rsqrt", "cbrt", "pow", "integer_pow", "exp", "exp2", "log", "log1p",
    "expm1", "tanh", "logistic", "sin", "cos", "tan", "atan2", "erf", "erfc", "erf_inv",
})
# 1 FLOP per input element.
REDUCTION_PRIMITIVES = frozenset({"reduce_sum", "reduce_max", "reduce_min", "reduce_prod"})

_BUCKETS = ("dot", "conv", "elementwise")
_UNKNOWN = "unknown_trip_count_loops"


def _zero() -> dict:
  return {"dot": 0.0, "conv": 0.0, "elementwise": 0.0, _UNKNOWN: 0}


def _add(acc: dict, part: dict, times: float = 1) -> None:
  for key in _BUCKETS:
    acc[key] += times * part[key]
  # Loop sites, not executions: a scan over an unknown loop is still one unknown loop.
  acc[_UNKNOWN] += part[_UNKNOWN]


def _is_jaxpr(value: Any) -> bool:
  """Jaxpr or ClosedJaxpr, by duck typing (the classes move between jax versions)."""
  return hasattr(value, "eqns") and hasattr(value, "outvars")


def _open(jaxpr: Any) -> Any:
  """ClosedJaxpr -> its Jaxpr; a Jaxpr is returned as is."""
  return jaxpr.jaxpr if hasattr(jaxpr, "consts") and hasattr(jaxpr, "jaxpr") else jaxpr


def _sub_jaxprs(params: dict) -> Iterator[Any]:
  for value in params.values():
    for item in value if isinstance(value, (tuple, list)) else (value,):
      if _is_jaxpr(item):
        yield item


def _size(var: Any) -> int:
  shape = getattr(getattr(var, "aval", None), "shape", None)
  return 0 if shape is None else math.prod(shape)


def _is_float(var: Any) -> bool:
  dtype = getattr(getattr(var, "aval", None), "dtype", None)
  try:
    return dtype is not None and bool(jnp.issubdtype(dtype, jnp.inexact))
  except TypeError:  # e.g. opaque dtypes of some future kind
    return False


def _int_literal(var: Any) -> int | None:
  """The value of a scalar integer Literal operand, else None (a Var: unknown at trace time)."""
  if (_Literal is not None and not isinstance(var, _Literal)) or not hasattr(var, "val"):
    return None
  value = np.asarray(var.val)
  if value.shape or not np.issubdtype(value.dtype, np.integer):
    return None
  return int(value)


def _dot_flops(eqn) -> float:
  """dot_general: 2 * prod(batch) * M * N * K, from the dimension numbers."""
  (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = eqn.params["dimension_numbers"]
  lhs, rhs = (v.aval.shape for v in eqn.invars[:2])
  batch = math.prod(lhs[d] for d in lhs_batch)
  k = math.prod(lhs[d] for d in lhs_contract)
  m = math.prod(s for d, s in enumerate(lhs) if d not in lhs_contract and d not in lhs_batch)
  n = math.prod(s for d, s in enumerate(rhs) if d not in rhs_contract and d not in rhs_batch)
  return 2.0 * batch * m * n * k


def _conv_flops(eqn) -> float:
  """conv_general_dilated: 2 * output elements * window size * kernel input features."""
  kernel = eqn.invars[1].aval.shape
  dnums = eqn.params.get("dimension_numbers")
  # rhs_spec = (out feature dim, in feature dim, *spatial dims); None means OIHW order.
  rhs_spec = tuple(range(len(kernel))) if dnums is None else tuple(dnums[1])
  # The kernel's input-feature dim already is in_features / feature_group_count.
  per_output = math.prod(kernel[d] for d in rhs_spec[2:]) * kernel[rhs_spec[1]]
  return 2.0 * _size(eqn.outvars[0]) * per_output


def _shard_count(params: dict) -> int:
  """shard_map: product of the mesh sizes of the axes its body is manual over."""
  shape = dict(getattr(params.get("mesh"), "shape", None) or {})
  for key in ("newly_manual_axes", "manual_axes"):  # the name differs across versions
    if params.get(key) is not None:
      axes = params[key]
      break
  else:  # older jax: `auto` lists the axes that are *not* manual
    auto = params.get("auto") or frozenset()
    axes = [a for a in shape if a not in auto]
  return math.prod(shape.get(a, 1) for a in axes)


def _while_trip_count(eqn) -> int | None:
  """Trip count of `while i < n: ...; i = i + 1` when i's init and n are Literals, else None.

  This is how fori_loop lowers when its bounds are (concrete) arrays rather than Python
  ints; with traced bounds the loop is data-dependent and the count is unknown.
  """
  p = eqn.params
  n_cond, n_body = p["cond_nconsts"], p["body_nconsts"]
  cond, body = _open(p["cond_jaxpr"]), _open(p["body_jaxpr"])
  init = eqn.invars[n_cond + n_body:]
  if len(cond.eqns) != 1:
    return None
  (test,) = cond.eqns
  if test.primitive.name != "lt" or test.outvars[0] is not cond.outvars[0]:
    return None
  carry = cond.invars[n_cond:]

  def carry_index(var):
    return next((i for i, c in enumerate(carry) if c is var), None)

  i = carry_index(test.invars[0])
  if i is None:
    return None
  bound = test.invars[1]
  upper = _int_literal(bound)
  if upper is None:
    const = next((j for j, c in enumerate(cond.invars[:n_cond]) if c is bound), None)
    k = carry_index(bound)
    if const is not None:
      upper = _int_literal(eqn.invars[const])
    elif k is not None and body.outvars[k] is body.invars[n_body + k]:  # loop-invariant
      upper = _int_literal(init[k])
  lower = _int_literal(init[i])
  if lower is None or upper is None:
    return None
  counter = body.invars[n_body + i]
  steps = [e for e in body.eqns if e.outvars and e.outvars[0] is body.outvars[i]]
  if len(steps) != 1 or steps[0].primitive.name != "add":
    return None
  a, b = steps[0].invars
  if not ((a is counter and _int_literal(b) == 1) or (b is counter and _int_literal(a) == 1)):
    return None
  return max(0, upper - lower)


def _eqn_counts(eqn, memo: dict) -> dict:
  name, params = eqn.primitive.name, eqn.params
  out = _zero()
  if name == "dot_general":
    out["dot"] = _dot_flops(eqn)
  elif name == "conv_general_dilated":
    out["conv"] = _conv_flops(eqn)
  elif name in ELEMENTWISE_PRIMITIVES:
    out["elementwise"] = float(_size(eqn.outvars[0])) if _is_float(eqn.outvars[0]) else 0.0
  elif name in REDUCTION_PRIMITIVES:
    out["elementwise"] = float(_size(eqn.invars[0])) if _is_float(eqn.invars[0]) else 0.0
  elif name == "cond":
    # Only one branch runs; take the most expensive one (an upper bound).
    branches = [_walk(b, memo) for b in params["branches"]]
    best = max(branches, key=lambda c: sum(c[k] for k in _BUCKETS))
    _add(out, best)
    out[_UNKNOWN] = max(c[_UNKNOWN] for c in branches)
  elif name == "while":
    body, cond = _walk(params["body_jaxpr"], memo), _walk(params["cond_jaxpr"], memo)
    trips = _while_trip_count(eqn)
    if trips is None:
      _add(out, body)
      _add(out, cond)
      out[_UNKNOWN] += 1
    else:
      _add(out, body, trips)
      _add(out, cond, trips + 1)
  else:
    # scan, jit/pjit, custom_jvp_call, custom_vjp_call, remat, closed_call, shard_map, ...
    if name == "scan":
      times = params["length"]
    elif name == "shard_map":
      times = _shard_count(params)
    elif name == "xla_pmap":  # older jax; newer pmap lowers to jit(shard_map)
      times = params.get("axis_size", 1)
    else:
      times = 1
    for sub in _sub_jaxprs(params):
      _add(out, _walk(sub, memo), times)
  return out


def _walk(jaxpr, memo: dict) -> dict:
  jaxpr = _open(jaxpr)
  # The same sub-jaxpr object is often shared (a jitted layer called depth times); the memo
  # lives for one count only, while every jaxpr in it is alive, so ids are stable.
  key = id(jaxpr)
  if key not in memo:
    acc = _zero()
    for eqn in jaxpr.eqns:
      _add(acc, _eqn_counts(eqn, memo))
    memo[key] = acc
  return memo[key]


def jaxpr_flops(closed_jaxpr) -> dict:
  """FLOPs of a Jaxpr or ClosedJaxpr, recursing into every sub-jaxpr.

  Returns {'matmul', 'dot', 'conv', 'elementwise', 'total': float,
  'unknown_trip_count_loops': int}; see the module docstring for what each counts.
  """
  counts = _walk(closed_jaxpr, {})
  matmul = counts["dot"] + counts["conv"]
  return {"matmul": matmul, "dot": counts["dot"], "conv": counts["conv"],
          "elementwise": counts["elementwise"], "total": matmul + counts["elementwise"],
          _UNKNOWN: int(counts[_UNKNOWN])}


def count_flops(fn: Callable, *args, **kwargs) -> dict:
  """FLOPs of `fn(*args, **kwargs)` as written, via `jax.make_jaxpr`; see `jaxpr_flops`.

  Args may be arrays or jax.ShapeDtypeStructs (nothing is computed or allocated). Keyword
  arguments are traced like positional ones, so bind static options (train=True, ...) with
  functools.partial first.

  The count is of the whole (global, unsharded) computation: for a train step, the forward,
  the backward and the optimizer update. It is of the jaxpr after autodiff, so with remat
  (jax.checkpoint / nn.remat) the forward recomputed inside the backward pass is counted as
  well: that is hardware FLOPs, not model FLOPs. E.g. grad of two checkpointed x @ w layers
  counts 7 matmuls instead of 5 (each layer's forward once more); with
  policy=checkpoint_dots the dots are saved rather than recomputed and the count is 5 again.
  Dead code that XLA would remove (an unused output) is counted.
  """
  return jaxpr_flops(jax.make_jaxpr(fn)(*args, **kwargs))


class MatmulTimer:
  """A jitted [n, n] @ [n, n] matmul of random `dtype` operands on the default device,
  compiled on construction: the MFU reference of a CPU. `flops` per run; as a bench
  contender (mmjax.bench.throughput), `latencies(count)` times single runs and
  `block(count)` the mean run of at least `count` runs lasting at least `min_seconds`,
  after `settle_seconds` of untimed runs. The settling is needed right after a large
  step in the same process: on 2 cores, the first half second of matmuls after a
  ViT-B/16 step ran 12-16% slower than the next (0.37-0.39 against 0.43-0.45 TFLOP/s,
  2026-12-06), which would have inflated MFU by as much."""

  def __init__(self, n: int = 2048, dtype=jnp.float32, min_seconds: float = 0.0,
               settle_seconds: float = 0.0):
    key_a, key_b = jax.random.split(jax.random.key(0))
    self._a = jax.random.normal(key_a, (n, n), dtype)
    self._b = jax.random.normal(key_b, (n, n), dtype)
    self._matmul = jax.jit(jnp.matmul)
    self._matmul(self._a, self._b).block_until_ready()
    self.n, self.flops = n, 2.0 * n**3
    self.min_seconds, self.settle_seconds = min_seconds, settle_seconds

  def latencies(self, count: int) -> list[float]:
    """[count] seconds, one run each."""
    times = []
    for _ in range(count):
      start = time.perf_counter()
      self._matmul(self._a, self._b).block_until_ready()
      times.append(time.perf_counter() - start)
    return times

  def block(self, count: int) -> float:
    """Mean seconds per run over at least `count` runs and `min_seconds`, timed after
    `settle_seconds` of untimed runs."""
    settle_until = time.perf_counter() + self.settle_seconds
    while time.perf_counter() < settle_until:
      self._matmul(self._a, self._b).block_until_ready()
    runs, start = 0, time.perf_counter()
    while runs < count or time.perf_counter() - start < self.min_seconds:
      self._matmul(self._a, self._b).block_until_ready()
      runs += 1
    return (time.perf_counter() - start) / runs


def dense_matmul_peak(n: int = 2048, dtype=jnp.float32, repeats: int = 5) -> float:
  """FLOP/s of a jitted [n,n] @ [n,n] matmul on the default device: the 'peak' for MFU.

  Warms up (compiles) once, then returns 2 n^3 / the median of `repeats` timed runs. The
  default n takes about 0.05-0.1 s a run on 2 CPU cores. (`--mode=bench` times the same
  matmul in every round beside the steps instead: `MatmulTimer`.)
  """
  timer = MatmulTimer(n, dtype)
  return timer.flops / statistics.median(timer.latencies(repeats))
