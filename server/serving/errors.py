"""What the serving core raises when it cannot answer; :mod:`server.transport.status` maps
each to its gRPC status (the serving core never imports grpc)."""

from __future__ import annotations

from models.validation import ValidationFailed, Violation


class BadRequest(ValidationFailed):
    """A request-level field (not a row feature) is invalid."""

    def __init__(self, field: str, rule: str, description: str) -> None:
        super().__init__([Violation(field, rule, description)])


class Unavailable(Exception):
    """Not now, maybe elsewhere: not ready, draining, or a part the call needs is off."""


class MalformedMessage(Exception):
    """A message that does not decode as what its method reads (the caller's error).

    The message names the expected type only: the decoder's own text is about bytes the
    caller sent and says nothing a caller can act on."""

    def __init__(self, expected: str) -> None:
        super().__init__(f"malformed message: not a {expected}")


class Overloaded(Exception):
    """Shed at once rather than queued without bound; the caller may retry later."""
