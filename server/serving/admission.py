"""Admission: take a prediction only when it can be answered before its deadline.

A server past capacity that queues everything answers nobody in time: every caller waits
until its deadline, and the work done for them is thrown away. So each prediction is
admitted or refused (RESOURCE_EXHAUSTED, which callers may retry elsewhere) the moment it
arrives, from what the server already knows:

- how long a prediction takes when the server is busy: busy wall time per completed
  prediction, learnt only from stretches when several were in flight together (then it
  is the inverse of throughput, batching included; alone, it would be one prediction's
  whole latency) and forgotten when it has not been renewed for ``STALE_S``;
- how many are in flight ahead of it.

The expected answer time is ``(in flight + 1) x time per prediction``; a call is refused
when that is more than ``ADMIT_SHARE`` of the time its caller has left (the rest is for
the queue before the handler and the answer's trip back), or when ``max_inflight`` is
reached whatever the deadline. A call that finds nothing in flight is always admitted.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from server.serving.errors import Overloaded

# Share of the caller's remaining time the expected answer time may take.
ADMIT_SHARE = 0.5
# Completions per measurement of the time per prediction; the estimate moves a quarter of
# the way to each new measurement.
SAMPLE = 32
WEIGHT = 0.25
# A sample counts only if this many predictions were in flight on average while busy.
CONCURRENT = 4.0
# An estimate not renewed for this long is dropped: the load it was measured under is gone.
STALE_S = 10.0


class Admission:
    """In-flight accounting and the admit-or-refuse decision. Event loop thread only."""

    def __init__(self, max_inflight: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_inflight = max_inflight
        self.inflight = 0
        self.refused = 0
        self._clock = clock
        self._last = clock()
        self._busy = 0.0  # wall time with at least one prediction in flight, this sample
        self._load = 0.0  # the integral of predictions in flight over that time
        self._completed = 0
        self._learnt_at = 0.0
        self._per_prediction_s: float | None = None

    @property
    def per_prediction_s(self) -> float | None:
        if self._per_prediction_s is not None and self._clock() - self._learnt_at > STALE_S:
            self._per_prediction_s = None
        return self._per_prediction_s

    def _tick(self, now: float) -> None:
        if self.inflight:
            self._busy += now - self._last
            self._load += (now - self._last) * self.inflight
        self._last = now

    def admit(self, left_s: float | None) -> None:
        """Count a prediction in, or raise Overloaded; ``left_s`` is the caller's remaining
        time (None: no deadline)."""
        if self.inflight >= self.max_inflight:
            self.refused += 1
            raise Overloaded(f"{self.inflight} predictions in flight; the limit is "
                             f"{self.max_inflight}")
        per = self.per_prediction_s
        if left_s is not None and per is not None and self.inflight:
            expected = (self.inflight + 1) * per
            if expected > ADMIT_SHARE * left_s:
                self.refused += 1
                raise Overloaded(
                    f"{self.inflight} predictions in flight would take about "
                    f"{expected * 1000:.0f} ms; the deadline is {left_s * 1000:.0f} ms away")
        self._tick(self._clock())
        self.inflight += 1

    def done(self) -> None:
        self._tick(self._clock())
        self.inflight -= 1
        self._completed += 1
        if self._completed >= SAMPLE:
            if self._busy > 0 and self._load / self._busy >= CONCURRENT:
                sample = self._busy / self._completed
                per = self.per_prediction_s
                self._per_prediction_s = sample if per is None else per + WEIGHT * (sample - per)
                self._learnt_at = self._clock()
            self._busy, self._load, self._completed = 0.0, 0.0, 0
