"""The privacy accounting of DP-SGD: ε at δ of a run, over Google's `dp_accounting`.

A run's *ledger* is a list of `Segment`s, one per stretch of steps taken with the same
(sampling rate q, noise multiplier σ); a run resumed with other settings appends a new
one. Everything here is a function of the ledger:

    epsilon(ledger, delta, *, accountant='pld', sampling='poisson') -> ε at δ
    calibrate_noise(q, steps, target_epsilon, delta, ...) -> the smallest σ reaching ε
    max_steps(q, sigma, budget_epsilon, delta, ..., done=ledger) -> further steps allowed
    physical_batch_size(n, q, steps, delta, multiple, *, epsilon=10) -> padded batch
    check_delta(delta, n) -> a warning when δ is not well below 1/N

The guarantee is (ε, δ)-DP for the *add-or-remove-one-example* neighbouring relation
(dp_accounting's default), for one step = one Poisson-sampled Gaussian mechanism on
per-example gradients clipped to norm C with noise σ·C. Two accountants:

  'pld'  privacy loss distributions (Koskela et al. 2020; Doroshenko et al. 2022), tight
         up to the discretisation chosen by `pld_discretization` (always rounded up:
         the ε reported is an upper bound). The default.
  'rdp'  Rényi DP (Mironov 2017; Mironov, Talwar & Zhang 2019) at dp_accounting's
         default orders, converted to (ε, δ) with the improved bound of Canonne, Kamath &
         Steinke 2020 (Prop. 12). A valid but looser upper bound (about 9% above PLD
         on MNIST's classic setting); older papers report it with Mironov's original
         conversion, which is looser still (TF Privacy's MNIST tutorial: ε = 2.92 for
         σ = 1.12, batch 256, 60 epochs; dp_accounting's RDP gives 2.52, PLD 2.31).

The only mmjax import is `mmjax.errors`; the module is imported only when privacy is on,
so importing dp_accounting at the top is fine.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import numbers
from typing import Iterable, Sequence

import dp_accounting
from dp_accounting import pld, privacy_accountant, rdp
from scipy import stats

from mmjax.errors import ConfigError

ACCOUNTANTS = ("pld", "rdp")
SAMPLINGS = ("poisson", "shuffle")

# calibrate_noise searches σ in this bracket: below 0.1 a run's ε is in the hundreds or
# thousands (no meaningful guarantee); above 100 the signal is drowned in any batch
# mmjax trains with.
SIGMA_MIN, SIGMA_MAX = 0.1, 100.0
# max_steps stops doubling here (about 10^12 steps: no practical limit).
MAX_STEPS = 2**40

# PLD discretisation (see `pld_discretization`): the interval is this fraction of the
# per-step privacy-loss scale q/σ, clipped to [_PLD_INTERVAL_MIN, _PLD_INTERVAL_MAX].
_PLD_INTERVAL_PER_LOSS_SCALE = 0.05
_PLD_INTERVAL_MIN, _PLD_INTERVAL_MAX = 1e-6, 1e-3


@dataclasses.dataclass(frozen=True)
class Segment:
  """`steps` DP-SGD steps taken with sampling rate q and noise multiplier σ.

  sampling_rate: q, the probability that a step's batch holds a given example
    (train.batch_size / N: the expected batch size over the training set size).
  noise_multiplier: σ, the noise's standard deviation over the clip norm; 0 is no noise
    (no privacy: ε is inf once such a segment has a step).
  steps: how many steps.
  Frozen (hashable), so ledgers can key `epsilon`'s cache.
  """
  sampling_rate: float
  noise_multiplier: float
  steps: int

  def __post_init__(self):
    q, sigma, steps = self.sampling_rate, self.noise_multiplier, self.steps
    if isinstance(q, bool) or not isinstance(q, numbers.Real) or not 0 <= q <= 1:
      raise ConfigError(f"The sampling rate q = train.batch_size / N is {q!r} but must be "
                        "in [0, 1]: train.batch_size must not exceed the number of "
                        "training examples.")
    if (isinstance(sigma, bool) or not isinstance(sigma, numbers.Real)
        or not 0 <= sigma < math.inf):
      raise ConfigError(f"privacy.noise_multiplier={sigma!r} must be a finite number >= 0 "
                        "(e.g. 1.1).")
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
      raise ConfigError(f"A ledger segment's steps={steps!r} must be an integer >= 0 "
                        "(train.total_steps counts whole steps).")
    # Plain Python numbers: numpy scalars would leak into the checkpoint's JSON.
    object.__setattr__(self, "sampling_rate", float(q))
    object.__setattr__(self, "noise_multiplier", float(sigma))
    object.__setattr__(self, "steps", int(steps))

  def to_json(self) -> dict:
    """Returns the segment as a JSON-serialisable dict (what checkpoints store)."""
    return {"sampling_rate": self.sampling_rate,
            "noise_multiplier": self.noise_multiplier, "steps": self.steps}

  @classmethod
  def from_json(cls, data: dict) -> Segment:
    """Returns the Segment that `to_json` wrote as `data`; ConfigError if it is not one."""
    try:
      return cls(data["sampling_rate"], data["noise_multiplier"], data["steps"])
    except (KeyError, TypeError) as e:
      raise ConfigError(f"The privacy ledger entry {data!r} is not a segment "
                        "{sampling_rate, noise_multiplier, steps}: the checkpoint's "
                        "privacy ledger is damaged; restore an earlier checkpoint."
                        ) from e


def dp_event(segments: Iterable[Segment], sampling: str = "poisson"
             ) -> dp_accounting.DpEvent:
  """Returns the dp_accounting event of a ledger: a ComposedDpEvent with, per segment,
  SelfComposedDpEvent(PoissonSampledDpEvent(q, GaussianDpEvent(σ)), steps).

  Adjacent segments with the same (q, σ) are merged into one (their steps summed), so a
  run interrupted and resumed with unchanged settings has exactly, not just nearly, the
  ε of an unbroken one (PLD composes n1 + n2 steps at once differently in the last
  bits from n1 steps then n2). Segments with no steps or q = 0 touch no example and are
  left out; a segment with σ = 0 and steps is a NonPrivateDpEvent (ε = inf).

  sampling='poisson': each step's batch holds each example independently with
  probability q. This is the mechanism the event describes, and the guarantee holds.

  sampling='shuffle': fixed-size batches cut from a shuffled pass over the data.

    !!! The event is the SAME Poisson event. This is common practice (TF Privacy,
    !!! Opacus and most papers train on shuffled batches and report Poisson ε), but the
    !!! reported ε is NOT a proven guarantee for shuffled batches, and it can be too
    !!! small: Chua et al. 2024, "How Private are DP-SGD Implementations?" (ICML 2024,
    !!! arXiv:2403.17673) show the privacy loss of shuffled batches can be substantially
    !!! larger than the Poisson accounting says, and Chua et al. 2024, "Scalable
    !!! DP-SGD: Shuffling vs. Poisson Subsampling" (NeurIPS 2024) extend their lower
    !!! bounds to several epochs. For a guarantee, train with sampling='poisson'.

    dp_accounting 0.6 has no event for shuffling. Its SampledWithoutReplacementDpEvent
    is not one either: it models a fresh uniform fixed-size batch drawn independently at
    every step (not one shuffled pass, in which each example is in exactly one batch per
    epoch); it is analysed under the *replace-one* relation (an ε not comparable with
    add-or-remove ε, about twice as large for the same mechanism); and only the RDP
    accountant supports it (PLDAccountant raises). So it would not make the shuffled
    guarantee hold, and mmjax keeps the Poisson number, comparable with the literature,
    with this warning.
  """
  _check_sampling(sampling)
  events = []
  for seg in _merged(segments):
    if seg.noise_multiplier == 0:
      step = dp_accounting.NonPrivateDpEvent()
    else:
      step = dp_accounting.PoissonSampledDpEvent(
          seg.sampling_rate, dp_accounting.GaussianDpEvent(seg.noise_multiplier))
    events.append(dp_accounting.SelfComposedDpEvent(step, seg.steps))
  return dp_accounting.ComposedDpEvent(events)


def _merged(segments: Iterable[Segment]) -> list[Segment]:
  """The segments that spend privacy, adjacent ones with equal (q, σ) merged."""
  out = []
  for seg in segments:
    if not isinstance(seg, Segment):
      raise TypeError(f"A ledger holds accounting.Segment, not {type(seg).__name__}.")
    if seg.steps == 0 or seg.sampling_rate == 0:
      continue
    if out and (out[-1].sampling_rate, out[-1].noise_multiplier) == (
        seg.sampling_rate, seg.noise_multiplier):
      out[-1] = dataclasses.replace(out[-1], steps=out[-1].steps + seg.steps)
    else:
      out.append(seg)
  return out


def pld_discretization(event: dp_accounting.DpEvent) -> float:
  """Returns the PLD value_discretization_interval `epsilon` uses for `event`.

  The PLD accountant rounds every privacy loss up to a grid of this spacing. The error
  in ε that this causes scales with the grid relative to the per-step privacy-loss
  scale q/σ, and hardly with the number of steps: measured against a 4x finer grid, an
  interval of 1e-4 is 4e-5 relative on MNIST (q = 256/60000, σ = 1.1, 14,062 steps,
  δ = 1e-5) but 3e-3 relative for q = 0.001, σ = 2 (ε ≈ 0.2 to 0.7), at any number of
  steps. So the interval is 0.05·q/σ (the smallest q/σ over the event), clipped to
  [1e-6, 1e-3], which measured at 2e-4 relative or better on q from 1e-4 to 1, σ from
  0.5 to 10 and 10 to 200,000 steps. The cost grows as the interval shrinks: epsilon()
  of the MNIST setting takes ~0.3 s on one CPU core (1e-4: 0.5 s; 3e-5: 1.7 s).
  Rounding is pessimistic, so a coarser grid only ever over-states ε.
  """
  scales = [q / sigma for q, sigma in _subsampled_gaussians(event) if q > 0 and sigma > 0]
  if not scales:
    return 1e-4   # no privacy loss to resolve: dp_accounting's default
  return min(max(_PLD_INTERVAL_PER_LOSS_SCALE * min(scales), _PLD_INTERVAL_MIN),
             _PLD_INTERVAL_MAX)


def _subsampled_gaussians(event) -> list[tuple[float, float]]:
  """(q, σ) of every (Poisson-subsampled) Gaussian in `event`."""
  if isinstance(event, dp_accounting.ComposedDpEvent):
    return [pair for e in event.events for pair in _subsampled_gaussians(e)]
  if isinstance(event, dp_accounting.SelfComposedDpEvent):
    return _subsampled_gaussians(event.event)
  if (isinstance(event, dp_accounting.PoissonSampledDpEvent)
      and isinstance(event.event, dp_accounting.GaussianDpEvent)):
    return [(event.sampling_probability, event.event.noise_multiplier)]
  if isinstance(event, dp_accounting.GaussianDpEvent):
    return [(1.0, event.noise_multiplier)]
  return []


class LedgerPldAccountant(privacy_accountant.PrivacyAccountant):
  """dp_accounting's PLDAccountant with the discretisation `pld_discretization` picks
  for everything composed into it.

  The right interval depends on the whole ledger, so composition is deferred: compose()
  only records the events (checking that PLDAccountant supports them), and get_epsilon /
  get_delta run a PLDAccountant on the recorded ledger. This lets `calibrate_noise` hand
  dp_accounting.calibrate_dp_mechanism an accountant factory while computing exactly
  what `epsilon` computes.
  """

  def __init__(self):
    super().__init__(privacy_accountant.NeighboringRelation.ADD_OR_REMOVE_ONE)

  def _maybe_compose(self, event, count, do_compose):
    del count, do_compose   # the base class records the event in self.ledger
    if pld.PLDAccountant().supports(event):
      return None
    return self.CompositionErrorDetails(
        invalid_event=event, error_message="Unsupported by dp_accounting's PLDAccountant.")

  def _pld(self) -> pld.PLDAccountant:
    event = self.ledger
    return pld.PLDAccountant(
        value_discretization_interval=pld_discretization(event)).compose(event)

  def get_epsilon(self, target_delta: float) -> float:
    return self._pld().get_epsilon(target_delta)

  def get_delta(self, target_epsilon: float) -> float:
    return self._pld().get_delta(target_epsilon)


def make_accountant(accountant: str = "pld") -> dp_accounting.PrivacyAccountant:
  """Returns a fresh, empty accountant: 'pld' a LedgerPldAccountant, 'rdp'
  dp_accounting's RdpAccountant at its default orders."""
  _check_accountant(accountant)
  if accountant == "rdp":
    return rdp.RdpAccountant()
  return LedgerPldAccountant()


def epsilon(segments: Sequence[Segment], delta: float, *, accountant: str = "pld",
            sampling: str = "poisson") -> float:
  """Returns ε at δ of the ledger `segments`: 0.0 for an empty ledger or one without
  steps, inf when a segment with steps has σ = 0.

  For sampling='shuffle' the number is the Poisson one, not a proven guarantee: see
  `dp_event`. Results are cached per (ledger, δ, accountant, sampling).
  """
  _check_delta_range(delta)
  _check_accountant(accountant)
  _check_sampling(sampling)
  return _epsilon(tuple(segments), float(delta), accountant, sampling)


@functools.lru_cache(maxsize=1024)
def _epsilon(segments: tuple[Segment, ...], delta: float, accountant: str,
             sampling: str) -> float:
  event = dp_event(segments, sampling)
  if not event.events:
    return 0.0
  if any(isinstance(e.event, dp_accounting.NonPrivateDpEvent) for e in event.events):
    return math.inf
  return float(make_accountant(accountant).compose(event).get_epsilon(delta))


def calibrate_noise(q: float, steps: int, target_epsilon: float, delta: float, *,
                    accountant: str = "pld", sampling: str = "poisson") -> float:
  """Returns the smallest noise multiplier σ (to 1e-5) whose `steps` steps at sampling
  rate q spend at most `target_epsilon` at δ: epsilon([Segment(q, σ, steps)], δ) <=
  target_epsilon (exactly as `epsilon` computes it).

  Searched in [SIGMA_MIN, SIGMA_MAX] = [0.1, 100] with
  dp_accounting.calibrate_dp_mechanism (Brent's method). When even σ = 0.1 meets the
  target, 0.1 is returned. ConfigError when even σ = 100 does not, naming the number of
  steps that would reach the target.

  With PLD the bracket is first narrowed to [0.8, 1] (or [0.5, 1]) times the RDP answer,
  which is cheap to compute and a little above PLD's (by about 5% on MNIST): PLD is slow
  where ε is large (seconds per evaluation near σ = 0.1), and a narrow bracket needs
  fewer of them.
  """
  _check_delta_range(delta)
  _check_accountant(accountant)
  _check_sampling(sampling)
  if not 0 < q <= 1:
    raise ConfigError(f"The sampling rate q = train.batch_size / N is {q!r} but must be in "
                      "(0, 1]: use a train.batch_size between 1 and the number of "
                      "training examples.")
  if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
    raise ConfigError(f"train.total_steps={steps!r} must be a positive integer to "
                      "calibrate the noise to privacy.target_epsilon.")
  if not 0 < target_epsilon < math.inf:
    raise ConfigError(f"privacy.target_epsilon={target_epsilon!r} must be a positive "
                      "number (e.g. 3.0).")

  def eps(sigma, name=accountant):
    return epsilon([Segment(q, sigma, steps)], delta, accountant=name, sampling=sampling)

  reached = eps(SIGMA_MAX)
  if reached > target_epsilon:
    allowed = max_steps(q, SIGMA_MAX, target_epsilon, delta, accountant=accountant,
                        sampling=sampling)
    fix = (f"train at most {allowed} step{'s' * (allowed != 1)} (train.total_steps)"
           if allowed else "no number of steps reaches it")
    raise ConfigError(
        f"privacy.target_epsilon={target_epsilon:g} at privacy.delta={delta:g} is out of "
        f"reach in train.total_steps={steps} steps at sampling rate q={q:.4g}: even "
        f"noise multiplier {SIGMA_MAX:g} spends ε = {reached:.4g}; {fix} at that noise, "
        "or raise privacy.target_epsilon, or lower train.batch_size.")

  lower, upper = SIGMA_MIN, SIGMA_MAX
  if accountant == "pld":
    guess = SIGMA_MAX
    if eps(SIGMA_MAX, "rdp") <= target_epsilon:
      guess = calibrate_noise(q, steps, target_epsilon, delta, accountant="rdp",
                              sampling=sampling)
    if eps(guess) <= target_epsilon:
      for below in (max(0.8 * guess, SIGMA_MIN), max(0.5 * guess, SIGMA_MIN)):
        if eps(below) > target_epsilon:
          lower, upper = below, guess
          break
  if eps(lower) <= target_epsilon:
    return lower
  return float(dp_accounting.calibrate_dp_mechanism(
      lambda: make_accountant(accountant),
      lambda sigma: dp_event([Segment(q, sigma, steps)], sampling),
      target_epsilon, delta,
      bracket_interval=dp_accounting.ExplicitBracketInterval(lower, upper), tol=1e-5))


def max_steps(q: float, sigma: float, budget_epsilon: float, delta: float, *,
              accountant: str = "pld", sampling: str = "poisson",
              done: Sequence[Segment] = ()) -> int:
  """Returns the largest number n of further steps at (q, σ) such that the ledger
  `done` + [Segment(q, σ, n)] spends at most `budget_epsilon` at δ (0 when even one
  step would overspend, or `done` already does; MAX_STEPS when no practical number
  would).

  Found by doubling n until it overspends, then bisection: about 2·log2(n) evaluations
  of `epsilon`, whose cache makes repeating the call (a resumed run) free. ε grows with
  n, but even if discretisation made it wobble, the answer satisfies
  ε(n) <= budget < ε(n + 1) for the n returned.
  """
  if not 0 < q <= 1:
    raise ConfigError(f"The sampling rate q = train.batch_size / N is {q!r} but must be in "
                      "(0, 1]: use a train.batch_size between 1 and the number of "
                      "training examples.")
  if not budget_epsilon >= 0:
    raise ConfigError(f"The privacy budget ε = {budget_epsilon!r} must be >= 0: set "
                      "privacy.epsilon_budget (or privacy.target_epsilon) >= 0.")
  done = tuple(done)

  def fits(n):
    return epsilon(done + (Segment(q, sigma, n),), delta, accountant=accountant,
                   sampling=sampling) <= budget_epsilon

  if not fits(1):
    return 0
  lo, hi = 1, 2   # invariant: fits(lo) and, once found, not fits(hi)
  while fits(hi):
    if hi >= MAX_STEPS:
      return MAX_STEPS
    lo, hi = hi, 2 * hi
  while hi - lo > 1:
    mid = (lo + hi) // 2
    lo, hi = (mid, hi) if fits(mid) else (lo, mid)
  return lo


def poisson_overflow(n: int, q: float, cap: int) -> float:
  """Returns P(Binomial(n, q) > cap): the chance that a Poisson batch drawn from n
  examples at rate q holds more than `cap` of them."""
  return float(stats.binom.sf(cap, n, q))


def physical_batch_size(n: int, q: float, steps: int, delta: float, multiple: int, *,
                        epsilon: float = 10.0) -> int:
  """Returns the padded batch size for Poisson batches: the smallest multiple of
  `multiple` that is >= the expected batch n·q and for which

      steps · (1 + e^epsilon) · P(Binomial(n + 1, q) > size) <= delta / 100,

  so that truncating the rare oversize batch adds at most delta / 100 to the run's δ.

  Why: the truncated mechanism M' and the Poisson one M use the same sample and differ
  only on the event E that some step's batch overflows; by the union bound over steps,
  P(E) <= p = steps · P(Binomial(n + 1, q) > size) (n + 1: the larger of two neighbouring
  datasets; the tail grows with n). So M' is within total-variation distance p of M on
  every dataset, and for neighbours D, D' and any set S of outputs

      P[M'(D) ∈ S] <= P[M(D) ∈ S] + p <= e^ε P[M(D') ∈ S] + δ + p
                   <= e^ε P[M'(D') ∈ S] + δ + (1 + e^ε) p.

  M' is thus (ε, δ + (1 + e^ε)·p)-DP. The factor e^ε is the price of this generic
  argument (bounding only M's δ by p is not enough: the second neighbour's overflow is
  weighed by e^ε), and binomial tails are thin enough that it costs a few percent of
  batch size: MNIST (n = 60,000, batch 256, 14,062 steps, δ = 1e-5) pads to 395 with
  epsilon=10, 377 with its actual ε = 2.4, and 371 with the factor left out.
  `epsilon` is the run's ε (an upper bound is enough); the default 10 covers every run
  whose ε is at most 10. dp_accounting can also account the truncated mechanism exactly
  (TruncatedSubsampledGaussianDpEvent, PLD only).
  """
  _check_delta_range(delta)
  if (isinstance(multiple, bool) or not isinstance(multiple, numbers.Integral)
      or multiple < 1):
    raise ValueError(f"multiple={multiple!r} must be a positive integer.")
  if not 0 <= q <= 1 or n < 0 or steps < 0 or not epsilon >= 0:
    raise ValueError(f"Need n >= 0, 0 <= q <= 1, steps >= 0 and epsilon >= 0; got n={n}, "
                     f"q={q}, steps={steps}, epsilon={epsilon}.")
  # n·q is the batch size the user set (q = batch / n); 1e-9 absorbs its rounding.
  smallest = multiple * max(1, math.ceil(n * q / multiple - 1e-9))
  if steps == 0:
    return smallest
  # log space: e^epsilon overflows a float for epsilon > 709.
  log_allowed = math.log(delta / 100) - math.log(steps) - _log1p_exp(epsilon)

  def ok(size):
    p = poisson_overflow(n + 1, q, size)
    return p == 0 or math.log(p) <= log_allowed

  # Start near the binomial quantile, then step to the exact answer.
  quantile = stats.binom.isf(math.exp(log_allowed), n + 1, q)
  size = smallest
  if math.isfinite(quantile):
    size = max(smallest, multiple * math.ceil(quantile / multiple))
  while size - multiple >= smallest and ok(size - multiple):
    size -= multiple
  while not ok(size):
    size += multiple
  return size


def _log1p_exp(x: float) -> float:
  """log(1 + e^x), without overflow."""
  return x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))


def check_delta(delta: float, n: int) -> str | None:
  """Returns a warning when δ >= 1/N for N training examples, else None; ConfigError
  when δ is not in (0, 1).

  Why 1/N: the mechanism that publishes one random training example outright is
  (0, 1/N)-DP, so a δ of that size permits leaking an example; δ well below it does not.
  """
  _check_delta_range(delta)
  if n >= 1 and delta >= 1 / n:
    return (f"δ = {delta:g} is not well below 1/N = 1/{n} = {1 / n:.3g} (N training "
            f"examples): a mechanism that leaks one whole example meets it; set "
            f"privacy.delta well below 1/N, e.g. 1/(10N) = {1 / (10 * n):.2g}.")
  return None


def _check_delta_range(delta: float) -> None:
  if isinstance(delta, bool) or not isinstance(delta, numbers.Real) or not 0 < delta < 1:
    raise ConfigError(f"privacy.delta={delta!r} must be in (0, 1), well below 1/N for N "
                      "training examples (e.g. 1e-5 for 60,000).")


def _check_accountant(accountant: str) -> None:
  if accountant not in ACCOUNTANTS:
    raise ConfigError(f"Unknown privacy.accountant={accountant!r}; choose one of "
                      f"{', '.join(ACCOUNTANTS)}.")


def _check_sampling(sampling: str) -> None:
  if sampling not in SAMPLINGS:
    raise ConfigError(f"Unknown privacy.sampling={sampling!r}; choose one of "
                      f"{', '.join(SAMPLINGS)}.")
