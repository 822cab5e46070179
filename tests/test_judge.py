"""The canary judge (server/monitoring/judge.py): its arithmetic, then its error rates.

The simulations (tests/judge_sim.py) drive the real judge batch by batch, as the server
would: 20 outcomes a batch, each the canary's with probability 0.2, judged after every
batch up to 5 000 outcomes, with fixed seeds so every figure is reproducible. Each
asserts a figure (an error rate within alpha plus a 3-sigma binomial margin, a power,
a median) and prints it; ``pytest -s tests/test_judge.py`` shows them, and
docs/judge.md quotes them.
"""

from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

import numpy as np
import pytest

from server.monitoring.judge import (
    JudgeSpec,
    Moments,
    Outcome,
    PairedLosses,
    Side,
    Summary,
    judge,
    log_e_value,
    period_of,
    ratio_bounds,
    summarize,
    variance_at,
    z_boundary,
)
from tests.judge_sim import log_losses, simulate, skewed_errors


def ceiling(alpha: float, trials: int) -> float:
    """The most an error rate of ``alpha`` shows in ``trials`` trials, 3 sigma up."""
    return alpha + 3.0 * math.sqrt(alpha * (1.0 - alpha) / trials)


def fed(seed: int, periods: int, effect: float, per_period: int = 50) -> PairedLosses:
    """An accumulator fed raw losses of a few periods (20 % canary), through add_losses."""
    rng = np.random.default_rng(seed)
    acc = PairedLosses()
    for p in range(periods):
        losses = skewed_errors(rng, (per_period,))
        canary = rng.random(per_period) < 0.2
        acc.add_losses((p, Side.CANARY if c else Side.STABLE, float(x * (1 + effect) if c else x))
                       for x, c in zip(losses, canary, strict=True))
    return acc


# -- the arithmetic -------------------------------------------------------------------


def test_moments_merge_exactly_in_any_grouping() -> None:
    rng = np.random.default_rng(1)
    losses = skewed_errors(rng, (101,)).tolist()
    whole = Moments.of(losses)
    assert whole.count == 101
    assert whole.mean == pytest.approx(np.mean(losses), rel=1e-12)
    assert whole.variance == pytest.approx(np.var(losses, ddof=1), rel=1e-12)
    parts = Moments.of(losses[:7]).merged(Moments.of(losses[7:60])).merged(
        Moments.of(losses[60:])).merged(Moments())
    assert parts.mean == pytest.approx(whole.mean, rel=1e-12)
    assert parts.m2 == pytest.approx(whole.m2, rel=1e-12)
    sums = Moments.from_sums(101, sum(losses), sum(x * x for x in losses))
    assert sums.mean == pytest.approx(whole.mean, rel=1e-12)
    assert sums.m2 == pytest.approx(whole.m2, rel=1e-9)
    assert Moments.from_sums(0, 0.0, 0.0) == Moments()
    assert math.isnan(Moments.of([1.0]).variance)


@pytest.mark.parametrize("bad", [-0.5, math.nan, math.inf])
def test_a_negative_or_non_finite_loss_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        Moments.of([1.0, bad])


@pytest.mark.parametrize("bad", [Moments(-1, 1.0, 0.0), Moments(2, -1.0, 0.0),
                                 Moments(2, 1.0, -0.1), Moments(2, math.nan, 0.0)])
def test_impossible_moments_are_refused(bad: Moments) -> None:
    with pytest.raises(ValueError, match="must be"):
        PairedLosses().add(0, Side.CANARY, bad)


@pytest.mark.parametrize(("field", "value"), [
    ("alpha", 0.0), ("alpha", 0.5), ("alpha", math.nan), ("min_effect", 0.0),
    ("min_effect", 10.0), ("period_s", 0.0),
    ("period_s", math.inf), ("min_samples", 1), ("tuned_for", 0.5)])
def test_spec_fields_are_checked(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"^{field} = "):
        changes: dict[str, Any] = {field: value}
        dataclasses.replace(JudgeSpec(), **changes)


def test_period_of_buckets_prediction_time() -> None:
    spec = JudgeSpec(period_s=900.0)
    assert [period_of(spec, t) for t in (0.0, 899.9, 900.0, 1_700_000_000.0)] == [
        0, 0, 1, 1_888_888]


def test_the_running_summary_is_the_summary_from_scratch() -> None:
    acc = fed(2, periods=12, effect=0.1)
    rng = random.Random(3)
    for _ in range(200):  # revisit old periods: outcomes of a period trickle in for days
        acc.add(rng.randrange(12), rng.choice(list(Side)), Moments.of([rng.expovariate(1.0)]))
    running, scratch = acc.summary, summarize(acc.periods)
    assert running.samples_canary == scratch.samples_canary
    assert running.samples_stable == scratch.samples_stable
    assert running.periods == scratch.periods == 12
    for name in ("tau", "canary", "stable", "var_canary", "var_stable",
                 "var_canary_as_stable", "var_stable_as_canary"):
        assert getattr(running, name) == pytest.approx(getattr(scratch, name), rel=1e-9)
    assert judge(JudgeSpec(), running) == judge(JudgeSpec(), running)  # deterministic


def test_a_period_counts_once_both_sides_have_two_outcomes() -> None:
    acc = PairedLosses()
    acc.add(0, Side.CANARY, Moments.of([1.0, 2.0]))
    acc.add(0, Side.STABLE, Moments.of([1.0]))
    acc.add(1, Side.STABLE, Moments.of([1.0, 3.0, 2.0]))
    assert acc.summary == Summary()
    verdict = judge(JudgeSpec(), acc.summary)
    assert (verdict.outcome, verdict.effect, verdict.low, verdict.high) == (
        Outcome.UNDECIDED, None, -1.0, math.inf)
    acc.add(0, Side.STABLE, Moments.of([3.0]))
    summary = acc.summary
    assert (summary.samples_canary, summary.samples_stable, summary.periods) == (2, 2, 1)
    assert summary.tau == 1.0 and summary.canary == 1.5 and summary.stable == 2.0


def test_the_boundary_is_where_the_e_value_reaches_one_over_alpha() -> None:
    spec = JudgeSpec()
    for tau in (1.0, 10.0, 250.0, 1e4, 1e7):
        z = z_boundary(spec.alpha, tau, spec.rho2)
        assert log_e_value(z, tau, spec.rho2) == pytest.approx(math.log(1 / spec.alpha),
                                                               abs=1e-9)
    # tightest near tuned_for: wider both well before and well after
    at = {tau: z_boundary(0.01, tau, spec.rho2) for tau in (25.0, 250.0, 25_000.0)}
    assert at[250.0] < at[25.0] and at[250.0] < at[25_000.0]
    # Deep in the lower tail exp(k z^2 / 2) and Phi(z sqrt(k)) cancel to about
    # 1 / (|x| sqrt(2 pi)): finite, no log(0), and continuous where the two ways of
    # computing log Phi meet (x = -30).
    rt = spec.rho2 * 250.0
    k = rt / (1 + rt)
    meet = -30.0 / math.sqrt(k)
    assert log_e_value(meet - 1e-9, 250.0, spec.rho2) == pytest.approx(
        log_e_value(meet + 1e-9, 250.0, spec.rho2), abs=1e-6)
    far = log_e_value(-400.0, 250.0, spec.rho2)
    x = -400.0 * math.sqrt(k)
    assert far == pytest.approx(math.log(2) - 0.5 * math.log1p(rt)
                                - math.log(-x * math.sqrt(2 * math.pi)), abs=1e-4)


def test_verdicts_agree_with_their_interval_and_e_values() -> None:
    """WORSE exactly when low > 0 and e_worse >= 1/alpha; NOT_WORSE exactly when
    high < min_effect and e_not_worse >= 1/alpha; and the bounds are crossings."""
    spec = JudgeSpec(alpha=0.05, min_samples=10)
    seen = set()
    for seed in range(60):
        acc = fed(seed, periods=1 + seed % 20, effect=(seed % 7) * 0.1 - 0.2, per_period=60)
        summary = acc.summary
        v = judge(spec, summary)
        seen.add(v.outcome)
        if v.effect is None:
            continue
        assert v.low <= v.effect <= v.high
        if v.samples_canary < spec.min_samples:
            continue
        assert (v.outcome == Outcome.WORSE) == (v.low > 0) == (v.e_worse >= 1 / spec.alpha)
        if v.outcome != Outcome.WORSE:
            assert (v.outcome == Outcome.NOT_WORSE) == (v.high < spec.min_effect) == (
                v.e_not_worse >= 1 / spec.alpha)
        assert v.p_value == pytest.approx(min(1.0, 1.0 / v.evidence))
        zb = z_boundary(spec.alpha, summary.tau, spec.rho2)
        c, s = summary.canary, summary.stable
        if v.low > -1.0:
            u = 1.0 + v.low
            assert c - u * s == pytest.approx(zb * math.sqrt(variance_at(summary, u)),
                                              rel=1e-7)
        if math.isfinite(v.high):
            u = 1.0 + v.high
            assert u * s - c == pytest.approx(zb * math.sqrt(variance_at(summary, u)),
                                              rel=1e-7)
    assert seen == set(Outcome)


def test_losses_without_spread_give_a_point_interval() -> None:
    acc = PairedLosses()
    for p in range(30):
        acc.add(p, Side.CANARY, Moments.of([2.0, 2.0]))
        acc.add(p, Side.STABLE, Moments.of([1.0] * 8))
    v = judge(JudgeSpec(), acc.summary)
    assert (v.outcome, v.effect, v.low, v.high) == (Outcome.WORSE, 1.0, 1.0, 1.0)
    assert v.e_worse == math.inf and v.p_value == 0.0


def test_an_unbounded_ratio_reads_as_infinite() -> None:
    """Stable's mean barely told apart from zero: nothing bounds the ratio from above."""
    wild = Summary(tau=4.0, canary=4.0, stable=4.0, var_canary=20.0, var_stable=20.0,
                   var_canary_as_stable=20.0, var_stable_as_canary=20.0,
                   samples_canary=60, samples_stable=60, periods=1)
    low, high = ratio_bounds(wild, 3.0)
    assert low == 0.0 and high == math.inf
    assert judge(JudgeSpec(), wild).outcome == Outcome.UNDECIDED


# -- the error rates, by simulation ---------------------------------------------------


def test_a_canary_like_stable_is_rarely_ever_judged_worse() -> None:
    """(a) 1 000 canaries identical to stable, skewed losses, judged after every batch of
    20 up to 5 000 outcomes: the share ever WORSE stays within alpha."""
    spec = JudgeSpec(alpha=0.01)
    trials = simulate(spec, seed=101, trials=1_000)
    print(f"\n(a) false WORSE share {trials.worse:.4f} (alpha {spec.alpha}, 1000 trials, "
          f"250 looks each); NOT_WORSE by 5000 outcomes {trials.not_worse:.3f}")
    assert trials.worse <= ceiling(spec.alpha, 1_000)
    # and the confidence sequence's last interval covers the truth (no effect)
    covered = np.mean((trials.last_low <= 0.0) & (trials.last_high >= 0.0))
    assert covered >= 1.0 - 2 * ceiling(spec.alpha, 1_000)


def test_a_canary_30_percent_worse_is_judged_worse() -> None:
    """(b) A canary whose losses are 1.3 times stable's is WORSE in >= 95 % of 1 000
    trials within 5 000 outcomes, typically within about 2 000."""
    trials = simulate(JudgeSpec(), seed=202, trials=1_000, effect=0.3,
                      stop_on=(Outcome.WORSE,))
    median = trials.median_to_worse()
    quartiles = np.percentile(trials.first_worse[trials.first_worse > 0], [25, 75])
    print(f"\n(b) power at +30 %: {trials.worse:.3f}; outcomes to WORSE: median {median:.0f},"
          f" quartiles {quartiles[0]:.0f}-{quartiles[1]:.0f}; never NOT_WORSE: "
          f"{trials.not_worse == 0}")
    assert trials.worse >= 0.95
    assert median <= 2_500
    assert trials.not_worse == 0


def test_a_canary_like_stable_is_eventually_judged_not_worse() -> None:
    """(c) With min_effect 0.1 an identical canary earns NOT_WORSE in most of 200 trials
    by 30 000 outcomes (looks every 100 outcomes here: the power, not the error rate, is
    measured, and fewer looks only delay a decision)."""
    trials = simulate(JudgeSpec(min_effect=0.1), seed=303, trials=200, max_outcomes=30_000,
                      batch=100, batches_per_period=1,
                      stop_on=(Outcome.WORSE, Outcome.NOT_WORSE))
    print(f"\n(c) NOT_WORSE by 30000 outcomes: {trials.not_worse:.3f}, median outcomes "
          f"{trials.median_to_not_worse():.0f}; WORSE {trials.worse:.3f}")
    assert trials.not_worse >= 0.85
    assert trials.median_to_not_worse() <= 15_000


def test_a_traffic_mix_shift_does_not_make_a_canary_worse() -> None:
    """(d) Every other three periods both versions' losses double, and the canary's share
    is 30 % in those hard periods and 10 % in the easy ones: unpaired, the canary's losses
    look about 20 % higher (the naive test at the end says worse in most trials); paired
    by period, the judge holds alpha and estimates no effect. alpha = 0.05 over 500
    trials, so that an excess would show."""
    spec = JudgeSpec(alpha=0.05)
    trials = simulate(spec, seed=404, trials=500, period_scale=(1, 1, 1, 2, 2, 2),
                      period_share=(0.1, 0.1, 0.1, 0.3, 0.3, 0.3))
    naive = float(np.mean(trials.naive_worse))
    print(f"\n(d) mix shift: judge WORSE {trials.worse:.3f} (alpha {spec.alpha}); unpaired "
          f"test says worse {naive:.3f}; median effect {np.median(trials.last_effect):+.4f}")
    assert naive >= 0.5  # the scenario bites
    assert trials.worse <= ceiling(spec.alpha, 500)
    assert abs(float(np.median(trials.last_effect))) < 0.03


def test_log_losses_hold_alpha() -> None:
    """(e) Bernoulli log losses of a calibrated classifier, canary like stable: the share
    ever WORSE stays within alpha (0.05 over 500 trials, so that an excess would show)."""
    spec = JudgeSpec(alpha=0.05)
    trials = simulate(spec, seed=505, trials=500, draw=log_losses)
    print(f"\n(e) log loss: false WORSE share {trials.worse:.3f} (alpha {spec.alpha})")
    assert trials.worse <= ceiling(spec.alpha, 500)


def test_a_canary_min_effect_worse_is_rarely_judged_not_worse() -> None:
    """(f) The other error: a canary exactly min_effect worse is ever NOT_WORSE within
    alpha. The side that skewed losses break without the variance floors (it measured
    8 % at alpha 5 %)."""
    spec = JudgeSpec(alpha=0.05, min_effect=0.1)
    trials = simulate(spec, seed=606, trials=500, effect=0.1)
    print(f"\n(f) false NOT_WORSE share at +10 %: {trials.not_worse:.3f} (alpha {spec.alpha})")
    assert trials.not_worse <= ceiling(spec.alpha, 500)
