"""Seeded simulations of canaries for the judge: tests/test_judge.py asserts on them and
bench/judge_oc.py draws the operating characteristics from them.

A trial is one canary's life: outcomes arrive in batches (20 by default), each outcome
answered by the canary with probability ``canary_share`` (20 % traffic), and the judge is
asked after every batch, up to ``max_outcomes``. Losses are drawn all at once with numpy
and summed per (batch, side) with numpy; the judge itself runs batch by batch through
:class:`PairedLosses`, as the server would feed it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from server.monitoring.judge import JudgeSpec, Moments, Outcome, PairedLosses, Side, judge

Floats = npt.NDArray[np.float64]
# (rng, shape) -> nonnegative losses of a version as good as stable
LossDraw = Callable[[np.random.Generator, tuple[int, ...]], Floats]


def skewed_errors(rng: np.random.Generator, shape: tuple[int, ...]) -> Floats:
    """Absolute errors of a real regression model, roughly: most are gamma-shaped around
    a day, and a sixth come from a lognormal tail (late parcels). Mean about 1.6, sd 2.0,
    skewness about 8."""
    body = rng.gamma(1.3, 1.0, size=shape)
    tail = rng.lognormal(0.6, 1.0, size=shape)
    out: Floats = np.where(rng.random(shape) < 1 / 6, tail, body)
    return out


def log_losses(rng: np.random.Generator, shape: tuple[int, ...]) -> Floats:
    """Bernoulli log losses of a calibrated classifier: p ~ Beta(2, 5), y ~ Bernoulli(p),
    loss = -log(probability given to what happened), the probability clipped to
    [0.01, 0.99] as served classifiers do."""
    p = np.clip(rng.beta(2.0, 5.0, size=shape), 0.01, 0.99)
    y = rng.random(shape) < p
    out: Floats = -np.log(np.where(y, p, 1.0 - p))
    return out


@dataclass(frozen=True)
class Trials:
    """Per trial: outcomes (both sides) seen at the first WORSE and the first NOT_WORSE
    verdict, 0 where never; and the last verdict's effect and bounds."""

    first_worse: npt.NDArray[np.int64]
    first_not_worse: npt.NDArray[np.int64]
    last_effect: Floats
    last_low: Floats
    last_high: Floats
    naive_worse: npt.NDArray[np.bool_]  # an unpaired z-test at the end said worse (1 %)

    @property
    def worse(self) -> float:
        return float(np.mean(self.first_worse > 0))

    @property
    def not_worse(self) -> float:
        return float(np.mean(self.first_not_worse > 0))

    def median_to_worse(self) -> float:
        hit = self.first_worse[self.first_worse > 0]
        return float(np.median(hit)) if hit.size else float("nan")

    def median_to_not_worse(self) -> float:
        hit = self.first_not_worse[self.first_not_worse > 0]
        return float(np.median(hit)) if hit.size else float("nan")


def simulate(spec: JudgeSpec, *, seed: int, trials: int, effect: float = 0.0,
             draw: LossDraw = skewed_errors, max_outcomes: int = 5_000, batch: int = 20,
             canary_share: float = 0.2, batches_per_period: int = 5,
             period_scale: tuple[float, ...] = (1.0,),
             period_share: tuple[float, ...] | None = None,
             stop_on: tuple[Outcome, ...] = ()) -> Trials:
    """Run ``trials`` canaries whose losses are ``1 + effect`` times stable's.

    Period ``p`` multiplies both versions' losses by ``period_scale[p % len]`` (a
    traffic mix that changes over the day) and routes ``period_share[p % len]`` of its
    outcomes to the canary (``canary_share`` when None). A trial ends at its first
    verdict in ``stop_on`` (a rollback ends a canary's life; a NOT_WORSE only recommends)
    or at ``max_outcomes``, so with none "ever WORSE" counts every look.
    """
    rng = np.random.default_rng(seed)
    n_batches = max_outcomes // batch
    period = np.arange(n_batches) // batches_per_period
    scale = np.asarray(period_scale)[period % len(period_scale)]
    shares = np.asarray(period_share if period_share is not None else (canary_share,))
    share = shares[period % len(shares)]
    shape = (trials, n_batches, batch)
    losses = draw(rng, shape) * scale[None, :, None]
    canary = rng.random(shape) < share[None, :, None]
    losses = np.where(canary, losses * (1.0 + effect), losses)

    def moments(mask: npt.NDArray[np.bool_]) -> tuple[list[list[int]], list[list[float]],
                                                      list[list[float]]]:
        count = mask.sum(axis=2)
        total = np.where(mask, losses, 0.0).sum(axis=2)
        mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
        m2 = np.where(mask, (losses - mean[:, :, None]) ** 2, 0.0).sum(axis=2)
        return count.tolist(), mean.tolist(), m2.tolist()

    c_n, c_mean, c_m2 = moments(canary)
    s_n, s_mean, s_m2 = moments(~canary)
    naive = _naive_worse(losses, canary)
    periods = period.tolist()
    first_worse = np.zeros(trials, dtype=np.int64)
    first_not_worse = np.zeros(trials, dtype=np.int64)
    last = np.zeros((trials, 3))
    for t in range(trials):
        acc = PairedLosses()
        cn, cm, cv, sn, sm, sv = c_n[t], c_mean[t], c_m2[t], s_n[t], s_mean[t], s_m2[t]
        verdict = judge(spec, acc.summary)
        for i in range(n_batches):
            acc.add(periods[i], Side.CANARY, Moments(cn[i], cm[i], cv[i]))
            acc.add(periods[i], Side.STABLE, Moments(sn[i], sm[i], sv[i]))
            verdict = judge(spec, acc.summary)
            if verdict.outcome == Outcome.WORSE and not first_worse[t]:
                first_worse[t] = (i + 1) * batch
            elif verdict.outcome == Outcome.NOT_WORSE and not first_not_worse[t]:
                first_not_worse[t] = (i + 1) * batch
            if verdict.outcome in stop_on:
                break
        last[t] = (verdict.effect if verdict.effect is not None else np.nan,
                   verdict.low, verdict.high)
    return Trials(first_worse, first_not_worse, last[:, 0], last[:, 1], last[:, 2], naive)


def _naive_worse(losses: Floats, canary: npt.NDArray[np.bool_]) -> npt.NDArray[np.bool_]:
    """What an unpaired comparison sees at the end: Welch's z of all canary losses
    against all stable losses, one-sided at 1 %, looked at once."""
    flat = losses.reshape(losses.shape[0], -1)
    mask = canary.reshape(canary.shape[0], -1)

    def stats(m: npt.NDArray[np.bool_]) -> tuple[Floats, Floats, Floats]:
        n = m.sum(axis=1)
        mean = np.where(m, flat, 0.0).sum(axis=1) / n
        var = np.where(m, (flat - mean[:, None]) ** 2, 0.0).sum(axis=1) / (n - 1)
        return n, mean, var

    nc, mc, vc = stats(mask)
    ns, ms, vs = stats(~mask)
    z = (mc - ms) / np.sqrt(vc / nc + vs / ns)
    out: npt.NDArray[np.bool_] = z > 2.326
    return out
