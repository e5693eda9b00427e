"""`config.privacy` checked and resolved before any compute: the refusals of DP training
and the numbers the step, the sampler and the accountant share (sampling rate, noise
multiplier, physical batch, steps the budget allows).

Refused, each with its fix: a clip norm or noise that is not positive, a layer that
mixes the examples of a batch (BatchNorm), a loss that is not per example
(contrastive, SimCLR), a loss with state updated from the batch (Group DRO's weights), a
method that replays a batch (free adversarial training), Poisson sampling on streamed
data, and a target ε the configured steps cannot reach. δ >= 1/N is warned about.
"""
from __future__ import annotations

import dataclasses
import math

import ml_collections
from absl import logging

from mmjax.errors import ConfigError

ACCOUNTANTS = ("pld", "rdp")
# Poisson batches are padded so that runs of up to this many steps (or total_steps, if
# more) truncate one with probability adding at most δ/100 (accounting.physical_batch_size).
PADDING_HORIZON = 1_000_000
SAMPLINGS = ("poisson", "shuffle")


@dataclasses.dataclass(frozen=True)
class PrivacyPlan:
  """Resolved privacy settings of one run.

  `expected_batch_size` is train.batch_size (q * N under Poisson sampling);
  `physical_batch_size` the padded size of every step's batch (= train.batch_size
  for shuffled batches); `noise_multiplier` as configured or calibrated to
  target_epsilon; `epsilon_budget` 0 when the run has none.
  """
  clip_norm: float
  noise_multiplier: float
  delta: float
  accountant: str
  sampling: str
  num_examples: int
  expected_batch_size: int
  physical_batch_size: int
  epsilon_budget: float
  per_layer: bool
  microbatch_size: int | None

  @property
  def sampling_rate(self) -> float:
    return self.expected_batch_size / self.num_examples

  def dp_settings(self):
    from mmjax.privacy import gradients
    return gradients.DPSettings(
        clip_norm=self.clip_norm, noise_multiplier=self.noise_multiplier,
        expected_batch_size=float(self.expected_batch_size), per_layer=self.per_layer,
        microbatch_size=self.microbatch_size)

  def segment(self, steps: int):
    from mmjax.privacy import accounting
    return accounting.Segment(sampling_rate=self.sampling_rate,
                              noise_multiplier=self.noise_multiplier, steps=int(steps))

  def epsilon(self, ledger) -> float:
    """ε at δ of the steps in `ledger` (a list of accounting.Segment)."""
    from mmjax.privacy import accounting
    return accounting.epsilon(ledger, self.delta, accountant=self.accountant,
                              sampling=self.sampling)


def check_config(config: ml_collections.ConfigDict) -> None:
  """ConfigError for a bad value of config.privacy alone (no dataset or model needed)."""
  _check_audit(config)
  if config.privacy.enabled:
    _check_options(config)


def _check_audit(config: ml_collections.ConfigDict) -> None:
  m = config.privacy.audit_canaries
  if not isinstance(m, int) or m < 0:
    raise ConfigError(f"privacy.audit_canaries={m!r} must be an integer >= 0 (0: no "
                      "audit).")
  if not m:
    return
  import jax
  if not config.data.get("in_memory", False):
    raise ConfigError("privacy.audit_canaries plants canaries in the training set held in "
                      "memory: set data.in_memory=True.")
  if jax.process_count() > 1 or config.data.get("shards", 0) > 1:
    raise ConfigError("privacy.audit_canaries runs on one process with one data shard "
                      "(data.shards=0); audit a single-host run.")


def _check_options(config: ml_collections.ConfigDict) -> None:
  p = config.privacy
  try:
    import dp_accounting  # noqa: F401
    import jax_privacy  # noqa: F401
  except ImportError as e:
    raise ConfigError(f"privacy.enabled=True needs the privacy extra ({e.name} is not "
                      "installed): pip install -e '.[privacy]'.") from None
  if not p.clip_norm > 0:
    raise ConfigError(f"privacy.clip_norm={p.clip_norm} must be positive: it bounds each "
                      "example's gradient (1.0 is a common start).")
  if p.noise_multiplier < 0 or p.target_epsilon < 0:
    raise ConfigError(f"privacy.noise_multiplier={p.noise_multiplier} and "
                      f"privacy.target_epsilon={p.target_epsilon} must not be negative.")
  if p.noise_multiplier > 0 and p.target_epsilon > 0:
    raise ConfigError("Set one of privacy.noise_multiplier (the noise you choose) and "
                      "privacy.target_epsilon (the noise is calibrated to reach it), not "
                      "both.")
  if p.noise_multiplier == 0 and p.target_epsilon == 0:
    raise ConfigError("privacy.enabled=True without noise gives no privacy: set "
                      "privacy.noise_multiplier > 0 (e.g. 1.1) or privacy.target_epsilon "
                      "> 0 (e.g. 3.0).")
  if not 0 < p.delta < 1:
    raise ConfigError(f"privacy.delta={p.delta} must be in (0, 1), well below 1/N "
                      "(e.g. 1e-5 for 60,000 examples).")
  for key, allowed in (("accountant", ACCOUNTANTS), ("sampling", SAMPLINGS)):
    if p[key] not in allowed:
      raise ConfigError(f"Unknown privacy.{key}={p[key]!r}; choose one of "
                        f"{', '.join(allowed)}.")
  for key in ("physical_batch_size", "microbatch_size"):
    if not isinstance(p[key], int) or p[key] < 0:
      raise ConfigError(f"privacy.{key}={p[key]!r} must be an integer >= 0 (0: automatic).")
  if p.epsilon_budget < 0:
    raise ConfigError(f"privacy.epsilon_budget={p.epsilon_budget} must be >= 0 (0: "
                      "privacy.target_epsilon, or none).")
  if p.sampling == "poisson" and not config.data.get("in_memory", False):
    raise ConfigError("privacy.sampling='poisson' draws each step's examples from the "
                      "whole training set, which needs it in memory: set "
                      "data.in_memory=True, or privacy.sampling='shuffle' (fixed-size "
                      "shuffled batches; see docs/privacy.md for what that does to the "
                      "guarantee).")


def check_loss_and_model(loss_fn, model_collections) -> None:
  """ConfigError when the loss or the model cannot be trained with per-example
  clipping. `model_collections`: the names of the model's variable collections."""
  if "batch_stats" in model_collections:
    raise ConfigError(
        "DP training clips each example's gradient, but this model has BatchNorm, whose "
        "batch statistics mix the examples of a batch (and are updated from them without "
        "noise). Use a model without it, normalised per example with GroupNorm or "
        "LayerNorm (mnist_cnn, vit, text_transformer and multimodal here), e.g. "
        "--config.model.name=mnist_cnn.")
  extra = sorted(set(model_collections) - {"params"})
  if extra:
    raise ConfigError(f"DP training needs a model whose only variables are its params; "
                      f"this one also has {extra}, updated from the batch without noise.")
  if loss_fn.makes_own_updates:
    raise ConfigError("adversarial.kind='free' replays each batch for several updates; "
                      "DP accounting assumes one noised update per sampled batch. Use "
                      "madry or trades with privacy.")
  if not loss_fn.per_example_loss:
    raise ConfigError("This objective's loss is not a sum of per-example losses (each "
                      "example is contrasted with the rest of the batch), so clipping "
                      "one example's gradient does not bound its influence. Use a "
                      "per-example objective (supervised, mlm, clm, mae, captioning, ...) "
                      "with privacy.")
  if loss_fn.initial_state():
    raise ConfigError("This objective keeps state updated from each batch (e.g. Group "
                      "DRO's group weights), which DP-SGD does not privatise. Use "
                      "group_balanced (fixed weights) or train without privacy.")


def resolve(config: ml_collections.ConfigDict, num_examples: int, batch_shards: int
            ) -> PrivacyPlan | None:
  """The run's PrivacyPlan (None when privacy is off); `num_examples`: N of the train
  split, all hosts; `batch_shards`: what the physical batch must be a multiple of."""
  p, t = config.privacy, config.train
  if not p.enabled:
    return None
  from mmjax.privacy import accounting
  warning = accounting.check_delta(p.delta, num_examples)
  if warning:
    logging.warning("privacy.delta: %s", warning)
  if t.batch_size > num_examples:
    raise ConfigError(f"train.batch_size={t.batch_size} is larger than the "
                      f"{num_examples} training examples.")
  q = t.batch_size / num_examples
  accum = config.optim.grad_accum_steps
  noise = p.noise_multiplier
  if p.target_epsilon > 0:
    noise = accounting.calibrate_noise(q, t.total_steps, p.target_epsilon, p.delta,
                                       accountant=p.accountant, sampling=p.sampling)
    logging.info("privacy: noise multiplier %.4f reaches ε = %g at δ = %g after %d steps "
                 "(q = %.5f).", noise, p.target_epsilon, p.delta, t.total_steps, q)
  physical = t.batch_size
  chunk = p.microbatch_size or 1
  if p.sampling == "shuffle" and (t.batch_size // accum) % chunk:
    raise ConfigError(f"privacy.microbatch_size={chunk} must divide each accumulation "
                      f"micro-batch of train.batch_size={t.batch_size} / "
                      f"optim.grad_accum_steps={accum}.")
  if p.sampling == "poisson":
    multiple = math.lcm(batch_shards * accum, accum * chunk)
    # Sized for a horizon of PADDING_HORIZON steps, not total_steps: a run extended
    # later keeps its batch shape, so it resumes bit-exactly (a few % more padding).
    horizon = max(t.total_steps, PADDING_HORIZON)
    auto = accounting.physical_batch_size(num_examples, q, horizon, p.delta, multiple)
    physical = p.physical_batch_size or auto
    if physical % multiple:
      raise ConfigError(f"privacy.physical_batch_size={physical} must be a multiple of "
                        f"{multiple} (of devices x optim.grad_accum_steps and of "
                        "grad_accum_steps x privacy.microbatch_size).")
    if physical < auto:
      # (1 + e^ε) · steps · P(overflow) (accounting.physical_batch_size), for ε <= 10.
      logging.warning(
          "privacy.physical_batch_size=%d is below %d: a Poisson batch that overflows "
          "it is truncated, adding up to %.2g to δ over the run (for ε <= 10).",
          physical, auto, (1 + math.exp(10.0)) * horizon
          * accounting.poisson_overflow(num_examples + 1, q, physical))
  return PrivacyPlan(
      clip_norm=float(p.clip_norm), noise_multiplier=float(noise), delta=float(p.delta),
      accountant=p.accountant, sampling=p.sampling, num_examples=int(num_examples),
      expected_batch_size=int(t.batch_size), physical_batch_size=int(physical),
      epsilon_budget=float(p.epsilon_budget or p.target_epsilon),
      per_layer=bool(p.per_layer), microbatch_size=p.microbatch_size or None)
