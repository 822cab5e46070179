"""Domain errors to gRPC statuses, in one place.

The domain raises its own exceptions and never imports grpc::

    Exception
    ├── models.validation.ValidationFailed   -> INVALID_ARGUMENT + google.rpc.BadRequest
    ├── server.transport.status.BadRequest             -> INVALID_ARGUMENT + google.rpc.BadRequest
    ├── router.table.RoutingError
    │   ├── UnknownModel                     -> NOT_FOUND (lists served models)
    │   └── UnknownVersion                   -> NOT_FOUND (lists versions and labels)
    ├── router.table.OverrideRefused         -> FAILED_PRECONDITION
    ├── server.serving.reloads.ConfigRejected        -> INVALID_ARGUMENT (FAILED_PRECONDITION: load)
    ├── server.storage.store.UnknownPredictions      -> NOT_FOUND (lists the ids)
    ├── server.storage.store.ConflictingOutcomes     -> ALREADY_EXISTS (lists the ids)
    ├── server.transport.status.Unavailable            -> UNAVAILABLE
    ├── server.transport.status.Overloaded             -> RESOURCE_EXHAUSTED
    ├── TimeoutError                         -> DEADLINE_EXCEEDED
    └── anything else                        -> INTERNAL, with an error id; details only in the log

:func:`to_status` is the only place that decides what goes on the wire.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2

from models.validation import ValidationFailed, Violation
from router.table import OverrideRefused, RoutingError
from server.serving.reloads import ConfigRejected
from server.storage.store import ConflictingOutcomes, UnknownPredictions


class BadRequest(ValidationFailed):
    """A request-level field (not a row feature) is invalid."""

    def __init__(self, field: str, rule: str, description: str) -> None:
        super().__init__([Violation(field, rule, description)])


class Unavailable(Exception):
    pass


class Overloaded(Exception):
    pass


@dataclass(frozen=True, slots=True)
class WireStatus:
    code: grpc.StatusCode
    message: str
    details: status_pb2.Status | None = None
    error_id: str | None = None  # set when the cause is only in the server log


def _bad_request(message: str, violations: Sequence[Violation]) -> status_pb2.Status:
    detail = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description)
            for v in violations
        ]
    )
    packed = any_pb2.Any()
    packed.Pack(detail)
    return status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message=message, details=[packed]
    )


def to_status(error: BaseException) -> WireStatus:
    if isinstance(error, ValidationFailed):
        message = str(error)
        return WireStatus(
            grpc.StatusCode.INVALID_ARGUMENT, message, _bad_request(message, error.violations)
        )
    if isinstance(error, RoutingError):
        return WireStatus(grpc.StatusCode.NOT_FOUND, str(error))
    if isinstance(error, ConfigRejected):
        # A file that parses and validates but names a version that cannot load is a
        # problem of the system's state, not of the request.
        code = (grpc.StatusCode.FAILED_PRECONDITION if error.reason == "load"
                else grpc.StatusCode.INVALID_ARGUMENT)
        return WireStatus(code, str(error))
    if isinstance(error, UnknownPredictions):
        return WireStatus(grpc.StatusCode.NOT_FOUND, str(error))
    if isinstance(error, ConflictingOutcomes):
        return WireStatus(grpc.StatusCode.ALREADY_EXISTS, str(error))
    if isinstance(error, OverrideRefused):
        return WireStatus(grpc.StatusCode.FAILED_PRECONDITION, str(error))
    if isinstance(error, Unavailable):
        return WireStatus(grpc.StatusCode.UNAVAILABLE, str(error) or "server is not ready")
    if isinstance(error, Overloaded):
        return WireStatus(grpc.StatusCode.RESOURCE_EXHAUSTED, str(error) or "server is overloaded")
    if isinstance(error, DecodeError):  # a stream message that is not what the method reads
        return WireStatus(grpc.StatusCode.INVALID_ARGUMENT, f"malformed message: {error}")
    if isinstance(error, TimeoutError):
        return WireStatus(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded")
    error_id = uuid.uuid4().hex[:12]
    return WireStatus(grpc.StatusCode.INTERNAL, f"internal error (error id {error_id})",
                      error_id=error_id)
