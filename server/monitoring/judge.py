"""The canary judge: is the canary's loss worse than stable's, decided sequentially.

Pure: no I/O, no clock, no threads, deterministic given its inputs. The judge compares
per-prediction losses (absolute error for regression, log loss for classification) of
the canary and the stable version over the same spans of prediction time, and may be
asked after every batch of outcomes, forever, without its error rates growing.

Estimand and outcomes
---------------------
Outcomes are grouped by *period* (a bucket of prediction time, ``JudgeSpec.period_s``
seconds) so that canary and stable are only compared on the same traffic: a bad hour
raises both versions' losses and does not read as a worse canary, even when the canary's
share of traffic differs between hours. Within period ``p`` with ``n_c`` canary and
``n_s`` stable outcomes of mean loss ``m_c``, ``m_s``, the period weighs
``w = n_c n_s / (n_c + n_s)`` (the inverse of the variance factor of ``m_c - m_s``), and
the effect is the relative worsening of the weighted means::

    effect = sum(w m_c) / sum(w m_s) - 1        (+0.3 = canary's loss 30 % above stable's)

Three outcomes, each one-sided at level ``alpha``:

- ``WORSE``: the hypothesis "canary no worse" (effect <= 0) is rejected. Under a canary
  as good as stable, the chance of *ever* saying WORSE, at any number of looks, is at
  most ``alpha`` (the false-rollback rate).
- ``NOT_WORSE``: the hypothesis "canary worse by ``min_effect`` or more" is rejected.
  Under a canary that much worse, the chance of ever saying NOT_WORSE is at most
  ``alpha``. A promotion *recommendation*, never an action.
- ``UNDECIDED``: neither yet (or fewer than ``min_samples`` outcomes of either side).

With plenty of data a canary worse by less than ``min_effect`` can reject both
hypotheses at once; it is WORSE then (the brief's rule: any worsening told apart from
none), and ``[low, high]`` says by how much.

``[low, high]`` is the set of effects neither one-sided test rejects: a ``1 - 2 alpha``
confidence sequence (it covers the true effect at every look at once with that
probability). WORSE is exactly ``low > 0`` and NOT_WORSE exactly ``high < min_effect``.

The test: one-sided normal-mixture e-processes, inverted (why this one)
-----------------------------------------------------------------------
For a candidate effect ``d`` the statistic is ``S(d) = sum w (m_c - (1+d) m_s)``, whose
mean is ``>= 0`` exactly when the true effect is ``>= d``, with variance
``V(d) = sum w^2 (v_c / n_c + (1+d)^2 v_s / n_s)`` (``v`` the period's sample variances;
the two sides are independent), each side's term floored at what the other side's
spread implies under ``d`` (:func:`variance_at` says why). Against "effect <= d" the
evidence is Robbins' normal mixture martingale with a half-normal mixing density
(Howard et al. 2021, "Time-uniform, nonparametric, nonasymptotic confidence
sequences", the one-sided normal mixture), written in the z-score ``z = S / sqrt(V)``
and the effective sample size ``tau = sum w``::

    E(z, tau) = 2 / sqrt(1 + r tau) * exp(k z^2 / 2) * Phi(z sqrt(k)),  r = rho^2,
    k = r tau / (1 + r tau)

For Gaussian increments this is a nonnegative supermartingale under the null, so by
Ville's inequality it ever reaches ``1/alpha`` with probability at most ``alpha``: it
may be looked at after every outcome, for ever (the mSPRT of Johari et al., "Always
valid inference", is the two-sided member of the family). ``1/E`` is an always-valid
p-value. The boundary ``E = 1/alpha`` is a z-score ``z_alpha(tau)`` that depends on
``tau`` only, so inverting the test for every ``d`` at once is Fieller's quadratic in
``1+d``: the confidence sequence has a closed form.

Assumptions, and why not something exact:

- Losses are unbounded (an absolute error, a log loss), so the exact nonparametric
  sequences (betting, Hoeffding or Bernstein e-processes) which need bounded
  observations do not apply without an arbitrary clip. The variance is estimated, so
  this is an *asymptotic* confidence sequence in the sense of Waudby-Smith, Arbour,
  Sinha, Kennedy and Ramdas ("Time-uniform central limit theory and asymptotic
  confidence sequences", Annals of Statistics 2024): the normal-mixture boundary with a
  plug-in variance, valid as the sample grows. Its finite-sample error rate is what
  ``tests/test_judge.py`` measures on skewed (gamma/lognormal) and log-loss-like
  losses, judged after every batch of 20 outcomes.
- ``min_samples``: no decision before each side has that many outcomes in paired
  periods. Early on the plug-in variance and the normal approximation are worst. The
  mixture boundary is itself wide at small ``tau`` and the simulations held ``alpha``
  with 10; the default 50 is a margin for losses heavier-tailed than those simulated.
- A period counts once each side has at least 2 outcomes in it (a sample variance
  needs two). Which periods count depends only on counts, never on losses, so this
  biases nothing; outcomes in periods that do not count yet are not "used".
- Outcomes of one version are independent given the period, and whether an outcome is
  reported at all does not depend on which version answered.
- Losses are nonnegative, and stable's weighted mean loss is positive (else the ratio
  means nothing and the judge says UNDECIDED).

``rho`` sets where the boundary is tightest: ``tuned_for`` effective samples
(``tau``, about the canary's outcome count when stable has most of the traffic). The
test is valid whatever it is; it only moves power between early and late looks.

Using it
--------
Either feed a :class:`PairedLosses` accumulator batch by batch (O(1) per touched period,
memory O(periods)), or build per-period :class:`Moments` from a store's
``count / sum / sum of squares`` per (period, version) and call :func:`summarize`; then
:func:`judge` turns the :class:`Summary` into a :class:`Verdict`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum

# A log-e-value above this is reported as infinite rather than overflowing exp().
_MAX_LOG = 700.0
_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class Side(StrEnum):
    CANARY = "canary"
    STABLE = "stable"


class Outcome(StrEnum):
    WORSE = "worse"  # canary worse than stable: a rollback where the rule says so
    NOT_WORSE = "not_worse"  # not worse by min_effect: a promotion recommendation
    UNDECIDED = "undecided"


@dataclass(frozen=True, slots=True)
class JudgeSpec:
    """How the judge decides; the fields are checked on construction.

    ``alpha``: the false-rollback rate (and the rate of recommending a canary that is in
    truth ``min_effect`` worse). ``min_effect``: the smallest relative worsening worth
    acting on (0.10 = canary's mean loss 10 % above stable's). ``period_s``: the length
    of a pairing period of prediction time (see :func:`period_of`). ``min_samples``:
    outcomes each side must have in paired periods before any decision.
    ``tuned_for``: the effective sample size where the boundary is tightest.
    """

    alpha: float = 0.01
    min_effect: float = 0.10
    period_s: float = 900.0
    min_samples: int = 50
    tuned_for: float = 250.0

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 0.5:
            raise ValueError(f"alpha = {self.alpha!r}: must be in (0, 0.5)")
        if not 0.0 < self.min_effect <= 1.0:
            raise ValueError(f"min_effect = {self.min_effect!r}: must be a fraction in (0, 1]"
                             " (0.10 is 10 %)")
        if not (math.isfinite(self.period_s) and self.period_s > 0.0):
            raise ValueError(f"period_s = {self.period_s!r}: must be a positive number")
        if self.min_samples < 2:
            raise ValueError(f"min_samples = {self.min_samples!r}: must be >= 2")
        if not (math.isfinite(self.tuned_for) and self.tuned_for >= 1.0):
            raise ValueError(f"tuned_for = {self.tuned_for!r}: must be >= 1")

    @property
    def rho2(self) -> float:
        """The mixing variance that makes the boundary tightest near ``tuned_for``
        (Howard et al.'s choice for the normal mixture, in z-score units)."""
        two_log = 2.0 * math.log(1.0 / self.alpha)
        return (two_log + math.log1p(two_log)) / self.tuned_for


def period_of(spec: JudgeSpec, prediction_time: float) -> int:
    """The period a prediction made at ``prediction_time`` (seconds, any epoch shared by
    both versions) belongs to."""
    return math.floor(prediction_time / spec.period_s)


@dataclass(frozen=True, slots=True)
class Moments:
    """Count, mean and sum of squared deviations (``m2``) of some losses; merging two
    is exact (Chan et al.'s update), so batches can arrive in any grouping."""

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    @classmethod
    def of(cls, losses: Iterable[float]) -> Moments:
        """Welford's pass over the losses; a negative or non-finite loss is refused."""
        count, mean, m2 = 0, 0.0, 0.0
        for loss in losses:
            if not (math.isfinite(loss) and loss >= 0.0):
                raise ValueError(f"loss {loss!r}: must be a finite number >= 0")
            count += 1
            step = loss - mean
            mean += step / count
            m2 += step * (loss - mean)
        return cls(count, mean, m2)

    @classmethod
    def from_sums(cls, count: int, total: float, total_sq: float) -> Moments:
        """From ``count(*)``, ``sum(loss)``, ``sum(loss * loss)`` as a database gives them.
        Losses of the order of their spread (errors, log losses) lose nothing to the
        subtraction; rounding below zero is clamped."""
        if count <= 0:
            return cls()
        mean = total / count
        return cls(count, mean, max(0.0, total_sq - total * mean))

    def merged(self, other: Moments) -> Moments:
        if other.count == 0:
            return self
        if self.count == 0:
            return other
        count = self.count + other.count
        step = other.mean - self.mean
        mean = self.mean + step * other.count / count
        m2 = self.m2 + other.m2 + step * step * self.count * other.count / count
        return Moments(count, mean, m2)

    @property
    def variance(self) -> float:
        """The unbiased sample variance (needs two losses)."""
        return self.m2 / (self.count - 1) if self.count > 1 else math.nan


@dataclass(frozen=True, slots=True)
class Summary:
    """The sums over paired periods that the verdict needs; :func:`summarize` or
    :attr:`PairedLosses.summary` make one.

    ``tau`` = sum w, ``canary`` = sum w m_c, ``stable`` = sum w m_s;
    ``var_canary`` = sum w^2 v_c / n_c and ``var_stable`` = sum w^2 v_s / n_s (each
    side's spread at its own counts), ``var_canary_as_stable`` = sum w^2 v_s / n_c and
    ``var_stable_as_canary`` = sum w^2 v_c / n_s (each side's spread at the other's
    counts: the variance floors of :func:`variance_at`).
    """

    tau: float = 0.0
    canary: float = 0.0
    stable: float = 0.0
    var_canary: float = 0.0
    var_stable: float = 0.0
    var_canary_as_stable: float = 0.0
    var_stable_as_canary: float = 0.0
    samples_canary: int = 0
    samples_stable: int = 0
    periods: int = 0

    def plus(self, canary: Moments, stable: Moments) -> Summary:
        """This summary with one period's terms added."""
        terms = _terms(canary, stable)
        if terms is None:
            return self
        tau, c, s, a, b, a_f, b_f = terms
        return Summary(self.tau + tau, self.canary + c, self.stable + s,
                       self.var_canary + a, self.var_stable + b,
                       self.var_canary_as_stable + a_f, self.var_stable_as_canary + b_f,
                       self.samples_canary + canary.count, self.samples_stable + stable.count,
                       self.periods + 1)


_Terms = tuple[float, float, float, float, float, float, float]


def _terms(canary: Moments, stable: Moments) -> _Terms | None:
    """One period's terms of the summary's seven sums, None while it does not count."""
    nc, ns = canary.count, stable.count
    if nc < 2 or ns < 2:
        return None
    w = nc * ns / (nc + ns)
    vc, vs = w * w * canary.m2 / (nc - 1), w * w * stable.m2 / (ns - 1)
    return (w, w * canary.mean, w * stable.mean, vc / nc, vs / ns, vs / nc, vc / ns)


def variance_at(summary: Summary, ratio: float) -> float:
    """The variance of ``S(d)`` used to test the ratio ``1 + d``: each side's own
    estimate, floored at what the other side's spread implies under that ratio.

    Why the floor: on right-skewed losses a side whose tail happens not to have shown
    up yet has both a low mean and a low sample variance, so its z-score is too large
    exactly when its mean is too low (the heavy lower tail of Student's t on skewed
    data). Without the floor the NOT_WORSE test, which bets on a low canary mean, said
    NOT_WORSE to a canary 10 % worse about 8 % of the time at alpha = 5 %. Under the
    hypothesis "canary = ratio x stable" the canary's variance is ``ratio^2`` times
    stable's, which the other side estimates independently of this side's mean. The
    floor only ever raises the variance, so the test stays valid when the canary's
    losses are not a scaled copy of stable's.
    """
    u2 = ratio * ratio
    return (max(summary.var_canary, u2 * summary.var_canary_as_stable)
            + max(u2 * summary.var_stable, summary.var_stable_as_canary))


def summarize(periods: Mapping[int, tuple[Moments, Moments]]) -> Summary:
    """The summary of per-period (canary, stable) moments, from scratch: O(periods)."""
    summary = Summary()
    for canary, stable in periods.values():
        summary = summary.plus(canary, stable)
    return summary


class PairedLosses:
    """Per-period moments of both sides, fed batch by batch, with the summary's sums
    kept up to date: an update takes its period's old terms away and adds the new ones,
    so it costs O(1) whatever the number of periods. Memory is one pair of
    :class:`Moments` per period seen (a day of 15-minute periods is 96)."""

    __slots__ = ("_counts", "_periods", "_sums")

    def __init__(self) -> None:
        self._periods: dict[int, tuple[Moments, Moments]] = {}
        self._sums = [0.0] * 7  # the seven float sums of Summary, in its field order
        self._counts = [0, 0, 0]  # samples_canary, samples_stable, periods

    def add(self, period: int, side: Side, moments: Moments) -> None:
        """Merge one side's losses (as moments) of one period."""
        if moments.count == 0:
            return
        if not (moments.count > 0 and moments.mean >= 0.0 and moments.m2 >= 0.0
                and math.isfinite(moments.mean) and math.isfinite(moments.m2)):
            raise ValueError(f"{moments!r}: losses are >= 0, so count, mean and m2 must be")
        canary, stable = self._periods.get(period, _EMPTY)
        self._count(canary, stable, -1)
        if side == Side.CANARY:
            canary = canary.merged(moments)
        else:
            stable = stable.merged(moments)
        self._periods[period] = (canary, stable)
        self._count(canary, stable, 1)

    def _count(self, canary: Moments, stable: Moments, sign: int) -> None:
        terms = _terms(canary, stable)
        if terms is None:
            return
        sums = self._sums
        for i, term in enumerate(terms):
            sums[i] += sign * term
        counts = self._counts
        counts[0] += sign * canary.count
        counts[1] += sign * stable.count
        counts[2] += sign

    def add_losses(self, observations: Iterable[tuple[int, Side, float]]) -> None:
        """Merge (period, side, loss) observations, grouped first so that each touched
        period is updated once per side."""
        grouped: dict[tuple[int, Side], list[float]] = {}
        for period, side, loss in observations:
            grouped.setdefault((period, side), []).append(loss)
        for (period, side), losses in grouped.items():
            self.add(period, side, Moments.of(losses))

    @property
    def periods(self) -> Mapping[int, tuple[Moments, Moments]]:
        return dict(self._periods)

    @property
    def summary(self) -> Summary:
        """The running summary. Terms added and taken away leave rounding of the order
        of 1e-16 times the number of updates; :func:`summarize` over :attr:`periods`
        recomputes it from scratch whenever that matters."""
        tau, c, s, a, b, a_f, b_f = self._sums
        n_c, n_s, periods = self._counts
        # Sums of nonnegative terms cannot be negative; rounding must not make them so.
        return Summary(max(0.0, tau), c, s, max(0.0, a), max(0.0, b), max(0.0, a_f),
                       max(0.0, b_f), n_c, n_s, periods)


_EMPTY = (Moments(), Moments())


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the judge says now.

    ``effect``: canary mean loss / stable mean loss - 1 over paired periods (None
    without paired data). ``[low, high]``: the ``1 - 2 alpha`` confidence sequence of the
    effect (``-1`` and ``inf`` when nothing bounds it yet). ``e_worse``: the e-value
    against "canary no worse" (WORSE once it reaches ``1/alpha``); ``e_not_worse``: the
    e-value against "canary worse by ``min_effect`` or more" (NOT_WORSE likewise).
    """

    outcome: Outcome
    effect: float | None
    low: float
    high: float
    e_worse: float
    e_not_worse: float
    samples_canary: int
    samples_stable: int

    @property
    def evidence(self) -> float:
        """The e-value behind the outcome (for UNDECIDED the larger of the two)."""
        if self.outcome == Outcome.WORSE:
            return self.e_worse
        if self.outcome == Outcome.NOT_WORSE:
            return self.e_not_worse
        return max(self.e_worse, self.e_not_worse)

    @property
    def p_value(self) -> float:
        """The always-valid p-value of the outcome's test: ``min(1, 1/evidence)``."""
        return min(1.0, 1.0 / self.evidence) if self.evidence > 0 else 1.0


def _log_phi(x: float) -> float:
    """log of the standard normal CDF, accurate far into the lower tail."""
    if x > -30.0:
        return math.log(0.5 * math.erfc(-x / math.sqrt(2.0)))
    # Mills' ratio expansion: Phi(x) ~ phi(x)/(-x) * (1 - 1/x^2 + 3/x^4)
    inv = 1.0 / (x * x)
    return -0.5 * x * x - _LOG_SQRT_2PI - math.log(-x) + math.log1p(-inv + 3.0 * inv * inv)


def log_e_value(z: float, tau: float, rho2: float) -> float:
    """log of the one-sided normal-mixture e-value at z-score ``z`` after effective
    sample size ``tau`` (the module docstring has the formula)."""
    rt = rho2 * tau
    k = rt / (1.0 + rt)
    if math.isinf(z):
        return math.inf if z > 0 else -math.inf
    return (math.log(2.0) - 0.5 * math.log1p(rt) + 0.5 * k * z * z
            + _log_phi(z * math.sqrt(k)))


def z_boundary(alpha: float, tau: float, rho2: float) -> float:
    """The z-score where the e-value reaches ``1/alpha`` after ``tau``.

    The e-value grows with z, and the one-sided mixture lies between one and two times
    the two-sided one, so the root is bracketed by the two-sided boundaries at
    ``2 alpha`` (below) and ``alpha`` (above). It sits just above the lower one, where
    Newton's steps start (one or two reach 1e-12); bisection if a step leaves the bracket.
    """
    rt = rho2 * tau
    k = rt / (1.0 + rt)
    target = math.log(1.0 / alpha)
    lo = math.sqrt((2.0 * math.log(0.5 / alpha) + math.log1p(rt)) / k)
    hi = math.sqrt((2.0 * target + math.log1p(rt)) / k)
    z = lo
    for _ in range(60):
        g = log_e_value(z, tau, rho2) - target
        if abs(g) < 1e-12:
            break
        if g > 0:
            hi = z
        else:
            lo = z
        x = z * math.sqrt(k)
        mills = math.exp(-0.5 * x * x - _LOG_SQRT_2PI - _log_phi(x))  # phi(x) / Phi(x)
        step = z - g / (k * z + math.sqrt(k) * mills)
        z = step if lo < step < hi else 0.5 * (lo + hi)
        if hi - lo < 1e-13:
            break
    return z


def _z(s: float, var: float) -> float:
    if var > 0.0:
        return s / math.sqrt(var)
    return 0.0 if s == 0.0 else math.copysign(math.inf, s)


def _e(log_e: float) -> float:
    return math.exp(log_e) if log_e < _MAX_LOG else math.inf


def ratio_bounds(summary: Summary, z: float) -> tuple[float, float]:
    """The ratios ``u = 1 + d`` (u >= 0) that neither one-sided test rejects at z-score
    boundary ``z``: the smallest and largest, ``inf`` when nothing bounds it above.

    Rejected below: ``S(u) >= z sqrt(V(u))``; above: ``-S(u) >= z sqrt(V(u))``, with
    ``S(u) = canary - u stable``. :func:`variance_at` is ``alpha0 + alpha2 u^2`` between
    the two ratios where its floors switch on, so in each such piece the crossings are
    the roots of Fieller's quadratic ``(s^2 - z^2 alpha2) u^2 - 2 c s u + c^2 - z^2
    alpha0``. ``S(u)`` falls as ``u`` grows and ``sqrt(V(u))`` is convex, so the lower
    crossing is unique and the upper side's rejected set is an interval: the bounds are
    the nearest roots on either side of the estimate ``c / s``.
    """
    c, s = summary.canary, summary.stable
    a, a_floor = summary.var_canary, summary.var_canary_as_stable
    b, b_floor = summary.var_stable, summary.var_stable_as_canary
    u_hat = c / s
    switch_a = math.sqrt(a / a_floor) if a_floor > 0.0 else math.inf  # u^2 a_floor > a above
    switch_b = math.sqrt(b_floor / b) if b > 0.0 else math.inf  # u^2 b > b_floor above
    edges = sorted({0.0, switch_a, switch_b, math.inf})
    low, high = 0.0, math.inf
    for lo, hi in itertools.pairwise(edges):
        alpha0 = (a if hi <= switch_a else 0.0) + (b_floor if hi <= switch_b else 0.0)
        alpha2 = (a_floor if hi > switch_a else 0.0) + (b if hi > switch_b else 0.0)
        for root in _roots(s * s - z * z * alpha2, -2.0 * c * s, c * c - z * z * alpha0):
            if lo * (1 - 1e-12) <= root <= hi * (1 + 1e-12):
                if root <= u_hat:  # both, for a root at the estimate (no spread at all)
                    low = max(low, root)
                if root >= u_hat:
                    high = min(high, root)
    return low, high


def _roots(q2: float, q1: float, q0: float) -> tuple[float, ...]:
    """Real roots of q2 u^2 + q1 u + q0 (q1 = -2 c s <= 0 here)."""
    if q2 == 0.0:
        return (-q0 / q1,) if q1 != 0.0 else ()
    disc = q1 * q1 - 4.0 * q2 * q0
    if disc < 0.0:
        return ()
    # The cancellation-free pair: q1 <= 0, so -q1 + sqrt(disc) loses nothing.
    big = -q1 + math.sqrt(disc)
    if big == 0.0:
        return (0.0,)
    return (big / (2.0 * q2), 2.0 * q0 / big)


def judge(spec: JudgeSpec, summary: Summary) -> Verdict:
    """The verdict on the canary, from the paired summary (pure, O(1))."""
    n_c, n_s = summary.samples_canary, summary.samples_stable
    c, s = summary.canary, summary.stable
    if summary.tau <= 0.0 or s <= 0.0:
        return Verdict(Outcome.UNDECIDED, None, -1.0, math.inf, 1.0, 1.0, n_c, n_s)
    rho2 = spec.rho2
    zb = z_boundary(spec.alpha, summary.tau, rho2)
    low, high = ratio_bounds(summary, zb)
    z_worse = _z(c - s, variance_at(summary, 1.0))
    u = 1.0 + spec.min_effect
    z_not_worse = _z(u * s - c, variance_at(summary, u))
    enough = n_c >= spec.min_samples and n_s >= spec.min_samples
    if enough and z_worse >= zb:
        outcome = Outcome.WORSE
    elif enough and z_not_worse >= zb:
        outcome = Outcome.NOT_WORSE
    else:
        outcome = Outcome.UNDECIDED
    return Verdict(outcome, c / s - 1.0, low - 1.0, high - 1.0,
                   _e(log_e_value(z_worse, summary.tau, rho2)),
                   _e(log_e_value(z_not_worse, summary.tau, rho2)), n_c, n_s)
