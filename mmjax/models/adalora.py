"""AdaLoRA (Zhang et al. 2023): SVD-form adapters whose ranks the trainer allocates.

Each adapted projection gets ΔW = (alpha / r) P diag(Λ) Q (`layers.LoRA(svd=True)`:
'<target>_lora/{a: P [*in, r], e: Λ [r], b: Q [r, *out]}', with a leading [L] on all
three in a scanned encoder). During training

  * every parameter w of P, Λ, Q keeps a smoothed sensitivity Ī = β1 Ī + (1-β1) |w ∇w L|
    and an uncertainty Ū = β2 Ū + (1-β2) |I - Ī|; the importance of triplet i is
    S_i = s(λ_i) + mean_j s(P_ji) + mean_j s(Q_ij), s = Ī·Ū (the paper's eq. 7-9, as
    Hugging Face PEFT computes it);
  * the total rank budget b(t) follows the cubic schedule: b0 = r·n (n adapted
    matrices, per layer) for t <= t_i, then b_T + (b0 - b_T)(1 - (t - t_i)/(T - t_i -
    t_f))³, and b_T = target_rank·n for the last t_f steps;
  * every `mask_interval` steps (and at T - t_f, after which the ranks are fixed) the
    singular values of all but the b(t) most important triplets are set to zero;
  * the loss gains γ Σ (‖PᵀP - I‖²_F + ‖QQᵀ - I‖²_F) over all adapters.

The allocation is an optax wrapper around the run's optimizer (`rank_allocator`), so it
runs inside the jitted train step on every step, its statistics live in the optimizer
state (checkpointed and resumed with it), and no user code has to call it: the trainer
builds it from config.model.adalora and config.finetune.adalora (`settings_from_config`).
The orthogonality penalty is `orthogonality_penalty`, which the train step adds to the
loss. Pruned triplets are zeros of Λ, so `peft.merge_lora` folds the adapters into the
base weights and Hugging Face export works as for LoRA.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mmjax.errors import ConfigError
from mmjax.registry import check_known_keys
from mmjax.tree import path_str

_ADAPTER_LEAF = re.compile(r"^(?P<adapter>.*_lora)/(?P<part>[aeb])$")


@dataclasses.dataclass(frozen=True)
class Settings:
  """The rank allocation of one run. Budgets count singular values over all adapted
  matrices (a scanned encoder's layers each count): b0 = init_rank · n, b_T =
  target_rank · n."""
  init_rank: int            # r of every adapter at the start (config.model.lora_rank)
  target_rank: int          # the mean final rank per adapted matrix
  total_steps: int          # T
  init_warmup: int = 0      # t_i: steps at the full budget before pruning starts
  final_warmup: int = 0     # t_f: steps at the final budget, ranks fixed
  mask_interval: int = 10   # ΔT: steps between reallocations
  beta1: float = 0.85       # EMA of the sensitivity
  beta2: float = 0.85       # EMA of the uncertainty
  orth_reg_weight: float = 0.1   # γ

  def __post_init__(self):
    if not 0 < self.target_rank <= self.init_rank:
      raise ConfigError(
          f"finetune.adalora.target_rank={self.target_rank} must be in [1, "
          f"model.lora_rank={self.init_rank}]: AdaLoRA's budget only shrinks from the "
          "initial rank of each adapter, so a final budget above it cannot be reached. "
          f"Lower target_rank or raise model.lora_rank to at least {self.target_rank}.")
    if min(self.init_warmup, self.final_warmup) < 0 or self.mask_interval < 1:
      raise ConfigError("finetune.adalora.init_warmup and final_warmup must be >= 0 and "
                        f"mask_interval >= 1; got {self.init_warmup}, {self.final_warmup},"
                        f" {self.mask_interval}.")
    if self.init_warmup + self.final_warmup >= self.total_steps:
      raise ConfigError(
          f"finetune.adalora.init_warmup + final_warmup = "
          f"{self.init_warmup + self.final_warmup} leaves no step of train.total_steps="
          f"{self.total_steps} to shrink the ranks in; make their sum smaller.")
    for name in ("beta1", "beta2"):
      if not 0.0 <= getattr(self, name) < 1.0:
        raise ConfigError(f"finetune.adalora.{name}={getattr(self, name)} must be in "
                          "[0, 1) (an EMA factor; the paper uses 0.85).")
    if self.orth_reg_weight < 0:
      raise ConfigError(f"finetune.adalora.orth_reg_weight={self.orth_reg_weight} must "
                        "be >= 0.")


def settings_from_config(config) -> Settings | None:
  """The run's AdaLoRA settings when config.model.adalora is set, else None; refuses bad
  values (ConfigError) before any compute."""
  if not config.model.get("adalora", False):
    return None
  options = dict(config.finetune.adalora)
  # Both make their gradients without the train step's loss, so the orthogonality term
  # would be silently missing from them.
  if config.privacy.enabled or config.adversarial.kind == "free":
    what = "privacy.enabled" if config.privacy.enabled else "adversarial.kind='free'"
    raise ConfigError(f"config.model.adalora cannot train with {what}: its gradients "
                      "bypass the loss that AdaLoRA's orthogonality term is added to. Use "
                      "LoRA (model.adalora=False) for that run.")
  check_known_keys(options, [f.name for f in dataclasses.fields(Settings)
                             if f.name not in ("init_rank", "total_steps")],
                   where="config.finetune.adalora")
  return Settings(init_rank=int(config.model.get("lora_rank", 0)),
                  total_steps=int(config.train.total_steps), **options)


def budget_at(step, settings: Settings, num_matrices: int):
  """The total rank budget after `step` updates (int, or int32 array for a traced
  step): PEFT's `budget_schedule`, the cubic decay of Zhang et al. (eq. 10)."""
  s = settings
  b0, bt = s.init_rank * num_matrices, s.target_rank * num_matrices
  span = s.total_steps - s.final_warmup - s.init_warmup
  progress = jnp.clip((jnp.asarray(step) - s.init_warmup) / span, 0.0, 1.0)
  budget = jnp.floor((b0 - bt) * (1.0 - progress) ** 3 + bt).astype(jnp.int32)
  return jnp.where(jnp.asarray(step) > s.total_steps - s.final_warmup, bt, budget)


# ---- the adapters of a parameter tree ----
def _map_adapters(params: Any, fn) -> Any:
  """`fn(part, leaf)` on every AdaLoRA leaf ('a', 'e' or 'b'), optax.MaskedNode()
  elsewhere: a tree shaped like `params`."""
  def visit(path, x):
    m = _ADAPTER_LEAF.match(path_str(path))
    return fn(m["part"], x) if m else optax.MaskedNode()
  return jax.tree_util.tree_map_with_path(visit, params)


def adapters(params: Any) -> dict[str, dict[str, jax.Array]]:
  """{'path/to/<target>_lora': {'a', 'e', 'b'}} of every AdaLoRA adapter in `params`."""
  found: dict[str, dict[str, jax.Array]] = {}
  for path, x in jax.tree_util.tree_leaves_with_path(
      params, is_leaf=lambda v: isinstance(v, optax.MaskedNode)):
    m = _ADAPTER_LEAF.match(path_str(path))
    if m and not isinstance(x, optax.MaskedNode):
      found.setdefault(m["adapter"], {})[m["part"]] = x
  return {k: v for k, v in found.items() if set(v) == {"a", "e", "b"}}


def num_matrices(params: Any) -> int:
  """How many adapted matrices (a scanned layer stack counts each layer)."""
  return sum(int(np.prod(t["e"].shape[:-1])) for t in adapters(params).values())


def _triplet_scores(ipt: dict, unc: dict) -> jax.Array:
  """S [*lead, r] of one adapter from its EMA trees {a, e, b}."""
  lead = ipt["e"].ndim - 1
  score = {k: ipt[k] * unc[k] for k in "aeb"}
  a_axes = tuple(range(lead, score["a"].ndim - 1))
  b_axes = tuple(range(lead + 1, score["b"].ndim))
  return score["e"] + score["a"].mean(a_axes) + score["b"].mean(b_axes)


def _as_matrices(lora: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
  """(P [*lead, in, r], Q [*lead, r, out]) with P's and Q's input/output dims flattened."""
  lead = lora["e"].shape[:-1]
  r = lora["e"].shape[-1]
  return (lora["a"].reshape(*lead, -1, r), lora["b"].reshape(*lead, r, -1))


def orthogonality_penalty(params: Any) -> jax.Array:
  """Σ over adapters (and layers) of ‖PᵀP - I‖²_F + ‖QQᵀ - I‖²_F: a float32 scalar."""
  total = jnp.zeros((), jnp.float32)
  for lora in adapters(params).values():
    p, q = _as_matrices(lora)
    eye = jnp.eye(p.shape[-1], dtype=jnp.float32)
    ptp = jnp.einsum("...ir,...is->...rs", p.astype(jnp.float32), p.astype(jnp.float32))
    qqt = jnp.einsum("...ro,...so->...rs", q.astype(jnp.float32), q.astype(jnp.float32))
    total = total + jnp.sum((ptp - eye) ** 2) + jnp.sum((qqt - eye) ** 2)
  return total


PENALTY = "adalora/orth_reg"


def penalty_names(settings: Settings | None) -> tuple[str, ...]:
  """The metrics `regularizer(settings)` adds to a train step (none without AdaLoRA)."""
  return (PENALTY,) if settings is not None else ()


def regularizer(settings: Settings | None):
  """params -> {'adalora/orth_reg': γ · orthogonality_penalty(params)}, the term the
  train step adds to the loss; None without AdaLoRA."""
  if settings is None:
    return None
  return lambda params: {PENALTY: settings.orth_reg_weight * orthogonality_penalty(params)}


def ranks(params: Any) -> dict[str, list[int]]:
  """{adapter path: [rank per layer]}: the nonzero singular values of each adapter."""
  return {path: np.atleast_1d(np.count_nonzero(np.asarray(t["e"]), axis=-1)).tolist()
          for path, t in adapters(params).items()}


def allocated_ranks(opt_state: Any) -> dict[str, list[int]] | None:
  """{adapter path: [rank per layer]} the allocator's mask keeps (None when `opt_state`
  is not a rank allocator's). Between reallocations pruned Λ entries may regrow (PEFT
  zeroes them only when it reallocates), so this, not `ranks`, is the allocation."""
  if not isinstance(opt_state, AllocatorState):
    return None
  out = {}
  for path, keep in jax.tree_util.tree_leaves_with_path(
      jax.device_get(opt_state.keep), is_leaf=lambda v: isinstance(v, optax.MaskedNode)):
    m = _ADAPTER_LEAF.match(path_str(path))
    if m and m["part"] == "e" and not isinstance(keep, optax.MaskedNode):
      out[m["adapter"]] = np.atleast_1d(np.sum(np.asarray(keep) > 0, axis=-1)).tolist()
  return out


# ---- the allocator, an optax wrapper ----
class AllocatorState(NamedTuple):
  """`inner`: the wrapped optimizer's state; `count`: updates so far; `ipt` / `unc`:
  the EMAs Ī and Ū (shaped like the params, MaskedNode off the adapters); `keep`: 1/0
  per singular value (on the 'e' leaves only)."""
  inner: Any
  count: jax.Array
  ipt: Any
  unc: Any
  keep: Any


def rank_allocator(inner: optax.GradientTransformation, settings: Settings
                   ) -> optax.GradientTransformation:
  """`inner`, followed on each update by AdaLoRA's importance EMAs and, on allocation
  steps, the zeroing of the singular values outside the budget b(t)."""
  s = settings

  def init(params):
    if not isinstance(params, Mapping):
      # optax.tree_map_params (placing the state like the params) inits with one
      # placeholder for the whole tree: the EMA trees are where it goes.
      return AllocatorState(inner.init(params), jnp.zeros((), jnp.int32), params, params,
                            params)
    zeros = _map_adapters(params, lambda _, x: jnp.zeros_like(x, jnp.float32))
    keep = _map_adapters(params, lambda part, x: jnp.ones_like(x, jnp.float32)
                         if part == "e" else optax.MaskedNode())
    return AllocatorState(inner.init(params), jnp.zeros((), jnp.int32), zeros, zeros, keep)

  def update(grads, state, params=None):
    if params is None:
      raise ValueError("AdaLoRA's rank allocator needs the params in tx.update.")
    updates, inner_state = inner.update(grads, state.inner, params)
    count = state.count + 1
    is_node = lambda v: isinstance(v, optax.MaskedNode)
    learning = count <= s.total_steps - s.final_warmup

    def ema(i_bar, u_bar, g, p):
      if is_node(i_bar):
        return i_bar, u_bar
      now = jnp.abs(p * g).astype(jnp.float32)
      i_new = s.beta1 * i_bar + (1 - s.beta1) * now
      u_new = s.beta2 * u_bar + (1 - s.beta2) * jnp.abs(now - i_new)
      return jnp.where(learning, i_new, i_bar), jnp.where(learning, u_new, u_bar)

    pairs = jax.tree.map(ema, state.ipt, state.unc, grads, params, is_leaf=is_node)
    ipt = jax.tree.map(lambda _, pair: pair[0], state.ipt, pairs, is_leaf=is_node)
    unc = jax.tree.map(lambda _, pair: pair[1], state.ipt, pairs, is_leaf=is_node)

    fixed_from = s.total_steps - s.final_warmup
    reallocate = ((count > s.init_warmup) & (count % s.mask_interval == 0)
                  & (count < fixed_from)) | (count == fixed_from)
    keep = jax.tree.map(lambda old, new: old if is_node(old) else jnp.where(
        reallocate, new, old), state.keep, _keep_within_budget(ipt, unc, count, s),
        is_leaf=is_node)
    apply = reallocate | (count > fixed_from)
    # Λ after this update, times the mask on the steps that apply it.
    updates = jax.tree.map(
        lambda k, u, p: u if is_node(k) else jnp.where(apply, (p + u) * k - p, u),
        keep, updates, params, is_leaf=is_node)
    return updates, AllocatorState(inner_state, count, ipt, unc, keep)

  return optax.GradientTransformation(init, update)


def _keep_within_budget(ipt: Any, unc: Any, count, s: Settings) -> Any:
  """The keep-mask tree (on 'e' leaves) of the b(count) most important triplets."""
  ipt_by, unc_by = adapters(ipt), adapters(unc)
  scores = {path: _triplet_scores(ipt_by[path], unc_by[path]) for path in ipt_by}
  flat = jnp.concatenate([v.reshape(-1) for v in scores.values()])
  n = sum(int(np.prod(v.shape[:-1])) for v in scores.values())
  prune = flat.size - budget_at(count, s, n)
  # The prune-th smallest score: triplets at or below it go (PEFT's kthvalue threshold).
  threshold = jnp.sort(flat)[jnp.clip(prune - 1, 0, flat.size - 1)]
  keep = {path: jnp.where(prune > 0, v > threshold, True).astype(jnp.float32)
          for path, v in scores.items()}

  def visit(path, x):
    m = _ADAPTER_LEAF.match(path_str(path))
    return keep[m["adapter"]] if m and m["part"] == "e" else optax.MaskedNode()
  return jax.tree_util.tree_map_with_path(visit, ipt, is_leaf=lambda v: isinstance(
      v, optax.MaskedNode))
