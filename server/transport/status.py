"""Errors to gRPC statuses, in one table.

The layers below raise their own exceptions and never import grpc; :data:`STATUS_TABLE`
says, for each, the status a caller sees and its message. The first row whose type the
error is an instance of decides; anything no row names is INTERNAL, with an error id that
leads to the traceback in the server log (never a stack trace on the wire).

:func:`to_status` is the only place that decides what goes on the wire.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

from models.validation import ValidationFailed, Violation
from router.table import OverrideRefused, RoutingError
from server.serving.errors import MalformedMessage, Overloaded, Unavailable
from server.serving.reloads import ConfigRejected
from server.storage.base import ConflictingOutcomes, StoreUnavailable, UnknownPredictions

Code = grpc.StatusCode  # short for the table


@dataclass(frozen=True, slots=True)
class WireStatus:
    code: grpc.StatusCode
    message: str
    details: status_pb2.Status | None = None
    error_id: str | None = None  # set when the cause is only in the server log


def _said(error: BaseException) -> str:
    return str(error)


def _config_code(error: BaseException) -> grpc.StatusCode:
    # A file that parses and validates but names a version that cannot load is a problem
    # of the system's state, not of the request.
    assert isinstance(error, ConfigRejected)
    code: grpc.StatusCode = (Code.FAILED_PRECONDITION if error.reason == "load"
                             else Code.INVALID_ARGUMENT)
    return code


# (error type, its code (or a function of the error), its message)
STATUS_TABLE: Sequence[tuple[type[BaseException],
                             grpc.StatusCode | Callable[[BaseException], grpc.StatusCode],
                             Callable[[BaseException], str]]] = (
    # ValidationFailed gets a google.rpc.BadRequest with one violation per field too.
    (ValidationFailed, Code.INVALID_ARGUMENT, _said),
    (RoutingError, Code.NOT_FOUND, _said),  # lists the models, or the versions and labels
    (ConfigRejected, _config_code, _said),
    (UnknownPredictions, Code.NOT_FOUND, _said),  # lists the ids
    (ConflictingOutcomes, Code.ALREADY_EXISTS, _said),  # lists the ids
    (OverrideRefused, Code.FAILED_PRECONDITION, _said),
    (Unavailable, Code.UNAVAILABLE, lambda e: str(e) or "server is not ready"),
    # The database is away for now: nothing was recorded, and a retry will do.
    (StoreUnavailable, Code.UNAVAILABLE,
     lambda e: "the store's database cannot be reached now; nothing was recorded, retry "
               "later"),
    (Overloaded, Code.RESOURCE_EXHAUSTED, lambda e: str(e) or "server is overloaded"),
    # A message that is not what the method reads.
    (MalformedMessage, Code.INVALID_ARGUMENT, _said),
    (TimeoutError, Code.DEADLINE_EXCEEDED, lambda e: "deadline exceeded"),
)


# What a caller sent comes back in messages (a model name, a field, an id): bounded here,
# so the trailer stays far below gRPC's default 8 KiB metadata limit (past it the caller
# gets "Stream removed" instead of the status).
# Limits are UTF-8 bytes: grpc-message is percent-encoded (3 bytes of a CJK character
# become 9) and the details travel base64-encoded with the message once more inside.
MAX_MESSAGE = 512
MAX_FIELD = 200
MAX_DESCRIPTION = 300
MAX_DETAILS = 3000  # bytes of field violations in google.rpc.BadRequest


def clip(text: str, limit: int) -> str:
    """``text``, or as much of its start as fits in ``limit`` UTF-8 bytes and how long it
    was."""
    data = text.encode()
    if len(data) <= limit:
        return text
    start = data[:limit].decode(errors="ignore")
    return f"{start}... ({len(text):,} characters)"


def _bad_request(message: str, violations: Sequence[Violation]) -> status_pb2.Status:
    kept = []
    size = 0
    for v in violations:
        violation = error_details_pb2.BadRequest.FieldViolation(
            field=clip(v.field, MAX_FIELD), description=clip(v.description, MAX_DESCRIPTION))
        size += violation.ByteSize()
        if size > MAX_DETAILS:
            break
        kept.append(violation)
    detail = error_details_pb2.BadRequest(field_violations=kept)
    packed = any_pb2.Any()
    packed.Pack(detail)
    return status_pb2.Status(
        code=code_pb2.INVALID_ARGUMENT, message=message, details=[packed]
    )


def to_status(error: BaseException) -> WireStatus:
    for kind, code, message in STATUS_TABLE:
        if isinstance(error, kind):
            said = clip(message(error), MAX_MESSAGE)
            details = (_bad_request(said, error.violations)
                       if isinstance(error, ValidationFailed) else None)
            return WireStatus(code if isinstance(code, grpc.StatusCode) else code(error), said,
                              details)
    error_id = uuid.uuid4().hex[:12]
    return WireStatus(Code.INTERNAL, f"internal error (error id {error_id})",
                      error_id=error_id)
