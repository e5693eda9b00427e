"""Optimizer factory: config.optim -> an optax GradientTransformation.

Gradient accumulation and the parameter EMA are applied by the train step (they change
what a step is, not how gradients become updates); their config keys live here too:
`optim.grad_accum_steps` and `optim.ema_decay`.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Mapping

import jax
import optax

from mmjax.errors import ConfigError
from mmjax.tree import path_str

OPTIMIZERS = ("adamw", "sgd", "lamb", "adafactor", "lars")
SCHEDULES = ("cosine", "linear", "constant", "piecewise", "exponential")


def make_schedule(optim_config: Mapping[str, Any], total_steps: int) -> optax.Schedule:
  """Learning rate per step: linear warmup to `learning_rate`, then decay.

  Decays to `learning_rate * end_lr_factor` at `total_steps` ('cosine' or 'linear'), or
  stays flat ('constant'), or drops by `lr_decay` at each of `lr_boundaries`, given as
  fractions of training ('piecewise': Madry et al.'s 0.1 -> 0.01 -> 0.001 at 50% and 75%
  is boundaries (0.5, 0.75), decay 0.1), or moves geometrically to `learning_rate *
  end_lr_factor` at `total_steps` ('exponential'; a factor > 1 grows it: the LR range
  test of mmjax/sweep/lr_range.py). A 'linear' schedule with `warmup_steps = 0.4 *
  total` is the one-cycle (triangular) schedule of Fast-AT.
  """
  peak = float(optim_config.get("learning_rate", 1e-3))
  warmup = int(optim_config.get("warmup_steps", 0))
  kind = optim_config.get("schedule", "cosine")
  end = peak * float(optim_config.get("end_lr_factor", 0.0))
  if kind not in SCHEDULES:
    raise ConfigError(f"Unknown schedule {kind!r} (config key optim.schedule). "
                      f"Choose one of: {', '.join(SCHEDULES)}.")
  if warmup < 0 or warmup > total_steps:
    raise ConfigError(f"optim.warmup_steps={warmup} must be in [0, train.total_steps="
                      f"{total_steps}].")
  decay_steps = max(total_steps - warmup, 1)
  if kind == "cosine":
    decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=end / peak if peak else 0.0)
  elif kind == "linear":
    decay = optax.linear_schedule(peak, end, decay_steps)
  elif kind == "piecewise":
    boundaries = tuple(optim_config.get("lr_boundaries", ()))
    if not boundaries or any(not 0 < b < 1 for b in boundaries):
      raise ConfigError(f"optim.schedule='piecewise' needs optim.lr_boundaries as fractions "
                        f"of training in (0, 1), e.g. (0.5, 0.75); got {boundaries!r}.")
    factor = float(optim_config.get("lr_decay", 0.1))
    decay = optax.piecewise_constant_schedule(
        peak, {max(int(b * total_steps) - warmup, 1): factor for b in boundaries})
  elif kind == "exponential":
    factor = float(optim_config.get("end_lr_factor", 0.0))
    if factor <= 0:
      raise ConfigError(f"optim.schedule='exponential' needs optim.end_lr_factor > 0 (the "
                        f"ratio of the last learning rate to the first); got {factor}.")
    decay = optax.exponential_decay(peak, decay_steps, factor)
  else:
    decay = optax.constant_schedule(peak)
  if warmup == 0:
    return decay
  # Warmup starts at peak/warmup rather than 0 so that step 0 already learns.
  ramp = optax.linear_schedule(peak / warmup, peak, warmup)
  return optax.join_schedules([ramp, decay], [warmup])


def decay_mask(params: Any, exclude: tuple[str, ...] | list[str]) -> Any:
  """Pytree of bools: True where weight decay applies.

  A parameter is excluded when any pattern in `exclude` is found (regex search) in its
  '/'-joined path, e.g. 'bias', 'norm' or 'scale' (LayerNorm/BatchNorm), 'embed'.
  """
  patterns = [re.compile(p) for p in exclude]

  def include(path, _):
    name = path_str(path).lower()
    return not any(p.search(name) for p in patterns)

  return jax.tree_util.tree_map_with_path(include, params)


def make_optimizer(optim_config: Mapping[str, Any], *, total_steps: int
                   ) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """Builds (optimizer, schedule) from config.optim.

  Keys: name (adamw|sgd|lamb|adafactor|lars), learning_rate, schedule, warmup_steps,
  end_lr_factor, weight_decay, no_decay (regexes of parameter paths exempt from decay),
  b1, b2, eps, momentum, nesterov, clip_norm (global-norm clipping; 0 disables), and for
  'lars' an optional trust_coefficient (default 0.001, You et al. 2017 / SimCLR).
  """
  name = optim_config.get("name", "adamw")
  schedule = make_schedule(optim_config, total_steps)
  wd = float(optim_config.get("weight_decay", 0.0))
  no_decay = tuple(optim_config.get("no_decay", ()))
  mask: Callable[[Any], Any] | None = (
      (lambda p: decay_mask(p, no_decay)) if no_decay else None)
  b1 = float(optim_config.get("b1", 0.9))
  b2 = float(optim_config.get("b2", 0.999))
  eps = float(optim_config.get("eps", 1e-8))

  if name == "adamw":
    tx = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=wd, mask=mask)
  elif name == "lamb":
    tx = optax.lamb(schedule, b1=b1, b2=b2, eps=eps, weight_decay=wd, mask=mask)
  elif name == "sgd":
    momentum = float(optim_config.get("momentum", 0.9))
    # Coupled L2 decay as in the Madry/TRADES/Fast-AT recipes (wd added to the gradient).
    tx = optax.chain(
        optax.add_decayed_weights(wd, mask) if wd else optax.identity(),
        optax.sgd(schedule, momentum=momentum or None,
                  nesterov=bool(optim_config.get("nesterov", False))))
  elif name == "lars":
    tx = _lars(schedule, optim_config, wd, mask)
  elif name == "adafactor":
    tx = optax.adafactor(schedule, weight_decay_rate=wd or None, weight_decay_mask=mask)
  else:
    raise ConfigError(f"Unknown optimizer {name!r} (config key optim.name). "
                      f"Choose one of: {', '.join(OPTIMIZERS)}.")

  clip = float(optim_config.get("clip_norm", 0.0))
  if clip > 0:
    tx = optax.chain(optax.clip_by_global_norm(clip), tx)
  return tx, schedule


def _lars(schedule: optax.Schedule, optim_config: Mapping[str, Any], wd: float,
          mask: Callable[[Any], Any] | None) -> optax.GradientTransformation:
  """LARS (You et al. 2017) as SimCLR uses it: g + wd·w is scaled per parameter tensor
  by trust_coefficient·‖w‖/‖g + wd·w‖, then SGD with momentum. Tensors that `no_decay`
  exempts (biases, BatchNorm) get neither the decay nor the trust ratio, as in SimCLR's
  `exclude_from_weight_decay` / `exclude_from_layer_adaptation`."""
  trust = float(optim_config.get("trust_coefficient", 0.001))
  if trust <= 0:
    raise ConfigError(f"optim.trust_coefficient={trust} must be > 0 for optim.name='lars'.")
  momentum = float(optim_config.get("momentum", 0.9))
  return optax.lars(schedule, weight_decay=wd, weight_decay_mask=mask or True,
                    trust_coefficient=trust, trust_ratio_mask=mask or True,
                    momentum=momentum, nesterov=bool(optim_config.get("nesterov", False)))
