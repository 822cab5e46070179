"""The shared edge of every RPC: error mapping, one access-log line, the server span and
the RPC metrics of each call.

A servicer declares what its calls need as one :class:`Edge` (its gRPC service name, the
observer, the default deadline), and :func:`handler` wraps its methods. The bookkeeping of
one call (:class:`CallRecord`) is the same for a unary call and for each request of a
PredictStream: begin, map a failure to its status, and close once with the log line, the
span and the metrics.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import grpc

from server.serving.errors import Unavailable
from server.telemetry.observe import (
    UNKNOWN,
    Call,
    Observer,
    RpcMethod,
    Started,
    begin_call,
    current_call,
)
from server.transport.access_log import ACCESS, ACCESS_LOGGER
from server.transport.status import WireStatus, to_status

log = logging.getLogger(ACCESS_LOGGER)
errors_log = logging.getLogger("waybill.errors")


@dataclass(frozen=True, slots=True)
class Edge:
    """What every call of one gRPC service needs from the process."""

    service: str  # the full gRPC service name, e.g. waybill.v1.PredictionService
    default_deadline_s: float  # for callers that send none
    observer: Observer = field(default_factory=Observer)


class Servicer(Protocol):
    """A servicer whose methods :func:`handler` wraps."""

    @property
    def edge(self) -> Edge: ...


S = TypeVar("S", bound=Servicer)
Req = TypeVar("Req")
Resp = TypeVar("Resp")
Handler = Callable[[S, Req, grpc.aio.ServicerContext], Awaitable[Resp]]


# Set once on SIGTERM: calls that still reach a handler are refused with UNAVAILABLE
# (which clients retry) while the calls already in flight finish.
_draining = threading.Event()
# Called when draining starts: long calls (streams) that must stop reading.
_drain_callbacks: set[Callable[[], None]] = set()


def start_draining() -> None:
    """Called on the event loop by the server's stop."""
    _draining.set()
    for callback in list(_drain_callbacks):
        callback()


def on_drain(callback: Callable[[], None]) -> Callable[[], None]:
    """Run ``callback`` (on the event loop) when draining starts, at once if it has;
    returns the function that unsubscribes it."""
    if _draining.is_set():
        callback()
        return lambda: None
    _drain_callbacks.add(callback)
    return lambda: _drain_callbacks.discard(callback)


def draining() -> bool:
    return _draining.is_set()


class CallRecord:
    """One call's bookkeeping: a unary call (``rpc`` given: its RPC metrics too) or one
    request of a stream (only the request's).

    ``span`` is what :meth:`Observer.start_span` started, or a child span with no context
    token; :meth:`close` ends it once, whatever path the call took.
    """

    __slots__ = ("_closed", "_started", "call", "code", "error", "observer", "rpc", "span")

    def __init__(self, observer: Observer, method: str, rpc: RpcMethod | None = None) -> None:
        self.observer = observer
        self.rpc = rpc
        self.call: Call = begin_call({"method": method})
        self.span: Started | None = None
        self.code = grpc.StatusCode.OK
        self.error: BaseException | None = None
        self._started = time.perf_counter()
        self._closed = False

    def fail(self, error: Exception) -> WireStatus:
        """The status ``error`` maps to, noted for the log line, span and metrics; an
        unexpected error is logged with its error id."""
        status = to_status(error)
        if status.error_id is not None:
            errors_log.error("unhandled error", exc_info=error, extra={"fields": {
                "error_id": status.error_id, "method": self.call.fields["method"]}})
        self.code, self.error = status.code, error
        self.call.fields["error"] = status.message
        return status

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        elapsed = time.perf_counter() - self._started
        call, code = self.call, self.code
        fields = call.fields
        if call.model is not None and call.version != UNKNOWN and "version" not in fields:
            fields["version"], fields["route"] = call.version, call.route  # failed late
        fields["code"] = code.name
        fields["duration_ms"] = round(elapsed * 1000, 3)
        span = self.span[1] if self.span is not None else None
        ACCESS.write(fields, span, ok=code is grpc.StatusCode.OK, seconds=elapsed)
        observer = self.observer
        observer.end_span(self.span, call, code.name, code.value[0], self.error)
        if self.rpc is not None:
            observer.finish(self.rpc, call, code.name, code.value[0], elapsed)
        else:
            observer.request_done(call, code.name, elapsed)


def trailing_details(status: WireStatus) -> tuple[tuple[str, bytes], ...]:
    if status.details is None:
        return ()
    return (("grpc-status-details-bin", status.details.SerializeToString()),)


def annotate(**fields: Any) -> None:
    """Attach fields to the current call's access-log line."""
    call = current_call()
    if call is not None:
        call.fields.update(fields)


def handler(method: str, *, streaming: bool = False,
            ) -> Callable[[Handler[S, Req, Resp]], Handler[S, Req, Resp]]:
    """Wrap a servicer method: default deadline, server span, map any exception to its
    status, log once, record the call's duration and outcome.

    A ``streaming`` call gets no default deadline (it lives as long as its caller wants;
    its messages get one each, see PredictionService.PredictStream).
    """

    def wrap(func: Handler[S, Req, Resp]) -> Handler[S, Req, Resp]:
        @functools.wraps(func)
        async def run(self: S, request: Req, context: grpc.aio.ServicerContext) -> Resp:
            edge = self.edge
            observer = edge.observer
            rpc = observer.rpc_method(edge.service, method)
            record = CallRecord(observer, method, rpc)
            if observer.tracer is not None:
                record.span = observer.start_span(rpc, context.invocation_metadata(),
                                                  record.call)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("rpc started", extra={"fields": {"method": method}})
            # A caller without a deadline gets the server's default, so nothing hangs.
            budget = (edge.default_deadline_s
                      if context.time_remaining() is None and not streaming else None)
            try:
                if draining():
                    raise Unavailable("server is draining; retry on another replica")
                async with asyncio.timeout(budget):
                    return await func(self, request, context)
            except asyncio.CancelledError:
                record.code = grpc.StatusCode.CANCELLED  # the caller left or its deadline passed
                raise
            except Exception as error:
                status = record.fail(error)
                # abort sends the status at once: record the call before the caller can see
                # it, so its metrics and log line are there when the caller looks.
                record.close()
                await context.abort(status.code, status.message,
                                    trailing_metadata=trailing_details(status))
                raise  # unreachable: abort raises
            finally:
                record.close()

        return run

    return wrap
