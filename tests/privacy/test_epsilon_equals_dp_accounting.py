"""mmjax.privacy.accounting computes what Google's dp_accounting computes, live, on the
same inputs: ε of one segment and of a ledger (PLD and RDP), the classic MNIST numbers,
the calibrated noise, the steps a budget allows, the padded Poisson batch, and the
ConfigErrors that name the fix."""
import math

import numpy as np
import pytest

dp_accounting = pytest.importorskip("dp_accounting")
from dp_accounting import pld, rdp  # noqa: E402

from mmjax.errors import ConfigError  # noqa: E402
from mmjax.privacy import accounting  # noqa: E402
from mmjax.privacy.accounting import Segment  # noqa: E402

# Abadi et al. 2016 / the TF Privacy MNIST tutorial: batch 256 of 60,000, 60 epochs.
MNIST_Q = 256 / 60000
MNIST_STEPS = 60 * 60000 // 256   # 14062, as the tutorial counts them


def poisson_gaussian(q, sigma, steps):
  """The event of `steps` DP-SGD steps, built from dp_accounting's own pieces."""
  return dp_accounting.SelfComposedDpEvent(
      dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps)


def direct_epsilon(event, delta, name):
  """ε from a dp_accounting accountant built here (PLD at the interval mmjax picks)."""
  if name == "rdp":
    accountant = rdp.RdpAccountant()
  else:
    accountant = pld.PLDAccountant(
        value_discretization_interval=accounting.pld_discretization(event))
  return accountant.compose(event).get_epsilon(delta)


@pytest.mark.parametrize("name", ["rdp", "pld"])
@pytest.mark.parametrize("q, sigma, steps, delta", [
    (MNIST_Q, 1.1, MNIST_STEPS, 1e-5),
    (0.01, 1.0, 1000, 1e-5),
    (0.1, 2.0, 200, 1e-6),
    (0.02, 0.8, 50, 1e-5),
])
def test_epsilon_equals_a_directly_built_accountant(name, q, sigma, steps, delta):
  got = accounting.epsilon([Segment(q, sigma, steps)], delta, accountant=name)
  want = direct_epsilon(poisson_gaussian(q, sigma, steps), delta, name)
  assert abs(got - want) <= 1e-6
  assert accounting.dp_event([Segment(q, sigma, steps)]) == (
      dp_accounting.ComposedDpEvent([poisson_gaussian(q, sigma, steps)]))


def test_the_classic_mnist_setting():
  ledger = [Segment(MNIST_Q, 1.1, MNIST_STEPS)]
  by_rdp = accounting.epsilon(ledger, 1e-5, accountant="rdp")
  by_pld = accounting.epsilon(ledger, 1e-5, accountant="pld")
  # Abadi et al. report about 2 for a similar setting; dp_accounting's RDP gives 2.597
  # (TF Privacy's older conversion gave ~3.0 for σ = 1.1), PLD the tighter 2.382.
  assert 2 < by_rdp < 4
  assert by_rdp == pytest.approx(2.5966, abs=1e-3)
  assert by_pld == pytest.approx(2.3817, abs=1e-3)
  assert by_pld < by_rdp


def test_tf_privacy_tutorials_published_epsilon_is_the_classic_rdp_conversion():
  """TF Privacy's MNIST tutorial table: σ = 1.12, batch 256, 60 epochs -> ε = 2.92 at
  δ = 1e-5. That is Mironov's conversion min_α RDP(α) + log(1/δ)/(α - 1) over TF
  Privacy's orders of the time; dp_accounting converts each order with Canonne et al.'s
  tighter ε(α) = RDP(α) + log1p(-1/α) - log(δα)/(α - 1), so the classic value is
  recovered from dp_accounting's per-order ε by adding log(α)/(α - 1) - log1p(-1/α)."""
  event, delta = poisson_gaussian(MNIST_Q, 1.12, MNIST_STEPS), 1e-5
  tf_privacy_orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
  classic = min(
      rdp.RdpAccountant(orders=[a]).compose(event).get_epsilon(delta)
      + math.log(a) / (a - 1) - math.log1p(-1 / a) for a in tf_privacy_orders)
  assert round(classic, 2) == 2.92
  # mmjax reports the tighter conversions of the same mechanism.
  ledger = [Segment(MNIST_Q, 1.12, MNIST_STEPS)]
  by_rdp = accounting.epsilon(ledger, delta, accountant="rdp")
  by_pld = accounting.epsilon(ledger, delta, accountant="pld")
  assert by_rdp == pytest.approx(2.519, abs=1e-3)
  assert by_pld == pytest.approx(2.310, abs=1e-3)


def test_the_pld_discretisation_is_accurate_to_well_below_1e_3():
  event = poisson_gaussian(MNIST_Q, 1.1, MNIST_STEPS)
  interval = accounting.pld_discretization(event)
  assert interval == pytest.approx(0.05 * MNIST_Q / 1.1)
  finer = pld.PLDAccountant(value_discretization_interval=interval / 4)
  reference = finer.compose(event).get_epsilon(1e-5)
  got = accounting.epsilon([Segment(MNIST_Q, 1.1, MNIST_STEPS)], 1e-5)
  assert reference <= got <= reference * (1 + 1e-3)   # rounding is pessimistic


@pytest.mark.parametrize("name", ["rdp", "pld"])
def test_a_ledger_of_two_segments_is_the_composition_of_their_events(name):
  first, second = Segment(0.01, 1.2, 300), Segment(0.02, 0.9, 100)
  event = dp_accounting.ComposedDpEvent([poisson_gaussian(0.01, 1.2, 300),
                                         poisson_gaussian(0.02, 0.9, 100)])
  assert accounting.dp_event([first, second]) == event
  both = accounting.epsilon([first, second], 1e-5, accountant=name)
  assert abs(both - direct_epsilon(event, 1e-5, name)) <= 1e-6
  assert both > max(accounting.epsilon([first], 1e-5, accountant=name),
                    accounting.epsilon([second], 1e-5, accountant=name))


@pytest.mark.parametrize("name", ["rdp", "pld"])
def test_a_split_ledger_with_unchanged_settings_is_one_segment(name):
  """What makes a resumed run's ε exactly an unbroken run's."""
  q, sigma, delta = 0.01, 1.0, 1e-5
  whole = accounting.epsilon([Segment(q, sigma, 1000)], delta, accountant=name)
  split = [Segment(q, sigma, 400), Segment(q, sigma, 0), Segment(q, sigma, 600)]
  assert accounting.epsilon(split, delta, accountant=name) == whole
  # The merge is exact bookkeeping, not a change of number: composing the two parts
  # separately in dp_accounting agrees to rounding.
  parts = dp_accounting.ComposedDpEvent([poisson_gaussian(q, sigma, 400),
                                         poisson_gaussian(q, sigma, 600)])
  assert direct_epsilon(parts, delta, name) == pytest.approx(whole, rel=1e-6)


def test_ledger_edge_cases_and_json():
  assert accounting.epsilon([], 1e-5) == 0.0
  assert accounting.epsilon([Segment(0.01, 1.0, 0)], 1e-5) == 0.0
  assert accounting.epsilon([Segment(0.01, 1.0, 10), Segment(0.01, 0.0, 1)],
                            1e-5) == math.inf
  assert accounting.epsilon([Segment(0.01, 0.0, 1)], 1e-5, accountant="rdp") == math.inf
  # Shuffled batches are reported with the Poisson event (see dp_event's warning).
  ledger = [Segment(0.01, 1.0, 100)]
  assert accounting.dp_event(ledger, "shuffle") == accounting.dp_event(ledger, "poisson")
  assert accounting.epsilon(ledger, 1e-5, sampling="shuffle") == accounting.epsilon(
      ledger, 1e-5)
  seg = Segment(np.float64(0.01), np.float32(1.5), np.int64(7))
  assert seg.to_json() == {"sampling_rate": 0.01, "noise_multiplier": 1.5, "steps": 7}
  assert type(seg.to_json()["steps"]) is int
  assert Segment.from_json(seg.to_json()) == seg


@pytest.mark.parametrize("name", ["rdp", "pld"])
def test_calibrated_noise_is_the_smallest_that_reaches_the_target(name):
  q, steps, target, delta = 0.01, 1000, 2.0, 1e-5
  sigma = accounting.calibrate_noise(q, steps, target, delta, accountant=name)
  spent = lambda s: accounting.epsilon([Segment(q, s, steps)], delta, accountant=name)
  assert spent(sigma) <= target < spent(0.99 * sigma)
  assert direct_epsilon(poisson_gaussian(q, sigma, steps), delta, name) <= target
  if name == "rdp":   # the same answer as dp_accounting's calibration used directly
    want = dp_accounting.calibrate_dp_mechanism(
        rdp.RdpAccountant, lambda s: poisson_gaussian(q, s, steps), target, delta,
        dp_accounting.ExplicitBracketInterval(0.1, 100.0))
    assert sigma == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("name", ["rdp", "pld"])
def test_max_steps_is_the_last_step_within_budget(name):
  q, sigma, budget, delta = 0.05, 2.0, 2.0, 1e-5
  done = [Segment(0.05, 3.0, 40)]
  spent = lambda n: accounting.epsilon(done + [Segment(q, sigma, n)], delta,
                                       accountant=name)
  n = accounting.max_steps(q, sigma, budget, delta, accountant=name, done=done)
  assert n > 1
  assert spent(n) <= budget < spent(n + 1)
  fresh = accounting.max_steps(q, sigma, budget, delta, accountant=name)
  assert fresh > n
  # A spent budget, or no noise, allows no step.
  assert accounting.max_steps(q, sigma, spent(n) / 2, delta, accountant=name,
                              done=done + [Segment(q, sigma, n)]) == 0
  assert accounting.max_steps(q, 0.0, budget, delta, accountant=name) == 0


def test_physical_batch_bounds_the_truncation():
  n, q, steps, delta, multiple, eps = 60000, MNIST_Q, MNIST_STEPS, 1e-5, 8, 3.0
  added_delta = lambda size: (steps * (1 + math.exp(eps))
                              * accounting.poisson_overflow(n + 1, q, size))
  size = accounting.physical_batch_size(n, q, steps, delta, multiple, epsilon=eps)
  assert size % multiple == 0 and size > 256
  assert added_delta(size) <= delta / 100 < added_delta(size - multiple)
  # The default covers any ε up to 10, so it pads at least as much.
  assert accounting.physical_batch_size(n, q, steps, delta, multiple) >= size
  # Never below the expected batch (n·q = 256 up to rounding), a multiple of `multiple`.
  assert accounting.physical_batch_size(n, q, 0, delta, 1) == 256
  assert accounting.physical_batch_size(n, q, 0, delta, 24) == 264
  # poisson_overflow is the binomial tail above the cap.
  tail = sum(math.comb(100, k) * 0.1**k * 0.9**(100 - k) for k in range(16, 101))
  assert accounting.poisson_overflow(100, 0.1, 15) == pytest.approx(tail, rel=1e-9)


def test_unreachable_target_names_the_steps_that_reach_it():
  with pytest.raises(ConfigError, match=r"privacy\.target_epsilon=0\.0001 at "
                     r"privacy\.delta=1e-05 is out of reach in train\.total_steps=6 .*"
                     r"train at most 1 step \(train\.total_steps\)"):
    accounting.calibrate_noise(32 / 4000, 6, 1e-4, 1e-5)
  with pytest.raises(ConfigError, match=r"out of reach .* train at most \d+ steps"):
    accounting.calibrate_noise(0.01, 10**6, 0.05, 1e-5, accountant="rdp")


@pytest.mark.parametrize("bad", [0.0, 1.0, 1.5, -1e-5, float("nan")])
def test_delta_outside_zero_one_is_refused(bad):
  with pytest.raises(ConfigError, match=r"privacy\.delta=.* must be in \(0, 1\)"):
    accounting.epsilon([Segment(0.01, 1.0, 10)], bad)
  with pytest.raises(ConfigError, match=r"privacy\.delta"):
    accounting.check_delta(bad, 60000)


def test_check_delta_warns_when_delta_is_not_well_below_one_over_n():
  warning = accounting.check_delta(1e-4, 60000)
  assert "1/N = 1/60000" in warning and "1/(10N)" in warning
  assert accounting.check_delta(1e-5 / 6, 60000) is None


def test_other_refusals_name_the_key():
  with pytest.raises(ConfigError, match=r"Unknown privacy\.accountant='gdp'"):
    accounting.epsilon([Segment(0.01, 1.0, 10)], 1e-5, accountant="gdp")
  with pytest.raises(ConfigError, match=r"Unknown privacy\.sampling='fixed'"):
    accounting.epsilon([Segment(0.01, 1.0, 10)], 1e-5, sampling="fixed")
  with pytest.raises(ConfigError, match=r"train\.batch_size"):
    Segment(1.5, 1.0, 10)
  with pytest.raises(ConfigError, match=r"privacy\.noise_multiplier"):
    Segment(0.01, -1.0, 10)
  with pytest.raises(ConfigError, match=r"privacy\.target_epsilon"):
    accounting.calibrate_noise(0.01, 100, 0.0, 1e-5)
  with pytest.raises(ConfigError, match=r"privacy ledger is damaged"):
    Segment.from_json({"steps": 3})
