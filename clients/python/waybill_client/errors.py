"""Typed exceptions raised by the Waybill client.

Every non-OK gRPC status becomes one of these; the original ``grpc.RpcError`` is kept as
``__cause__``. The tree::

    WaybillError                 any non-OK status (.code, .message, .status)
     ├── InvalidArgument         INVALID_ARGUMENT: a row or field broke a rule (.violations)
     ├── NotFound                NOT_FOUND: unknown model or version, or unknown prediction ids
     ├── AlreadyExists           ALREADY_EXISTS: an outcome was already reported differently
     ├── Unavailable             UNAVAILABLE: unreachable, not ready or draining (retried)
     ├── DeadlineExceeded        DEADLINE_EXCEEDED: the call's deadline passed
     ├── ResourceExhausted       RESOURCE_EXHAUSTED: the server is shedding load
     ├── PermissionDenied        PERMISSION_DENIED
     ├── Unauthenticated         UNAUTHENTICATED
     └── UnexpectedStatus        any other code (INTERNAL, UNIMPLEMENTED, CANCELLED, ...)

Only ``Unavailable`` is retried (by gRPC, through the retry policy of the client's channel).
``from_rpc_error`` maps a ``grpc.RpcError`` (sync or ``grpc.aio``) to the matching exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status
from waybill.v1 import prediction_pb2

__all__ = [
    "AlreadyExists",
    "DeadlineExceeded",
    "FieldViolation",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "UnexpectedStatus",
    "WaybillError",
    "from_predict_error",
    "from_rpc_error",
]


@dataclass(frozen=True, slots=True)
class FieldViolation:
    """One broken rule: ``field`` is a path such as ``rows[3].zip_code`` or ``version``."""

    field: str
    description: str

    def __str__(self) -> str:
        return f"{self.field}: {self.description}" if self.field else self.description


class WaybillError(Exception):
    """A call to the Waybill server ended with a non-OK status.

    ``code`` is the ``grpc.StatusCode``, ``message`` the status message, and ``status`` the
    decoded ``google.rpc.Status`` from the ``grpc-status-details-bin`` trailer, if the server
    sent one.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        status: status_pb2.Status | None = None,
    ) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message
        self.status = status

    def __str__(self) -> str:
        return f"{_code_name(self.code)}: {self.message}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_code_name(self.code)}, {self.message!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments would otherwise be lost when pickling.
        return (_rebuild, (type(self), self.code, self.message, self._extra()))

    def _extra(self) -> dict[str, Any]:
        return {"status": self.status}


class InvalidArgument(WaybillError):
    """INVALID_ARGUMENT. ``violations`` lists each field and the rule it broke."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        status: status_pb2.Status | None = None,
        violations: tuple[FieldViolation, ...] = (),
    ) -> None:
        super().__init__(code, message, status=status)
        self.violations = violations

    def __str__(self) -> str:
        text = super().__str__()
        listed = [str(v) for v in self.violations if str(v) not in self.message]
        if listed:
            text += " [" + "; ".join(listed) + "]"
        return text

    def _extra(self) -> dict[str, Any]:
        return {"status": self.status, "violations": self.violations}


class NotFound(WaybillError):
    """NOT_FOUND: the model or version does not exist; the message lists what does.

    From ``report_outcomes``: prediction ids the server's prediction log does not hold
    (never issued by this server, or past retention), listed in the message. Nothing of the
    batch was recorded.
    """


class AlreadyExists(WaybillError):
    """ALREADY_EXISTS: outcomes were already reported for these prediction ids with a
    different actual (listed in the message). Nothing of the batch was recorded; reporting
    the same actual again is not an error.
    """


class Unavailable(WaybillError):
    """UNAVAILABLE: the server is unreachable, not ready, or draining. Retried (by gRPC)."""


class DeadlineExceeded(WaybillError):
    """DEADLINE_EXCEEDED: the deadline passed before the server answered."""


class ResourceExhausted(WaybillError):
    """RESOURCE_EXHAUSTED: the server is shedding load, or a size limit was hit."""


class PermissionDenied(WaybillError):
    """PERMISSION_DENIED: the caller is known but not allowed to do this."""


class Unauthenticated(WaybillError):
    """UNAUTHENTICATED: the call carried no valid credentials."""


class UnexpectedStatus(WaybillError):
    """Any status code without a dedicated class (INTERNAL, UNIMPLEMENTED, UNKNOWN, ...)."""


_BY_CODE: dict[grpc.StatusCode, type[WaybillError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
}


def from_rpc_error(error: grpc.RpcError) -> WaybillError:
    """Map a ``grpc.RpcError`` (sync or ``grpc.aio.AioRpcError``) to a ``WaybillError``.

    The rich status in the ``grpc-status-details-bin`` trailer is decoded when present; its
    ``google.rpc.BadRequest`` details become ``InvalidArgument.violations``. A trailer that is
    missing, malformed, or disagrees with the call's own code and message is ignored, and the
    call's code and message are used. The caller should ``raise ... from error``.
    """
    code = _call_code(error)
    message = _call_details(error)
    status = _rich_status(error)
    cls = _BY_CODE.get(code, UnexpectedStatus)
    if cls is InvalidArgument:
        return InvalidArgument(code, message, status=status, violations=_violations(status))
    return cls(code, message, status=status)


def from_predict_error(error: prediction_pb2.PredictError) -> WaybillError:
    """The ``WaybillError`` a unary Predict would have raised, for one PredictStream answer."""
    code = _CODES.get(error.code, grpc.StatusCode.UNKNOWN)
    cls = _BY_CODE.get(code, UnexpectedStatus)
    if cls is InvalidArgument:
        violations = tuple(FieldViolation(field=v.field, description=v.description)
                           for v in error.field_violations)
        return InvalidArgument(code, error.message, violations=violations)
    return cls(code, error.message)


_CODES = {code.value[0]: code for code in grpc.StatusCode}


def _call_code(error: grpc.RpcError) -> grpc.StatusCode:
    code_fn = getattr(error, "code", None)
    code = code_fn() if callable(code_fn) else None
    if isinstance(code, grpc.StatusCode):
        return code
    return grpc.StatusCode.UNKNOWN


def _call_details(error: grpc.RpcError) -> str:
    details_fn = getattr(error, "details", None)
    details = details_fn() if callable(details_fn) else None
    if isinstance(details, str):
        return details
    return str(error) or "no details"


def _rich_status(error: grpc.RpcError) -> status_pb2.Status | None:
    if not callable(getattr(error, "trailing_metadata", None)):
        return None
    try:
        status: status_pb2.Status | None = rpc_status.from_call(error)
    except Exception:
        # A garbled or inconsistent trailer must not hide the status the call did carry.
        return None
    return status


def _violations(status: status_pb2.Status | None) -> tuple[FieldViolation, ...]:
    if status is None:
        return ()
    found: list[FieldViolation] = []
    for detail in status.details:
        if not detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            continue
        bad_request = error_details_pb2.BadRequest()
        if not detail.Unpack(bad_request):
            continue
        found.extend(
            FieldViolation(field=str(v.field), description=str(v.description))
            for v in bad_request.field_violations
        )
    return tuple(found)


def _code_name(code: grpc.StatusCode) -> str:
    name = getattr(code, "name", None)
    return name if isinstance(name, str) else str(code)


def _rebuild(
    cls: type[WaybillError], code: grpc.StatusCode, message: str, extra: dict[str, Any]
) -> WaybillError:
    return cls(code, message, **extra)
