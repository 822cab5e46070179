"""Retry policy shared by the sync and asyncio clients (pure: no sleeping, no clock).

Only UNAVAILABLE is retried. Delays grow exponentially with full jitter
(``uniform(0, min(max_backoff, backoff * 2**attempt))``) and a retry is made only if its delay
ends before the call's overall deadline; otherwise the last UNAVAILABLE error is raised.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from .errors import WaybillError, from_rpc_error

__all__ = ["CallAttempts", "RetryPolicy", "check_timeout"]

# 2**62 already exceeds any sane cap; clamping the exponent keeps the float finite.
_MAX_EXPONENT = 62


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``retries`` retries after the first attempt, so at most ``retries + 1`` attempts."""

    retries: int = 3
    backoff: float = 0.05
    max_backoff: float = 1.0

    def __post_init__(self) -> None:
        if isinstance(self.retries, bool) or not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {self.retries!r}")
        for name in ("backoff", "max_backoff"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")

    def cap(self, attempt: int) -> float:
        """Upper bound of the jittered delay after failed attempt number ``attempt`` (0-based)."""
        return float(min(self.max_backoff, self.backoff * 2.0 ** min(attempt, _MAX_EXPONENT)))

    def should_retry(self, code: grpc.StatusCode) -> bool:
        """Whether a status code is retried at all: UNAVAILABLE only."""
        return bool(code == grpc.StatusCode.UNAVAILABLE)

    def delay(self, attempt: int, remaining: float, jitter: float) -> float | None:
        """Seconds to sleep before retrying after failed attempt ``attempt`` (0-based).

        ``remaining`` is the time left until the overall deadline, ``jitter`` a uniform draw
        from [0, 1). ``None`` means do not retry: the retries are used up, or the delay would
        not end before the deadline.
        """
        if attempt >= self.retries:
            return None
        wait = min(max(jitter, 0.0), 1.0) * self.cap(attempt)
        if wait >= remaining:
            return None
        return wait


def check_timeout(timeout: float) -> float:
    """Validate a deadline in seconds."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
    return float(timeout)


class CallAttempts:
    """One logical call across its attempts: the overall deadline, the count, the last error.

    Both clients drive it the same way::

        attempts = CallAttempts(policy, timeout)
        while True:
            try:
                return stub_method(request, timeout=attempts.timeout(), metadata=md)
            except grpc.RpcError as exc:
                pause = attempts.failed(exc)   # raises the mapped WaybillError when done
            sleep(pause)
    """

    def __init__(
        self,
        policy: RetryPolicy,
        timeout: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._policy = policy
        self._clock = clock
        self._jitter = jitter
        self._deadline = clock() + timeout
        self.attempt = 0
        self._last: tuple[WaybillError, grpc.RpcError] | None = None

    def remaining(self) -> float:
        """Seconds left until the overall deadline (may be negative)."""
        return self._deadline - self._clock()

    def timeout(self) -> float:
        """The timeout for the next attempt: whatever is left of the overall deadline.

        After a retry whose pause overran the deadline, raises the last UNAVAILABLE error
        instead of starting an attempt that cannot succeed.
        """
        remaining = self.remaining()
        if remaining <= 0 and self._last is not None:
            error, cause = self._last
            raise error from cause
        return max(remaining, 0.0)

    def failed(self, exc: grpc.RpcError) -> float:
        """Record a failed attempt; return the pause before the next one, or raise.

        Raises the ``WaybillError`` for ``exc`` (chained to it) unless the status is
        UNAVAILABLE, a retry is left, and the jittered pause ends before the deadline.
        """
        error = from_rpc_error(exc)
        pause: float | None = None
        if self._policy.should_retry(error.code):
            pause = self._policy.delay(self.attempt, self.remaining(), self._jitter())
        if pause is None:
            raise error from exc
        self.attempt += 1
        self._last = (error, exc)
        return pause
