"""The channel both clients call through, and the retry policy it carries (no I/O here).

Retries are gRPC's own (gRFC A6): the client puts a service config with a ``retryPolicy`` on
the channel it creates, and gRPC core retries UNAVAILABLE inside the call, within the call's
deadline, as any other gRPC client configured the same way would. What gRPC core does with
the policy (grpcio 1.85):

- at most ``maxAttempts`` attempts; core clamps a larger value to 5 (with a log line), so
  ``retries`` (attempts after the first) is refused above ``MAX_RETRIES`` = 4 instead of
  being cut silently;
- before retry *n* (0-based) it waits ``min(max_backoff, backoff * 2**n)``, times a uniform
  jitter in [0.8, 1.2] (core's ``RETRY_BACKOFF_JITTER`` of 0.2, not A6's full jitter);
- a pause that outlasts the deadline ends the call with DEADLINE_EXCEEDED at the deadline;
- durations are kept in whole milliseconds and must be > 0: backoffs under 1 ms are refused
  here rather than by the channel at the first call (an INVALID_ARGUMENT naming the config);
- a request is retried only while core still holds its bytes: 256 KiB per call unless
  ``grpc.per_rpc_retry_buffer_size`` says more, which is why the client raises it.

Only the unary methods of ``waybill.v1.PredictionService`` get the policy (read from the
service descriptor). ``PredictStream`` gets none: a stream that has sent requests is not
replayed, as before; the caller resends the unanswered rest.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from waybill.v1 import prediction_pb2

__all__ = [
    "MAX_RETRIES",
    "RETRIED_METHODS",
    "RETRY_BUFFER_BYTES",
    "RetryPolicy",
    "check_timeout",
    "open_channel",
    "retry_options",
]

_C = TypeVar("_C")

_SERVICE = prediction_pb2.DESCRIPTOR.services_by_name["PredictionService"]

#: The methods the retry policy names: every unary method of the service (not PredictStream).
RETRIED_METHODS: tuple[str, ...] = tuple(
    m.name for m in _SERVICE.methods if not (m.client_streaming or m.server_streaming)
)

#: gRPC makes at most 5 attempts of a call (``maxAttempts`` is clamped at 5): 4 retries.
MAX_RETRIES = 4

#: gRPC keeps retry durations in whole milliseconds and refuses 0.
MIN_BACKOFF_S = 0.001
#: The largest duration gRPC parses (google.protobuf.Duration's 10,000 years).
MAX_BACKOFF_S = 315_576_000_000.0

#: Bytes of a call gRPC keeps for a retry (its default of 256 KiB would leave a Predict of a
#: few hundred rows unretried). Above this, a failed attempt is not retried.
RETRY_BUFFER_BYTES = 64 << 20


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")
    if not MIN_BACKOFF_S <= value <= MAX_BACKOFF_S:
        raise ValueError(
            f"{name} must be between {MIN_BACKOFF_S} and {MAX_BACKOFF_S:.0f} seconds, got "
            f"{value!r} (gRPC's retry policy counts whole milliseconds and refuses 0)"
        )
    return float(value)


def _duration(seconds: float) -> str:
    """A service config duration: whole milliseconds, at least 1."""
    millis = max(1, round(seconds * 1000))
    return f"{millis // 1000}.{millis % 1000:03d}s"


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """``retries`` retries of UNAVAILABLE after the first attempt (at most ``MAX_RETRIES``),
    the pause before retry *n* about ``min(max_backoff, backoff * 2**n)`` seconds."""

    retries: int = 3
    backoff: float = 0.05
    max_backoff: float = 1.0

    def __post_init__(self) -> None:
        retries = self.retries
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an int >= 0, got {retries!r}")
        if retries > MAX_RETRIES:
            raise ValueError(
                f"retries must be at most {MAX_RETRIES}, got {retries}: gRPC's retry policy "
                f"makes at most {MAX_RETRIES + 1} attempts of a call (maxAttempts is capped "
                "at 5); the deadline (timeout) bounds how long a call keeps trying"
            )
        _seconds("backoff", self.backoff)
        _seconds("max_backoff", self.max_backoff)

    def retry_policy(self) -> dict[str, Any] | None:
        """The ``retryPolicy`` of the service config; ``None`` when nothing is retried."""
        if self.retries == 0:
            return None
        return {
            "maxAttempts": self.retries + 1,
            # gRPC does not cap the first pause by maxBackoff: do it here.
            "initialBackoff": _duration(min(self.backoff, self.max_backoff)),
            "maxBackoff": _duration(self.max_backoff),
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"],
        }

    def service_config(self) -> dict[str, Any]:
        """The channel's service config (gRPC's JSON form, as a dict)."""
        policy = self.retry_policy()
        if policy is None:
            return {}
        return {
            "methodConfig": [{
                "name": [{"service": _SERVICE.full_name, "method": m} for m in RETRIED_METHODS],
                "retryPolicy": policy,
            }]
        }

    def channel_options(self) -> list[tuple[str, Any]]:
        """The channel options that carry the policy."""
        options: list[tuple[str, Any]] = [("grpc.enable_retries", 1)]
        if self.retries:
            options += [
                ("grpc.service_config", json.dumps(self.service_config(), separators=(",", ":"))),
                ("grpc.per_rpc_retry_buffer_size", RETRY_BUFFER_BYTES),
            ]
        return options


def retry_options(
    retries: int = 3, backoff: float = 0.05, max_backoff: float = 1.0
) -> list[tuple[str, Any]]:
    """Channel options with the client's retry policy, for a channel you create yourself
    (``grpc.insecure_channel(target, options=retry_options())``, then ``channel=``): the
    client retries only through the channel it calls."""
    return RetryPolicy(retries, backoff, max_backoff).channel_options()


def check_timeout(timeout: float) -> float:
    """Validate a deadline in seconds."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise TypeError(f"timeout must be a number of seconds, got {timeout!r}")
    if not math.isfinite(timeout) or timeout <= 0:
        raise ValueError(f"timeout must be a finite number of seconds > 0, got {timeout!r}")
    return float(timeout)


def open_channel(
    target: str,
    channel: _C | None,
    credentials: object | None,
    options: Sequence[tuple[str, object]],
    policy: RetryPolicy,
    secure: Callable[..., _C],
    insecure: Callable[..., _C],
) -> tuple[_C, bool]:
    """The channel a client uses and whether it owns it (sync and asyncio alike).

    A channel the client creates carries ``policy``; an option of ``options`` with the same
    name replaces the policy's (e.g. your own ``grpc.service_config``). A given channel is
    used as it is, so ``credentials``, ``options`` and a policy other than the default are
    refused with it.
    """
    if channel is not None:
        if credentials is not None or options:
            raise ValueError("credentials and options apply only when the client makes the channel")
        if policy != RetryPolicy():
            raise ValueError(
                "retries, backoff and max_backoff apply only when the client makes the channel: "
                "a given channel retries as its own options say (see retry_options())"
            )
        return channel, False
    given = {name for name, _ in options}
    merged = [o for o in policy.channel_options() if o[0] not in given] + list(options)
    if credentials is not None:
        return secure(target, credentials, options=merged), True
    return insecure(target, options=merged), True
